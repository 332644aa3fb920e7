import Controller
import Datapath
import Foundation
import Glibc
import NetLab
import ServiceModel
import XCTest

/// The forwarding benchmark's instruments, for real: frames the kernel generates (XDP live
/// frames) cross a node and are counted by the sink only once translated to a backend.
/// If the generator's frames were malformed (checksums), the node's datapath or conntrack
/// would not translate them and the sink would count nothing.
final class ForwardingLabTests: XCTestCase {
    private func loads(_ lab: ForwardingLab) throws -> (udp: XDPTrafficGenerator.Load, syn: XDPTrafficGenerator.Load) {
        let udp = try lab.udpFrame(destinationPort: ForwardingLab.udpNodePort)
        let syn = try lab.tcpSYNFrame(destinationPort: ForwardingLab.tcpNodePort)
        return (.init(frame: udp, l4ChecksumOffset: 0, flows: 8, newFlows: false),
                .init(frame: syn, l4ChecksumOffset: XDPTrafficGenerator.tcpChecksumOffset, flows: 1, newFlows: true))
    }

    func testTheTemplatesCarryValidChecksums() {
        let mac: [UInt8] = [2, 0, 0, 0, 0, 1]
        let syn = XDPTrafficGenerator.tcpSYNFrame(sourceMAC: mac, destinationMAC: mac, source: "198.18.7.1",
                                                  destination: "198.18.7.2", sourcePort: 1024, destinationPort: ForwardingLab.tcpNodePort)
        XCTAssertEqual(syn.count, XDPTrafficGenerator.frameBytes)
        XCTAssertEqual(XDPTrafficGenerator.checksum(Array(syn[14..<34])), 0, "IPv4 header checksum")
        let pseudo: [UInt8] = [198, 18, 7, 1, 198, 18, 7, 2, 0, 6, 0, 20]
        XCTAssertEqual(XDPTrafficGenerator.checksum(pseudo + Array(syn[34..<54])), 0, "TCP checksum")
        XCTAssertEqual(syn[47], 0x02, "SYN")
    }

    /// Swiftlane's native XDP datapath translates the generated UDP frames (established
    /// flows) and TCP SYNs (new flows) and redirects them to the backends.
    func testGeneratedFramesCrossTheXDPDatapathToTheBackends() throws {
        try requireKernelBPF()
        let lab = try ForwardingLab()
        let pinPath = uniquePinPath("fwdlab")
        defer {
            lab.teardown()
            SocketLoadBalancer.uninstall(pinPath: pinPath)
        }
        let generator = try XDPTrafficGenerator(sinkCIDR: lab.backendCIDR)
        try generator.attach(to: lab)
        let datapath = try NodePortDatapath.install(
            NodePortOptions(pinPath: pinPath, devices: [lab.nodeExternalDevice, lab.nodeInternalDevice], acceleration: .native,
                            snatPorts: 32768...60999, networkNamespace: "/run/netns/" + lab.nodeNetns), logger: testLogger)
        let syncer = try ProxySyncer(nodeName: "node-a", maps: try KernelLoadBalancerMaps(pinPath: pinPath), logger: testLogger)
        XCTAssertEqual(syncer.sync(try ManifestDecoder.decode(Data(lab.nodePortManifest(backends: 2, namespace: "bench").utf8), source: "test.yaml")).failures.count, 0)
        let (udp, syn) = try loads(lab)

        try generator.configure(udp)
        let established = try generator.measure(warmUp: 0.1, seconds: 0.3)
        // The generator offers more than the node takes (the excess is dropped at the
        // node's device queue): what counts is what reached the backends, and how.
        XCTAssertGreaterThan(established.sunk, 10_000, "translated frames reach the backends")
        // (The sink sees a few frames of the node's own, IPv6 neighbour discovery.)
        XCTAssertLessThan(established.passed, 100, "nothing untranslated reaches the sink")
        try generator.configure(syn)
        // 0.1 s of SYNs (a few tens of thousands) stays well below the SNAT ports 2 backends
        // offer (2 × 28,232).
        let newFlows = try generator.measure(warmUp: 0, seconds: 0.1)
        XCTAssertGreaterThan(newFlows.sunk, 1000)
        let counters = datapath.outcomeCounters()
        XCTAssertGreaterThanOrEqual(counters["np_xdp_redirect"] ?? 0, established.sunk + newFlows.sunk, "all of it in XDP")
        XCTAssertGreaterThanOrEqual(counters["np_forward_new"] ?? 0, newFlows.sunk, "every SYN a new flow")
        XCTAssertEqual(counters["np_rewrite_failed"] ?? 0, 0)
        XCTAssertLessThan(counters["np_ports_exhausted"] ?? 0, newFlows.sunk / 20, "the SNAT ports suffice for these flows")
    }

    /// The benchmark's floor: the loop without a node, generator straight to the sink.
    func testTheDirectLoopReachesTheSinkWithoutTheNode() throws {
        try requireKernelBPF()
        let lab = try ForwardingLab()
        defer { lab.teardown() }
        let generator = try XDPTrafficGenerator(sinkCIDR: lab.backendCIDR)
        try generator.attach(to: lab, direct: true)
        let frame = try lab.udpFrame(to: lab.backendIPv4(0), destinationPort: 9000)
        try generator.configure(.init(frame: frame, l4ChecksumOffset: 0, flows: 8, newFlows: false))
        let window = try generator.measure(warmUp: 0, seconds: 0.1)
        XCTAssertGreaterThan(window.sunk, 10_000)
        let node = try lab.exec(["cat", "/sys/class/net/\(lab.nodeExternalDevice)/statistics/rx_packets"], netns: lab.nodeNetns)
        XCTAssertLessThan(Int(node.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .max, 100, "the node sees none of it")
    }

    /// The same SYNs through kube-proxy-style iptables DNAT: conntrack drops TCP segments
    /// with a bad checksum, so their arrival proves the generator keeps it valid while
    /// varying ports and addresses.
    func testGeneratedSYNsPassConntrackChecksumValidation() throws {
        try requireKernelBPF()
        let lab = try ForwardingLab()
        defer { lab.teardown() }
        let generator = try XDPTrafficGenerator(sinkCIDR: lab.backendCIDR)
        try generator.attach(to: lab)
        try lab.exec(["sysctl", "-qw", "net.netfilter.nf_conntrack_checksum=1"], netns: lab.nodeNetns, allowFailure: true)
        try lab.exec(["iptables", "-t", "nat", "-A", "PREROUTING", "-d", lab.nodeExternalIPv4, "-p", "tcp", "--dport", "\(ForwardingLab.tcpNodePort)",
                      "-j", "DNAT", "--to-destination", "\(lab.backendIPv4(0)):8080"], netns: lab.nodeNetns)
        try lab.exec(["iptables", "-t", "nat", "-A", "POSTROUTING", "-d", lab.backendIPv4(0), "-j", "MASQUERADE"],
                     netns: lab.nodeNetns)
        var syn = try loads(lab).syn
        try generator.configure(syn)
        let window = try generator.measure(warmUp: 0, seconds: 0.2)
        XCTAssertGreaterThan(window.sunk, 1000, "SYNs DNATed by iptables reach the backend")
        // The control: without the checksum kept up to date, conntrack refuses the SYNs.
        syn.l4ChecksumOffset = 0
        try generator.configure(syn)
        let broken = try generator.measure(warmUp: 0, seconds: 0.2)
        // Untranslated frames leave the loop (they go to the node's own stack), so it ends
        // after its first lap: nothing reaches the sink in the window.
        XCTAssertLessThan(broken.sunk, window.sunk / 100, "SYNs with stale checksums must not be translated")
    }
}
