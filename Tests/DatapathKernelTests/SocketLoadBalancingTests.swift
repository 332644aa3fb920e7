import Controller
import Datapath
import Foundation
import Glibc
import NetLab
import ServiceModel
import XCTest

/// Real sockets through real cgroup hooks: a client in the lab's cgroup and client
/// namespace (which has no route to the service range, so an untranslated connect fails
/// locally with ENETUNREACH) talks to ClusterIPs served by probe servers in backend
/// namespaces.
final class SocketLoadBalancingTests: XCTestCase {
    var harness: SocketLBHarness!

    override func setUpWithError() throws {
        try requireKernelBPF()
        harness = try SocketLBHarness(label: name.filter { $0.isLetter }.suffix(20).description)
    }

    override func tearDown() {
        harness?.tearDown()
        harness = nil
    }

    private var lab: ClusterLab { harness.lab }

    private func webService(vip: String) -> String {
        LabManifests.documents(
            LabManifests.service(name: "web", clusterIPs: [vip]),
            LabManifests.slice(service: "web", addresses: lab.backends.map(\.ipv4)))
    }

    func testTCPConnectionsToAClusterIPReachEveryBackendInFairShares() throws {
        let vip = lab.vipIPv4(10)
        try harness.apply(webService(vip: vip))
        let report = try harness.probe.tcp(target: harness.ipv4Target(vip), count: 300)
        XCTAssertEqual(report.ok, 300, "failures: \(report.failures) \(report.firstError ?? "")")
        XCTAssertEqual(Set(report.backends.keys), Set(lab.backends.map(\.name)))
        // Uniform choice: 100 expected per backend, σ ≈ 8.2; ±40 is about 5σ, so a fair
        // picker fails this less than once in a million runs while a skewed one fails.
        for (backend, count) in report.backends {
            XCTAssertTrue((60...140).contains(count), "\(backend) got \(count) of 300: \(report.backends)")
        }
        XCTAssertEqual(report.peerNameMismatches, 0, "getpeername() must return the ClusterIP")
        let counters = harness.datapath.maps.outcomeCounters()
        XCTAssertGreaterThanOrEqual(counters["sock_forward"] ?? 0, 300)
        XCTAssertGreaterThanOrEqual(counters["sock_peer_rewritten"] ?? 0, 300)
    }

    func testGetpeernameOnAConnectedSocketReturnsTheClusterIP() throws {
        let vip = lab.vipIPv4(11)
        try harness.apply(webService(vip: vip))
        let report = try harness.probe.tcp(target: harness.ipv4Target(vip), count: 20)
        XCTAssertEqual(report.ok, 20)
        XCTAssertEqual(report.peerNameMismatches, 0)
        // The backend saw the client's own address: no SNAT on the socket path.
        XCTAssertEqual(report.seenClientAddresses, [lab.clientIPv4])
    }

    func testUDPRepliesThroughAClusterIPComeFromTheClusterIP() throws {
        let vip = lab.vipIPv4(12)
        try harness.apply(webService(vip: vip))
        let target = harness.ipv4Target(vip, port: 53)
        let unconnected = try harness.probe.udp(target: target, count: 60, connected: false)
        XCTAssertEqual(unconnected.ok, 60, "errors: \(unconnected.errors) timeouts: \(unconnected.timeouts)")
        XCTAssertEqual(unconnected.replySourceMismatches, 0, "recvfrom() must show VIP:53 as the source")
        XCTAssertEqual(Set(unconnected.backends.keys), Set(lab.backends.map(\.name)))
        let connected = try harness.probe.udp(target: target, count: 30, connected: true)
        XCTAssertEqual(connected.ok, 30, "errors: \(connected.errors) timeouts: \(connected.timeouts)")
        XCTAssertEqual(connected.peerNameMismatches, 0, "getpeername() on a connected UDP socket must show VIP:53")
        XCTAssertEqual(connected.replySourceMismatches, 0)
        XCTAssertGreaterThan(harness.datapath.maps.outcomeCounters()["sock_reply_rewritten"] ?? 0, 0)
    }

    func testDigResolvesThroughAClusterIPInFrontOfDnsmasq() throws {
        let vip = lab.vipIPv4(13)
        let dnsBackend = lab.backends[0]
        let dnsmasq = try Dnsmasq.start(netns: dnsBackend.netns, listen: [dnsBackend.ipv4],
                                        records: ["web.demo.swiftlane.test": "198.18.200.7"])
        defer { dnsmasq.stop() }
        try harness.apply(LabManifests.documents(
            LabManifests.service(name: "dns", clusterIPs: [vip], ports: [("dns", 53, "UDP")]),
            LabManifests.slice(service: "dns", addresses: [dnsBackend.ipv4], udpPort: 53)))
        let answers = try Dig.query(netns: lab.clientNetns, cgroup: lab.clientCgroup.path, server: vip,
                                    name: "web.demo.swiftlane.test")
        XCTAssertEqual(answers, ["198.18.200.7"])
    }

    func testAServiceWithoutEndpointsRefusesConnectionsAtOnce() throws {
        let vip = lab.vipIPv4(14)
        try harness.apply(LabManifests.documents(
            LabManifests.service(name: "empty", clusterIPs: [vip]),
            LabManifests.slice(service: "empty", addresses: [])))
        let report = try harness.probe.tcp(target: harness.ipv4Target(vip), count: 10, connectTimeoutMs: 3000)
        // Without the hook the client would get ENETUNREACH (no route); a SYN sent
        // somewhere would time out. ECONNREFUSED can only come from the hook refusing.
        XCTAssertEqual(report.failures, ["ECONNREFUSED": 10], "\(report)")
        let udp = try harness.probe.udp(target: harness.ipv4Target(vip, port: 53), count: 5, connected: false)
        XCTAssertEqual(udp.errors["ECONNREFUSED"], 5, "sendto() to a service without endpoints: \(udp)")
        XCTAssertGreaterThanOrEqual(harness.datapath.maps.outcomeCounters()["sock_reject"] ?? 0, 15)
    }

    func testRemovingAServiceStopsTranslation() throws {
        let vip = lab.vipIPv4(15)
        try harness.apply(webService(vip: vip))
        XCTAssertEqual(try harness.probe.tcp(target: harness.ipv4Target(vip), count: 5).ok, 5)
        try harness.apply(LabManifests.slice(service: "unrelated", addresses: []))
        let after = try harness.probe.tcp(target: harness.ipv4Target(vip), count: 5)
        XCTAssertEqual(after.failures, ["ENETUNREACH": 5], "the client namespace has no route: only translation reached the VIP")
        XCTAssertTrue(try harness.datapath.maps.readState().masters.isEmpty)
    }

    func testChangingBackendsAffectsNewConnectionsWhileEstablishedOnesKeepWorking() throws {
        let vip = lab.vipIPv4(16)
        try harness.apply(webService(vip: vip))
        let held = try harness.probe.startHold(target: harness.ipv4Target(vip), connections: 12)
        XCTAssertEqual(held.established.established, 12)
        let last = lab.backends[2]
        try harness.apply(LabManifests.documents(
            LabManifests.service(name: "web", clusterIPs: [vip]),
            LabManifests.slice(service: "web", addresses: [last.ipv4])))
        let fresh = try harness.probe.tcp(target: harness.ipv4Target(vip), count: 30)
        XCTAssertEqual(fresh.backends, [last.name: 30], "new connections use only the new backend set")
        let final = try held.finish()
        XCTAssertEqual(final.survived, 12, "established connections keep working: \(final)")
    }

    func testIPv6ClusterIPServesTCPAndUDP() throws {
        let vip = lab.vipIPv6(20)
        try harness.apply(LabManifests.documents(
            LabManifests.service(name: "web6", clusterIPs: [vip], families: ["IPv6"]),
            LabManifests.slice(service: "web6", family: "IPv6", addresses: lab.backends.map(\.ipv6))))
        let tcp = try harness.probe.tcp(target: harness.ipv6Target(vip), count: 60)
        XCTAssertEqual(tcp.ok, 60, "\(tcp.failures) \(tcp.firstError ?? "")")
        XCTAssertEqual(Set(tcp.backends.keys), Set(lab.backends.map(\.name)))
        XCTAssertEqual(tcp.peerNameMismatches, 0)
        let udp = try harness.probe.udp(target: harness.ipv6Target(vip, port: 53), count: 30, connected: false)
        XCTAssertEqual(udp.ok, 30, "\(udp.errors)")
        XCTAssertEqual(udp.replySourceMismatches, 0)
    }

    func testADualStackServiceServesBothFamilies() throws {
        let vip4 = lab.vipIPv4(21), vip6 = lab.vipIPv6(21)
        try harness.apply(LabManifests.documents(
            LabManifests.service(name: "dual", clusterIPs: [vip4, vip6], families: ["IPv4", "IPv6"]),
            LabManifests.slice(service: "dual", family: "IPv4", addresses: lab.backends.map(\.ipv4)),
            LabManifests.slice(service: "dual", family: "IPv6", addresses: [lab.backends[0].ipv6])))
        XCTAssertEqual(try harness.probe.tcp(target: harness.ipv4Target(vip4), count: 30).ok, 30)
        let v6 = try harness.probe.tcp(target: harness.ipv6Target(vip6), count: 10)
        XCTAssertEqual(v6.backends, [lab.backends[0].name: 10])
    }

    func testEndpointsFromSeveralSlicesWithNamedPortsAreUnioned() throws {
        let vip = lab.vipIPv4(22)
        // Two slices of one service whose pods expose the named port on different numbers.
        try lab.startProbeServer(on: lab.backends[2], tcpPort: 9090, udpPort: 9053)
        try harness.apply(LabManifests.documents(
            LabManifests.service(name: "multi", clusterIPs: [vip]),
            LabManifests.slice(service: "multi", name: "multi-a", addresses: [lab.backends[0].ipv4, lab.backends[1].ipv4]),
            LabManifests.slice(service: "multi", name: "multi-b", addresses: [lab.backends[2].ipv4], tcpPort: 9090, udpPort: 9053)))
        let report = try harness.probe.tcp(target: harness.ipv4Target(vip), count: 90)
        XCTAssertEqual(report.ok, 90)
        XCTAssertEqual(Set(report.backends.keys), Set(lab.backends.map(\.name)))
    }

    func testFlippingTheBackendSetAThousandTimesUnderLoadFailsNoConnection() throws {
        let vip = lab.vipIPv4(23)
        let setA = [lab.backends[0], lab.backends[1]], setB = [lab.backends[2]]
        func objects(_ set: [LabBackend]) throws -> ManifestObjects {
            try ManifestDecoder.decode(Data(LabManifests.documents(
                LabManifests.service(name: "flip", clusterIPs: [vip]),
                LabManifests.slice(service: "flip", addresses: set.map(\.ipv4))).utf8), source: "flip.yaml")
        }
        let (a, b) = (try objects(setA), try objects(setB))
        harness.syncer.sync(a)
        let client = try LabProcess.start(
            argv: harness.probe.command(["tcp", "--target", "\(vip):80", "--count", "1000000", "--duration-seconds", "10"]),
            netns: lab.clientNetns)
        defer { client.stop() }
        Thread.sleep(forTimeInterval: 0.3)
        var flips = 0
        for index in 0..<1000 {
            let report = harness.syncer.sync(index % 2 == 0 ? b : a)
            XCTAssertEqual(report.failures, [])
            flips += report.changes > 0 ? 1 : 0
            Thread.sleep(forTimeInterval: 0.002)
        }
        let report = try client.readJSON(TCPProbeReport.self, timeout: 30)
        XCTAssertEqual(flips, 1000, "every sync flipped the set")
        XCTAssertEqual(report.failures, [:], "a connection failed during a flip: \(report.firstError ?? "")")
        XCTAssertGreaterThan(report.ok, 100)
        XCTAssertEqual(Set(report.backends.keys), Set(lab.backends.map(\.name)), "both sets served connections")
        let counters = harness.datapath.maps.outcomeCounters()
        XCTAssertEqual(counters["sock_slot_missing"], 0, "no reader ever found a half-written or reused range")
        XCTAssertEqual(counters["sock_reject"], 0)
    }

    func testClientIPAffinityKeepsAClientOnOneBackendUntilTheTimeoutPasses() throws {
        let vip = lab.vipIPv4(24)
        try harness.apply(LabManifests.documents(
            LabManifests.service(name: "sticky", clusterIPs: [vip])
                .replacingOccurrences(of: "  type: ClusterIP\n", with: "  type: ClusterIP\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 1}}\n"),
            LabManifests.slice(service: "sticky", addresses: lab.backends.map(\.ipv4))))
        XCTAssertEqual(try harness.datapath.maps.readState().servedPlan.frontends.first { $0.service == "default/sticky" }?.affinitySeconds, 1)
        var chosen: [String] = []
        for _ in 0..<8 {
            // Within the timeout every new connection from this client lands on one backend.
            let report = try harness.probe.tcp(target: harness.ipv4Target(vip), count: 20)
            XCTAssertEqual(report.ok, 20)
            XCTAssertEqual(report.backends.count, 1, "affinity within the timeout: \(report.backends)")
            chosen.append(contentsOf: report.backends.keys)
            // After the timeout the choice is made afresh (uniformly: 8 rounds all on the same
            // backend would happen once in 2,187 runs).
            Thread.sleep(forTimeInterval: 1.2)
        }
        XCTAssertGreaterThan(Set(chosen).count, 1, "re-chosen after the timeout: \(chosen)")
        let counters = harness.datapath.maps.outcomeCounters()
        XCTAssertGreaterThanOrEqual(counters["sock_affinity_hit"] ?? 0, 8 * 19)
        XCTAssertGreaterThanOrEqual(counters["sock_affinity_new"] ?? 0, 8)
    }

    func testAffinityFollowsTheBackendAcrossAChangedSetAndDropsItWhenItLeaves() throws {
        let vip = lab.vipIPv4(25)
        func manifests(_ backends: [LabBackend]) -> String {
            LabManifests.documents(
                LabManifests.service(name: "sticky2", clusterIPs: [vip])
                    .replacingOccurrences(of: "  type: ClusterIP\n", with: "  type: ClusterIP\n  sessionAffinity: ClientIP\n"),
                LabManifests.slice(service: "sticky2", addresses: backends.map(\.ipv4)))
        }
        try harness.apply(manifests(Array(lab.backends.prefix(2))))
        let first = try harness.probe.tcp(target: harness.ipv4Target(vip), count: 10)
        let stuck = try XCTUnwrap(first.backends.keys.first)
        // A new set that still holds the backend (new slot range, other positions).
        try harness.apply(manifests(lab.backends.reversed()))
        XCTAssertEqual(try harness.probe.tcp(target: harness.ipv4Target(vip), count: 10).backends, [stuck: 10])
        // The backend leaves: the client moves to one of the others, and stays there.
        try harness.apply(manifests(lab.backends.filter { $0.name != stuck }))
        let moved = try harness.probe.tcp(target: harness.ipv4Target(vip), count: 10)
        XCTAssertEqual(moved.backends.count, 1)
        XCTAssertNil(moved.backends[stuck])
    }

    func testRemovingABackendThroughTheControllerTerminatesConnectedUDPSocketsPinnedToIt() throws {
        let vip = lab.vipIPv4(26)
        let terminator = try UDPSocketTerminator.install(pinPath: harness.pinPath, logger: testLogger)
        try XCTSkipUnless(terminator.isSupported, "kernel without bpf_sock_destroy (< 6.5)")
        harness.syncer.terminateUDPSockets(with: terminator, logger: testLogger)
        let (b1, b2) = (lab.backends[0], lab.backends[1])
        func manifests(_ backends: [LabBackend]) -> String {
            LabManifests.documents(LabManifests.service(name: "resolver", clusterIPs: [vip], ports: [("dns", 53, "UDP")]),
                                   LabManifests.slice(service: "resolver", addresses: backends.map(\.ipv4)))
        }
        try harness.apply(manifests([b1, b2]))
        let held = try harness.probe.startUDPHold(target: "\(vip):53", sockets: 16)
        let onB1 = held.established.sockets.filter { $0.first == b1.name }.count
        XCTAssertGreaterThan(onB1, 0, "some sockets reached b1: \(held.established.sockets.map(\.first))")
        // b1 leaves the Service: the sync removes it from the maps and then terminates the
        // sockets socket LB had pinned to it.
        try harness.apply(manifests([b2]))
        let final = try held.finish()
        for socket in final.sockets {
            if socket.first == b1.name {
                // A destroyed socket: recv() reports ECONNABORTED, send() EDESTADDRREQ.
                XCTAssertTrue(["ECONNABORTED", "EDESTADDRREQ"].contains(socket.second ?? ""), "\(socket)")
                XCTAssertEqual(socket.reconnected, b2.name, "the resolver reconnects through the ClusterIP to a live backend")
            } else {
                XCTAssertEqual(socket.second, b2.name, "sockets on b2 are untouched: \(socket)")
            }
        }
    }
}
