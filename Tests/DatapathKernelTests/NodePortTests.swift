import CLibBPF
import Controller
@testable import Datapath
import Foundation
import Glibc
import NetLab
import ServiceModel
import XCTest

/// The external-traffic datapath (`bpf/nodeport.c`) on node A of a `NodeLab`, driven
/// through the real controller path (manifests → ProxySyncer → pinned maps). Everything
/// is removed by `tearDown()`, also after a failure: the tc filters with the namespaces,
/// the pins with their directory.
final class NodePortHarness {
    static let tcpNodePort = 30080
    static let udpNodePort = 30053
    static let tcpPort: UInt16 = 8080
    static let udpPort: UInt16 = 8053

    let lab: NodeLab
    let pinPath: String
    let datapath: NodePortDatapath
    let maps: KernelLoadBalancerMaps
    let syncer: ProxySyncer
    let client: ProbeRunner

    init(podsOnA: Int, podsOnB: Int, label: String, snatPorts: ClosedRange<UInt16> = 61000...65535,
         snatReclaimAfterSeconds: Double = 1, acceleration: NodePortOptions.Acceleration = .none,
         icmpErrorLimit: NodePortOptions.ICMPErrorLimit = .init()) throws {
        lab = try NodeLab(podsOnA: podsOnA, podsOnB: podsOnB)
        pinPath = uniquePinPath(label)
        do {
            for pod in lab.podsOnA + lab.podsOnB {
                try lab.startProbeServer(on: pod, tcpPort: Self.tcpPort, udpPort: Self.udpPort)
            }
            var options = NodePortOptions(
                pinPath: pinPath, devices: [lab.externalDevice, lab.interNodeDevice], acceleration: acceleration,
                snatPorts: snatPorts, snatReclaimAfterSeconds: snatReclaimAfterSeconds,
                networkNamespace: "/run/netns/" + lab.nodeA.netns)
            options.icmpErrorLimit = icmpErrorLimit
            datapath = try NodePortDatapath.install(options, logger: testLogger)
            if acceleration != .none {
                // The veth peers stand for the client's and node B's NICs, which deliver
                // complete checksums (NodeLab.sendCompleteChecksums).
                try lab.sendCompleteChecksums()
            }
            if acceleration == .native {
                // A veth takes natively redirected frames only if its peer runs XDP.
                try datapath.attachXDPPass(device: lab.clientDevice, networkNamespace: "/run/netns/" + lab.clientNetns)
                try datapath.attachXDPPass(device: lab.nodeBDevice, networkNamespace: "/run/netns/" + lab.nodeB.netns)
            }
            maps = try KernelLoadBalancerMaps(pinPath: pinPath)
            syncer = try ProxySyncer(nodeName: "node-a", maps: maps, logger: testLogger)
            client = lab.clientProbe()
        } catch {
            lab.teardown()
            SocketLoadBalancer.uninstall(pinPath: pinPath)
            throw error
        }
    }

    func tearDown() {
        lab.teardown()
        SocketLoadBalancer.uninstall(pinPath: pinPath)
    }

    /// Programs exactly the objects in `yaml`.
    func apply(_ yaml: String) throws {
        let objects = try ManifestDecoder.decode(Data(yaml.utf8), source: "test.yaml")
        let report = syncer.sync(objects)
        XCTAssertEqual(report.failures, [], "sync failures")
    }

    /// A NodePort Service `web` (TCP 80 → 8080 on node port 30080, UDP 53 → 8053 on
    /// 30053) with `pods` as ready endpoints; with `ipv6` a single-stack IPv6 Service with
    /// the pods' IPv6 addresses.
    func webService(pods: [NodeLabPod], externalIPs: [String] = [], extra: String = "", udpTargetPort: UInt16 = udpPort,
                    loadBalancerIPs: [String] = [], ipv6: Bool = false) -> String {
        let endpoints = pods.map { pod in
            "  - addresses: [\"\(ipv6 ? pod.ipv6 : pod.ipv4)\"]\n    conditions: {ready: true}\n    nodeName: \(pod.name.hasPrefix("a") ? "node-a" : "node-b")"
        }.joined(separator: "\n")
        let (clusterIP, family) = ipv6 ? ("fd00:96::10", "IPv6") : ("10.96.0.10", "IPv4")
        return """
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: default}
            spec:
              type: \(loadBalancerIPs.isEmpty ? "NodePort" : "LoadBalancer")
              clusterIP: \(clusterIP)
              clusterIPs: [\(clusterIP)]
              ipFamilies: [\(family)]
              externalIPs: [\(externalIPs.joined(separator: ", "))]
            \(extra)
              ports:
              - {name: http, port: 80, protocol: TCP, nodePort: \(Self.tcpNodePort)}
              - {name: dns, port: 53, protocol: UDP, nodePort: \(Self.udpNodePort)}
            status:
              loadBalancer:
                ingress: [\(loadBalancerIPs.map { "{ip: \($0)}" }.joined(separator: ", "))]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: web-\(family.lowercased())
              namespace: default
              labels: {kubernetes.io/service-name: web}
            addressType: \(family)
            endpoints:
            \(pods.isEmpty ? "  []" : endpoints)
            ports:
              - {name: http, port: \(Self.tcpPort), protocol: TCP}
              - {name: dns, port: \(udpTargetPort), protocol: UDP}

            """
    }

    var tcpTarget: String { "\(lab.externalIPv4):\(Self.tcpNodePort)" }
    var udpTarget: String { "\(lab.externalIPv4):\(Self.udpNodePort)" }
    var tcpTarget6: String { "[\(lab.externalIPv6)]:\(Self.tcpNodePort)" }
    var udpTarget6: String { "[\(lab.externalIPv6)]:\(Self.udpNodePort)" }
}

/// Real connections from an external client namespace to node A's NodePorts and
/// externalIPs, served by pods on node A (local) and node B (remote).
///
/// The tests of the matrix run through `inEveryMode`: once with tc alone, then with XDP
/// in front of it in generic and in native mode, each on a fresh lab, with the same
/// assertions (failures name the mode).
final class NodePortTests: XCTestCase {
    var harness: NodePortHarness!
    private var mode: NodePortOptions.Acceleration = .none

    override func tearDown() {
        harness?.tearDown()
        harness = nil
    }

    override func recordFailure(withDescription description: String, inFile filePath: String, atLine lineNumber: Int,
                                expected: Bool) {
        super.recordFailure(withDescription: "[acceleration \(mode.rawValue)] " + description, inFile: filePath,
                            atLine: lineNumber, expected: expected)
    }

    func makeHarness(podsOnA: Int, podsOnB: Int, snatPorts: ClosedRange<UInt16> = 61000...65535,
                             snatReclaimAfterSeconds: Double = 1,
                             acceleration: NodePortOptions.Acceleration = .none,
                             icmpErrorLimit: NodePortOptions.ICMPErrorLimit = .init()) throws -> NodePortHarness {
        try requireKernelBPF()
        mode = acceleration
        harness = try NodePortHarness(podsOnA: podsOnA, podsOnB: podsOnB, label: "np" + name.filter { $0.isLetter }.suffix(14),
                                      snatPorts: snatPorts, snatReclaimAfterSeconds: snatReclaimAfterSeconds,
                                      acceleration: acceleration, icmpErrorLimit: icmpErrorLimit)
        return harness
    }

    /// Runs `body` on a fresh harness for tc alone and for XDP generic and native in front
    /// of it: the same flows must give the same results.
    func inEveryMode(podsOnA: Int, podsOnB: Int, _ body: (NodePortHarness) throws -> Void) throws {
        for acceleration in NodePortOptions.Acceleration.allCases {
            let h = try makeHarness(podsOnA: podsOnA, podsOnB: podsOnB, acceleration: acceleration)
            defer {
                h.tearDown()
                harness = nil
            }
            try body(h)
        }
    }

    /// With XDP, that it took the fast path (`redirected`) or left everything to tc.
    func assertXDPShare(_ h: NodePortHarness, redirected: Bool, file: StaticString = #filePath, line: UInt = #line) {
        guard h.datapath.options.acceleration != .none else { return }
        let counters = h.datapath.outcomeCounters()
        if redirected {
            XCTAssertGreaterThan(counters["np_xdp_redirect"] ?? 0, 0, "XDP forwards these flows itself: \(counters)",
                                 file: file, line: line)
        } else {
            XCTAssertEqual(counters["np_xdp_redirect"], 0, "XDP hands these flows to tc", file: file, line: line)
            XCTAssertGreaterThan(counters["np_xdp_pass_to_tc"] ?? 0, 0, file: file, line: line)
        }
    }

    func testANodePortReachesALocalPodWhichSeesTheClientAddress() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 0) { h in
            try h.apply(h.webService(pods: h.lab.podsOnA))
            let report = try h.client.tcp(target: h.tcpTarget, count: 20)
            XCTAssertEqual(report.ok, 20, "failures: \(report.failures) \(report.firstError ?? "")")
            XCTAssertEqual(report.backends, ["a1": 20])
            XCTAssertEqual(report.peerNameMismatches, 0, "the client must see replies from nodeIP:nodePort")
            // A local backend is reached without SNAT: the pod sees the client itself.
            XCTAssertEqual(report.seenClientAddresses, [h.lab.clientIPv4])
            let counters = h.datapath.outcomeCounters()
            XCTAssertEqual(counters["np_forward_new"], 20, "\(counters)")
            XCTAssertGreaterThanOrEqual(counters["np_reply"] ?? 0, 20, "every connection's replies were translated back")
            assertXDPShare(h, redirected: false)
        }
    }

    func testANodePortReachesARemotePodThroughSNATToTheNodeAddress() throws {
        try inEveryMode(podsOnA: 0, podsOnB: 2) { h in
            try h.apply(h.webService(pods: h.lab.podsOnB))
            let report = try h.client.tcp(target: h.tcpTarget, count: 40)
            XCTAssertEqual(report.ok, 40, "failures: \(report.failures) \(report.firstError ?? "")")
            XCTAssertEqual(Set(report.backends.keys), ["b1", "b2"], "both remote pods are chosen: \(report.backends)")
            XCTAssertEqual(report.peerNameMismatches, 0)
            // Source-NATed to node A's address on the device towards the backend.
            XCTAssertEqual(report.seenClientAddresses, [h.lab.nodeAIPv4])
            let pressure = h.datapath.natPressure()
            XCTAssertGreaterThanOrEqual(pressure.entries, 2, "each flow holds a FORWARD and a REPLY entry")
            XCTAssertEqual(pressure.capacity, UInt32(SL_DEFAULT_NAT_MAX))
            assertXDPShare(h, redirected: true)
        }
    }

    func testUDPNodePortRepliesComeFromTheNodePortWhicheverNodeServes() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB))
            let report = try h.client.udp(target: h.udpTarget, count: 60)
            XCTAssertEqual(report.ok, 60, "errors: \(report.errors) timeouts: \(report.timeouts)")
            XCTAssertEqual(report.replySourceMismatches, 0, "recvfrom() must show nodeIP:30053")
            XCTAssertEqual(Set(report.backends.keys), ["a1", "b1"], "\(report.backends)")
            XCTAssertEqual(Set(report.seenClientAddresses), [h.lab.clientIPv4, h.lab.nodeAIPv4])
            assertXDPShare(h, redirected: true)
        }
    }

    func testANodePortWithoutEndpointsIsRefusedAtTheClient() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 0) { h in
            try h.apply(h.webService(pods: []))
            let report = try h.client.tcp(target: h.tcpTarget, count: 5)
            XCTAssertEqual(report.failures, ["ECONNREFUSED": 5], "\(report.firstError ?? "")")
            XCTAssertEqual(h.datapath.outcomeCounters()["np_reject"], 5)
            assertXDPShare(h, redirected: false)
        }
    }

    /// 30 connections to `address`:80 reach the pods of both nodes, with replies from
    /// `address`:80.
    private func assertServedByBothNodes(_ h: NodePortHarness, at address: String, file: StaticString = #filePath,
                                         line: UInt = #line) throws {
        let report = try h.client.tcp(target: "\(address):80", count: 30)
        XCTAssertEqual(report.ok, 30, "failures: \(report.failures) \(report.firstError ?? "")", file: file, line: line)
        XCTAssertEqual(Set(report.backends.keys), ["a1", "b1"], "\(report.backends)", file: file, line: line)
        XCTAssertEqual(report.peerNameMismatches, 0, "replies must come from \(address):80", file: file, line: line)
        assertXDPShare(h, redirected: true, file: file, line: line)
    }

    func testAnExternalIPIsServedOnNodeA() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            let externalIP = h.lab.serviceIPv4(10)
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB, externalIPs: [externalIP]))
            try assertServedByBothNodes(h, at: externalIP)
        }
    }

    func testALoadBalancerVIPIsServedOnNodeA() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            let vip = h.lab.serviceIPv4(20)
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB, loadBalancerIPs: [vip]))
            try assertServedByBothNodes(h, at: vip)
        }
    }

    func testSourceRangesDropClientsOutsideThemOnTheVIPButNotOnTheNodePort() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            let vip = h.lab.serviceIPv4(20)
            let ranges = "  loadBalancerSourceRanges: [\"203.0.113.0/24\"]"
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB, extra: ranges, loadBalancerIPs: [vip]))
            let denied = try h.client.tcp(target: "\(vip):80", count: 3, connectTimeoutMs: 300)
            XCTAssertEqual(denied.failures, ["ETIMEDOUT": 3], "dropped, not refused: \(denied.failures)")
            let udpDenied = try h.client.udp(target: "\(vip):53", count: 2)
            XCTAssertEqual(udpDenied.ok, 0)
            XCTAssertGreaterThanOrEqual(h.datapath.outcomeCounters()["np_source_range_denied"] ?? 0, 5)
            XCTAssertEqual(h.datapath.outcomeCounters()["np_forward_new"], 0)
            // The Service's NodePort is not subject to the ranges (A.9).
            let nodePort = try h.client.tcp(target: h.tcpTarget, count: 10)
            XCTAssertEqual(nodePort.ok, 10, "failures: \(nodePort.failures) \(nodePort.firstError ?? "")")
        }
    }

    func testSourceRangesServeClientsInsideThem() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            let vip = h.lab.serviceIPv4(20)
            let ranges = "  loadBalancerSourceRanges: [\"203.0.113.0/24\", \"\(h.lab.clientIPv4)/32\"]"
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB, extra: ranges, loadBalancerIPs: [vip]))
            let report = try h.client.tcp(target: "\(vip):80", count: 20)
            XCTAssertEqual(report.ok, 20, "failures: \(report.failures) \(report.firstError ?? "")")
            XCTAssertEqual(Set(report.backends.keys), ["a1", "b1"], "\(report.backends)")
            XCTAssertEqual(try h.client.udp(target: "\(vip):53", count: 10).ok, 10)
            XCTAssertEqual(h.datapath.outcomeCounters()["np_source_range_denied"], 0)
            // Dropping the client's range closes the VIP to it.
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB, extra: "  loadBalancerSourceRanges: [\"203.0.113.0/24\"]",
                                     loadBalancerIPs: [vip]))
            XCTAssertEqual(try h.client.tcp(target: "\(vip):80", count: 2, connectTimeoutMs: 300).failures, ["ETIMEDOUT": 2])
            assertXDPShare(h, redirected: true)
        }
    }

    func testInstallingAgainReplacesTheProgramsInPlace() throws {
        let h = try makeHarness(podsOnA: 1, podsOnB: 0)
        XCTAssertEqual(Set(h.datapath.outcomes.values), [.attached])
        let again = try NodePortDatapath.install(h.datapath.options, logger: testLogger)
        XCTAssertEqual(again.outcomes.count, 4)
        XCTAssertEqual(Set(again.outcomes.values), [.replaced])
        try h.apply(h.webService(pods: h.lab.podsOnA))
        XCTAssertEqual(try h.client.tcp(target: h.tcpTarget, count: 5).ok, 5)
        let removed = NodePortDatapath.uninstall(devices: [h.lab.externalDevice, h.lab.interNodeDevice],
                                                 networkNamespace: h.datapath.options.networkNamespace)
        XCTAssertEqual(removed.count, 4)
        // Without the datapath node A has nothing listening on the NodePort.
        XCTAssertEqual(try h.client.tcp(target: h.tcpTarget, count: 2).failures, ["ECONNREFUSED": 2])
    }

    func testXDPLinksArePinnedReplacedInPlaceSwitchedBetweenModesAndRemovedByUninstall() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 1, acceleration: .generic)
        let (external, interNode) = (h.lab.externalDevice, h.lab.interNodeDevice)
        let links = SocketLoadBalancer.linkDirectory(pinPath: h.pinPath)
        func pinned() -> Set<String> {
            Set(((try? FileManager.default.contentsOfDirectory(atPath: links)) ?? []).filter { $0.hasPrefix("xdp_") })
        }
        func xdpShown() -> String {
            (try? h.lab.exec(["ip", "link", "show", "dev", external], netns: h.lab.nodeA.netns).stdout) ?? "(ip failed)"
        }
        XCTAssertEqual(h.datapath.outcomes["\(external)/xdp"], .attached)
        XCTAssertEqual(pinned(), ["xdp_\(external)_generic", "xdp_\(interNode)_generic"])
        XCTAssertTrue(xdpShown().contains("xdpgeneric"), xdpShown())

        let again = try NodePortDatapath.install(h.datapath.options, logger: testLogger)
        XCTAssertEqual(again.outcomes.count, 6)
        XCTAssertEqual(Set(again.outcomes.values), [.replaced], "tc filters and XDP links replaced in place")
        try h.apply(h.webService(pods: h.lab.podsOnB))
        XCTAssertEqual(try h.client.tcp(target: h.tcpTarget, count: 5).ok, 5)
        XCTAssertGreaterThan(again.outcomeCounters()["np_xdp_redirect"] ?? 0, 0)

        // Another mode cannot be switched in place: the generic links go, native ones come.
        var native = h.datapath.options
        native.acceleration = .native
        let switched = try NodePortDatapath.install(native, logger: testLogger)
        try h.lab.sendCompleteChecksums()
        try switched.attachXDPPass(device: h.lab.clientDevice, networkNamespace: "/run/netns/" + h.lab.clientNetns)
        try switched.attachXDPPass(device: h.lab.nodeBDevice, networkNamespace: "/run/netns/" + h.lab.nodeB.netns)
        XCTAssertEqual(switched.outcomes["\(external)/xdp"], .attached)
        XCTAssertEqual(pinned(), ["xdp_\(external)_native", "xdp_\(interNode)_native"])
        XCTAssertEqual(try h.client.tcp(target: h.tcpTarget, count: 5).ok, 5)

        // Back to none: the links are removed, tc alone serves.
        var none = h.datapath.options
        none.acceleration = .none
        let plain = try NodePortDatapath.install(none, logger: testLogger)
        XCTAssertNil(plain.outcomes["\(external)/xdp"])
        XCTAssertEqual(pinned(), [])
        XCTAssertEqual(try h.client.tcp(target: h.tcpTarget, count: 5).ok, 5)

        _ = try NodePortDatapath.install(native, logger: testLogger)
        let removed = NodePortDatapath.uninstall(devices: [external, interNode], networkNamespace: h.datapath.options.networkNamespace,
                                                 pinPath: h.pinPath)
        XCTAssertEqual(Set(removed), Set([external, interNode].flatMap { ["\($0)/ingress", "\($0)/egress", "\($0)/xdp"] }))
        XCTAssertEqual(pinned(), [])
        XCTAssertFalse(xdpShown().contains(" xdp"), "detached at once: \(xdpShown())")
        XCTAssertEqual(try h.client.tcp(target: h.tcpTarget, count: 2).failures, ["ECONNREFUSED": 2])
    }

    func testExternalTrafficPolicyLocalKeepsTheClientAddressAndUsesOnlyLocalPods() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB, extra: "  externalTrafficPolicy: Local"))
            let report = try h.client.tcp(target: h.tcpTarget, count: 20)
            XCTAssertEqual(report.ok, 20, "failures: \(report.failures) \(report.firstError ?? "")")
            XCTAssertEqual(report.backends, ["a1": 20], "only node A's own pod serves external traffic")
            XCTAssertEqual(report.seenClientAddresses, [h.lab.clientIPv4], "eTP=Local preserves the client address")
            assertXDPShare(h, redirected: false)
        }
    }

    func testExternalTrafficPolicyLocalWithoutALocalPodDropsExternalTraffic() throws {
        try inEveryMode(podsOnA: 0, podsOnB: 1) { h in
            try h.apply(h.webService(pods: h.lab.podsOnB, extra: "  externalTrafficPolicy: Local"))
            let report = try h.client.tcp(target: h.tcpTarget, count: 3, connectTimeoutMs: 300)
            XCTAssertEqual(report.ok, 0)
            XCTAssertEqual(report.failures, ["ETIMEDOUT": 3], "dropped, not refused: \(report.failures)")
            XCTAssertGreaterThanOrEqual(h.datapath.outcomeCounters()["np_drop"] ?? 0, 3)
            XCTAssertEqual(h.datapath.outcomeCounters()["np_forward_new"], 0)
        }
    }

    func testTCPConnectionsOutliveAChangeOfTheBackendSet() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 2) { h in
            let (a1, b1, b2) = (h.lab.podsOnA[0], h.lab.podsOnB[0], h.lab.podsOnB[1])
            try h.apply(h.webService(pods: [a1, b1]))
            let hold = try h.client.startHold(target: h.tcpTarget, connections: 20)
            XCTAssertEqual(hold.established.established, 20, "\(hold.established.failures)")
            XCTAssertEqual(Set(hold.established.backends.keys), ["a1", "b1"], "held flows cover a local and a source-NATed backend")
            // Both held backends leave the set (their pods keep running); b2 joins.
            try h.apply(h.webService(pods: [b2]))
            let after = try h.client.tcp(target: h.tcpTarget, count: 10)
            XCTAssertEqual(after.backends, ["b2": 10], "new connections use the new set")
            let final = try hold.finish()
            XCTAssertEqual(final.survived, 20, "held connections keep their backend: lost \(final.lost ?? [:])")
            XCTAssertEqual(final.survivedBackends, hold.established.backends)
            assertXDPShare(h, redirected: true)
        }
    }

    func testConntrackGarbageCollectionRemovesIdleFlowsByTheirTimeoutAndSparesLiveOnes() throws {
        let h = try makeHarness(podsOnA: 1, podsOnB: 1)
        try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB))
        let hold = try h.client.startHold(target: h.tcpTarget, connections: 5)
        XCTAssertEqual(hold.established.established, 5)
        XCTAssertEqual(try h.client.tcp(target: h.tcpTarget, count: 10).ok, 10)  // closed with FIN
        XCTAssertEqual(try h.client.udp(target: h.udpTarget, count: 10).ok, 10)
        XCTAssertEqual(h.datapath.natPressure().entries, 2 * (5 + 10 + 10), "a FORWARD and a REPLY entry per flow")

        let start = NodePortDatapath.monotonicNanoseconds()
        let timeouts = NodePortDatapath.ConntrackTimeouts(tcp: 3600, tcpClosing: 10, udp: 60)
        let early = h.datapath.collectGarbage(timeouts: timeouts, now: start + 5_000_000_000)
        XCTAssertEqual(early.removed, 0, "nothing is idle for 5 s yet")
        let closed = h.datapath.collectGarbage(timeouts: timeouts, now: start + 30_000_000_000)
        XCTAssertEqual(closed.removed, 20, "closed TCP flows go after 10 s")
        let udp = h.datapath.collectGarbage(timeouts: timeouts, now: start + 61_000_000_000)
        XCTAssertEqual(udp.removed, 20, "UDP flows go after 60 s")
        XCTAssertEqual(udp.remaining, 10, "the held connections stay")
        XCTAssertEqual(udp.capacity, UInt32(SL_DEFAULT_NAT_MAX))
        let final = try hold.finish()
        XCTAssertEqual(final.survived, 5, "lost \(final.lost ?? [:])")
        XCTAssertEqual(h.datapath.collectGarbage(timeouts: timeouts, now: start + 3_700_000_000_000).remaining, 0,
                       "idle established flows go after the TCP timeout")
    }

    func testClientIPAffinitySendsEveryConnectionOfAClientToOneBackend() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 2) { h in
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB,
                                     extra: "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}"))
            let report = try h.client.tcp(target: h.tcpTarget, count: 20)
            XCTAssertEqual(report.ok, 20, "failures: \(report.failures) \(report.firstError ?? "")")
            // Without affinity, 20 uniform choices among 3 pods all agree with probability 3⁻¹⁹.
            XCTAssertEqual(report.backends.count, 1, "one backend for the client: \(report.backends)")
            let counters = h.datapath.outcomeCounters()
            XCTAssertEqual(counters["np_affinity_new"], 1)
            XCTAssertEqual(counters["np_affinity_hit"], 19)
        }
    }

    func testAnICMPErrorFromARemotePodReachesTheClientThroughTheSNAT() throws {
        try inEveryMode(podsOnA: 0, podsOnB: 1) { h in
            // Nothing listens on UDP 8054 in the pod: it answers with ICMP port unreachable,
            // addressed to node A's SNAT address and port.
            try h.apply(h.webService(pods: h.lab.podsOnB, udpTargetPort: 8054))
            let report = try h.client.udp(target: h.udpTarget, count: 3, connected: true)
            XCTAssertEqual(report.errors, ["ECONNREFUSED": 3], "timeouts: \(report.timeouts)")
            XCTAssertEqual(h.datapath.outcomeCounters()["np_icmp_error_reply"], 3)
        }
    }

    func testAPodOnNodeBReachesNodeAsNodePortEvenWhenItIsTheChosenBackend() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 1)
        let b1 = h.lab.podsOnB[0]
        try h.apply(h.webService(pods: [b1]))
        // Hairpin: b1 -> node A's NodePort -> b1. The SNAT makes b1 answer node A, not itself.
        let fromPod = ProbeRunner(netns: b1.netns, cgroup: nil)
        let report = try fromPod.tcp(target: "\(h.lab.nodeAIPv4):\(NodePortHarness.tcpNodePort)", count: 10)
        XCTAssertEqual(report.ok, 10, "failures: \(report.failures) \(report.firstError ?? "")")
        XCTAssertEqual(report.backends, ["b1": 10])
        XCTAssertEqual(report.seenClientAddresses, [h.lab.nodeAIPv4])
        XCTAssertEqual(report.peerNameMismatches, 0)
    }

    func testClosedFlowsGiveTheirSNATPortToNewFlowsAndOpenOnesKeepIt() throws {
        // Two SNAT ports for many connections to one remote backend; a closed flow's port
        // may be taken over once it has been idle 50 ms (the connections are paced 100 ms
        // apart; a port is never taken from a flow still finishing its close).
        let h = try makeHarness(podsOnA: 0, podsOnB: 1, snatPorts: 61000...61001, snatReclaimAfterSeconds: 0.05)
        try h.apply(h.webService(pods: h.lab.podsOnB))
        let report = try h.client.tcp(target: h.tcpTarget, count: 20, intervalMs: 100)
        XCTAssertEqual(report.ok, 20, "failures: \(report.failures) \(report.firstError ?? "")")
        XCTAssertGreaterThanOrEqual(h.datapath.outcomeCounters()["np_snat_port_reclaimed"] ?? 0, 18)
        // Two open connections hold both ports (a SYN finding none is dropped and
        // retransmitted, hence the longer connect timeout); a third finds none.
        let hold = try h.client.startHold(target: h.tcpTarget, connections: 2, connectTimeoutMs: 5000)
        XCTAssertEqual(hold.established.established, 2, "\(hold.established.failures)")
        let exhaustedBefore = h.datapath.outcomeCounters()["np_ports_exhausted"] ?? 0
        let third = try h.client.tcp(target: h.tcpTarget, count: 1, connectTimeoutMs: 300)
        XCTAssertEqual(third.ok, 0)
        XCTAssertGreaterThan(h.datapath.outcomeCounters()["np_ports_exhausted"] ?? 0, exhaustedBefore)
        let final = try hold.finish()
        XCTAssertEqual(final.survived, 2, "open flows keep their ports: lost \(final.lost ?? [:])")
    }
}
