import Foundation
import Glibc
import NetLab
import XCTest

/// The benchmarks' interleaved probes (HookCostProbe.interleavedTCP / interleavedUDP)
/// through a ClusterIP on the socket LB and directly to a backend: every turn is answered
/// and counted, and a target that does not answer fails the run instead of being timed.
final class InterleavedProbeTests: XCTestCase {
    var harness: SocketLBHarness!

    override func setUpWithError() throws {
        try requireKernelBPF()
        harness = try SocketLBHarness(backends: 2, label: name.filter { $0.isLetter }.suffix(20).description)
    }

    override func tearDown() {
        harness?.tearDown()
        harness = nil
    }

    private func program(vip: String) throws {
        try harness.apply(LabManifests.documents(
            LabManifests.service(name: "web", clusterIPs: [vip]),
            LabManifests.slice(service: "web", addresses: harness.lab.backends.map(\.ipv4))))
    }

    func testInterleavedTCPAndUDPThroughAClusterIPCountEveryTurnOfBothTargets() throws {
        let lab = harness.lab
        let vip = lab.vipIPv4(20)
        try program(vip: vip)
        // The direct side takes both backends in turn.
        let tcp = try HookCostProbe.interleavedTCP(netns: lab.clientNetns, cgroup: lab.clientCgroup.path,
                                                   first: ["\(vip):80"], second: lab.backends.map { "\($0.ipv4):8080" },
                                                   iterations: 100)
        let udp = try HookCostProbe.interleavedUDP(netns: lab.clientNetns, cgroup: lab.clientCgroup.path,
                                                   first: ["\(vip):53"], second: lab.backends.map { "\($0.ipv4):8053" },
                                                   iterations: 100)
        for figures in [tcp.first, tcp.second, udp.first, udp.second] {
            XCTAssertEqual(figures.latency.count, 100)
            XCTAssertGreaterThan(figures.latency.minNs, 0)
            XCTAssertLessThanOrEqual(figures.latency.p50Ns, figures.latency.p99Ns)
            // A cycle (socket, exchange, close) takes longer than its timed part.
            XCTAssertGreaterThan(figures.cyclesPerSecond, 0)
            XCTAssertLessThanOrEqual(figures.cyclesPerSecond, 1e9 / Double(figures.latency.meanNs))
        }
        // The ClusterIP exchanges really went through the socket LB (not, say, refused).
        let counters = harness.datapath.maps.outcomeCounters()
        XCTAssertGreaterThanOrEqual(counters["sock_forward"] ?? 0, 150, "\(counters)")
    }

    func testInterleavedProbesFailWhenATargetDoesNotAnswerOrASideIsEmpty() throws {
        let lab = harness.lab
        // Outside the cgroup nothing translates the ClusterIP, and no route leads to it.
        XCTAssertThrowsError(try HookCostProbe.interleavedUDP(
            netns: lab.clientNetns, cgroup: nil, first: ["\(lab.vipIPv4(21)):53"], second: ["\(lab.backends[0].ipv4):8053"],
            iterations: 10))
        // One address of a side has no listener (the reply is an ICMP port unreachable):
        // its turn comes in the rotation and fails the run.
        XCTAssertThrowsError(try HookCostProbe.interleavedUDP(
            netns: lab.clientNetns, cgroup: nil, first: ["\(lab.backends[0].ipv4):8053"],
            second: ["\(lab.backends[1].ipv4):8053", "\(lab.backends[0].ipv4):9"], iterations: 10))
        XCTAssertThrowsError(try HookCostProbe.interleavedTCP(
            netns: lab.clientNetns, cgroup: nil, first: [], second: ["\(lab.backends[0].ipv4):8080"], iterations: 10))
    }
}
