import CLibBPF
@testable import Datapath
import Foundation
import Glibc
import NetLab
import XCTest

/// Full-size segments through node A: bulk TCP transfers, echoed back byte for byte,
/// through a NodePort. The greeting probes of the other tests never fill a segment, so
/// what segmentation offloads (a GSO skb is longer than any MTU) and a narrower hop do to
/// the datapath shows only here.
extension NodePortTests {
    func bulkEcho(_ h: NodePortHarness, target: String, bytes: Int = 1 << 20) throws -> BulkEchoReport {
        try NetworkNamespace.onThread(in: h.lab.clientNetns) {
            try ProbeClient.bulkEcho(target: target, bytes: bytes, timeoutMs: 10_000)
        }()
    }

    func assertEchoed(_ report: BulkEchoReport, by backend: String, _ h: NodePortHarness,
                      file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNil(report.error, "\(report) \(h.datapath.outcomeCounters().filter { $0.value > 0 })", file: file, line: line)
        XCTAssertEqual(report.echoed, report.requested, file: file, line: line)
        XCTAssertEqual(report.backend, backend, file: file, line: line)
    }

    /// A bulk transfer to pod b1 in each family completes, and took at least one
    /// fragmentation needed / Packet Too Big (`np_too_big`) to get through.
    func assertTransfersNeedingTheError(_ h: NodePortHarness, _ why: String, file: StaticString = #filePath,
                                        line: UInt = #line) throws {
        for ipv6 in [false, true] {
            try h.apply(h.webService(pods: h.lab.podsOnB, ipv6: ipv6))
            let before = h.datapath.outcomeCounters()["np_too_big"] ?? 0
            assertEchoed(try bulkEcho(h, target: ipv6 ? h.tcpTarget6 : h.tcpTarget), by: "b1", h, file: file, line: line)
            let sent = (h.datapath.outcomeCounters()["np_too_big"] ?? 0) - before
            XCTAssertGreaterThan(sent, 0, "ipv6 \(ipv6): \(why)", file: file, line: line)
        }
    }

    /// The client's stack hands its veth 64 KiB TCP segments (TSO): node A's tc program
    /// sees GSO skbs, which fit the egress MTU segment by segment. With XDP the veths
    /// carry MTU-sized frames (the harness turns offloads off), as from a NIC.
    func testBulkTransfersThroughANodePortArriveWholeToLocalAndRemotePods() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            for (pod, ipv6) in [(h.lab.podsOnA[0], false), (h.lab.podsOnB[0], false), (h.lab.podsOnA[0], true),
                                (h.lab.podsOnB[0], true)] {
                try h.apply(h.webService(pods: [pod], ipv6: ipv6))
                assertEchoed(try bulkEcho(h, target: ipv6 ? h.tcpTarget6 : h.tcpTarget), by: pod.name, h)
            }
            let counters = h.datapath.outcomeCounters()
            XCTAssertEqual(counters["np_fib_failed"], 0, "\(counters)")
            XCTAssertEqual(counters["np_too_big"], 0, "every hop has the client's MTU: \(counters)")
        }
    }

    /// Node A's device also merges what it receives (GRO): still whole.
    func testBulkTransfersSurviveReceiveOffloadOnNodeAsDevices() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 1)
        for device in [h.lab.externalDevice, h.lab.interNodeDevice] {
            _ = try h.lab.exec(["ethtool", "-K", device, "gro", "on"], netns: h.lab.nodeA.netns)
        }
        try h.apply(h.webService(pods: h.lab.podsOnB))
        assertEchoed(try bulkEcho(h, target: h.tcpTarget), by: "b1", h)
        XCTAssertEqual(h.datapath.outcomeCounters()["np_fib_failed"], 0)
    }

    /// The link between the nodes is narrower (1,400) than the client's (1,500): the
    /// client's full-size segments to a remote pod are answered with ICMP fragmentation
    /// needed / Packet Too Big quoting them as sent, the client's path-MTU discovery
    /// shrinks them, and the transfer completes. Without the error it stalls for good.
    func testASegmentTooLongForTheNodesLinkIsAnsweredAndTheClientShrinksItsSegments() throws {
        try inEveryMode(podsOnA: 0, podsOnB: 1) { h in
            _ = try h.lab.exec(["ip", "link", "set", h.lab.interNodeDevice, "mtu", "1400"], netns: h.lab.nodeA.netns)
            _ = try h.lab.exec(["ip", "link", "set", h.lab.nodeBDevice, "mtu", "1400"], netns: h.lab.nodeB.netns)
            try assertTransfersNeedingTheError(h, "the first full-size segment must be answered")
        }
    }

    /// The route from node A to the client is narrower (1,400) than the pod's segments
    /// (the client advertised an MSS for 1,500): the backend's replies are answered with the
    /// error, addressed to the backend about its packet to the SNAT address, and it shrinks
    /// them.
    func testAReplyTooLongForTheRouteToTheClientIsAnsweredToTheBackend() throws {
        try inEveryMode(podsOnA: 0, podsOnB: 1) { h in
            _ = try h.lab.exec(["ip", "route", "add", "\(h.lab.clientIPv4)/32", "dev", h.lab.externalDevice, "mtu", "lock", "1400"],
                           netns: h.lab.nodeA.netns)
            _ = try h.lab.exec(["ip", "-6", "route", "add", "\(h.lab.clientIPv6)/128", "dev", h.lab.externalDevice, "mtu", "lock", "1400"],
                           netns: h.lab.nodeA.netns)
            try assertTransfersNeedingTheError(h, "the backend's first full-size reply must be answered")
        }
    }

    /// UDP: a datagram longer than the nodes' link is answered with fragmentation needed
    /// whether it may be fragmented (IP_PMTUDISC_DONT, DF clear) or not (IP_PMTUDISC_DO):
    /// BPF cannot fragment it, and a silent drop would lose every datagram of a DONT
    /// socket. The client's socket learns the path MTU either way (its stack then fragments
    /// what it sends: NodePortFragmentTests.swift). The error rate limit (a bucket of one here)
    /// does not hold back path-MTU errors.
    func testAnOversizedUDPDatagramTeachesTheClientThePathMTUWithOrWithoutDF() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 1, icmpErrorLimit: .init(perSecond: 1, burst: 1))
        _ = try h.lab.exec(["ip", "link", "set", h.lab.interNodeDevice, "mtu", "1400"], netns: h.lab.nodeA.netns)
        _ = try h.lab.exec(["ip", "link", "set", h.lab.nodeBDevice, "mtu", "1400"], netns: h.lab.nodeB.netns)
        try h.apply(h.webService(pods: h.lab.podsOnB))
        let target = try LabEndpoint(h.udpTarget)
        let dont = try NetworkNamespace.onThread(in: h.lab.clientNetns) {
            try Self.udpPathMTU(to: target, discovery: IP_PMTUDISC_DONT)
        }()
        XCTAssertEqual(dont, 1400, "the error's MTU, learnt without DF")
        // Forget the learnt MTU, so that DO's datagram leaves at full size too.
        _ = try h.lab.exec(["ip", "route", "flush", "cache"], netns: h.lab.clientNetns)
        let dontFragment = try NetworkNamespace.onThread(in: h.lab.clientNetns) {
            try Self.udpPathMTU(to: target, discovery: IP_PMTUDISC_DO)
        }()
        XCTAssertEqual(dontFragment, 1400, "the error's MTU, learnt with DF")
        let counters = h.datapath.outcomeCounters()
        XCTAssertEqual(counters["np_too_big"], 1, "\(counters)")
        XCTAssertEqual(counters["np_too_big_may_fragment"], 1, "\(counters)")
        XCTAssertEqual(counters["np_icmp_rate_limited"], 0, "\(counters)")
    }

    /// Sends one 1,472-byte datagram (a 1,500-byte packet) on a connected socket with the
    /// given path-MTU discovery mode, waits for what comes back, and returns IP_MTU.
    private static func udpPathMTU(to target: LabEndpoint, discovery: Int32) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw NetLabError.system(what: "socket", errno: errno) }
        defer { close(fd) }
        var mode = discovery
        guard setsockopt(fd, Int32(IPPROTO_IP), IP_MTU_DISCOVER, &mode, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw NetLabError.system(what: "IP_MTU_DISCOVER", errno: errno)
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = target.port.bigEndian
        inet_pton(AF_INET, target.ip, &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw NetLabError.system(what: "connect", errno: errno) }
        let payload = [UInt8](repeating: 0x5a, count: 1472)
        guard payload.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == payload.count else {
            throw NetLabError.system(what: "send", errno: errno)
        }
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&entry, 1, 500)
        var mtu: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, Int32(IPPROTO_IP), IP_MTU, &mtu, &length) == 0 else {
            throw NetLabError.system(what: "IP_MTU", errno: errno)
        }
        return mtu
    }
}

/// ICMP errors about tracked flows, in both directions and both families: a backend's
/// error reaches the client as an error about the packet the client sent (to the
/// frontend), and the client side's error about a reply reaches the backend as an error
/// about the packet the backend sent.
extension NodePortTests {
    func testALocalPodsICMPErrorReachesTheClientAsTheFrontends() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 0) { h in
            for ipv6 in [false, true] {
                // Nothing listens on UDP 8054 in the pod: it answers with port unreachable,
                // quoting client -> pod; node A's egress makes it client -> frontend.
                try h.apply(h.webService(pods: h.lab.podsOnA, udpTargetPort: 8054, ipv6: ipv6))
                let report = try h.client.udp(target: ipv6 ? h.udpTarget6 : h.udpTarget, count: 3, connected: true)
                XCTAssertEqual(report.errors, ["ECONNREFUSED": 3], "ipv6 \(ipv6), timeouts: \(report.timeouts)")
            }
            XCTAssertEqual(h.datapath.outcomeCounters()["np_icmp_error_reply"], 6)
        }
    }

    func testARemotePodsICMPv6ErrorReachesTheClientThroughTheSNAT() throws {
        try inEveryMode(podsOnA: 0, podsOnB: 1) { h in
            try h.apply(h.webService(pods: h.lab.podsOnB, udpTargetPort: 8054, ipv6: true))
            let report = try h.client.udp(target: h.udpTarget6, count: 3, connected: true)
            XCTAssertEqual(report.errors, ["ECONNREFUSED": 3], "timeouts: \(report.timeouts)")
            XCTAssertEqual(h.datapath.outcomeCounters()["np_icmp_error_reply"], 3)
        }
    }

    /// The client's host answers a reply for a closed socket with port unreachable,
    /// addressed to the frontend: node A hands it to the backend (local, or remote through
    /// the SNAT), whose connected socket then fails with ECONNREFUSED.
    func testTheClientsICMPErrorAboutAReplyReachesTheBackend() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            var expected: UInt64 = 0
            for (pod, ipv6) in [(h.lab.podsOnA[0], false), (h.lab.podsOnB[0], false), (h.lab.podsOnA[0], true),
                                (h.lab.podsOnB[0], true)] {
                try h.apply(h.webService(pods: [pod], udpTargetPort: 8055, ipv6: ipv6))
                let outcome = try ProbeClient.udpLateReplyOutcome(
                    clientNetns: h.lab.clientNetns, target: ipv6 ? h.udpTarget6 : h.udpTarget, backendNetns: pod.netns,
                    backendPort: 8055)
                XCTAssertEqual(outcome, "ECONNREFUSED", "\(pod.name), ipv6 \(ipv6): \(h.datapath.outcomeCounters().filter { $0.value > 0 })")
                expected += 1
                XCTAssertEqual(h.datapath.outcomeCounters()["np_icmp_error_forward"], expected, "\(pod.name), ipv6 \(ipv6)")
            }
        }
    }
}
