import CLibBPF
import Controller
@testable import Datapath
import Foundation
import Glibc
import NetLab
import ServiceModel
import XCTest

/// Both nodes of a shared-fabric `NodeLab` with Swiftlane's external-traffic datapath on
/// their devices, each with its own pinned maps programmed by its own controller (as on
/// two real nodes). Node B reaches the client directly over the fabric, so a DSR reply
/// never needs node A. Everything is removed by `tearDown()`, also after a failure.
final class DSRHarness {
    struct Node {
        let pinPath: String
        let datapath: NodePortDatapath
        let syncer: ProxySyncer
    }

    static let tcpNodePort = 30080
    static let udpNodePort = 30053

    let lab: NodeLab
    private(set) var nodes: [Node] = []
    let client: ProbeRunner
    var a: Node { nodes[0] }
    var b: Node { nodes[1] }

    /// `acceleration`: XDP in front of tc on both nodes' devices, as `swiftlane run` would
    /// install it with `nodePort.acceleration`.
    init(podsOnA: Int, podsOnB: Int, label: String, mode: NodePortOptions.Mode = .dsr,
         acceleration: NodePortOptions.Acceleration = .none) throws {
        lab = try NodeLab(podsOnA: podsOnA, podsOnB: podsOnB, sharedFabric: true)
        client = lab.clientProbe()
        do {
            for pod in lab.podsOnA + lab.podsOnB { try lab.startProbeServer(on: pod, tcpPort: 8080, udpPort: 8053) }
            // Native XDP sees frames as a NIC delivers them: complete checksums (see
            // NodeLab.sendCompleteChecksums).
            if acceleration == .native { try lab.sendCompleteChecksums() }
            for (name, netns, devices) in [("node-a", lab.nodeA.netns, [lab.externalDevice, lab.interNodeDevice]),
                                           ("node-b", lab.nodeB.netns, [lab.nodeBExternalDevice!, lab.nodeBDevice])] {
                let pinPath = uniquePinPath(label + String(name.suffix(1)))
                nodes.append(Node(pinPath: pinPath, datapath: try NodePortDatapath.install(
                    NodePortOptions(pinPath: pinPath, devices: devices, mode: mode, acceleration: acceleration,
                                    networkNamespace: "/run/netns/" + netns),
                    logger: testLogger), syncer: try ProxySyncer(nodeName: name, maps: try KernelLoadBalancerMaps(pinPath: pinPath),
                                                                 logger: testLogger)))
            }
        } catch {
            tearDown()
            throw error
        }
    }

    func tearDown() {
        lab.teardown()
        for node in nodes { SocketLoadBalancer.uninstall(pinPath: node.pinPath) }
    }

    /// Programs `yaml` on both nodes.
    func apply(_ yaml: String) throws {
        let objects = try ManifestDecoder.decode(Data(yaml.utf8), source: "dsr.yaml")
        for node in nodes { XCTAssertEqual(node.syncer.sync(objects).failures, [], "sync failures") }
    }

    /// A LoadBalancer Service `web` (TCP 80 → 8080 on node port 30080, UDP 53 → 8053 on
    /// 30053) with `pods` as ready endpoints, an externalIP and a VIP of the service range;
    /// with `ipv6`, `web6`: the same in IPv6.
    func service(pods: [NodeLabPod], udpTargetPort: Int = 8053, extra: String = "", ipv6: Bool = false) -> String {
        let name = ipv6 ? "web6" : "web"
        let endpoints = pods.map { pod in
            "{addresses: [\"\(ipv6 ? pod.ipv6 : pod.ipv4)\"], conditions: {ready: true}, nodeName: node-\(pod.name.prefix(1))}"
        }
        let clusterIP = ipv6 ? "fd00:96::10" : "10.96.0.10"
        return """
            apiVersion: v1
            kind: Service
            metadata: {name: \(name), namespace: default}
            spec:
              type: LoadBalancer
              clusterIP: \(clusterIP)
              clusterIPs: [\(clusterIP)]
              ipFamilies: [\(ipv6 ? "IPv6" : "IPv4")]
              externalIPs: ["\(ipv6 ? externalIPv6 : externalIP)"]
            \(extra)
              ports:
              - {name: http, port: 80, protocol: TCP, nodePort: \(Self.tcpNodePort)}
              - {name: dns, port: 53, protocol: UDP, nodePort: \(Self.udpNodePort)}
            status: {loadBalancer: {ingress: [{ip: "\(ipv6 ? loadBalancerIPv6 : loadBalancerIP)"}]}}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: \(name)-1, namespace: default, labels: {kubernetes.io/service-name: \(name)}}
            addressType: \(ipv6 ? "IPv6" : "IPv4")
            endpoints: [\(endpoints.joined(separator: ", "))]
            ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: \(udpTargetPort), protocol: UDP}]
            """
    }

    var externalIP: String { lab.serviceIPv4(10) }
    var externalIPv6: String { lab.serviceIPv6(10) }
    var loadBalancerIP: String { lab.serviceIPv4(20) }
    var loadBalancerIPv6: String { lab.serviceIPv6(20) }
    var tcpTarget: String { "\(lab.externalIPv4):\(Self.tcpNodePort)" }
    var udpTarget: String { "\(lab.externalIPv4):\(Self.udpNodePort)" }
    var tcpTarget6: String { "[\(lab.externalIPv6)]:\(Self.tcpNodePort)" }
    var udpTarget6: String { "[\(lab.externalIPv6)]:\(Self.udpNodePort)" }
}

/// NodePort, externalIP and LoadBalancer VIP in DSR mode between real namespaces: node A
/// sends the client's packets to node B's pods with the frontend in an IPv4 option, node
/// B answers the client directly with the frontend as source.
final class NodePortDSRTests: XCTestCase {
    var harness: DSRHarness!

    override func tearDown() {
        harness?.tearDown()
        harness = nil
    }

    func makeHarness(podsOnA: Int, podsOnB: Int) throws -> DSRHarness {
        try requireKernelBPF()
        harness = try DSRHarness(podsOnA: podsOnA, podsOnB: podsOnB, label: "dsr" + name.filter { $0.isLetter }.suffix(12))
        return harness
    }

    /// Node A sent `flows` flows to node B by DSR and saw none of their replies; node B
    /// learnt each flow from its carrier and rewrote the replies itself. (UDP clients may
    /// reuse a source port, making two exchanges one flow: `exact` false.)
    private func assertRepliesBypassedNodeA(_ h: DSRHarness, flows: UInt64, exact: Bool = true,
                                            file: StaticString = #filePath, line: UInt = #line) {
        let a = h.a.datapath.outcomeCounters(), b = h.b.datapath.outcomeCounters()
        if exact { XCTAssertEqual(a["np_forward_new"], flows, "node A: \(a)", file: file, line: line) }
        XCTAssertGreaterThanOrEqual(a["np_dsr_carried"] ?? 0, flows, file: file, line: line)
        XCTAssertEqual(a["np_reply"], 0, "no reply passed node A", file: file, line: line)
        XCTAssertEqual(a["np_dsr_no_room"], 0, file: file, line: line)
        XCTAssertGreaterThanOrEqual(b["np_dsr_received"] ?? 0, flows, "node B: \(b)", file: file, line: line)
        XCTAssertGreaterThanOrEqual(b["np_dsr_reply"] ?? 0, flows, file: file, line: line)
        XCTAssertEqual(b["np_dsr_malformed"], 0, file: file, line: line)
        XCTAssertEqual(b["np_dsr_unknown_frontend"], 0, file: file, line: line)
    }

    func testATCPNodePortInDSRModeRepliesFromTheNodePortWithTheClientAddressKept() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 2)
        try h.apply(h.service(pods: h.lab.podsOnB))
        let report = try h.client.tcp(target: h.tcpTarget, count: 30)
        XCTAssertEqual(report.ok, 30, "failures: \(report.failures) \(report.firstError ?? "")")
        XCTAssertEqual(Set(report.backends.keys), ["b1", "b2"], "\(report.backends)")
        XCTAssertEqual(report.peerNameMismatches, 0, "getpeername() must show nodeAIP:nodePort")
        XCTAssertEqual(report.seenClientAddresses, [h.lab.clientIPv4], "the backend sees the client itself")
        assertRepliesBypassedNodeA(h, flows: 30)
        // Node A keeps one FORWARD entry per flow (no REPLY entry), node B one DSR entry.
        XCTAssertEqual(h.a.datapath.natPressure().entries, 30)
        XCTAssertEqual(h.b.datapath.dsrPressure().entries, 30)
        XCTAssertEqual(h.b.datapath.dsrPressure().capacity, UInt32(SL_DEFAULT_DSR_MAX))
        // What `swiftlane dump dsr` prints on node B.
        let views = try KernelLoadBalancerMaps.dsrFlowViews(pinPath: h.b.pinPath)
        XCTAssertEqual(views.count, 30)
        XCTAssertEqual(Set(views.map(\.frontend)), [h.tcpTarget])
        XCTAssertEqual(Set(views.map { $0.client.split(separator: ":")[0] }), [Substring(h.lab.clientIPv4)])
        XCTAssertEqual(Set(views.map(\.backend)), Set(h.lab.podsOnB.map { "\($0.ipv4):8080" }))
        XCTAssertEqual(Set(views.map(\.protocol)), ["TCP"])
    }

    /// The same DSR flows with XDP (generic, then native) in front of tc on both nodes: the
    /// same results, and XDP itself forwards the DSR flows' segments that carry no option
    /// (it hands SYNs and UDP datagrams, which must grow by the option, to tc).
    func testDSRGivesTheSameResultsWithXDPInFront() throws {
        try requireKernelBPF()
        for acceleration in [NodePortOptions.Acceleration.generic, .native] {
            harness = try DSRHarness(podsOnA: 0, podsOnB: 2, label: "dsrxdp" + acceleration.rawValue.prefix(3),
                                     acceleration: acceleration)
            let h = harness!
            defer {
                h.tearDown()
                harness = nil
            }
            try h.apply(h.service(pods: h.lab.podsOnB))
            let tcp = try h.client.tcp(target: h.tcpTarget, count: 20)
            XCTAssertEqual(tcp.ok, 20, "[\(acceleration)] \(tcp.failures) \(tcp.firstError ?? "")")
            XCTAssertEqual(Set(tcp.backends.keys), ["b1", "b2"], "[\(acceleration)] \(tcp.backends)")
            XCTAssertEqual(tcp.peerNameMismatches, 0, "[\(acceleration)] getpeername() must show nodeAIP:nodePort")
            XCTAssertEqual(tcp.seenClientAddresses, [h.lab.clientIPv4], "[\(acceleration)]")
            assertRepliesBypassedNodeA(h, flows: 20)
            let afterTCP = h.a.datapath.outcomeCounters()
            XCTAssertGreaterThan(afterTCP["np_xdp_redirect"] ?? 0, 0, "[\(acceleration)] XDP forwards option-less segments: \(afterTCP)")
            XCTAssertGreaterThanOrEqual(afterTCP["np_xdp_pass_to_tc"] ?? 0, 20, "[\(acceleration)] SYNs go to tc for the option")

            let udp = try h.client.udp(target: h.udpTarget, count: 20)
            XCTAssertEqual(udp.ok, 20, "[\(acceleration)] \(udp.errors) timeouts \(udp.timeouts)")
            XCTAssertEqual(udp.replySourceMismatches, 0, "[\(acceleration)]")
            XCTAssertEqual(Set(udp.seenClientAddresses), [h.lab.clientIPv4], "[\(acceleration)]")
            XCTAssertEqual((h.a.datapath.outcomeCounters()["np_dsr_carried"] ?? 0) - (afterTCP["np_dsr_carried"] ?? 0), 20,
                           "[\(acceleration)] every datagram carries the frontend, added by tc")

            let vip = try h.client.tcp(target: "\(h.loadBalancerIP):80", count: 10)
            XCTAssertEqual(vip.ok, 10, "[\(acceleration)] \(vip.failures)")
            XCTAssertEqual(vip.peerNameMismatches, 0, "[\(acceleration)]")
            XCTAssertEqual(h.a.datapath.outcomeCounters()["np_reply"], 0, "[\(acceleration)] no reply passed node A")

            try h.apply(h.service(pods: h.lab.podsOnB, ipv6: true))
            let tcp6 = try h.client.tcp(target: h.tcpTarget6, count: 10)
            XCTAssertEqual(tcp6.ok, 10, "[\(acceleration)] IPv6: \(tcp6.failures) \(tcp6.firstError ?? "")")
            XCTAssertEqual(tcp6.peerNameMismatches, 0, "[\(acceleration)] IPv6")
            XCTAssertEqual(tcp6.seenClientAddresses, [h.lab.clientIPv6], "[\(acceleration)] IPv6")
            let udp6 = try h.client.udp(target: h.udpTarget6, count: 10)
            XCTAssertEqual(udp6.ok, 10, "[\(acceleration)] IPv6: \(udp6.errors) timeouts \(udp6.timeouts)")
            XCTAssertEqual(udp6.replySourceMismatches, 0, "[\(acceleration)] IPv6")
            XCTAssertEqual(h.a.datapath.outcomeCounters()["np_reply"], 0, "[\(acceleration)] IPv6: no reply passed node A")
        }
    }

    /// IPv6 in DSR mode: node A puts the frontend in a destination options header, node B
    /// takes it out, records the flow and sends the pod's replies to the client with the
    /// NodePort as source. TCP and UDP, the client's address kept, no reply through node A.
    func testAnIPv6NodePortInDSRModeRepliesFromTheNodePortWithTheClientAddressKept() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 1)
        let b1 = h.lab.podsOnB[0]
        try h.apply(h.service(pods: h.lab.podsOnB, ipv6: true))
        let tcp = try h.client.tcp(target: h.tcpTarget6, count: 10)
        XCTAssertEqual(tcp.ok, 10, "failures: \(tcp.failures) \(tcp.firstError ?? "")")
        XCTAssertEqual(tcp.peerNameMismatches, 0, "getpeername() must show the NodePort")
        XCTAssertEqual(tcp.seenClientAddresses, [h.lab.clientIPv6], "DSR keeps the client's address")
        let udp = try h.client.udp(target: h.udpTarget6, count: 10)
        XCTAssertEqual(udp.ok, 10, "errors: \(udp.errors) timeouts: \(udp.timeouts)")
        XCTAssertEqual(udp.replySourceMismatches, 0, "replies from the NodePort")
        XCTAssertEqual(udp.seenClientAddresses, [h.lab.clientIPv6])
        let a = h.a.datapath.outcomeCounters(), b = h.b.datapath.outcomeCounters()
        XCTAssertEqual(a["np_dsr_carried"], 20, "10 SYNs and 10 datagrams: \(a)")
        XCTAssertEqual(a["np_dsr_snat_fallback"], 0)
        XCTAssertEqual(a["np_reply"], 0, "no reply passed node A")
        XCTAssertEqual(b["np_dsr_received"], 20, "\(b)")
        XCTAssertGreaterThanOrEqual(b["np_dsr_reply"] ?? 0, 20, "every reply given the frontend on node B")
        let views = try KernelLoadBalancerMaps.dsrFlowViews(pinPath: h.b.pinPath)
        XCTAssertEqual(Set(views.map(\.backend)), ["[\(b1.ipv6)]:8080", "[\(b1.ipv6)]:8053"], "\(views)")
        XCTAssertEqual(Set(views.map(\.frontend)), [h.tcpTarget6, h.udpTarget6])
        // The LoadBalancer VIP and the externalIP, by DSR too.
        for target in ["[\(h.loadBalancerIPv6)]:80", "[\(h.externalIPv6)]:80"] {
            let report = try h.client.tcp(target: target, count: 5)
            XCTAssertEqual(report.ok, 5, "\(target): \(report.failures)")
            XCTAssertEqual(report.peerNameMismatches, 0, target)
            XCTAssertEqual(report.seenClientAddresses, [h.lab.clientIPv6], target)
        }
        XCTAssertEqual(h.a.datapath.outcomeCounters()["np_reply"], 0, "no reply passed node A")
        XCTAssertEqual(h.b.datapath.outcomeCounters()["np_dsr_received"], 30)
    }

    func testSNATModeOnTheSameFabricStillSendsRepliesBackThroughNodeA() throws {
        try requireKernelBPF()
        harness = try DSRHarness(podsOnA: 0, podsOnB: 1, label: "dsrsnat", mode: .snat)
        let h = harness!
        try h.apply(h.service(pods: h.lab.podsOnB))
        let report = try h.client.tcp(target: h.tcpTarget, count: 10)
        XCTAssertEqual(report.ok, 10, "failures: \(report.failures) \(report.firstError ?? "")")
        XCTAssertEqual(report.seenClientAddresses, [h.lab.nodeAIPv4])
        XCTAssertEqual(h.a.datapath.outcomeCounters()["np_dsr_carried"], 0)
        XCTAssertGreaterThanOrEqual(h.a.datapath.outcomeCounters()["np_reply"] ?? 0, 10)
        XCTAssertEqual(h.b.datapath.dsrPressure().entries, 0)
    }

    func testUDPInDSRModeRepliesComeFromTheNodePort() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 2)
        try h.apply(h.service(pods: h.lab.podsOnB))
        let report = try h.client.udp(target: h.udpTarget, count: 40)
        XCTAssertEqual(report.ok, 40, "errors: \(report.errors) timeouts: \(report.timeouts)")
        XCTAssertEqual(report.replySourceMismatches, 0, "recvfrom() must show nodeAIP:30053")
        XCTAssertEqual(Set(report.backends.keys), ["b1", "b2"], "\(report.backends)")
        XCTAssertEqual(Set(report.seenClientAddresses), [h.lab.clientIPv4])
        assertRepliesBypassedNodeA(h, flows: 40, exact: false)
        // Every datagram carries the frontend (node B cannot know which one came first).
        XCTAssertEqual(h.a.datapath.outcomeCounters()["np_dsr_carried"], 40)
    }

    func testAnExternalIPAndALoadBalancerVIPAreServedByDSR() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 1)
        try h.apply(h.service(pods: h.lab.podsOnB))
        for (index, frontend) in [h.externalIP, h.loadBalancerIP].enumerated() {
            let report = try h.client.tcp(target: "\(frontend):80", count: 10)
            XCTAssertEqual(report.ok, 10, "\(frontend): \(report.failures) \(report.firstError ?? "")")
            XCTAssertEqual(report.peerNameMismatches, 0, "replies must come from \(frontend):80")
            XCTAssertEqual(report.seenClientAddresses, [h.lab.clientIPv4])
            assertRepliesBypassedNodeA(h, flows: UInt64(10 * (index + 1)))
        }
    }

    func testALocalBackendInDSRModeIsServedAsInSNATMode() throws {
        let h = try makeHarness(podsOnA: 1, podsOnB: 0)
        try h.apply(h.service(pods: h.lab.podsOnA))
        let report = try h.client.tcp(target: h.tcpTarget, count: 10)
        XCTAssertEqual(report.ok, 10, "failures: \(report.failures) \(report.firstError ?? "")")
        XCTAssertEqual(report.peerNameMismatches, 0)
        XCTAssertEqual(report.seenClientAddresses, [h.lab.clientIPv4])
        let a = h.a.datapath.outcomeCounters()
        XCTAssertEqual(a["np_dsr_carried"], 0, "a local backend needs no carrier: \(a)")
        XCTAssertGreaterThanOrEqual(a["np_reply"] ?? 0, 10, "its replies pass node A's egress")
    }

    func testAPortUnreachableFromADSRBackendReachesTheClientAsECONNREFUSED() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 1)
        // Nothing listens on UDP 8054 in the pod: it answers the client with ICMP port
        // unreachable quoting client -> pod, which node B turns into client -> NodePort.
        try h.apply(h.service(pods: h.lab.podsOnB, udpTargetPort: 8054))
        let report = try h.client.udp(target: h.udpTarget, count: 3, connected: true)
        XCTAssertEqual(report.errors, ["ECONNREFUSED": 3], "timeouts: \(report.timeouts)")
        XCTAssertEqual(h.b.datapath.outcomeCounters()["np_dsr_icmp_error"], 3)
        XCTAssertEqual(h.a.datapath.outcomeCounters()["np_icmp_error_reply"], 0, "the error did not pass node A")

        // IPv6: the pod's ICMPv6 port unreachable, the same way.
        try h.apply(h.service(pods: h.lab.podsOnB, udpTargetPort: 8054, ipv6: true))
        let report6 = try h.client.udp(target: h.udpTarget6, count: 3, connected: true)
        XCTAssertEqual(report6.errors, ["ECONNREFUSED": 3], "IPv6, timeouts: \(report6.timeouts)")
        XCTAssertEqual(h.b.datapath.outcomeCounters()["np_dsr_icmp_error"], 6)
        XCTAssertEqual(h.a.datapath.outcomeCounters()["np_icmp_error_reply"], 0, "the error did not pass node A")
    }

    /// The other direction: the client's port unreachable about a DSR reply (which came
    /// from node B with the NodePort as source) is addressed to the NodePort, so it
    /// reaches node A, which hands it to the backend quoting the backend's own packet.
    /// A router's Packet Too Big about replies takes the same way.
    func testTheClientsICMPErrorAboutADSRReplyReachesTheBackendThroughNodeA() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 1)
        try h.apply(h.service(pods: h.lab.podsOnB, udpTargetPort: 8055))
        let outcome = try ProbeClient.udpLateReplyOutcome(clientNetns: h.lab.clientNetns, target: h.udpTarget,
                                                          backendNetns: h.lab.podsOnB[0].netns, backendPort: 8055)
        XCTAssertEqual(outcome, "ECONNREFUSED", "\(h.a.datapath.outcomeCounters().filter { $0.value > 0 })")
        XCTAssertEqual(h.a.datapath.outcomeCounters()["np_icmp_error_forward"], 1)
        XCTAssertGreaterThanOrEqual(h.b.datapath.outcomeCounters()["np_dsr_reply"] ?? 0, 1, "the replies bypassed node A")
    }

    func testAPodBehindTheBackendsNodeIsSourceNATedNotServedByDSR() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 1)
        let b1 = h.lab.podsOnB[0]
        try h.apply(h.service(pods: [b1]))
        // b1 -> node A's NodePort -> b1: by DSR its replies would never leave node B through
        // a device, so nothing could give them the NodePort as source.
        let report = try ProbeRunner(netns: b1.netns, cgroup: nil).tcp(target: h.tcpTarget, count: 10)
        XCTAssertEqual(report.ok, 10, "failures: \(report.failures) \(report.firstError ?? "")")
        XCTAssertEqual(report.peerNameMismatches, 0)
        XCTAssertEqual(report.seenClientAddresses, [h.lab.nodeAIPv4], "source-NATed to node A")
        let a = h.a.datapath.outcomeCounters()
        XCTAssertEqual(a["np_dsr_snat_fallback"], 10, "\(a)")
        XCTAssertEqual(a["np_dsr_carried"], 0)
    }

    func testExternalTrafficPolicyLocalIsUnchangedInDSRMode() throws {
        let h = try makeHarness(podsOnA: 1, podsOnB: 1)
        try h.apply(h.service(pods: h.lab.podsOnA + h.lab.podsOnB, extra: "  externalTrafficPolicy: Local"))
        let report = try h.client.tcp(target: h.tcpTarget, count: 10)
        XCTAssertEqual(report.ok, 10, "failures: \(report.failures) \(report.firstError ?? "")")
        XCTAssertEqual(report.backends, ["a1": 10], "only node A's own pod serves external traffic")
        XCTAssertEqual(report.seenClientAddresses, [h.lab.clientIPv4])
        XCTAssertEqual(h.a.datapath.outcomeCounters()["np_dsr_carried"], 0)
    }

    func testHeldDSRConnectionsOutliveABackendSetChange() throws {
        let h = try makeHarness(podsOnA: 1, podsOnB: 2)
        let (a1, b1, b2) = (h.lab.podsOnA[0], h.lab.podsOnB[0], h.lab.podsOnB[1])
        try h.apply(h.service(pods: [a1, b1]))
        let hold = try h.client.startHold(target: h.tcpTarget, connections: 20)
        XCTAssertEqual(hold.established.established, 20, "\(hold.established.failures)")
        let held = hold.established.backends
        XCTAssertEqual(Set(held.keys), ["a1", "b1"], "held flows cover a local and a DSR backend")
        // b1 leaves (its pod keeps running), b2 joins: node B's entries of b1's flows stay.
        try h.apply(h.service(pods: [a1, b2]))
        XCTAssertEqual(try KernelLoadBalancerMaps.dsrFlowViews(pinPath: h.b.pinPath).filter { $0.backend.hasPrefix(b1.ipv4 + ":") }.count,
                       held["b1"])
        let repliesBefore = h.b.datapath.outcomeCounters()["np_dsr_reply"] ?? 0
        let after = try h.client.tcp(target: h.tcpTarget, count: 20)
        XCTAssertEqual(Set(after.backends.keys), ["a1", "b2"], "new connections use the new set")
        let final = try hold.finish()
        XCTAssertEqual(final.survived, 20, "held connections keep their backend: lost \(final.lost ?? [:])")
        XCTAssertEqual(final.survivedBackends, held)
        XCTAssertGreaterThan(h.b.datapath.outcomeCounters()["np_dsr_reply"] ?? 0, repliesBefore, "b1 kept answering by DSR")
    }

    func testGarbageCollectionRemovesIdleDSREntriesOnTheBackendsNode() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 1)
        try h.apply(h.service(pods: h.lab.podsOnB))
        let hold = try h.client.startHold(target: h.tcpTarget, connections: 3)
        XCTAssertEqual(hold.established.established, 3)
        XCTAssertEqual(try h.client.tcp(target: h.tcpTarget, count: 5).ok, 5)  // closed with FIN
        XCTAssertEqual(h.b.datapath.dsrPressure().entries, 8)
        let start = NodePortDatapath.monotonicNanoseconds()
        let timeouts = NodePortDatapath.ConntrackTimeouts(tcp: 3600, tcpClosing: 10, udp: 60)
        XCTAssertEqual(h.b.datapath.collectGarbage(timeouts: timeouts, now: start + 5_000_000_000).dsrRemoved, 0)
        let closed = h.b.datapath.collectGarbage(timeouts: timeouts, now: start + 30_000_000_000)
        XCTAssertEqual(closed.dsrRemoved, 5, "closed flows go after 10 s")
        XCTAssertEqual(closed.dsrRemaining, 3)
        XCTAssertEqual(closed.dsrCapacity, UInt32(SL_DEFAULT_DSR_MAX))
        XCTAssertEqual(try hold.finish().survived, 3)
    }
}

/// `bpf/include/swiftlane/dsr.h` on crafted frames through BPF_PROG_TEST_RUN. The carrier
/// parser: a well-formed frontend option is recorded and removed, a malformed one or one
/// naming no frontend is dropped with its own reason, an option that is not first is not
/// looked at; a recorded flow's reply leaves with the frontend as source. The sending
/// side: which packets get the option, byte by byte, and when SNAT is used instead.
final class DSRPacketTests: XCTestCase {
    private static let tcActOK: Int32 = 0
    private static let tcActShot: Int32 = 2
    private static let tcActRedirect: Int32 = 7
    private static let nodePort: UInt16 = 30099
    private static let frontend: [UInt8] = [192, 0, 2, 1]
    private static let backend: [UInt8] = [10, 0, 0, 5]

    private var pinPath = ""
    private var datapath: NodePortDatapath!

    override func setUpWithError() throws {
        try requireKernelBPF()
        pinPath = uniquePinPath("dsrpkt")
        datapath = try NodePortDatapath.load(NodePortOptions(pinPath: pinPath, mode: .dsr), logger: testLogger)
        // A NodePort without backends, for carriers to name, in each family.
        for proto in [UInt8(IPPROTO_TCP), UInt8(IPPROTO_UDP)] {
            try addNodePort(Self.nodePort, proto: proto, slot: 0, revNat: 1)
            try addNodePort(Self.nodePort, proto: proto, slot: 0, revNat: 2, ipv6: true)
        }
    }

    /// The NodePort wildcard entry of `port` whose active set is `slot` alone (0: none).
    private func addNodePort(_ port: UInt16, proto: UInt8, slot: UInt32, revNat: UInt32, ipv6: Bool = false) throws {
        var key = sl_service_key()
        let wildcard = ipv6 ? NodePortDatapath.ipv6Words("::")! : NodePortDatapath.v4MappedWords("0.0.0.0")!
        (key.addr, key.port, key.proto) = (wildcard, port.bigEndian, proto)
        var value = sl_service_value()
        (value.slot_base, value.count, value.rev_nat_id) = (slot, slot == 0 ? 0 : 1, revNat)
        value.kind = UInt8(SL_KIND_NODE_PORT.rawValue)
        try KernelLoadBalancerMaps(pinPath: pinPath).services.update(key, value)
    }

    override func tearDown() {
        datapath = nil
        SocketLoadBalancer.uninstall(pinPath: pinPath)
    }

    /// The frontend option: type 0x9a, length, port, address.
    private static func option(length: UInt8 = 8, port: UInt16 = nodePort, address: [UInt8] = frontend) -> [UInt8] {
        [0x9a, length, UInt8(port >> 8), UInt8(port & 0xff)] + address
    }

    private static func carrier(proto: UInt8 = UInt8(IPPROTO_TCP), options: [UInt8], ihl: UInt8? = nil) -> [UInt8] {
        let l4 = proto == UInt8(IPPROTO_TCP) ? TestFrame.tcp(dport: 8080) : TestFrame.udp(dport: 8053)
        return TestFrame.ethernet(TestFrame.ipv4(proto: proto, dst: backend, options: options, ihl: ihl, l4))
    }

    /// The verdict and the counters that moved, for one frame through `program`.
    private func run(_ frame: [UInt8], _ program: NodePortDatapath.Program = .ingress) throws -> (Int32, [UInt8], [String: UInt64]) {
        let before = datapath.outcomeCounters()
        let result = try datapath.testRun(program, packet: frame)
        var changed: [String: UInt64] = [:]
        for (reason, count) in datapath.outcomeCounters() where before[reason] != count { changed[reason] = count - (before[reason] ?? 0) }
        return (result.verdict, result.packet, changed)
    }

    func testMalformedOrUnknownCarriersAreDroppedWithTheirReason() throws {
        let rows: [(String, [UInt8], Int32, String)] = [
            ("option length 6", Self.carrier(options: Self.option(length: 6)), Self.tcActShot, "np_dsr_malformed"),
            ("option length 12 in an 8-byte option area", Self.carrier(options: Self.option(length: 12)), Self.tcActShot, "np_dsr_malformed"),
            ("option cut by the header length (IHL 6)", Self.carrier(options: Array(Self.option().prefix(4))), Self.tcActShot, "np_dsr_malformed"),
            ("option naming no frontend", Self.carrier(options: Self.option(port: 31111)), Self.tcActShot, "np_dsr_unknown_frontend"),
            ("UDP carrier naming a NodePort on another node's address",
             Self.carrier(proto: UInt8(IPPROTO_UDP), options: Self.option(address: [198, 51, 100, 9])), Self.tcActOK, "np_dsr_received"),
            ("header length beyond the frame", Self.carrier(options: Self.option(), ihl: 15), Self.tcActShot, "np_malformed"),
            ("option after a NOP is not a carrier", Self.carrier(options: [1] + Self.option() + [0, 0, 0]), Self.tcActOK, "np_not_service"),
        ]
        for (name, frame, verdict, reason) in rows {
            let (got, _, changed) = try run(frame)
            XCTAssertEqual(got, verdict, "verdict of \(name)")
            XCTAssertEqual(changed, [reason: 1], "counters of \(name)")
        }
        XCTAssertEqual(datapath.dsrPressure().entries, 1, "only the well-formed carrier was recorded")
    }

    func testACarrierIsRecordedAndStrippedAndItsFlowsRepliesGetTheFrontend() throws {
        typealias F = TestFrame
        let tcp = UInt8(IPPROTO_TCP)
        let (verdict, out, changed) = try run(Self.carrier(options: Self.option()))
        XCTAssertEqual(verdict, Self.tcActOK)
        XCTAssertEqual(changed, ["np_dsr_received": 1])
        // The same packet as if it had never carried the option: IHL 5, valid checksum.
        XCTAssertEqual(out, F.ethernet(F.ipv4(proto: tcp, dst: Self.backend, F.tcp(dport: 8080))))

        let reply = F.ethernet(F.ipv4(proto: tcp, src: Self.backend, dst: F.client, F.tcp(sport: 8080, dport: 40000, flags: 0x12)))
        let (replyVerdict, rewritten, replyChanged) = try run(reply, .egress)
        XCTAssertEqual(replyVerdict, Self.tcActOK)
        XCTAssertEqual(replyChanged, ["np_dsr_reply": 1])
        let expected = F.ethernet(F.ipv4(proto: tcp, src: Self.frontend, dst: F.client,
                                         F.tcp(sport: Self.nodePort, dport: 40000, flags: 0x12)))
        XCTAssertEqual(Array(rewritten.prefix(34)), Array(expected.prefix(34)), "source is the frontend, header checksum valid")
        XCTAssertEqual(Array(rewritten[34..<36]), [UInt8(Self.nodePort >> 8), UInt8(Self.nodePort & 0xff)], "source port")
        // Another client's reply is not touched.
        let other = F.ethernet(F.ipv4(proto: tcp, src: Self.backend, dst: [198, 51, 100, 8], F.tcp(sport: 8080, dport: 40000)))
        XCTAssertEqual(try run(other, .egress).1, other)
    }

    /// The client's FIN or RST, DNATed by node A and so addressed to the backend, marks
    /// node B's entry closing (short timeout), as the backend's own does: a client that
    /// resets its connection leaves no entry for hours. Other clients' segments and
    /// segments without FIN or RST change nothing.
    func testTheClientsFINOrRSTMarksTheBackendNodesEntryClosing() throws {
        typealias F = TestFrame
        let tcp = UInt8(IPPROTO_TCP)
        func closing() -> [Bool] { datapath.dsr.entries().map { $0.1.flags & UInt16(SL_NAT_F_CLOSING.rawValue) != 0 } }
        func segment(flags: UInt8, from client: [UInt8] = F.client, port: UInt16 = 40000) -> [UInt8] {
            F.ethernet(F.ipv4(proto: tcp, src: client, dst: Self.backend, F.tcp(sport: port, dport: 8080, flags: flags)))
        }
        for (name, flags) in [("FIN", UInt8(0x11)), ("RST", UInt8(0x04))] {
            XCTAssertEqual(try run(Self.carrier(options: Self.option())).2, ["np_dsr_received": 1])
            XCTAssertEqual(closing(), [false])
            for other in [segment(flags: 0x10), segment(flags: flags, from: [198, 51, 100, 8]), segment(flags: flags, port: 40001)] {
                let (verdict, out, changed) = try run(other)
                XCTAssertEqual(verdict, Self.tcActOK)
                XCTAssertEqual(out, other, "passed untouched")
                XCTAssertEqual(changed, ["np_not_service": 1])
            }
            XCTAssertEqual(closing(), [false], "\(name): an ACK, another client's or another port's segment")
            let (verdict, out, _) = try run(segment(flags: flags))
            XCTAssertEqual(verdict, Self.tcActOK)
            XCTAssertEqual(out, segment(flags: flags), "\(name) goes on to the backend untouched")
            XCTAssertEqual(closing(), [true], "\(name) from the client")
            try datapath.dsr.delete(datapath.dsr.entries()[0].0)
        }
    }

    // MARK: - IPv6 carriers

    private static let frontend6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    private static let backend6: [UInt8] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]

    /// The IPv6 carrier: a destination options header (next header, length 2, option
    /// 0x1e of 20 bytes: address, port, 2 zero bytes).
    private static func option6(next: UInt8 = UInt8(IPPROTO_TCP), hdrlen: UInt8 = 2, type: UInt8 = 0x1e, length: UInt8 = 20,
                                port: UInt16 = nodePort, address: [UInt8] = frontend6) -> [UInt8] {
        [next, hdrlen, type, length] + address + [UInt8(port >> 8), UInt8(port & 0xff), 0, 0]
    }

    private static func carrier6(_ option: [UInt8], l4: [UInt8] = TestFrame.tcp(dport: 8080)) -> [UInt8] {
        TestFrame.ethernet(type: 0x86dd, TestFrame.ipv6(nextHeader: 60, dst: backend6, option + l4))
    }

    /// Node B's side for IPv6: a well-formed carrier is recorded and taken out (the packet
    /// as if sent to the backend directly), the flow's replies leave from the frontend with
    /// a valid checksum; malformed carriers and carriers naming no frontend are dropped,
    /// destination options of another kind pass as before.
    func testAnIPv6CarrierIsRecordedAndStrippedAndItsFlowsRepliesGetTheFrontend() throws {
        typealias F = TestFrame
        let tcp = UInt8(IPPROTO_TCP)
        let rows: [(String, [UInt8], Int32, String)] = [
            ("header length 1", Self.carrier6(Array(Self.option6(hdrlen: 1).prefix(16))), Self.tcActShot, "np_dsr_malformed"),
            ("option length 18", Self.carrier6(Self.option6(length: 18)), Self.tcActShot, "np_dsr_malformed"),
            ("ICMPv6 behind it", Self.carrier6(Self.option6(next: 58), l4: [128, 0, 0, 0, 0, 1, 0, 1]), Self.tcActShot,
             "np_dsr_malformed"),
            ("naming no frontend", Self.carrier6(Self.option6(port: 31111)), Self.tcActShot, "np_dsr_unknown_frontend"),
            ("other destination options", Self.carrier6([tcp, 0, 1, 4, 0, 0, 0, 0]), Self.tcActOK, "np_ipv6_ext_header"),
        ]
        for (name, frame, verdict, reason) in rows {
            let (got, _, changed) = try run(frame)
            XCTAssertEqual(got, verdict, "verdict of \(name)")
            XCTAssertEqual(changed, [reason: 1], "counters of \(name)")
        }
        XCTAssertEqual(datapath.dsrPressure().entries, 0)

        let (verdict, out, changed) = try run(Self.carrier6(Self.option6()))
        XCTAssertEqual(verdict, Self.tcActOK)
        XCTAssertEqual(changed, ["np_dsr_received": 1])
        XCTAssertEqual(out, F.ethernet(type: 0x86dd, F.ipv6(nextHeader: tcp, dst: Self.backend6, F.tcp(dport: 8080))),
                       "next header and payload length restored")
        XCTAssertEqual(datapath.dsrPressure().entries, 1)

        let synAck = F.withL4Checksum6(F.tcp(sport: 8080, dport: 40000, flags: 0x12), proto: tcp, src: Self.backend6, dst: F.client6)
        let reply = F.ethernet(type: 0x86dd, F.ipv6(nextHeader: tcp, src: Self.backend6, dst: F.client6, synAck))
        let (replyVerdict, rewritten, replyChanged) = try run(reply, .egress)
        XCTAssertEqual(replyVerdict, Self.tcActOK)
        XCTAssertEqual(replyChanged, ["np_dsr_reply": 1])
        XCTAssertEqual(Array(rewritten[22..<38]), Self.frontend6, "source is the frontend")
        let segment = Array(rewritten[54...])
        XCTAssertEqual(Array(segment[0..<2]), [UInt8(Self.nodePort >> 8), UInt8(Self.nodePort & 0xff)], "source port")
        XCTAssertEqual(F.withL4Checksum6(segment, proto: tcp, src: Self.frontend6, dst: F.client6), segment, "TCP checksum")
        // The client's FIN marks it closing, as for IPv4.
        let fin = F.ethernet(type: 0x86dd, F.ipv6(nextHeader: tcp, dst: Self.backend6, F.tcp(dport: 8080, flags: 0x11)))
        XCTAssertEqual(try run(fin).0, Self.tcActOK)
        XCTAssertEqual(datapath.dsr.entries().map { $0.1.flags & UInt16(SL_NAT_F_CLOSING.rawValue) != 0 }, [true])
    }

    func testABackendsICMPErrorAboutARecordedFlowQuotesTheFrontend() throws {
        typealias F = TestFrame
        let udp = UInt8(IPPROTO_UDP)
        XCTAssertEqual(try run(Self.carrier(proto: udp, options: Self.option())).2, ["np_dsr_received": 1])
        // Port unreachable from the backend about client:40000 -> backend:8053.
        func portUnreachable(quoting destination: [UInt8]) -> [UInt8] {
            var icmp: [UInt8] = [3, 3, 0, 0, 0, 0, 0, 0] + Array(F.ipv4(proto: udp, dst: destination, F.udp(dport: 8053)).prefix(28))
            let sum = F.checksum(icmp)
            (icmp[2], icmp[3]) = (UInt8(sum >> 8), UInt8(sum & 0xff))
            return F.ethernet(F.ipv4(proto: 1, src: Self.backend, dst: F.client, icmp))
        }
        let (verdict, out, changed) = try run(portUnreachable(quoting: Self.backend), .egress)
        XCTAssertEqual(verdict, Self.tcActOK)
        XCTAssertEqual(changed, ["np_dsr_icmp_error": 1])
        let outer = Array(out[14..<34]), icmp = Array(out[34..<70]), inner = Array(out[42..<62])
        XCTAssertEqual(Array(outer[12..<16]), Self.frontend, "outer source: the frontend")
        XCTAssertEqual(F.checksum(outer), 0, "outer header checksum")
        XCTAssertEqual(Array(inner[12..<16]), F.client, "quoted source: still the client")
        XCTAssertEqual(Array(inner[16..<20]), Self.frontend, "quoted destination: the frontend")
        XCTAssertEqual(F.checksum(inner), 0, "quoted header checksum")
        XCTAssertEqual(Array(out[62..<66]), [0x9c, 0x40, UInt8(Self.nodePort >> 8), UInt8(Self.nodePort & 0xff)], "quoted ports")
        XCTAssertEqual(F.checksum(icmp), 0, "ICMP checksum")
        // About a flow that was never recorded: untouched.
        let unrelated = portUnreachable(quoting: [10, 0, 0, 6])
        XCTAssertEqual(try run(unrelated, .egress).1, unrelated)
    }

    /// NodePorts 30080/TCP → 8080 and 30053/UDP → 8053 of one family, each served by
    /// `backend` alone (slots `firstSlot` and the next), and `nodeAddress` serving NodePorts.
    private func addRemoteNodePorts(backend: (UInt32, UInt32, UInt32, UInt32), nodeAddress: (UInt32, UInt32, UInt32, UInt32),
                                    firstSlot: UInt32, ipv6: Bool) throws {
        let maps = try KernelLoadBalancerMaps(pinPath: pinPath)
        for (index, proto, port, target) in [(firstSlot, UInt8(IPPROTO_TCP), UInt16(30080), UInt16(8080)),
                                             (firstSlot + 1, UInt8(IPPROTO_UDP), 30053, 8053)] {
            var slot = sl_backend_slot()
            slot.addr = backend
            slot.port = target.bigEndian
            slot.proto = proto
            slot.backend_id = index
            try maps.slots.update(index, slot)
            try addNodePort(port, proto: proto, slot: index, revNat: 10 + index, ipv6: ipv6)
        }
        var nodeKey = sl_node_addr_key()
        nodeKey.addr = nodeAddress
        var nodeValue = sl_node_addr()
        nodeValue.flags = UInt32(SL_NODE_ADDR_F_NODE_PORT.rawValue)
        try datapath.nodeAddresses.update(nodeKey, nodeValue)
    }

    /// NodePort 30080/TCP and 30053/UDP on 192.0.2.1 with the one backend 10.0.0.5, which a
    /// scratch namespace routes via 198.51.100.2 on device snd0 (MTU 1500), an external
    /// device whose SNAT address is 198.51.100.1. The client 198.51.100.7 is on-link there.
    private func withRemoteBackend(_ body: () throws -> Void) throws {
        try addRemoteNodePorts(backend: NodePortDatapath.v4MappedWords("10.0.0.5")!,
                               nodeAddress: NodePortDatapath.v4MappedWords("192.0.2.1")!, firstSlot: 1, ipv6: false)

        let netns = "sndsr\(UInt32.random(in: 0...UInt32.max))"
        try Shell.run(["ip", "netns", "add", netns])
        defer { _ = try? Shell.run(["ip", "netns", "del", netns], allowFailure: true) }
        for argv in [["ip", "link", "set", "lo", "up"], ["ip", "link", "add", "snd0", "type", "veth", "peer", "name", "snd1"],
                     ["ip", "addr", "add", "198.51.100.1/24", "dev", "snd0"], ["ip", "link", "set", "snd1", "up"],
                     ["ip", "link", "set", "snd0", "up"], ["ip", "route", "add", "10.0.0.0/24", "via", "198.51.100.2"],
                     ["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"]] {
            try Shell.run(["ip", "netns", "exec", netns] + argv)
        }
        try NodePortDatapath.inNamespace("/run/netns/" + netns) {
            var device = sl_device()
            device.snat_addr = NodePortDatapath.v4MappedWords("198.51.100.1")!
            device.snat_addr6 = NodePortDatapath.ipv6Words("2001:db8:1::1")!
            try datapath.deviceMap.update(if_nametoindex("snd0"), device)
            try body()
        }
    }

    /// `withRemoteBackend` for IPv6: NodePorts 30080/TCP and 30053/UDP on TestFrame.node6
    /// with backend fd00::5, routed out of snd0 via 2001:db8:1::2.
    private func withRemoteIPv6Backend(_ body: () throws -> Void) throws {
        try addRemoteNodePorts(backend: NodePortDatapath.ipv6Words("fd00::5")!,
                               nodeAddress: NodePortDatapath.ipv6Words("2001:db8::1")!, firstSlot: 3, ipv6: true)
        try withRemoteBackend {
            for argv in [["ip", "addr", "add", "2001:db8:1::1/64", "dev", "snd0", "nodad"],
                         ["ip", "-6", "route", "add", "fd00::/64", "via", "2001:db8:1::2"],
                         ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]] {
                try Shell.run(argv)
            }
            try body()
        }
    }

    func testTheSendingNodeAddsTheOptionToSYNsAndDatagramsThatFitAndSourceNATsWhatCannotUseDSR() throws {
        typealias F = TestFrame
        let tcp = UInt8(IPPROTO_TCP), udp = UInt8(IPPROTO_UDP)
        let syn = F.ethernet(F.ipv4(proto: tcp, F.tcp(dport: 30080)))
        let ack = F.ethernet(F.ipv4(proto: tcp, F.tcp(dport: 30080, flags: 0x10)))
        let small = F.ethernet(F.ipv4(proto: udp, F.udp(sport: 41000, dport: 30053)))
        // 1500 bytes of IPv4: fits the MTU, but not with 8 more.
        let large = F.ethernet(F.ipv4(proto: udp, F.udp(sport: 41001, dport: 30053, payload: Array(repeating: 7, count: 1472))))
        let withOptions = F.ethernet(F.ipv4(proto: tcp, options: [1, 1, 1, 0], F.tcp(sport: 40001, dport: 30080)))
        let fromBehindTheBackend = F.ethernet(F.ipv4(proto: tcp, src: [10, 0, 0, 9], F.tcp(sport: 40002, dport: 30080)))
        try withRemoteBackend {
            let rows: [(String, [UInt8], [String: UInt64], Bool)] = [
                ("SYN of a new flow", syn, ["np_forward_new": 1, "np_dsr_carried": 1], true),
                ("retransmitted SYN", syn, ["np_forward": 1, "np_dsr_carried": 1], true),
                ("ACK of the flow", ack, ["np_forward": 1], false),
                ("first datagram", small, ["np_forward_new": 1, "np_dsr_carried": 1], true),
                ("next datagram", small, ["np_forward": 1, "np_dsr_carried": 1], true),
                ("datagram too large for the option", large, ["np_forward_new": 1, "np_dsr_no_room": 1], false),
                ("SYN with IP options", withOptions, ["np_forward_new": 1, "np_dsr_snat_fallback": 1], false),
                ("SYN from behind the backend's next hop", fromBehindTheBackend,
                 ["np_forward_new": 1, "np_dsr_snat_fallback": 1], false),
            ]
            for (name, frame, counters, carries) in rows {
                let (verdict, out, changed) = try run(frame)
                XCTAssertEqual(verdict, Self.tcActRedirect, "verdict of \(name)")
                XCTAssertEqual(changed, counters, "counters of \(name)")
                let headerLength = Int(out[14] & 0x0f) * 4
                guard out.count >= 14 + headerLength + 4 else { XCTFail("\(name): \(out.count) bytes"); continue }
                let header = Array(out[14..<(14 + headerLength)])
                let input = Array(frame[14...])
                XCTAssertEqual(out.count, frame.count + (carries ? 8 : 0), "length of \(name)")
                XCTAssertEqual(Int(header[2]) << 8 | Int(header[3]), input.count + (carries ? 8 : 0), "total length of \(name)")
                XCTAssertEqual(F.checksum(header), 0, "header checksum of \(name)")
                XCTAssertEqual(header[8], 63, "TTL of \(name)")
                XCTAssertEqual(Array(header[16..<20]), [10, 0, 0, 5], "DNAT of \(name)")
                if carries {
                    XCTAssertEqual(header.count, 28, name)
                    let port = UInt16(frame[14 + 20 + 2]) << 8 | UInt16(frame[14 + 20 + 3])
                    XCTAssertEqual(Array(header[20...]), Self.option(port: port, address: F.node), "option of \(name)")
                    XCTAssertEqual(Array(header[12..<16]), F.client, "no SNAT in \(name)")
                } else if counters["np_dsr_snat_fallback"] != nil {
                    XCTAssertEqual(Array(header[12..<16]), [198, 51, 100, 1], "SNAT in \(name)")
                } else {
                    XCTAssertEqual(header.count, 20, name)
                    XCTAssertEqual(Array(header[12..<16]), F.client, "no SNAT in \(name)")
                }
            }
        }
        XCTAssertEqual(datapath.natPressure().entries, 3 + 2 * 2, "DSR flows keep a FORWARD entry only, SNAT flows both")
    }

    /// The sending side for IPv6: the destination options header goes in after the fixed
    /// header of SYNs and datagrams (next header 60, payload length 24 more, the option
    /// naming the frontend), the packet DNATed with its TCP/UDP checksum still valid; an
    /// ACK goes without, a datagram that would exceed the MTU goes without
    /// (np_dsr_no_room), and a new flow opened by a fragment is source-NATed.
    func testTheSendingNodeAddsTheIPv6CarrierToSYNsAndDatagramsThatFit() throws {
        typealias F = TestFrame
        let tcp = UInt8(IPPROTO_TCP), udp = UInt8(IPPROTO_UDP)
        func v6(_ next: UInt8, _ l4: [UInt8]) -> [UInt8] {
            F.ethernet(type: 0x86dd, F.ipv6(nextHeader: next, next == 44 ? l4 : F.withL4Checksum6(l4, proto: next)))
        }
        let syn = v6(tcp, F.tcp(dport: 30080))
        let ack = v6(tcp, F.tcp(dport: 30080, flags: 0x10))
        let small = v6(udp, F.udp(sport: 41000, dport: 30053))
        // 1500 bytes of IPv6: fits the MTU, but not with 24 more.
        let large = v6(udp, F.udp(sport: 41001, dport: 30053, payload: Array(repeating: 7, count: 1452)))
        let firstFragment = v6(44, [udp, 0, 0, 1, 0, 0, 0, 9] + F.udp(sport: 41002, dport: 30053, length: 3000))
        let backend6: [UInt8] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]
        try withRemoteIPv6Backend {
            let rows: [(String, [UInt8], [String: UInt64], Bool)] = [
                ("SYN of a new flow", syn, ["np_forward_new": 1, "np_dsr_carried": 1], true),
                ("ACK of the flow", ack, ["np_forward": 1], false),
                ("first datagram", small, ["np_forward_new": 1, "np_dsr_carried": 1], true),
                ("next datagram", small, ["np_forward": 1, "np_dsr_carried": 1], true),
                ("datagram too large for the carrier", large, ["np_forward_new": 1, "np_dsr_no_room": 1], false),
                ("first fragment of a new flow", firstFragment,
                 ["np_forward_new": 1, "np_dsr_snat_fallback": 1, "np_fragment_tracked": 1], false),
            ]
            for (name, frame, counters, carries) in rows {
                let (verdict, out, changed) = try run(frame)
                XCTAssertEqual(verdict, Self.tcActRedirect, "verdict of \(name)")
                XCTAssertEqual(changed, counters, "counters of \(name)")
                guard out.count == frame.count + (carries ? 24 : 0) else {
                    XCTFail("length of \(name): \(out.count), sent \(frame.count)")
                    continue
                }
                let header = Array(out[14..<54]), input = Array(frame[14..<54])
                XCTAssertEqual(Int(header[4]) << 8 | Int(header[5]), (Int(input[4]) << 8 | Int(input[5])) + (carries ? 24 : 0),
                               "payload length of \(name)")
                XCTAssertEqual(header[7], 63, "hop limit of \(name)")
                XCTAssertEqual(Array(header[24..<40]), backend6, "DNAT of \(name)")
                if carries {
                    XCTAssertEqual(header[6], 60, "next header of \(name)")
                    let port = UInt16(frame[54 + 2]) << 8 | UInt16(frame[54 + 3])
                    XCTAssertEqual(Array(out[54..<78]), Self.option6(next: frame[20], port: port, address: F.node6), name)
                    XCTAssertEqual(Array(header[8..<24]), F.client6, "no SNAT in \(name)")
                    let l4 = Array(out[78...])
                    XCTAssertEqual(F.withL4Checksum6(l4, proto: frame[20], src: F.client6, dst: backend6), l4, "checksum of \(name)")
                } else if counters["np_dsr_snat_fallback"] != nil {
                    XCTAssertEqual(Array(header[8..<24]), NodePortDatapath.ipv6Words("2001:db8:1::1").map { words in
                        withUnsafeBytes(of: words) { Array($0) }
                    }, "SNAT in \(name)")
                } else {
                    XCTAssertEqual(header[6], frame[20], "next header of \(name)")
                    XCTAssertEqual(Array(header[8..<24]), F.client6, "no SNAT in \(name)")
                }
            }
        }
    }
}
