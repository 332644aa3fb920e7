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
/// back whole, from the pod it reached, with the NodePort as its source.
final class NodePortFragmentTests: XCTestCase {
    private static let datagramBytes = 4000
    private static let datagrams = 40

    private var harness: NodePortHarness?
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

    /// `body` on a fresh lab with one pod on each node, for tc alone and XDP generic and native.
    private func inEveryMode(_ body: (NodePortHarness) throws -> Void) throws {
        try requireKernelBPF()
        for acceleration in NodePortOptions.Acceleration.allCases {
            mode = acceleration
            let h = try NodePortHarness(podsOnA: 1, podsOnB: 1, label: "npfrag" + name.filter { $0.isLetter }.suffix(10),
                                        acceleration: acceleration)
            harness = h
            defer {
                h.tearDown()
                harness = nil
            }
            try body(h)
        }
    }

    /// What every run must show: each datagram answered whole by one of the two pods, from
    /// the NodePort; the local pod saw the client, the remote one node A; fragments
    /// translated both ways, none left untracked.
    private func assertServedWhole(_ report: UDPProbeReport, _ h: NodePortHarness, clients: Set<String>,
                                   file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(report.ok, Self.datagrams, "errors: \(report.errors) timeouts: \(report.timeouts) \(report.firstError ?? "")",
                       file: file, line: line)
        XCTAssertEqual(report.damagedReplies, 0, "every reply arrived whole", file: file, line: line)
        XCTAssertEqual(report.replySourceMismatches, 0, "replies come from the NodePort", file: file, line: line)
        XCTAssertEqual(Set(report.backends.keys), ["a1", "b1"], "\(report.backends)", file: file, line: line)
        XCTAssertEqual(Set(report.seenClientAddresses), clients, file: file, line: line)
        let counters = h.datapath.outcomeCounters()
        // Per datagram, at least its two later fragments in and the reply's two out.
        XCTAssertGreaterThanOrEqual(counters["np_fragment_tracked"] ?? 0, UInt64(4 * Self.datagrams), "\(counters)",
                                    file: file, line: line)
        XCTAssertEqual(counters["np_fragment_untracked"], 0, "\(counters)", file: file, line: line)
        XCTAssertEqual(counters["np_forward_new"], UInt64(Self.datagrams), "one flow per datagram (a new socket each)",
                       file: file, line: line)
        XCTAssertGreaterThanOrEqual(counters["np_reply"] ?? 0, UInt64(3 * Self.datagrams), "every reply fragment translated",
                                    file: file, line: line)
        if h.datapath.options.acceleration != .none {
            XCTAssertGreaterThan(counters["np_xdp_pass_to_tc"] ?? 0, 0, "XDP leaves fragments to tc", file: file, line: line)
        }
        XCTAssertLessThanOrEqual(h.datapath.fragmentPressure().entries, 4 * Self.datagrams, file: file, line: line)
    }

    func testFragmentedUDPDatagramsThroughANodePortComeBackWholeFromALocalAndARemotePod() throws {
        try inEveryMode { h in
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB))
            let report = try h.client.udp(target: h.udpTarget, count: Self.datagrams, payloadBytes: Self.datagramBytes)
            assertServedWhole(report, h, clients: [h.lab.clientIPv4, h.lab.nodeAIPv4])
        }
    }

    func testFragmentedUDPDatagramsThroughAnIPv6NodePortComeBackWholeFromALocalAndARemotePod() throws {
        try inEveryMode { h in
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB, ipv6: true))
            let report = try h.client.udp(target: h.udpTarget6, count: Self.datagrams, payloadBytes: Self.datagramBytes)
            assertServedWhole(report, h, clients: [h.lab.clientIPv6, h.lab.nodeAIPv6])
        }
    }
}
