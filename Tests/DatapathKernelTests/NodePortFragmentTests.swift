import CLibBPF
@testable import Datapath
import Foundation
import NetLab
import XCTest

/// Fragmented UDP through node A's NodePort (`bpf/nodeport.c`, sl_frag_v1): datagrams of
/// 4000 bytes, which the client's stack sends in three fragments at the lab's MTU of 1500,
/// answered by the pods with replies of the same length (fragmented by the pods' stacks),
/// to a local pod (replies translated on node A's egress) and to a remote pod (source-NATed,
/// replies translated on node A's ingress), IPv4 and IPv6, with tc alone and with XDP
/// generic and native in front (XDP hands every fragment to tc). Every datagram must come
/// back whole, from the pod it reached, with the NodePort as its source. Extensions of
/// NodePortTests (whose `inEveryMode` runs tc, XDP generic and native) and of
/// NodePortDSRTests, whose harnesses they use.
private enum FragmentedLoad {
    static let datagramBytes = 4000
    static let datagrams = 40
}

extension NodePortTests {
    /// What every run must show: each datagram answered whole by one of the two pods, from
    /// the NodePort; the local pod saw the client, the remote one node A; fragments
    /// translated both ways, none left untracked.
    private func assertServedWhole(_ report: UDPProbeReport, _ h: NodePortHarness, clients: Set<String>,
                                   file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(report.ok, FragmentedLoad.datagrams, "errors: \(report.errors) timeouts: \(report.timeouts) \(report.firstError ?? "")",
                       file: file, line: line)
        XCTAssertEqual(report.damagedReplies, 0, "every reply arrived whole", file: file, line: line)
        XCTAssertEqual(report.replySourceMismatches, 0, "replies come from the NodePort", file: file, line: line)
        XCTAssertEqual(Set(report.backends.keys), ["a1", "b1"], "\(report.backends)", file: file, line: line)
        XCTAssertEqual(Set(report.seenClientAddresses), clients, file: file, line: line)
        let counters = h.datapath.outcomeCounters()
        // Per datagram, at least its two later fragments in and the reply's two out.
        XCTAssertGreaterThanOrEqual(counters["np_fragment_tracked"] ?? 0, UInt64(4 * FragmentedLoad.datagrams), "\(counters)",
                                    file: file, line: line)
        XCTAssertEqual(counters["np_fragment_untracked"], 0, "\(counters)", file: file, line: line)
        // A new socket per datagram: one flow each, unless the client's stack gave a socket
        // the port of an earlier one (then its flow is tracked already). Never more: a later
        // fragment opens no flow.
        let newFlows = counters["np_forward_new"] ?? 0
        XCTAssertLessThanOrEqual(newFlows, UInt64(FragmentedLoad.datagrams), "\(counters)", file: file, line: line)
        XCTAssertGreaterThanOrEqual(newFlows, UInt64(FragmentedLoad.datagrams / 2), "\(counters)", file: file, line: line)
        XCTAssertGreaterThanOrEqual(counters["np_reply"] ?? 0, UInt64(3 * FragmentedLoad.datagrams), "every reply fragment translated",
                                    file: file, line: line)
        if h.datapath.options.acceleration != .none {
            XCTAssertGreaterThan(counters["np_xdp_pass_to_tc"] ?? 0, 0, "XDP leaves fragments to tc", file: file, line: line)
        }
        XCTAssertLessThanOrEqual(h.datapath.fragmentPressure().entries, 4 * FragmentedLoad.datagrams, file: file, line: line)
    }

    func testFragmentedUDPDatagramsThroughANodePortComeBackWholeFromALocalAndARemotePod() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB))
            let report = try h.client.udp(target: h.udpTarget, count: FragmentedLoad.datagrams, payloadBytes: FragmentedLoad.datagramBytes)
            assertServedWhole(report, h, clients: [h.lab.clientIPv4, h.lab.nodeAIPv4])
        }
    }

    func testFragmentedUDPDatagramsThroughAnIPv6NodePortComeBackWholeFromALocalAndARemotePod() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB, ipv6: true))
            let report = try h.client.udp(target: h.udpTarget6, count: FragmentedLoad.datagrams, payloadBytes: FragmentedLoad.datagramBytes)
            assertServedWhole(report, h, clients: [h.lab.clientIPv6, h.lab.nodeAIPv6])
        }
    }

    /// The link between the nodes at MTU 1,400 (as an overlay's would be): the client's
    /// 1,500-byte first fragments do not fit it. The first datagram's first fragment is
    /// answered with fragmentation needed (DF is clear on fragments:
    /// np_too_big_may_fragment) or an ICMPv6 Packet Too Big that quotes its fragment header
    /// (np_too_big); the client's stack takes the MTU and fragments the next datagrams to
    /// fit, and they come back whole. (Node B's stack refragments the pod's IPv4 replies;
    /// an IPv6 reply too long for the link teaches the pod the MTU, from node B, at the
    /// cost of that reply.) Without the error every datagram would be lost.
    func testFragmentedDatagramsOverANarrowerLinkGetThroughOnceTheClientLearnsItsMTU() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            _ = try h.lab.exec(["ip", "link", "set", h.lab.interNodeDevice, "mtu", "1400"], netns: h.lab.nodeA.netns)
            _ = try h.lab.exec(["ip", "link", "set", h.lab.nodeBDevice, "mtu", "1400"], netns: h.lab.nodeB.netns)
            for (ipv6, lost, reason) in [(false, 1, "np_too_big_may_fragment"), (true, 2, "np_too_big")] {
                try h.apply(h.webService(pods: h.lab.podsOnB, ipv6: ipv6))
                let before = h.datapath.outcomeCounters()
                let report = try h.client.udp(target: ipv6 ? h.udpTarget6 : h.udpTarget, count: FragmentedLoad.datagrams,
                                              payloadBytes: FragmentedLoad.datagramBytes)
                let counters = h.datapath.outcomeCounters()
                XCTAssertGreaterThanOrEqual(report.ok, FragmentedLoad.datagrams - lost,
                                            "ipv6 \(ipv6): errors \(report.errors) timeouts \(report.timeouts) \(counters)")
                XCTAssertEqual(report.damagedReplies, 0, "ipv6 \(ipv6)")
                XCTAssertEqual(report.backends.keys.sorted(), ["b1"], "ipv6 \(ipv6)")
                XCTAssertEqual((counters[reason] ?? 0) - (before[reason] ?? 0), 1,
                               "ipv6 \(ipv6): one error, for the first datagram's first fragment: \(counters)")
                XCTAssertGreaterThanOrEqual((counters["np_fragment_tracked"] ?? 0) - (before["np_fragment_tracked"] ?? 0),
                                            UInt64(4 * (FragmentedLoad.datagrams - lost)), "ipv6 \(ipv6): \(counters)")
            }
        }
    }
}

extension NodePortDSRTests {
    /// DSR mode, remote pod on node B (shared fabric: node B answers the client directly).
    /// At the client's MTU of 1500 a first fragment leaves no room for the frontend option:
    /// such flows are source-NATed (np_dsr_snat_fallback) and served through node A. With
    /// the client's route to the NodePort at MTU 1400 the first fragments fit it: node A
    /// adds the option to each first fragment and DNATs the later ones, node B learns the
    /// flow from the first fragment and gives every fragment of the pod's reply the frontend
    /// as its source. Every reply arrives whole either way.
    func testFragmentedUDPDatagramsInDSRModeComeBackWhole() throws {
        let h = try makeHarness(podsOnA: 0, podsOnB: 1)
        try h.apply(h.service(pods: h.lab.podsOnB))
        let count = 20

        let fallback = try h.client.udp(target: h.udpTarget, count: count, payloadBytes: FragmentedLoad.datagramBytes)
        XCTAssertEqual(fallback.ok, count, "errors: \(fallback.errors) timeouts: \(fallback.timeouts)")
        XCTAssertEqual(fallback.damagedReplies, 0)
        XCTAssertEqual(fallback.replySourceMismatches, 0)
        XCTAssertEqual(fallback.seenClientAddresses, [h.lab.nodeAIPv4], "source-NATed: no room for the option")
        var a = h.a.datapath.outcomeCounters()
        // One new flow per datagram (a socket each), fewer if a port came twice.
        XCTAssertLessThanOrEqual(a["np_dsr_snat_fallback"] ?? 0, UInt64(count), "\(a)")
        XCTAssertGreaterThanOrEqual(a["np_dsr_snat_fallback"] ?? 0, UInt64(count / 2), "\(a)")
        XCTAssertEqual(a["np_dsr_carried"], 0)
        XCTAssertGreaterThanOrEqual(a["np_reply"] ?? 0, UInt64(3 * count), "replies back through node A")
        XCTAssertGreaterThanOrEqual(a["np_fragment_tracked"] ?? 0, UInt64(4 * count), "\(a)")

        // Forget the source-NATed flows, so that a port the client uses again opens a new
        // (DSR) flow rather than taking the old one's translation.
        _ = h.a.datapath.collectGarbage(timeouts: NodePortDatapath.ConntrackTimeouts(tcp: 10, tcpClosing: 1, udp: 1),
                                        now: NodePortDatapath.monotonicNanoseconds() + 10_000_000_000)
        try Shell.run(["ip", "netns", "exec", h.lab.clientNetns, "ip", "route", "add", "\(h.lab.externalIPv4)/32",
                       "dev", h.lab.clientDevice, "mtu", "lock", "1400"])
        let direct = try h.client.udp(target: h.udpTarget, count: count, payloadBytes: FragmentedLoad.datagramBytes)
        XCTAssertEqual(direct.ok, count, "errors: \(direct.errors) timeouts: \(direct.timeouts)")
        XCTAssertEqual(direct.damagedReplies, 0)
        XCTAssertEqual(direct.replySourceMismatches, 0, "replies from the NodePort, sent by node B")
        XCTAssertEqual(direct.seenClientAddresses, [h.lab.clientIPv4], "DSR keeps the client's address")
        let before = a
        a = h.a.datapath.outcomeCounters()
        let b = h.b.datapath.outcomeCounters()
        XCTAssertEqual(a["np_dsr_carried"], UInt64(count), "one option per datagram, in its first fragment: \(a)")
        XCTAssertEqual(a["np_dsr_no_room"], 0)
        XCTAssertEqual(a["np_dsr_snat_fallback"], before["np_dsr_snat_fallback"], "no more fallbacks")
        XCTAssertEqual(a["np_reply"], before["np_reply"], "no reply passed node A")
        XCTAssertGreaterThanOrEqual((a["np_fragment_tracked"] ?? 0) - (before["np_fragment_tracked"] ?? 0), UInt64(3 * count),
                                    "node A translated every fragment: \(a)")
        XCTAssertEqual(b["np_dsr_received"], UInt64(count), "\(b)")
        XCTAssertGreaterThanOrEqual(b["np_dsr_reply"] ?? 0, UInt64(3 * count), "every reply fragment given the frontend")
        XCTAssertGreaterThanOrEqual(b["np_fragment_tracked"] ?? 0, UInt64(3 * count), "\(b)")
    }
}
