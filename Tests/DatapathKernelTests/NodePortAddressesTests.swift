import Controller
@testable import Datapath
import Foundation
import Glibc
import NetLab
import Operations
import ServiceModel
import XCTest

/// `nodePortAddresses` (A.12) in the external-traffic datapath, followed while running:
/// `primary` serves NodePorts on the Node's first InternalIP only and moves when that
/// address changes; a reloaded list applies without a restart. Checked in the node-address
/// map and with real connections from the lab's client to node A's external address.
final class NodePortAddressesTests: XCTestCase {
    private var lab: NodeLab!
    private var pinPath = ""

    override func setUpWithError() throws {
        guard geteuid() == 0 else { throw XCTSkip("kernel test: needs root for BPF and namespaces") }
        lab = try NodeLab(podsOnA: 1, podsOnB: 0)
        pinPath = uniquePinPath("npaddrs")
    }

    override func tearDown() {
        lab?.teardown()
        SocketLoadBalancer.uninstall(pinPath: pinPath)
    }

    private func manifests(nodeIP: String) -> String {
        let pod = lab.podsOnA[0]
        return """
            apiVersion: v1
            kind: Node
            metadata: {name: node-a}
            status: {addresses: [{type: InternalIP, address: "\(nodeIP)"}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: default}
            spec:
              type: NodePort
              clusterIP: 10.96.0.30
              ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
            addressType: IPv4
            endpoints: [{addresses: ["\(pod.ipv4)"], conditions: {ready: true}, nodeName: node-a}]
            ports: [{name: http, port: 8080, protocol: TCP}]
            """
    }

    func testPrimaryFollowsTheNodesAddressAndAReloadedListAppliesWithoutRestart() throws {
        try lab.startProbeServer(on: lab.podsOnA[0], tcpPort: 8080, udpPort: 8053)
        let datapath = try NodePortDatapath.install(
            NodePortOptions(pinPath: pinPath, devices: [lab.externalDevice, lab.interNodeDevice],
                            nodePortAddresses: ["primary"], networkNamespace: "/run/netns/" + lab.nodeA.netns),
            logger: testLogger)
        let syncer = try ProxySyncer(
            nodeName: "node-a", options: TranslationOptions(nodePortAddresses: ["primary"]),
            maps: try KernelLoadBalancerMaps(pinPath: pinPath), logger: testLogger)
        syncer.observer = NodePortAddressFollower(datapath: datapath, logger: testLogger)
        let client = lab.clientProbe()
        let target = "\(lab.externalIPv4):30080"
        func sync(nodeIP: String) throws {
            let report = syncer.sync(try ManifestDecoder.decode(Data(manifests(nodeIP: nodeIP).utf8), source: "test.yaml"))
            XCTAssertEqual(report.failures, [])
        }

        // The Node's InternalIP is node A's inter-node address: the external one serves none.
        // The Node has no IPv6 InternalIP, so `primary` selects no IPv6 CIDR and every IPv6
        // address of the devices serves (A.12, per family).
        let ipv6 = [lab.externalIPv6, lab.nodeAIPv6]
        try sync(nodeIP: lab.nodeAIPv4)
        XCTAssertEqual(datapath.nodePortServingAddresses(), ([lab.nodeAIPv4] + ipv6).sorted())
        let refused = try client.tcp(target: target, count: 3)
        XCTAssertEqual(refused.ok, 0, "not a NodePort address: \(refused.backends)")

        // The Node's address moves to the external one: NodePorts follow.
        try sync(nodeIP: lab.externalIPv4)
        XCTAssertEqual(datapath.nodePortServingAddresses(), ([lab.externalIPv4] + ipv6).sorted())
        let served = try client.tcp(target: target, count: 5)
        XCTAssertEqual(served.backends, [lab.podsOnA[0].name: 5], "\(served.failures)")

        // A reloaded configuration selecting every address.
        syncer.options.nodePortAddresses = []
        try sync(nodeIP: lab.externalIPv4)
        XCTAssertEqual(datapath.nodePortServingAddresses(), ([lab.externalIPv4, lab.nodeAIPv4] + ipv6).sorted())
    }

    /// An IPv6 CIDR selects among the IPv6 addresses only; IPv4, with no CIDR of its own,
    /// keeps every address (A.12, per family).
    func testAnIPv6CIDRSelectsTheIPv6NodePortAddressesOnly() throws {
        let clientLink = "\(NodeLab.ipv6Prefix(subnet: lab.subnet)):1::/64"
        let datapath = try NodePortDatapath.install(
            NodePortOptions(pinPath: pinPath, devices: [lab.externalDevice, lab.interNodeDevice],
                            nodePortAddresses: [clientLink], networkNamespace: "/run/netns/" + lab.nodeA.netns),
            logger: testLogger)
        XCTAssertEqual(datapath.nodePortServingAddresses(), [lab.externalIPv4, lab.nodeAIPv4, lab.externalIPv6].sorted())
        XCTAssertEqual(Set(datapath.devices.flatMap(\.ipv6)), [lab.externalIPv6, lab.nodeAIPv6], "link-local addresses skipped")
    }
}
