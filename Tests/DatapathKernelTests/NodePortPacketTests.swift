import CLibBPF
@testable import Datapath
import Foundation
import Glibc
import NetLab
import XCTest

/// Frames for BPF_PROG_TEST_RUN, built byte by byte (IPv4 header checksums computed).
enum TestFrame {
    static let clientMAC: [UInt8] = [0x02, 0, 0, 0, 0, 0x01]
    static let nodeMAC: [UInt8] = [0x02, 0, 0, 0, 0, 0x02]
    static let client: [UInt8] = [198, 51, 100, 7]
    static let node: [UInt8] = [192, 0, 2, 1]

    static func ethernet(type: UInt16 = 0x0800, _ payload: [UInt8]) -> [UInt8] {
        nodeMAC + clientMAC + [UInt8(type >> 8), UInt8(type & 0xff)] + payload
    }

    static func ipv4(proto: UInt8, src: [UInt8] = client, dst: [UInt8] = node, options: [UInt8] = [], version: UInt8 = 4,
                     ihl: UInt8? = nil, totalLength: Int? = nil, fragment: UInt16 = 0, ttl: UInt8 = 64,
                     id: UInt16 = 0x1234, _ payload: [UInt8]) -> [UInt8] {
        let headerLength = 20 + options.count
        let total = totalLength ?? headerLength + payload.count
        let versionAndLength: UInt8 = version << 4 | (ihl ?? UInt8(headerLength / 4))
        var header: [UInt8] = [versionAndLength, 0, UInt8(total >> 8), UInt8(total & 0xff)]
        header += [UInt8(id >> 8), UInt8(id & 0xff), UInt8(fragment >> 8), UInt8(fragment & 0xff), ttl, proto, 0, 0]
        header += src
        header += dst
        header += options
        let sum = checksum(header)
        header[10] = UInt8(sum >> 8)
        header[11] = UInt8(sum & 0xff)
        return header + payload
    }

    static func tcp(sport: UInt16 = 40000, dport: UInt16, dataOffset: UInt8 = 5, flags: UInt8 = 0x02) -> [UInt8] {
        var header: [UInt8] = [UInt8(sport >> 8), UInt8(sport & 0xff), UInt8(dport >> 8), UInt8(dport & 0xff)]
        header += [0, 0, 0, 1, 0, 0, 0, 0]
        header += [dataOffset << 4, flags, 0xff, 0xff, 0xab, 0xcd, 0, 0]
        return header
    }

    static func udp(sport: UInt16 = 40000, dport: UInt16, length: Int? = nil, payload: [UInt8] = [1, 2, 3, 4]) -> [UInt8] {
        let total = length ?? 8 + payload.count
        var header: [UInt8] = [UInt8(sport >> 8), UInt8(sport & 0xff), UInt8(dport >> 8), UInt8(dport & 0xff)]
        header += [UInt8(total >> 8), UInt8(total & 0xff), 0, 0]
        return header + payload
    }

    /// A TCP or UDP segment with its checksum (over the IPv4 pseudo header) filled in.
    static func withL4Checksum(_ segment: [UInt8], proto: UInt8, src: [UInt8] = client, dst: [UInt8] = node) -> [UInt8] {
        let offset = proto == 6 ? 16 : 6
        var out = segment
        out[offset] = 0
        out[offset + 1] = 0
        let pseudo = src + dst + [0, proto, UInt8(segment.count >> 8), UInt8(segment.count & 0xff)]
        let sum = checksum(pseudo + out)
        out[offset] = UInt8(sum >> 8)
        out[offset + 1] = UInt8(sum & 0xff)
        return out
    }

    static let client6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]
    static let node6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]

    /// An IPv6 header (`payloadLength` defaults to the payload's) and the payload.
    static func ipv6(nextHeader: UInt8, src: [UInt8] = client6, dst: [UInt8] = node6, version: UInt8 = 6,
                     payloadLength: Int? = nil, hopLimit: UInt8 = 64, _ payload: [UInt8]) -> [UInt8] {
        let length = payloadLength ?? payload.count
        var header: [UInt8] = [version << 4, 0, 0, 0, UInt8(length >> 8), UInt8(length & 0xff), nextHeader, hopLimit]
        header += src
        header += dst
        return header + payload
    }

    /// A TCP, UDP or ICMPv6 message with its checksum (over the IPv6 pseudo header) filled in.
    static func withL4Checksum6(_ segment: [UInt8], proto: UInt8, src: [UInt8] = client6, dst: [UInt8] = node6) -> [UInt8] {
        let offset = proto == 6 ? 16 : proto == 17 ? 6 : 2
        var out = segment
        out[offset] = 0
        out[offset + 1] = 0
        let length = segment.count
        let pseudo = src + dst + [0, 0, UInt8(length >> 8), UInt8(length & 0xff), 0, 0, 0, proto]
        let sum = checksum(pseudo + out)
        out[offset] = UInt8(sum >> 8)
        out[offset + 1] = UInt8(sum & 0xff)
        return out
    }

    /// The Internet checksum of `bytes` (0 when the bytes already hold a valid checksum).
    static func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var index = 0
        while index + 1 < bytes.count {
            sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < bytes.count { sum += UInt32(bytes[index]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }
}

/// The parser and the reject path of `bpf/nodeport.c` on crafted frames through
/// BPF_PROG_TEST_RUN: every malformed or truncated frame is dropped with its own counted
/// reason (the verifier already guarantees no out-of-bounds read), frames that are not
/// for the datapath pass untouched, and a frontend without endpoints answers with a
/// well-formed ICMP port unreachable.
final class NodePortPacketTests: XCTestCase {
    private static let tcActOK: Int32 = 0
    private static let tcActShot: Int32 = 2
    private static let tcActRedirect: Int32 = 7
    private static let xdpDrop: Int32 = 1
    private static let xdpPass: Int32 = 2
    private static let xdpRedirect: Int32 = 4
    private static let rejectingPort: UInt16 = 30099

    private var pinPath = ""
    private var datapath: NodePortDatapath!

    override func setUpWithError() throws {
        try requireKernelBPF()
        pinPath = uniquePinPath("nppkt")
        datapath = try NodePortDatapath.load(NodePortOptions(pinPath: pinPath), logger: testLogger)
        // A NodePort frontend without endpoints on TCP and UDP, served on TestFrame.node.
        try addRejectingNodePort(wildcard: NodePortDatapath.v4MappedWords("0.0.0.0")!,
                                 nodeAddress: NodePortDatapath.v4MappedWords("192.0.2.1")!, revNat: 1)
    }

    /// The NodePort wildcard entry `wildcard` (a family's) rejecting on TCP and UDP
    /// `rejectingPort`, and `nodeAddress` as a node address serving NodePorts.
    private func addRejectingNodePort(wildcard: (UInt32, UInt32, UInt32, UInt32), nodeAddress: (UInt32, UInt32, UInt32, UInt32),
                                      revNat: UInt32) throws {
        let maps = try KernelLoadBalancerMaps(pinPath: pinPath)
        for proto in [UInt8(IPPROTO_TCP), UInt8(IPPROTO_UDP)] {
            var key = sl_service_key()
            key.addr = wildcard
            key.port = Self.rejectingPort.bigEndian
            key.proto = proto
            var value = sl_service_value()
            value.rev_nat_id = revNat
            value.flags = UInt16(SL_SVC_F_REJECT.rawValue)
            value.kind = UInt8(SL_KIND_NODE_PORT.rawValue)
            try maps.services.update(key, value)
        }
        var nodeKey = sl_node_addr_key()
        nodeKey.addr = nodeAddress
        var nodeValue = sl_node_addr()
        nodeValue.flags = UInt32(SL_NODE_ADDR_F_NODE_PORT.rawValue)
        try datapath.nodeAddresses.update(nodeKey, nodeValue)
    }

    override func tearDown() {
        datapath = nil
        SocketLoadBalancer.uninstall(pinPath: pinPath)
    }

    private struct Row {
        var name: String
        var frame: [UInt8]
        var verdict: Int32
        var reason: String
    }

    /// Runs each row through the tc ingress program; each must give its verdict and raise
    /// exactly its reason's counter by one and no other. With `program: .xdp` the rows are
    /// read as what XDP must do with the same frames: drop what tc drops, with the same
    /// reason, and leave the rest untouched to tc (counted only as np_xdp_pass_to_tc).
    private func check(_ rows: [Row], program: NodePortDatapath.Program = .ingress, file: StaticString = #filePath,
                       line: UInt = #line) throws {
        for var row in rows {
            if program == .xdp {
                row.name = "XDP: " + row.name
                if row.verdict == Self.tcActShot {
                    row.verdict = Self.xdpDrop
                } else {
                    (row.verdict, row.reason) = (Self.xdpPass, "np_xdp_pass_to_tc")
                }
            }
            let before = datapath.outcomeCounters()
            let result: (verdict: Int32, packet: [UInt8])
            do {
                result = try datapath.testRun(program, packet: row.frame)
            } catch {
                XCTFail("\(row.name): \(error)", file: file, line: line)
                continue
            }
            let after = datapath.outcomeCounters()
            XCTAssertEqual(result.verdict, row.verdict, "verdict of \(row.name)", file: file, line: line)
            var changed: [String: UInt64] = [:]
            for (reason, count) in after where before[reason] != count { changed[reason] = count - (before[reason] ?? 0) }
            XCTAssertEqual(changed, [row.reason: 1], "counters of \(row.name)", file: file, line: line)
            if program == .xdp && row.verdict == Self.xdpPass {
                XCTAssertEqual(result.packet, row.frame, "\(row.name) goes to tc unmodified", file: file, line: line)
            }
        }
    }

    func testTruncatedAndMalformedFramesAreDroppedWithTheirReason() throws {
        typealias F = TestFrame
        let tcp = UInt8(IPPROTO_TCP), udp = UInt8(IPPROTO_UDP)
        // BPF_PROG_TEST_RUN refuses (EINVAL) an IPv4 frame shorter than an IPv4 header, so
        // the parser's first two bounds checks are covered by the verifier alone.
        let rows = [
            Row(name: "IHL 4", frame: F.ethernet(F.ipv4(proto: tcp, ihl: 4, F.tcp(dport: 80))),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "version 6 in an IPv4 frame", frame: F.ethernet(F.ipv4(proto: tcp, version: 6, F.tcp(dport: 80))),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "total length beyond the frame", frame: F.ethernet(F.ipv4(proto: tcp, totalLength: 200, F.tcp(dport: 80))),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "total length shorter than the header", frame: F.ethernet(F.ipv4(proto: tcp, totalLength: 16, F.tcp(dport: 80))),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "IHL beyond the frame", frame: F.ethernet(F.ipv4(proto: tcp, ihl: 15, totalLength: 40, F.tcp(dport: 80))),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "TCP header cut at 10 bytes", frame: F.ethernet(F.ipv4(proto: tcp, Array(F.tcp(dport: 80).prefix(10)))),
                verdict: Self.tcActShot, reason: "np_truncated"),
            Row(name: "TCP data offset 4", frame: F.ethernet(F.ipv4(proto: tcp, F.tcp(dport: 80, dataOffset: 4))),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "TCP data offset beyond the datagram", frame: F.ethernet(F.ipv4(proto: tcp, F.tcp(dport: 80, dataOffset: 15))),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "UDP header cut at 6 bytes", frame: F.ethernet(F.ipv4(proto: udp, Array(F.udp(dport: 53).prefix(6)))),
                verdict: Self.tcActShot, reason: "np_truncated"),
            Row(name: "UDP length 4", frame: F.ethernet(F.ipv4(proto: udp, F.udp(dport: 53, length: 4))),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "UDP length beyond the datagram", frame: F.ethernet(F.ipv4(proto: udp, F.udp(dport: 53, length: 400))),
                verdict: Self.tcActShot, reason: "np_malformed"),
        ]
        try check(rows)
        try check(rows, program: .xdp)
    }

    func testFramesNotForTheDatapathPassUntouched() throws {
        typealias F = TestFrame
        let tcp = UInt8(IPPROTO_TCP)
        let nops: [UInt8] = [1, 1, 1, 1, 1, 1, 1, 0]
        let rows = [
            Row(name: "ARP", frame: F.ethernet(type: 0x0806, Array(repeating: 0, count: 28)), verdict: Self.tcActOK, reason: "np_not_ipv4"),
            Row(name: "IPv6 neighbour solicitation", frame: F.ethernet(type: 0x86dd, F.ipv6(
                nextHeader: 58, hopLimit: 255, F.withL4Checksum6([135, 0, 0, 0, 0, 0, 0, 0] + F.node6, proto: 58))),
                verdict: Self.tcActOK, reason: "np_not_ipv4"),
            Row(name: "ICMP echo", frame: F.ethernet(F.ipv4(proto: 1, [8, 0, 0, 0, 0, 1, 0, 1])), verdict: Self.tcActOK, reason: "np_not_ipv4"),
            Row(name: "ICMP fragment", frame: F.ethernet(F.ipv4(proto: 1, fragment: 0x2000, [8, 0, 0, 0, 0, 1, 0, 1])),
                verdict: Self.tcActOK, reason: "np_fragment"),
            Row(name: "later fragment, its first not seen", frame: F.ethernet(F.ipv4(proto: tcp, fragment: 100,
                                                                                    Array(repeating: 0xee, count: 24))),
                verdict: Self.tcActOK, reason: "np_fragment_untracked"),
            Row(name: "TCP with IP options to no frontend", frame: F.ethernet(F.ipv4(proto: tcp, options: nops, F.tcp(dport: 81))),
                verdict: Self.tcActOK, reason: "np_not_service"),
            Row(name: "an ACK to a NodePort without a tracked flow",
                frame: F.ethernet(F.ipv4(proto: tcp, F.tcp(dport: Self.rejectingPort, flags: 0x10))),
                verdict: Self.tcActOK, reason: "np_tcp_untracked"),
            Row(name: "NodePort on an address that is not the node's",
                frame: F.ethernet(F.ipv4(proto: tcp, dst: [192, 0, 2, 99], F.tcp(dport: Self.rejectingPort))),
                verdict: Self.tcActOK, reason: "np_not_service"),
        ]
        try check(rows)
        for row in rows {
            XCTAssertEqual(try datapath.testRun(.ingress, packet: row.frame).packet, row.frame, "\(row.name) is not modified")
        }
        try check(rows, program: .xdp)
    }

    func testAFrontendWithoutEndpointsAnswersWithICMPPortUnreachable() throws {
        typealias F = TestFrame
        for (proto, l4, quoted) in [(UInt8(IPPROTO_TCP), F.tcp(dport: Self.rejectingPort), 20),
                                    (UInt8(IPPROTO_UDP), F.udp(dport: Self.rejectingPort), 8)] {
            let ip = F.ipv4(proto: proto, l4)
            let frame = F.ethernet(ip)
            try check([Row(name: "proto \(proto) to a rejecting NodePort", frame: frame, verdict: Self.tcActRedirect, reason: "np_reject")])
            // XDP leaves building the ICMP error to tc.
            try check([Row(name: "proto \(proto) to a rejecting NodePort", frame: frame, verdict: Self.tcActOK, reason: "")],
                      program: .xdp)
            let reply = try datapath.testRun(.ingress, packet: frame).packet
            XCTAssertEqual(reply.count, 14 + 20 + 8 + 20 + quoted, "proto \(proto)")
            guard reply.count == 14 + 20 + 8 + 20 + quoted else { continue }
            XCTAssertEqual(Array(reply[0..<6]), F.clientMAC, "back to the previous hop")
            XCTAssertEqual(Array(reply[6..<12]), F.nodeMAC)
            let header = Array(reply[14..<34])
            XCTAssertEqual(header[0], 0x45)
            XCTAssertEqual(Int(header[2]) << 8 | Int(header[3]), 20 + 8 + 20 + quoted, "total length")
            XCTAssertEqual(header[9], 1, "ICMP")
            XCTAssertEqual(Array(header[12..<16]), F.node, "from the address the client asked for")
            XCTAssertEqual(Array(header[16..<20]), F.client)
            XCTAssertEqual(F.checksum(header), 0, "IPv4 header checksum")
            let icmp = Array(reply[34...])
            XCTAssertEqual(icmp[0], 3, "destination unreachable")
            XCTAssertEqual(icmp[1], 3, "port unreachable")
            XCTAssertEqual(F.checksum(icmp), 0, "ICMP checksum")
            XCTAssertEqual(Array(icmp[8...]), Array(ip.prefix(20 + quoted)), "quotes the offending header")
        }
    }

    /// The errors the datapath builds share one token bucket, IPv4 and IPv6 alike
    /// (`nodePort.icmpErrors`): `burst` errors, then drops counted np_icmp_rate_limited
    /// until time earns a token back; `perSecond: 0` means no limit.
    func testTheICMPErrorsItBuildsAreRateLimited() throws {
        typealias F = TestFrame
        try addIPv6RejectingNodePort()
        let v4 = F.ethernet(F.ipv4(proto: UInt8(IPPROTO_UDP), F.udp(dport: Self.rejectingPort)))
        let v6 = F.ethernet(type: 0x86dd, F.ipv6(nextHeader: UInt8(IPPROTO_UDP), F.udp(dport: Self.rejectingPort)))
        func reload(_ limit: NodePortOptions.ICMPErrorLimit) throws {
            datapath = nil
            var options = NodePortOptions(pinPath: pinPath)
            options.icmpErrorLimit = limit
            datapath = try NodePortDatapath.load(options, logger: testLogger)
        }
        func answered(_ name: String) -> Row {
            Row(name: name, frame: name.hasPrefix("v6") ? v6 : v4, verdict: Self.tcActRedirect, reason: "np_reject")
        }
        func limited(_ name: String) -> Row {
            Row(name: name, frame: name.hasPrefix("v6") ? v6 : v4, verdict: Self.tcActShot, reason: "np_icmp_rate_limited")
        }

        try reload(.init(perSecond: 1, burst: 3))
        try check([answered("v4 1"), answered("v6 2"), answered("v4 3"), limited("v6 4"), limited("v4 5"), limited("v4 6")])
        // One second earns one token at this rate.
        Thread.sleep(forTimeInterval: 1.1)
        let results = try (0..<3).map { _ in try datapath.testRun(.ingress, packet: v4).verdict }
        XCTAssertEqual(results.first, Self.tcActRedirect, "a token earned back after a second")
        XCTAssertEqual(results.filter { $0 == Self.tcActRedirect }.count, 1, "only one: \(results)")

        try reload(.init(perSecond: 0, burst: 1))
        let limitedBefore = datapath.outcomeCounters()["np_icmp_rate_limited"]
        let unlimited = try (0..<200).map { i in try datapath.testRun(.ingress, packet: i % 2 == 0 ? v4 : v6).verdict }
        XCTAssertEqual(Set(unlimited), [Self.tcActRedirect], "no limit")
        XCTAssertEqual(datapath.outcomeCounters()["np_icmp_rate_limited"], limitedBefore)
    }

    func testARejectedPacketWithIPOptionsIsDroppedNotAnsweredWrongly() throws {
        typealias F = TestFrame
        let frame = F.ethernet(F.ipv4(proto: UInt8(IPPROTO_TCP), options: [1, 1, 1, 0], F.tcp(dport: Self.rejectingPort)))
        try check([Row(name: "SYN with IP options to a rejecting NodePort", frame: frame, verdict: Self.tcActShot, reason: "np_reject_failed")])
        try check([Row(name: "SYN with IP options to a rejecting NodePort", frame: frame, verdict: Self.tcActOK, reason: "")],
                  program: .xdp)
    }

    /// A scratch network namespace with a route to the test client, so bpf_fib_lookup can
    /// forward inside BPF_PROG_TEST_RUN without looking at the host's routes.
    private func withRoutingNamespace(_ body: (String) throws -> Void) throws {
        let name = "snpk\(UInt32.random(in: 0...UInt32.max))"
        try Shell.run(["ip", "netns", "add", name])
        defer { _ = try? Shell.run(["ip", "netns", "del", name], allowFailure: true) }
        for argv in [["ip", "link", "set", "lo", "up"], ["ip", "link", "add", "snd0", "type", "veth", "peer", "name", "snd1"],
                     ["ip", "addr", "add", "198.51.100.1/24", "dev", "snd0"],
                     ["ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "snd0", "nodad"],
                     ["ip", "-6", "addr", "add", "fd00::1/64", "dev", "snd1", "nodad"], ["ip", "link", "set", "snd1", "up"],
                     ["ip", "link", "set", "snd0", "up"],
                     ["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"], ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]] {
            try Shell.run(["ip", "netns", "exec", name] + argv)
        }
        try body("/run/netns/" + name)
    }

    /// Writes a conntrack entry of a source-NATed flow: the packet `from` -> `to` (of
    /// direction `dir`) is translated to `translatedTo`, with `nat` the other end's
    /// translation. Addresses of either family.
    private func addSourceNATedEntry(_ dir: sl_nat_dir, proto: Int, from: (String, UInt16), to: (String, UInt16),
                                     translatedTo: (String, UInt16), nat: (String, UInt16)) throws {
        func words(_ address: String) -> (UInt32, UInt32, UInt32, UInt32) {
            (address.contains(":") ? NodePortDatapath.ipv6Words(address) : NodePortDatapath.v4MappedWords(address))!
        }
        var key = sl_nat_key()
        key.saddr = words(from.0)
        key.daddr = words(to.0)
        key.sport = from.1.bigEndian
        key.dport = to.1.bigEndian
        key.proto = UInt8(proto)
        key.dir = UInt8(dir.rawValue)
        var entry = sl_nat_entry()
        entry.to_addr = words(translatedTo.0)
        entry.to_port = translatedTo.1.bigEndian
        entry.nat_addr = words(nat.0)
        entry.nat_port = nat.1.bigEndian
        entry.flags = UInt16(SL_NAT_F_SNAT.rawValue)
        try datapath.nat.update(key, entry)
    }

    func testAnICMPErrorAboutASourceNATedFlowGoesBackToTheClientTranslated() throws {
        typealias F = TestFrame
        let backend: [UInt8] = [10, 0, 0, 5], frontend: [UInt8] = [203, 0, 113, 10], router: [UInt8] = [10, 0, 0, 1]
        let (natPort, backendPort, clientPort, frontendPort): (UInt16, UInt16, UInt16, UInt16) = (61234, 8080, 40000, 30080)
        // The REPLY entry of a flow client:40000 -> frontend:30080 sent to backend:8080 as node:61234.
        try addSourceNATedEntry(SL_NAT_DIR_REPLY, proto: IPPROTO_TCP, from: ("10.0.0.5", backendPort), to: ("192.0.2.1", natPort),
                                translatedTo: ("203.0.113.10", frontendPort), nat: ("198.51.100.7", clientPort))

        // "Fragmentation needed" about the node's packet to the backend.
        let quoted = Array(F.ipv4(proto: UInt8(IPPROTO_TCP), src: F.node, dst: backend, F.tcp(sport: natPort, dport: backendPort)).prefix(28))
        func icmpError(from source: [UInt8], about inner: [UInt8]) -> [UInt8] {
            var icmp: [UInt8] = [3, 4, 0, 0, 0, 0, 0x05, 0xdc] + inner
            let sum = F.checksum(icmp)
            icmp[2] = UInt8(sum >> 8)
            icmp[3] = UInt8(sum & 0xff)
            return F.ethernet(F.ipv4(proto: 1, src: source, dst: F.node, icmp))
        }
        let fromBackend = icmpError(from: backend, about: quoted)
        let fromRouter = icmpError(from: router, about: quoted)
        var untracked = quoted
        untracked[20] ^= 0xff  // another source port: no flow
        untracked[10] = 0; untracked[11] = 0
        let otherFlow = icmpError(from: router, about: untracked)

        try withRoutingNamespace { netns in
            try NodePortDatapath.inNamespace(netns) {
                try check([
                    Row(name: "ICMP error from the backend", frame: fromBackend, verdict: Self.tcActRedirect, reason: "np_icmp_error_reply"),
                    Row(name: "ICMP error from a router", frame: fromRouter, verdict: Self.tcActRedirect, reason: "np_icmp_error_reply"),
                    Row(name: "ICMP error about no tracked flow", frame: otherFlow, verdict: Self.tcActOK, reason: "np_not_service"),
                ])
                // XDP leaves ICMP errors to tc.
                try check([Row(name: "ICMP error from the backend", frame: fromBackend, verdict: Self.tcActOK, reason: "")],
                          program: .xdp)
                for (frame, outerSource) in [(fromBackend, frontend), (fromRouter, router)] {
                    let out = try datapath.testRun(.ingress, packet: frame).packet
                    XCTAssertEqual(out.count, frame.count)
                    guard out.count == frame.count else { continue }
                    let outer = Array(out[14..<34]), icmp = Array(out[34...]), inner = Array(out[42..<62])
                    XCTAssertEqual(Array(outer[12..<16]), outerSource, "outer source")
                    XCTAssertEqual(Array(outer[16..<20]), F.client, "to the client")
                    XCTAssertEqual(outer[8], 63, "TTL decremented")
                    XCTAssertEqual(F.checksum(outer), 0, "outer header checksum")
                    XCTAssertEqual(F.checksum(icmp), 0, "ICMP checksum")
                    XCTAssertEqual(F.checksum(inner), 0, "quoted header checksum")
                    XCTAssertEqual(Array(inner[12..<16]), F.client, "quoted source: the client")
                    XCTAssertEqual(Array(inner[16..<20]), frontend, "quoted destination: the frontend")
                    XCTAssertEqual(Array(out[62..<66]), [UInt8(clientPort >> 8), UInt8(clientPort & 0xff),
                                                          UInt8(frontendPort >> 8), UInt8(frontendPort & 0xff)], "quoted ports")
                    XCTAssertEqual(Array(icmp[0..<2]), [3, 4], "still fragmentation needed")
                }
            }
        }
    }

    /// ICMPv6 Packet Too Big from a router about the node's packet to a backend of a
    /// source-NATed IPv6 flow: for the client, quoting client -> frontend, with the
    /// ICMPv6 checksum (pseudo header included) valid when recomputed from scratch.
    func testAnICMPv6PacketTooBigAboutASourceNATedFlowGoesBackToTheClientTranslated() throws {
        typealias F = TestFrame
        let backend6: [UInt8] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]
        let frontend6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]
        let router6: [UInt8] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        let (natPort, backendPort, clientPort, frontendPort): (UInt16, UInt16, UInt16, UInt16) = (61234, 8080, 40000, 30080)
        try addSourceNATedEntry(SL_NAT_DIR_REPLY, proto: IPPROTO_TCP, from: ("fd00::5", backendPort), to: ("2001:db8::1", natPort),
                                translatedTo: ("2001:db8::10", frontendPort), nat: ("2001:db8::7", clientPort))

        let quoted = Array(F.ipv6(nextHeader: UInt8(IPPROTO_TCP), src: F.node6, dst: backend6,
                                  F.tcp(sport: natPort, dport: backendPort)).prefix(48))
        let tooBig = F.withL4Checksum6([2, 0, 0, 0, 0, 0, 0x05, 0x00] + quoted, proto: 58, src: router6, dst: F.node6)
        let frame = F.ethernet(type: 0x86dd, F.ipv6(nextHeader: 58, src: router6, dst: F.node6, tooBig))
        try withRoutingNamespace { netns in
            try NodePortDatapath.inNamespace(netns) {
                try check([Row(name: "Packet Too Big from a router", frame: frame, verdict: Self.tcActRedirect,
                               reason: "np_icmp_error_reply")])
                let out = try datapath.testRun(.ingress, packet: frame).packet
                XCTAssertEqual(out.count, frame.count)
                guard out.count == frame.count else { return }
                let outer = Array(out[14..<54]), icmp = Array(out[54...]), inner = Array(out[62..<102])
                XCTAssertEqual(Array(outer[8..<24]), router6, "outer source: the router, as it was")
                XCTAssertEqual(Array(outer[24..<40]), F.client6, "to the client")
                XCTAssertEqual(outer[7], 63, "hop limit decremented")
                XCTAssertEqual(F.withL4Checksum6(icmp, proto: 58, src: router6, dst: F.client6), icmp, "ICMPv6 checksum")
                XCTAssertEqual(Array(inner[8..<24]), F.client6, "quoted source: the client")
                XCTAssertEqual(Array(inner[24..<40]), frontend6, "quoted destination: the frontend")
                XCTAssertEqual(Array(out[102..<106]), [UInt8(clientPort >> 8), UInt8(clientPort & 0xff),
                                                        UInt8(frontendPort >> 8), UInt8(frontendPort & 0xff)], "quoted ports")
                XCTAssertEqual(Array(icmp[0..<2]) + Array(icmp[4..<8]), [2, 0, 0, 0, 0x05, 0x00], "still Packet Too Big, MTU 1280")
            }
        }
    }

    /// The client's port unreachable about a reply of a source-NATed flow (frontend ->
    /// client): for the backend, quoting backend -> node's SNAT address and port, from the
    /// node's SNAT address.
    func testAnICMPErrorAboutAReplyGoesToTheBackendTranslated() throws {
        typealias F = TestFrame
        let backend: [UInt8] = [10, 0, 0, 5], frontend: [UInt8] = [203, 0, 113, 10], snat: [UInt8] = [10, 0, 0, 9]
        let (natPort, backendPort, clientPort, frontendPort): (UInt16, UInt16, UInt16, UInt16) = (61234, 8080, 40000, 30080)
        try addSourceNATedEntry(SL_NAT_DIR_FORWARD, proto: IPPROTO_UDP, from: ("198.51.100.7", clientPort), to: ("203.0.113.10", frontendPort),
                                translatedTo: ("10.0.0.5", backendPort), nat: ("10.0.0.9", natPort))

        let quoted = Array(F.ipv4(proto: UInt8(IPPROTO_UDP), src: frontend, dst: F.client, F.udp(sport: frontendPort, dport: clientPort)).prefix(28))
        var icmp: [UInt8] = [3, 3, 0, 0, 0, 0, 0, 0] + quoted
        let sum = F.checksum(icmp)
        icmp[2] = UInt8(sum >> 8)
        icmp[3] = UInt8(sum & 0xff)
        let frame = F.ethernet(F.ipv4(proto: 1, src: F.client, dst: frontend, icmp))
        try withRoutingNamespace { netns in
            try Shell.run(["ip", "netns", "exec", URL(fileURLWithPath: netns).lastPathComponent, "ip", "route", "add", "10.0.0.0/24",
                           "via", "198.51.100.2", "onlink", "dev", "snd0"])
            try NodePortDatapath.inNamespace(netns) {
                try check([Row(name: "port unreachable about a reply", frame: frame, verdict: Self.tcActRedirect,
                               reason: "np_icmp_error_forward")])
                let out = try datapath.testRun(.ingress, packet: frame).packet
                XCTAssertEqual(out.count, frame.count)
                guard out.count == frame.count else { return }
                let outer = Array(out[14..<34]), icmpOut = Array(out[34...]), inner = Array(out[42..<62])
                XCTAssertEqual(Array(outer[12..<16]), snat, "outer source: the SNAT address")
                XCTAssertEqual(Array(outer[16..<20]), backend, "to the backend")
                XCTAssertEqual(F.checksum(outer), 0, "outer header checksum")
                XCTAssertEqual(F.checksum(icmpOut), 0, "ICMP checksum")
                XCTAssertEqual(F.checksum(inner), 0, "quoted header checksum")
                XCTAssertEqual(Array(inner[12..<16]), backend, "quoted source: the backend")
                XCTAssertEqual(Array(inner[16..<20]), snat, "quoted destination: the SNAT address")
                XCTAssertEqual(Array(out[62..<66]), [UInt8(backendPort >> 8), UInt8(backendPort & 0xff),
                                                      UInt8(natPort >> 8), UInt8(natPort & 0xff)], "quoted ports")
            }
        }
    }

    /// A packet of a tracked, source-NATed flow through tc and through XDP: XDP redirects
    /// it itself, and both leave the very same bytes, every checksum valid when recomputed
    /// from scratch (XDP updates them by hand, tc with the skb helpers). A UDP datagram
    /// without checksum keeps none. A destination without a resolved neighbour, or out of
    /// a device that is not the datapath's, goes from XDP to tc untouched.
    func testXDPTranslatesATrackedFlowExactlyAsTcDoes() throws {
        typealias F = TestFrame
        let frontend: [UInt8] = [203, 0, 113, 10], backend: [UInt8] = [198, 51, 100, 9], snat: [UInt8] = [198, 51, 100, 1]
        let unresolved: [UInt8] = [198, 51, 100, 10]
        let (clientPort, frontendPort, backendPort, natPort): (UInt16, UInt16, UInt16, UInt16) = (40000, 30080, 8080, 61234)
        func track(proto: UInt8, to destination: [UInt8]) throws {
            var key = sl_nat_key()
            key.saddr = NodePortDatapath.v4MappedWords("198.51.100.7")!
            key.daddr = NodePortDatapath.v4MappedWords("203.0.113.10")!
            key.sport = clientPort.bigEndian
            key.dport = frontendPort.bigEndian
            key.proto = proto
            key.dir = UInt8(SL_NAT_DIR_FORWARD.rawValue)
            var entry = sl_nat_entry()
            entry.to_addr = NodePortDatapath.v4MappedWords(destination.map(String.init).joined(separator: "."))!
            entry.to_port = backendPort.bigEndian
            entry.nat_addr = NodePortDatapath.v4MappedWords("198.51.100.1")!
            entry.nat_port = natPort.bigEndian
            entry.flags = UInt16(SL_NAT_F_SNAT.rawValue)
            try datapath.nat.update(key, entry)
        }
        let tcp = UInt8(IPPROTO_TCP), udp = UInt8(IPPROTO_UDP)
        let client: [UInt8] = [198, 51, 100, 7]
        func frame(_ proto: UInt8, checksum: Bool = true) -> [UInt8] {
            let segment = proto == tcp ? F.tcp(sport: clientPort, dport: frontendPort, flags: 0x10) + [0xde, 0xad, 0xbe, 0xef]
                                       : F.udp(sport: clientPort, dport: frontendPort)
            let l4 = checksum ? F.withL4Checksum(segment, proto: proto, src: client, dst: frontend) : segment
            return F.ethernet(F.ipv4(proto: proto, src: client, dst: frontend, l4))
        }

        try withRoutingNamespace { netns in
            try NodePortDatapath.inNamespace(netns) {
                try Shell.run(["ip", "neigh", "add", "198.51.100.9", "lladdr", "02:00:00:00:00:09", "dev", "snd0", "nud", "permanent"])
                var device = sl_device()
                device.snat_addr = NodePortDatapath.v4MappedWords("198.51.100.1")!
                try datapath.deviceMap.update(UInt32(if_nametoindex("snd0")), device)
                for (proto, withChecksum) in [(tcp, true), (udp, true), (udp, false)] {
                    try track(proto: proto, to: backend)
                    let input = frame(proto, checksum: withChecksum)
                    let name = "proto \(proto)\(withChecksum ? "" : " without checksum")"
                    let viaTC = try datapath.testRun(.ingress, packet: input)
                    let viaXDP = try datapath.testRun(.xdp, packet: input)
                    XCTAssertEqual(viaTC.verdict, Self.tcActRedirect, name)
                    XCTAssertEqual(viaXDP.verdict, Self.xdpRedirect, name)
                    XCTAssertEqual(viaXDP.packet, viaTC.packet, "\(name): XDP and tc write the same packet")
                    let out = viaXDP.packet
                    guard out.count == input.count else { XCTFail(name); continue }
                    XCTAssertEqual(Array(out[0..<6]), [0x02, 0, 0, 0, 0, 0x09], "\(name): to the backend's MAC")
                    let ip = Array(out[14..<34]), l4 = Array(out[34...])
                    XCTAssertEqual(Array(ip[12..<16]), snat, name)
                    XCTAssertEqual(Array(ip[16..<20]), backend, name)
                    XCTAssertEqual(ip[8], 63, "\(name): TTL decremented")
                    XCTAssertEqual(F.checksum(ip), 0, "\(name): IPv4 header checksum")
                    XCTAssertEqual(Array(l4[0..<4]), [UInt8(natPort >> 8), UInt8(natPort & 0xff), UInt8(backendPort >> 8),
                                                      UInt8(backendPort & 0xff)], name)
                    if withChecksum {
                        XCTAssertEqual(F.withL4Checksum(l4, proto: proto, src: snat, dst: backend), l4, "\(name): L4 checksum")
                    } else {
                        XCTAssertEqual(Array(l4[6..<8]), [0, 0], "\(name): no checksum stays none")
                    }
                }
                // Left to tc: a destination whose neighbour is unknown (tc resolves it).
                try track(proto: tcp, to: unresolved)
                try check([Row(name: "unresolved neighbour", frame: frame(tcp), verdict: Self.tcActOK, reason: "")], program: .xdp)
                // ... and one out of a device that is not the datapath's.
                try track(proto: tcp, to: backend)
                try datapath.deviceMap.delete(UInt32(if_nametoindex("snd0")))
                try check([Row(name: "not a datapath device", frame: frame(tcp), verdict: Self.tcActOK, reason: "")], program: .xdp)
            }
        }
    }

    // MARK: - IPv6

    /// The rejecting NodePort of `setUp` on IPv6: the wildcard `::` entry and
    /// TestFrame.node6 as a node address.
    private func addIPv6RejectingNodePort() throws {
        try addRejectingNodePort(wildcard: (0, 0, 0, 0), nodeAddress: NodePortDatapath.ipv6Words("2001:db8::1")!, revNat: 2)
    }

    /// tc drops truncated and malformed IPv6 frames with their reason, and passes frames with
    /// extension headers other than a lone fragment header, and fragments that are not
    /// ours, byte-identical with a reason of their own.
    /// XDP drops the same frames and hands the others to tc untouched.
    func testIPv6FramesAreParsedDroppedOrPassedWithTheirReason() throws {
        typealias F = TestFrame
        try addIPv6RejectingNodePort()
        let tcp = UInt8(IPPROTO_TCP), udp = UInt8(IPPROTO_UDP)
        let syn = F.tcp(dport: Self.rejectingPort)
        func v6(_ next: UInt8, payloadLength: Int? = nil, version: UInt8 = 6, _ payload: [UInt8]) -> [UInt8] {
            F.ethernet(type: 0x86dd, F.ipv6(nextHeader: next, version: version, payloadLength: payloadLength, payload))
        }
        // Destination options (8 bytes of padding) before the SYN, and a fragment header
        // before them.
        let destinationOptions: [UInt8] = [tcp, 0, 1, 4, 0, 0, 0, 0]
        let fragmentOfOptions: [UInt8] = [60, 0, 0, 1, 0, 0, 0, 9]
        let fragmentOfICMPv6: [UInt8] = [58, 0, 0, 1, 0, 0, 0, 9]
        // As for IPv4, BPF_PROG_TEST_RUN refuses a frame shorter than an IPv6 header: that
        // bounds check is covered by the verifier alone.
        let dropped = [
            Row(name: "version 4 in an IPv6 frame", frame: v6(tcp, version: 4, syn), verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "payload length beyond the frame", frame: v6(tcp, payloadLength: 200, syn),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "IPv6 TCP header cut at 10 bytes", frame: v6(tcp, Array(syn.prefix(10))), verdict: Self.tcActShot,
                reason: "np_truncated"),
            Row(name: "IPv6 TCP data offset beyond the payload", frame: v6(tcp, F.tcp(dport: Self.rejectingPort, dataOffset: 15)),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "IPv6 UDP header cut at 6 bytes", frame: v6(udp, Array(F.udp(dport: 53).prefix(6))), verdict: Self.tcActShot,
                reason: "np_truncated"),
            Row(name: "IPv6 UDP length beyond the payload", frame: v6(udp, F.udp(dport: 53, length: 400)), verdict: Self.tcActShot,
                reason: "np_malformed"),
        ]
        let passed = [
            Row(name: "fragment header before destination options", frame: v6(44, fragmentOfOptions + destinationOptions + syn),
                verdict: Self.tcActOK, reason: "np_ipv6_ext_header"),
            Row(name: "fragment of an ICMPv6 message", frame: v6(44, fragmentOfICMPv6 + [128, 0, 0, 0, 0, 1, 0, 1]),
                verdict: Self.tcActOK, reason: "np_fragment"),
            Row(name: "IPv6 later fragment, its first not seen", frame: v6(44, [udp, 0, 0, 0x18, 0, 0, 0, 7] + Array(repeating: 0xee, count: 8)),
                verdict: Self.tcActOK, reason: "np_fragment_untracked"),
            Row(name: "destination options", frame: v6(60, destinationOptions + syn), verdict: Self.tcActOK,
                reason: "np_ipv6_ext_header"),
            Row(name: "hop-by-hop options", frame: v6(0, destinationOptions + syn), verdict: Self.tcActOK, reason: "np_ipv6_ext_header"),
            Row(name: "ICMPv6 echo request", frame: v6(58, F.withL4Checksum6([128, 0, 0, 0, 0, 1, 0, 1], proto: 58)),
                verdict: Self.tcActOK, reason: "np_not_ipv4"),
            Row(name: "IPv6 TCP to no frontend", frame: v6(tcp, F.tcp(dport: 81)), verdict: Self.tcActOK, reason: "np_not_service"),
        ]
        try check(dropped + passed)
        for row in passed {
            XCTAssertEqual(try datapath.testRun(.ingress, packet: row.frame).packet, row.frame, "\(row.name) is not modified")
        }
        // XDP drops what tc drops, with the same reason, and passes the rest to tc unchanged.
        try check(dropped + passed, program: .xdp)
    }

    /// A frontend without endpoints answers an IPv6 client with ICMPv6 destination
    /// unreachable / port unreachable (type 1 code 4) from the address it asked for,
    /// quoting the offending headers, its checksum valid over the pseudo header; a first
    /// fragment's quote keeps its fragment header, so the client's stack finds the L4
    /// header behind it.
    func testAnIPv6FrontendWithoutEndpointsAnswersWithICMPv6PortUnreachable() throws {
        typealias F = TestFrame
        try addIPv6RejectingNodePort()
        let tcp = UInt8(IPPROTO_TCP), udp = UInt8(IPPROTO_UDP)
        // Offset 0, more fragments, identification 9.
        func firstFragmentHeader(_ next: UInt8) -> [UInt8] { [next, 0, 0, 1, 0, 0, 0, 9] }
        let cases: [(name: String, nextHeader: UInt8, payload: [UInt8], quoted: Int)] = [
            ("TCP", tcp, F.tcp(dport: Self.rejectingPort), 20),
            ("UDP", udp, F.udp(dport: Self.rejectingPort), 8),
            ("first fragment of a TCP SYN", 44, firstFragmentHeader(tcp) + F.tcp(dport: Self.rejectingPort), 8 + 20),
            ("first fragment of a UDP datagram", 44, firstFragmentHeader(udp) + F.udp(dport: Self.rejectingPort, length: 1200), 8 + 8),
        ]
        for (name, nextHeader, payload, quoted) in cases {
            let ip = F.ipv6(nextHeader: nextHeader, payload)
            let frame = F.ethernet(type: 0x86dd, ip)
            try check([Row(name: "IPv6 \(name) to a rejecting NodePort", frame: frame, verdict: Self.tcActRedirect,
                           reason: "np_reject")])
            let reply = try datapath.testRun(.ingress, packet: frame).packet
            XCTAssertEqual(reply.count, 14 + 40 + 8 + 40 + quoted, name)
            guard reply.count == 14 + 40 + 8 + 40 + quoted else { continue }
            XCTAssertEqual(Array(reply[0..<6]), F.clientMAC, "back to the previous hop")
            XCTAssertEqual(Array(reply[12..<14]), [0x86, 0xdd])
            let header = Array(reply[14..<54])
            XCTAssertEqual(header[0] >> 4, 6)
            XCTAssertEqual(Int(header[4]) << 8 | Int(header[5]), 8 + 40 + quoted, "payload length")
            XCTAssertEqual(header[6], 58, "ICMPv6")
            XCTAssertEqual(Array(header[8..<24]), F.node6, "from the address the client asked for")
            XCTAssertEqual(Array(header[24..<40]), F.client6)
            let icmp = Array(reply[54...])
            XCTAssertEqual(icmp[0], 1, "destination unreachable")
            XCTAssertEqual(icmp[1], 4, "port unreachable")
            XCTAssertEqual(F.withL4Checksum6(icmp, proto: 58, src: F.node6, dst: F.client6), icmp, "ICMPv6 checksum")
            XCTAssertEqual(Array(icmp[8...]), Array(ip.prefix(40 + quoted)), "\(name): quotes the offending headers")
        }
    }

    /// A packet of a tracked, source-NATed IPv6 flow through tc and through XDP: the same
    /// bytes out, addresses and ports translated, hop limit decremented, the TCP/UDP
    /// checksum valid over the new pseudo header when recomputed from scratch.
    func testXDPTranslatesATrackedIPv6FlowExactlyAsTcDoes() throws {
        typealias F = TestFrame
        let frontend6 = "2001:db8:5::10", backend6 = "2001:db8:1::9", snat6 = "2001:db8:1::1"
        func bytes(_ address: String) -> [UInt8] {
            let words = NodePortDatapath.ipv6Words(address)!
            return withUnsafeBytes(of: words) { Array($0) }
        }
        let (clientPort, frontendPort, backendPort, natPort): (UInt16, UInt16, UInt16, UInt16) = (40000, 30080, 8080, 61234)
        let tcp = UInt8(IPPROTO_TCP), udp = UInt8(IPPROTO_UDP)
        try withRoutingNamespace { netns in
            try NodePortDatapath.inNamespace(netns) {
                try Shell.run(["ip", "addr", "add", "2001:db8:1::1/64", "dev", "snd0", "nodad"])
                try Shell.run(["ip", "neigh", "add", backend6, "lladdr", "02:00:00:00:00:09", "dev", "snd0", "nud", "permanent"])
                try Shell.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
                var device = sl_device()
                device.snat_addr6 = NodePortDatapath.ipv6Words(snat6)!
                try datapath.deviceMap.update(UInt32(if_nametoindex("snd0")), device)
                for proto in [tcp, udp] {
                    var key = sl_nat_key()
                    key.saddr = NodePortDatapath.ipv6Words("2001:db8::7")!
                    key.daddr = NodePortDatapath.ipv6Words(frontend6)!
                    key.sport = clientPort.bigEndian
                    key.dport = frontendPort.bigEndian
                    key.proto = proto
                    key.dir = UInt8(SL_NAT_DIR_FORWARD.rawValue)
                    var entry = sl_nat_entry()
                    entry.to_addr = NodePortDatapath.ipv6Words(backend6)!
                    entry.to_port = backendPort.bigEndian
                    entry.nat_addr = NodePortDatapath.ipv6Words(snat6)!
                    entry.nat_port = natPort.bigEndian
                    entry.flags = UInt16(SL_NAT_F_SNAT.rawValue)
                    try datapath.nat.update(key, entry)

                    let segment = proto == tcp ? F.tcp(sport: clientPort, dport: frontendPort, flags: 0x10) + [0xde, 0xad, 0xbe, 0xef]
                                               : F.udp(sport: clientPort, dport: frontendPort)
                    let l4In = F.withL4Checksum6(segment, proto: proto, dst: bytes(frontend6))
                    let input = F.ethernet(type: 0x86dd, F.ipv6(nextHeader: proto, dst: bytes(frontend6), l4In))
                    let viaTC = try datapath.testRun(.ingress, packet: input)
                    let viaXDP = try datapath.testRun(.xdp, packet: input)
                    XCTAssertEqual(viaTC.verdict, Self.tcActRedirect, "proto \(proto)")
                    XCTAssertEqual(viaXDP.verdict, Self.xdpRedirect, "proto \(proto)")
                    XCTAssertEqual(viaXDP.packet, viaTC.packet, "proto \(proto): XDP and tc write the same packet")
                    let out = viaXDP.packet
                    guard out.count == input.count else { XCTFail("proto \(proto)"); continue }
                    XCTAssertEqual(Array(out[0..<6]), [0x02, 0, 0, 0, 0, 0x09], "to the backend's MAC")
                    let ip = Array(out[14..<54]), l4 = Array(out[54...])
                    XCTAssertEqual(ip[7], 63, "hop limit decremented")
                    XCTAssertEqual(Array(ip[8..<24]), bytes(snat6))
                    XCTAssertEqual(Array(ip[24..<40]), bytes(backend6))
                    XCTAssertEqual(Array(l4[0..<4]), [UInt8(natPort >> 8), UInt8(natPort & 0xff), UInt8(backendPort >> 8),
                                                      UInt8(backendPort & 0xff)])
                    XCTAssertEqual(F.withL4Checksum6(l4, proto: proto, src: bytes(snat6), dst: bytes(backend6)), l4,
                                   "proto \(proto): L4 checksum")
                }
            }
        }
    }

    // MARK: - Fragments

    private static let fragmentNodePort: UInt16 = 30053
    private static let fragmentBackendPort: UInt16 = 8053

    /// A UDP NodePort `fragmentNodePort` (the family's `wildcard` entry) whose one backend
    /// is `backend`:`fragmentBackendPort` (in `slot`), served on `nodeAddress`.
    private func addServingNodePort(wildcard: (UInt32, UInt32, UInt32, UInt32), nodeAddress: (UInt32, UInt32, UInt32, UInt32),
                                    backend: (UInt32, UInt32, UInt32, UInt32), slot: UInt32, revNat: UInt32) throws {
        let maps = try KernelLoadBalancerMaps(pinPath: pinPath)
        var slotValue = sl_backend_slot()
        slotValue.addr = backend
        slotValue.port = Self.fragmentBackendPort.bigEndian
        slotValue.proto = UInt8(IPPROTO_UDP)
        slotValue.backend_id = slot
        try maps.slots.update(slot, slotValue)
        var key = sl_service_key()
        key.addr = wildcard
        key.port = Self.fragmentNodePort.bigEndian
        key.proto = UInt8(IPPROTO_UDP)
        var value = sl_service_value()
        value.slot_base = slot
        value.count = 1
        value.rev_nat_id = revNat
        value.kind = UInt8(SL_KIND_NODE_PORT.rawValue)
        try maps.services.update(key, value)
        var nodeKey = sl_node_addr_key()
        nodeKey.addr = nodeAddress
        var nodeValue = sl_node_addr()
        nodeValue.flags = UInt32(SL_NODE_ADDR_F_NODE_PORT.rawValue)
        try datapath.nodeAddresses.update(nodeKey, nodeValue)
    }

    /// Runs `frame` through tc ingress: the verdict, the packet out and the counters that moved.
    private func run(_ frame: [UInt8]) throws -> (verdict: Int32, packet: [UInt8], counted: [String: UInt64]) {
        let before = datapath.outcomeCounters()
        let result = try datapath.testRun(.ingress, packet: frame)
        var counted: [String: UInt64] = [:]
        for (reason, count) in datapath.outcomeCounters() where before[reason] != count {
            counted[reason] = count - (before[reason] ?? 0)
        }
        return (result.verdict, result.packet, counted)
    }

    private static func port(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        UInt16(bytes[bytes.startIndex]) << 8 | UInt16(bytes[bytes.startIndex + 1])
    }

    /// A UDP datagram to a NodePort in two IPv4 fragments. The first opens the flow (a
    /// remote backend: source-NATed), is translated as the whole datagram would be (its
    /// UDP checksum, which covers the reassembled datagram, valid for the new addresses
    /// and ports) and records its ports; the later one gets the same translation of its
    /// addresses only, its bytes after the IPv4 header untouched. A later fragment of a
    /// datagram whose first fragment was not seen passes; first fragments without room for
    /// their L4 header are dropped. XDP leaves every fragment to tc.
    func testTheFragmentsOfAUDPDatagramToANodePortAreTranslatedLikeTheWholeDatagram() throws {
        typealias F = TestFrame
        let udp = UInt8(IPPROTO_UDP), tcp = UInt8(IPPROTO_TCP)
        let backend: [UInt8] = [198, 51, 100, 9], snat: [UInt8] = [198, 51, 100, 1]
        let clientPort: UInt16 = 40000, id: UInt16 = 0x4242
        let datagram = F.withL4Checksum(F.udp(sport: clientPort, dport: Self.fragmentNodePort,
                                              payload: (0..<24).map { UInt8(0xa0 + $0) }), proto: udp)
        // The header and 16 bytes in the first fragment, the last 8 bytes at offset 24 (3 × 8).
        let first = F.ethernet(F.ipv4(proto: udp, fragment: 0x2000, id: id, Array(datagram[0..<24])))
        let last = F.ethernet(F.ipv4(proto: udp, fragment: 3, id: id, Array(datagram[24...])))
        let lastOfAnother = F.ethernet(F.ipv4(proto: udp, fragment: 3, id: id + 1, Array(datagram[24...])))
        try addServingNodePort(wildcard: NodePortDatapath.v4MappedWords("0.0.0.0")!,
                               nodeAddress: NodePortDatapath.v4MappedWords("192.0.2.1")!,
                               backend: NodePortDatapath.v4MappedWords("198.51.100.9")!, slot: 1, revNat: 3)

        try withRoutingNamespace { netns in
            try NodePortDatapath.inNamespace(netns) {
                try Shell.run(["ip", "neigh", "add", "198.51.100.9", "lladdr", "02:00:00:00:00:09", "dev", "snd0", "nud", "permanent"])
                var device = sl_device()
                device.snat_addr = NodePortDatapath.v4MappedWords("198.51.100.1")!
                try datapath.deviceMap.update(UInt32(if_nametoindex("snd0")), device)
                // XDP hands both fragments to tc untouched.
                try check([Row(name: "first fragment", frame: first, verdict: Self.tcActOK, reason: ""),
                           Row(name: "later fragment", frame: last, verdict: Self.tcActOK, reason: "")], program: .xdp)
                XCTAssertEqual(datapath.natPressure().entries, 0, "XDP opened no flow for a fragment")

                let out1 = try run(first)
                XCTAssertEqual(out1.verdict, Self.tcActRedirect)
                XCTAssertEqual(out1.counted, ["np_forward_new": 1, "np_fragment_tracked": 1])
                guard out1.packet.count == first.count else { return XCTFail("first fragment: \(out1.packet.count) bytes") }
                let ip1 = Array(out1.packet[14..<34]), l4 = Array(out1.packet[34...])
                XCTAssertEqual(Array(ip1[12..<16]), snat, "source-NATed")
                XCTAssertEqual(Array(ip1[16..<20]), backend)
                XCTAssertEqual(Array(ip1[4..<8]), [0x42, 0x42, 0x20, 0x00], "id and more-fragments kept")
                XCTAssertEqual(F.checksum(ip1), 0, "IPv4 header checksum")
                let natPort = Self.port(l4[0..<2])
                XCTAssertTrue((61000...65535).contains(natPort), "SNAT port \(natPort)")
                XCTAssertEqual(Self.port(l4[2..<4]), Self.fragmentBackendPort)
                XCTAssertEqual(Array(l4[8...]), Array(datagram[8..<24]), "data untouched")
                let reassembled = l4 + Array(datagram[24...])
                XCTAssertEqual(F.withL4Checksum(reassembled, proto: udp, src: snat, dst: backend), reassembled,
                               "the UDP checksum covers the translated datagram")

                var key = sl_frag_key()
                key.saddr = NodePortDatapath.v4MappedWords("198.51.100.7")!
                key.daddr = NodePortDatapath.v4MappedWords("192.0.2.1")!
                key.id = UInt32(id.bigEndian)
                key.proto = udp
                let recorded = datapath.fragments.lookup(key)
                XCTAssertEqual(recorded.map { UInt16(bigEndian: $0.sport) }, clientPort, "the first fragment's ports are recorded")
                XCTAssertEqual(recorded.map { UInt16(bigEndian: $0.dport) }, Self.fragmentNodePort)

                let out2 = try run(last)
                XCTAssertEqual(out2.verdict, Self.tcActRedirect)
                XCTAssertEqual(out2.counted, ["np_forward": 1, "np_fragment_tracked": 1])
                guard out2.packet.count == last.count else { return XCTFail("later fragment: \(out2.packet.count) bytes") }
                let ip2 = Array(out2.packet[14..<34])
                XCTAssertEqual(Array(out2.packet[0..<6]), [0x02, 0, 0, 0, 0, 0x09], "to the backend's MAC")
                XCTAssertEqual(Array(ip2[12..<16]), snat, "the flow's translation")
                XCTAssertEqual(Array(ip2[16..<20]), backend)
                XCTAssertEqual(ip2[8], 63, "TTL decremented")
                XCTAssertEqual(Array(ip2[4..<8]), [0x42, 0x42, 0x00, 0x03], "id and offset kept")
                XCTAssertEqual(F.checksum(ip2), 0, "IPv4 header checksum")
                XCTAssertEqual(Array(out2.packet[34...]), Array(datagram[24...]), "no L4 rewrite in a later fragment")

                let out3 = try run(lastOfAnother)
                XCTAssertEqual(out3.verdict, Self.tcActOK)
                XCTAssertEqual(out3.counted, ["np_fragment_untracked": 1])
                XCTAssertEqual(out3.packet, lastOfAnother, "passed untouched")
                XCTAssertEqual(datapath.natPressure().entries, 2, "one flow: a later fragment opens none")
            }
        }

        let dropped = [
            Row(name: "first fragment with 6 bytes of UDP header",
                frame: F.ethernet(F.ipv4(proto: udp, totalLength: 26, fragment: 0x2000, Array(datagram[0..<8]))),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "first fragment with 8 bytes of TCP header",
                frame: F.ethernet(F.ipv4(proto: tcp, totalLength: 28, fragment: 0x2000, F.tcp(dport: Self.rejectingPort))),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "first fragment whose UDP header the frame cuts",
                frame: F.ethernet(F.ipv4(proto: udp, fragment: 0x2000, Array(datagram[0..<6]))),
                verdict: Self.tcActShot, reason: "np_truncated"),
        ]
        try check(dropped)
        try check(dropped, program: .xdp)
    }

    /// The same for IPv6: a UDP datagram to an IPv6 NodePort in two fragments behind a
    /// fragment header (the L4 header 48 bytes into the IPv6 packet).
    func testTheFragmentsOfAnIPv6UDPDatagramToANodePortAreTranslatedLikeTheWholeDatagram() throws {
        typealias F = TestFrame
        let udp = UInt8(IPPROTO_UDP)
        func bytes(_ address: String) -> [UInt8] {
            withUnsafeBytes(of: NodePortDatapath.ipv6Words(address)!) { Array($0) }
        }
        let backend6 = "2001:db8:1::9", snat6 = "2001:db8:1::1"
        let clientPort: UInt16 = 40000
        let id: [UInt8] = [0xde, 0xad, 0x00, 0x07]
        let datagram = F.withL4Checksum6(F.udp(sport: clientPort, dport: Self.fragmentNodePort,
                                               payload: (0..<24).map { UInt8(0xa0 + $0) }), proto: udp)
        func v6(payloadLength: Int? = nil, _ payload: [UInt8]) -> [UInt8] {
            F.ethernet(type: 0x86dd, F.ipv6(nextHeader: 44, payloadLength: payloadLength, payload))
        }
        let firstHeader: [UInt8] = [udp, 0, 0x00, 0x01] + id   // offset 0, more fragments
        let lastHeader: [UInt8] = [udp, 0, 0x00, 0x18] + id    // offset 24, last
        let first = v6(firstHeader + Array(datagram[0..<24]))
        let last = v6(lastHeader + Array(datagram[24...]))
        let lastOfAnother = v6([udp, 0, 0x00, 0x18, 0xde, 0xad, 0x00, 0x08] + Array(datagram[24...]))
        try addServingNodePort(wildcard: (0, 0, 0, 0), nodeAddress: NodePortDatapath.ipv6Words("2001:db8::1")!,
                               backend: NodePortDatapath.ipv6Words(backend6)!, slot: 2, revNat: 4)

        try withRoutingNamespace { netns in
            try NodePortDatapath.inNamespace(netns) {
                try Shell.run(["ip", "addr", "add", "2001:db8:1::1/64", "dev", "snd0", "nodad"])
                try Shell.run(["ip", "neigh", "add", backend6, "lladdr", "02:00:00:00:00:09", "dev", "snd0", "nud", "permanent"])
                try Shell.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
                var device = sl_device()
                device.snat_addr6 = NodePortDatapath.ipv6Words(snat6)!
                try datapath.deviceMap.update(UInt32(if_nametoindex("snd0")), device)
                try check([Row(name: "IPv6 first fragment", frame: first, verdict: Self.tcActOK, reason: ""),
                           Row(name: "IPv6 later fragment", frame: last, verdict: Self.tcActOK, reason: "")], program: .xdp)

                let out1 = try run(first)
                XCTAssertEqual(out1.verdict, Self.tcActRedirect)
                XCTAssertEqual(out1.counted, ["np_forward_new": 1, "np_fragment_tracked": 1])
                guard out1.packet.count == first.count else { return XCTFail("first fragment: \(out1.packet.count) bytes") }
                let ip1 = Array(out1.packet[14..<54]), l4 = Array(out1.packet[62...])
                XCTAssertEqual(Array(ip1[8..<24]), bytes(snat6), "source-NATed")
                XCTAssertEqual(Array(ip1[24..<40]), bytes(backend6))
                XCTAssertEqual(ip1[7], 63, "hop limit decremented")
                XCTAssertEqual(Array(out1.packet[54..<62]), firstHeader, "fragment header kept")
                let natPort = Self.port(l4[0..<2])
                XCTAssertTrue((61000...65535).contains(natPort), "SNAT port \(natPort)")
                XCTAssertEqual(Self.port(l4[2..<4]), Self.fragmentBackendPort)
                let reassembled = l4 + Array(datagram[24...])
                XCTAssertEqual(F.withL4Checksum6(reassembled, proto: udp, src: bytes(snat6), dst: bytes(backend6)), reassembled,
                               "the UDP checksum covers the translated datagram")

                var key = sl_frag_key()
                key.saddr = NodePortDatapath.ipv6Words("2001:db8::7")!
                key.daddr = NodePortDatapath.ipv6Words("2001:db8::1")!
                key.id = id.withUnsafeBytes { $0.load(as: UInt32.self) }
                key.proto = udp
                let recorded = datapath.fragments.lookup(key)
                XCTAssertEqual(recorded.map { UInt16(bigEndian: $0.sport) }, clientPort, "the first fragment's ports are recorded")
                XCTAssertEqual(recorded.map { UInt16(bigEndian: $0.dport) }, Self.fragmentNodePort)

                let out2 = try run(last)
                XCTAssertEqual(out2.verdict, Self.tcActRedirect)
                XCTAssertEqual(out2.counted, ["np_forward": 1, "np_fragment_tracked": 1])
                guard out2.packet.count == last.count else { return XCTFail("later fragment: \(out2.packet.count) bytes") }
                let ip2 = Array(out2.packet[14..<54])
                XCTAssertEqual(Array(ip2[8..<24]), bytes(snat6), "the flow's translation")
                XCTAssertEqual(Array(ip2[24..<40]), bytes(backend6))
                XCTAssertEqual(ip2[7], 63, "hop limit decremented")
                XCTAssertEqual(Array(out2.packet[54...]), lastHeader + Array(datagram[24...]),
                               "fragment header and data untouched: no L4 rewrite in a later fragment")

                let out3 = try run(lastOfAnother)
                XCTAssertEqual(out3.verdict, Self.tcActOK)
                XCTAssertEqual(out3.counted, ["np_fragment_untracked": 1])
                XCTAssertEqual(out3.packet, lastOfAnother, "passed untouched")
            }
        }

        let dropped = [
            Row(name: "IPv6 fragment header cut by the frame", frame: v6([udp, 0, 0, 1]), verdict: Self.tcActShot,
                reason: "np_truncated"),
            Row(name: "IPv6 fragment header beyond the payload length", frame: v6(payloadLength: 4, firstHeader + Array(datagram[0..<8])),
                verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "IPv6 first fragment with 6 bytes of UDP header",
                frame: v6(payloadLength: 14, firstHeader + Array(datagram[0..<8])), verdict: Self.tcActShot, reason: "np_malformed"),
            Row(name: "IPv6 first fragment whose UDP header the frame cuts", frame: v6(firstHeader + Array(datagram[0..<6])),
                verdict: Self.tcActShot, reason: "np_truncated"),
        ]
        try check(dropped)
        try check(dropped, program: .xdp)
    }
}
