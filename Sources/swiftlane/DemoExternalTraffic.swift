import Controller
import Datapath
import Foundation
import Logging
import NetLab
import ServiceModel

/// The demo's second act: traffic from outside the node (`bpf/nodeport.c` on tc) through a
/// NodePort of a two-node lab, to a pod on the same node and to pods on the other node
/// (source-NATed), and an externalTrafficPolicy=Local Service (client address kept, local
/// pods only). Everything it creates is removed by `teardown()`.
final class ExternalTrafficDemo {
    let lab: NodeLab
    let pinPath: String
    private let logger: Logger

    init(pinPath: String, logger: Logger) throws {
        self.pinPath = pinPath
        self.logger = logger
        lab = try NodeLab(podsOnA: 1, podsOnB: 2)
    }

    func teardown() {
        lab.teardown()
        SocketLoadBalancer.uninstall(pinPath: pinPath)
    }

    /// The two Services: `web` (eTP=Cluster) on every pod, `local` (eTP=Local) on one pod
    /// per node.
    private func manifests() -> String {
        func endpoints(_ pods: [NodeLabPod]) -> String {
            pods.map { "{addresses: [\($0.ipv4)], conditions: {ready: true}, nodeName: node-\($0.name.prefix(1))}" }
                .joined(separator: ", ")
        }
        func service(_ name: String, nodePort: Int, policy: String, pods: [NodeLabPod]) -> String {
            """
            apiVersion: v1
            kind: Service
            metadata: {name: \(name), namespace: shop}
            spec:
              type: NodePort
              clusterIP: 10.96.7.\(nodePort - 30000)
              externalTrafficPolicy: \(policy)
              ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: \(nodePort)}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: \(name)-1, namespace: shop, labels: {kubernetes.io/service-name: \(name)}}
            addressType: IPv4
            endpoints: [\(endpoints(pods))]
            ports: [{name: http, port: 8080, protocol: TCP}]
            """
        }
        let a1 = lab.podsOnA[0]
        return service("web", nodePort: 30080, policy: "Cluster", pods: lab.pods)
            + "\n---\n" + service("local", nodePort: 30081, policy: "Local", pods: [a1, lab.podsOnB[0]])
    }

    /// Runs the act; returns summary rows and whether every result was as expected.
    func run(requests: Int) throws -> (rows: [(String, String)], ok: Bool) {
        for pod in lab.pods { try lab.startProbeServer(on: pod, tcpPort: 8080, udpPort: 8053) }
        print("\n▶ lab: external client \(lab.clientIPv4) ─ node A \(lab.externalIPv4) (device \(lab.externalDevice)) ─ node B \(lab.nodeBIPv4); pods "
              + lab.pods.map { "\($0.name)=\($0.ipv4)" }.joined(separator: " "))
        let datapath = try NodePortDatapath.install(
            NodePortOptions(pinPath: pinPath, devices: [lab.externalDevice, lab.interNodeDevice],
                            networkNamespace: "/run/netns/" + lab.nodeA.netns),
            logger: logger)
        print("▶ datapath: tc ingress/egress on node A's \(datapath.devices.map(\.name).joined(separator: ", ")), SNAT mode")
        let syncer = try ProxySyncer(nodeName: "node-a", maps: try KernelLoadBalancerMaps(pinPath: pinPath), logger: logger)
        let report = syncer.sync(try ManifestDecoder.decode(Data(manifests().utf8), source: "external-demo.yaml"))
        guard report.failures.isEmpty else { throw DemoFailure("programming failed: \(report.failures)") }

        let client = lab.clientProbe()
        var rows: [(String, String)] = []
        let clusterTarget = "\(lab.externalIPv4):30080"
        print("\n● TCP from the external client to NodePort \(clusterTarget) (eTP=Cluster: pods on both nodes; those on node B see node A's \(lab.nodeAIPv4))")
        let cluster = try client.tcp(target: clusterTarget, count: requests)
        printSequence(cluster.sequence, seen: cluster.seenClientAddresses)
        rows.append(("NodePort \(clusterTarget)", "\(cluster.ok)/\(cluster.attempts) ok, \(shares(cluster.backends)), pods saw \(cluster.seenClientAddresses.joined(separator: " "))"))

        let localTarget = "\(lab.externalIPv4):30081"
        print("\n● TCP to NodePort \(localTarget) (eTP=Local: only node A's pod, the client address kept)")
        let local = try client.tcp(target: localTarget, count: requests)
        printSequence(local.sequence, seen: local.seenClientAddresses)
        rows.append(("NodePort \(localTarget) Local", "\(local.ok)/\(local.attempts) ok, \(shares(local.backends)), pods saw \(local.seenClientAddresses.joined(separator: " "))"))

        let counters = datapath.outcomeCounters().filter { $0.value > 0 && $0.key.hasPrefix("np_") }.sorted { $0.key < $1.key }
        rows.append(("external datapath counters", counters.map { "\($0.key)=\($0.value)" }.joined(separator: " ")))
        let remote = Set(lab.podsOnB.map(\.name))
        let ok = cluster.ok == cluster.attempts && local.ok == local.attempts
            && local.backends.keys.allSatisfy { $0 == lab.podsOnA[0].name }
            && Set(local.seenClientAddresses) == [lab.clientIPv4]
            && !Set(cluster.backends.keys).isDisjoint(with: remote)
            && cluster.seenClientAddresses.contains(lab.nodeAIPv4)
        return (rows, ok)
    }

    private func printSequence(_ sequence: [String], seen: [String]) {
        for (index, outcome) in sequence.enumerated() {
            print(String(format: "  request %2d → %@", index + 1, outcome))
        }
        print("  the pods saw the connections come from: " + seen.joined(separator: ", "))
    }

    private func shares(_ counts: [String: Int]) -> String {
        counts.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
    }
}

struct DemoFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
