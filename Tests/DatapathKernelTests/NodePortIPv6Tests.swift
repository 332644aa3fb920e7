import CLibBPF
@testable import Datapath
import Foundation
import NetLab
import XCTest

/// The IPv6 half of the external-traffic matrix: single-stack IPv6 Services on the
/// dual-stack `NodeLab`, from the client to node A's IPv6 addresses, through tc alone and
/// with XDP (generic, native) in front: the same results in every mode, XDP forwarding
/// the flows to remote pods itself and leaving the rest to tc, as for IPv4.
extension NodePortTests {
    /// An IPv6 address as YAML needs it in a flow sequence.
    private func quoted(_ address: String) -> String { "\"\(address)\"" }

    func testAnIPv6NodePortReachesALocalPodWhichSeesTheClientAddress() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 0) { h in
            try h.apply(h.webService(pods: h.lab.podsOnA, ipv6: true))
            let report = try h.client.tcp(target: h.tcpTarget6, count: 20)
            XCTAssertEqual(report.ok, 20, "failures: \(report.failures) \(report.firstError ?? "")")
            XCTAssertEqual(report.backends, ["a1": 20])
            XCTAssertEqual(report.peerNameMismatches, 0, "the client must see replies from [nodeIP]:nodePort")
            XCTAssertEqual(report.seenClientAddresses, [h.lab.clientIPv6], "a local backend sees the client itself")
            let counters = h.datapath.outcomeCounters()
            XCTAssertEqual(counters["np_forward_new"], 20, "\(counters)")
            XCTAssertGreaterThanOrEqual(counters["np_reply"] ?? 0, 20)
            assertXDPShare(h, redirected: false)
        }
    }

    func testAnIPv6NodePortReachesARemotePodThroughSNATToTheNodeIPv6Address() throws {
        try inEveryMode(podsOnA: 0, podsOnB: 2) { h in
            try h.apply(h.webService(pods: h.lab.podsOnB, ipv6: true))
            let report = try h.client.tcp(target: h.tcpTarget6, count: 40)
            XCTAssertEqual(report.ok, 40, "failures: \(report.failures) \(report.firstError ?? "")")
            XCTAssertEqual(Set(report.backends.keys), ["b1", "b2"], "\(report.backends)")
            XCTAssertEqual(report.peerNameMismatches, 0)
            XCTAssertEqual(report.seenClientAddresses, [h.lab.nodeAIPv6], "source-NATed to node A's IPv6 address towards node B")
            XCTAssertGreaterThanOrEqual(h.datapath.natPressure().entries, 2)
            assertXDPShare(h, redirected: true)
        }
    }

    func testAnIPv6UDPNodePortRepliesComeFromTheNodePortWhicheverNodeServes() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB, ipv6: true))
            let report = try h.client.udp(target: h.udpTarget6, count: 60)
            XCTAssertEqual(report.ok, 60, "errors: \(report.errors) timeouts: \(report.timeouts)")
            XCTAssertEqual(report.replySourceMismatches, 0, "recvfrom() must show [nodeIP]:30053")
            XCTAssertEqual(Set(report.backends.keys), ["a1", "b1"], "\(report.backends)")
            XCTAssertEqual(Set(report.seenClientAddresses), [h.lab.clientIPv6, h.lab.nodeAIPv6])
            assertXDPShare(h, redirected: true)
        }
    }

    func testAnIPv6NodePortWithoutEndpointsIsRefusedAtTheClient() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 0) { h in
            try h.apply(h.webService(pods: [], ipv6: true))
            // In the lab the error to a connect()'s first SYN comes back while connect() still
            // holds the socket (one softirq pass over the veths), and Linux's IPv6 TCP keeps it
            // only as a soft error then (TcpExtLockDroppedIcmps); the error to the SYN
            // retransmitted a second later ends the attempt. A real client is never that close.
            let report = try h.client.tcp(target: h.tcpTarget6, count: 5, connectTimeoutMs: 3000)
            XCTAssertEqual(report.failures, ["ECONNREFUSED": 5], "ICMPv6 port unreachable: \(report.firstError ?? "")")
            XCTAssertGreaterThanOrEqual(h.datapath.outcomeCounters()["np_reject"] ?? 0, 5)
            let udp = try h.client.udp(target: h.udpTarget6, count: 3, connected: true)
            XCTAssertEqual(udp.errors, ["ECONNREFUSED": 3], "timeouts: \(udp.timeouts)")
            assertXDPShare(h, redirected: false)
        }
    }

    func testAnIPv6ExternalIPAndLoadBalancerVIPAreServedOnNodeA() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            let (externalIP, vip) = (h.lab.serviceIPv6(10), h.lab.serviceIPv6(20))
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB, externalIPs: [quoted(externalIP)],
                                     loadBalancerIPs: [quoted(vip)], ipv6: true))
            for address in [externalIP, vip] {
                let report = try h.client.tcp(target: "[\(address)]:80", count: 30)
                XCTAssertEqual(report.ok, 30, "\(address): \(report.failures) \(report.firstError ?? "")")
                XCTAssertEqual(Set(report.backends.keys), ["a1", "b1"], "\(address): \(report.backends)")
                XCTAssertEqual(report.peerNameMismatches, 0, "replies must come from [\(address)]:80")
            }
            assertXDPShare(h, redirected: true)
        }
    }

    func testExternalTrafficPolicyLocalOverIPv6KeepsTheClientAddressOrDrops() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            let local = "  externalTrafficPolicy: Local"
            try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB, extra: local, ipv6: true))
            let report = try h.client.tcp(target: h.tcpTarget6, count: 20)
            XCTAssertEqual(report.ok, 20, "failures: \(report.failures) \(report.firstError ?? "")")
            XCTAssertEqual(report.backends, ["a1": 20], "only node A's own pod serves external traffic")
            XCTAssertEqual(report.seenClientAddresses, [h.lab.clientIPv6], "eTP=Local preserves the client address")
            // Without a local endpoint node A drops external traffic (no ICMP error).
            try h.apply(h.webService(pods: h.lab.podsOnB, extra: local, ipv6: true))
            let dropped = try h.client.tcp(target: h.tcpTarget6, count: 3, connectTimeoutMs: 300)
            XCTAssertEqual(dropped.failures, ["ETIMEDOUT": 3], "dropped, not refused: \(dropped.failures)")
            XCTAssertGreaterThanOrEqual(h.datapath.outcomeCounters()["np_drop"] ?? 0, 3)
            assertXDPShare(h, redirected: false)
        }
    }

    func testIPv6SourceRangesAllowClientsInsideThemAndDropTheOthers() throws {
        try inEveryMode(podsOnA: 1, podsOnB: 1) { h in
            let vip = h.lab.serviceIPv6(20)
            let pods = h.lab.podsOnA + h.lab.podsOnB
            let outside = "  loadBalancerSourceRanges: [\"2001:db8::/32\"]"
            try h.apply(h.webService(pods: pods, extra: outside, loadBalancerIPs: [quoted(vip)], ipv6: true))
            let denied = try h.client.tcp(target: "[\(vip)]:80", count: 3, connectTimeoutMs: 300)
            XCTAssertEqual(denied.failures, ["ETIMEDOUT": 3], "dropped, not refused: \(denied.failures)")
            XCTAssertGreaterThanOrEqual(h.datapath.outcomeCounters()["np_source_range_denied"] ?? 0, 3)
            // The NodePort of the same Service is not filtered (A.9).
            XCTAssertEqual(try h.client.tcp(target: h.tcpTarget6, count: 5).ok, 5)
            // The client's /64 opens the VIP to it.
            let inside = "  loadBalancerSourceRanges: [\"2001:db8::/32\", \"\(NodeLab.ipv6Prefix(subnet: h.lab.subnet)):1::/64\"]"
            try h.apply(h.webService(pods: pods, extra: inside, loadBalancerIPs: [quoted(vip)], ipv6: true))
            let report = try h.client.tcp(target: "[\(vip)]:80", count: 20)
            XCTAssertEqual(report.ok, 20, "failures: \(report.failures) \(report.firstError ?? "")")
            XCTAssertEqual(Set(report.backends.keys), ["a1", "b1"], "\(report.backends)")
            assertXDPShare(h, redirected: true)
        }
    }

    func testClientIPAffinityOverIPv6SendsEveryConnectionOfAClientToOneBackend() throws {
        let h = try makeHarness(podsOnA: 1, podsOnB: 2)
        try h.apply(h.webService(pods: h.lab.podsOnA + h.lab.podsOnB,
                                 extra: "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}",
                                 ipv6: true))
        let report = try h.client.tcp(target: h.tcpTarget6, count: 20)
        XCTAssertEqual(report.ok, 20, "failures: \(report.failures) \(report.firstError ?? "")")
        XCTAssertEqual(report.backends.count, 1, "one backend for the client: \(report.backends)")
        let counters = h.datapath.outcomeCounters()
        XCTAssertEqual(counters["np_affinity_new"], 1)
        XCTAssertEqual(counters["np_affinity_hit"], 19)
    }

    /// A.7: the families are independent dataplanes. A dual-stack client reaches the IPv4
    /// and the IPv6 NodePort of two Services at once, each with its family's pods.
    func testIPv4AndIPv6NodePortsServeSideBySide() throws {
        let h = try makeHarness(podsOnA: 1, podsOnB: 1)
        try h.apply(h.webService(pods: h.lab.podsOnB, ipv6: true) + "---\n"
                    + h.webService(pods: h.lab.podsOnA).replacingOccurrences(of: "name: web", with: "name: web4")
                        .replacingOccurrences(of: "service-name: web}", with: "service-name: web4}")
                        .replacingOccurrences(of: "10.96.0.10", with: "10.96.0.11")
                        .replacingOccurrences(of: "nodePort: 30080", with: "nodePort: 30081")
                        .replacingOccurrences(of: "nodePort: 30053", with: "nodePort: 30054"))
        let v6 = try h.client.tcp(target: h.tcpTarget6, count: 10)
        XCTAssertEqual(v6.backends, ["b1": 10], "\(v6.failures) \(v6.firstError ?? "")")
        XCTAssertEqual(v6.seenClientAddresses, [h.lab.nodeAIPv6])
        let v4 = try h.client.tcp(target: "\(h.lab.externalIPv4):30081", count: 10)
        XCTAssertEqual(v4.backends, ["a1": 10], "\(v4.failures) \(v4.firstError ?? "")")
        XCTAssertEqual(v4.seenClientAddresses, [h.lab.clientIPv4])
        // The IPv6 NodePort number is not served on IPv4 and the reverse.
        XCTAssertEqual(try h.client.tcp(target: h.tcpTarget, count: 2).failures, ["ECONNREFUSED": 2])
        XCTAssertEqual(try h.client.tcp(target: "[\(h.lab.externalIPv6)]:30081", count: 2).failures, ["ECONNREFUSED": 2])
    }
}
