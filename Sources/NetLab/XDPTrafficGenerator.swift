import BPFObjects
import CLibBPF
import Foundation
import Glibc

/// Drives bpf/bench_trafficgen.c (see there, and NetLab.ForwardingLab): a closed loop of
/// frames run by the kernel in XDP, generator -> node -> sink -> generator, where the sink
/// counts what reached the backends. Neither end has a socket, and no frame is allocated
/// on the way, so what limits the rate is the node.
public final class XDPTrafficGenerator {
    /// One kind of load: a 64-byte frame template and how each frame varies from it.
    public struct Load {
        public var frame: [UInt8]
        /// Byte offset of the L4 checksum the generator keeps valid: even, 32...62; 0: none
        /// (UDP's is 0).
        public var l4ChecksumOffset: Int
        /// Established flows: this many 5-tuples (source ports upwards from the template's).
        public var flows: Int
        /// Every frame a new 5-tuple instead (source port, then source address).
        public var newFlows: Bool

        public init(frame: [UInt8], l4ChecksumOffset: Int, flows: Int, newFlows: Bool) {
            self.frame = frame
            self.l4ChecksumOffset = l4ChecksumOffset
            self.flows = flows
            self.newFlows = newFlows
        }
    }

    public enum Counter {
        /// Frames generated (bench_sequence).
        case sent
        /// Frames the sink counted and dropped, and those it passed (bench_counters).
        case sunk, passed
    }

    public static let frameBytes = 64
    /// Layout of struct bench_gen_config.
    static let configBytes = frameBytes + 9 * 4
    /// Frames put into the loop: enough to keep every stage busy (NAPI takes up to 64 at a
    /// time), fewer than a veth's ring (256) holds, so none is lost at a queue.
    static let loopFrames: UInt32 = 192

    private let object: OpaquePointer
    private let loopFD: Int32
    private let sinkFD: Int32
    private let configFD: Int32
    private let countersFD: Int32
    private let sequenceFD: Int32
    private let sinkNetwork: (address: [UInt8], mask: [UInt8])
    private var load: Load?
    private var toNodeIfindex: UInt32 = 0
    private var returnPath: (netns: String, device: String, ifindex: UInt32)?

    /// Loads the programs; the sink counts IPv4 frames whose destination is in `sinkCIDR`.
    public init(sinkCIDR: String) throws {
        let parts = sinkCIDR.split(separator: "/")
        guard parts.count == 2, let length = Int(parts[1]), (0...32).contains(length) else {
            throw NetLabError.other("sink CIDR \(sinkCIDR) is not a.b.c.d/len")
        }
        let mask = UInt32(truncatingIfNeeded: length == 0 ? 0 : ~UInt64(0) << (32 - length))
        let maskBytes = [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: mask >> $0) }
        let addressBytes = zip(parts[0].split(separator: ".").compactMap { UInt8($0) }, maskBytes).map { $0 & $1 }
        guard addressBytes.count == 4 else { throw NetLabError.other("sink CIDR \(sinkCIDR) is not a.b.c.d/len") }
        sinkNetwork = (addressBytes, maskBytes)

        let embedded = BPFObjects.benchTrafficgen
        let bytes = embedded.bytes
        guard let handle = bytes.withUnsafeBytes({ clb_object_open_mem($0.baseAddress, $0.count, embedded.name, nil) }) else {
            throw NetLabError.other("open \(embedded.name): \(String(cString: strerror(errno)))")
        }
        object = handle
        guard bpf_object__load(handle) == 0 else {
            bpf_object__close(handle)
            throw NetLabError.other("load \(embedded.name): \(String(cString: strerror(errno))) (see libbpf's output above)")
        }
        func programFD(_ name: String) -> Int32 {
            bpf_object__find_program_by_name(handle, name).map { bpf_program__fd($0) } ?? -1
        }
        func mapFD(_ name: String) -> Int32 { bpf_object__find_map_by_name(handle, name).map { bpf_map__fd($0) } ?? -1 }
        loopFD = programFD("bench_loop")
        sinkFD = programFD("bench_sink")
        configFD = mapFD("bench_config")
        countersFD = mapFD("bench_counters")
        sequenceFD = mapFD("bench_sequence")
        let configMap = bpf_object__find_map_by_name(handle, "bench_config")
        guard loopFD >= 0, sinkFD >= 0, configFD >= 0, countersFD >= 0, sequenceFD >= 0,
              let configMap, bpf_map__value_size(configMap) == UInt32(Self.configBytes)
        else {
            bpf_object__close(handle)
            throw NetLabError.other("\(embedded.name): programs or maps missing, or struct bench_gen_config's layout changed")
        }
    }

    deinit { bpf_object__close(object) }

    /// The loop through `lab`: the generator on its loop device, sending to the node (or,
    /// `direct`, straight to the sink: the loop's own cost); the sink on its sink devices,
    /// sending back on its return device. The programs leave with the devices.
    public func attach(to lab: ForwardingLab, direct: Bool = false) throws {
        let (loopFD, sinkFD) = (loopFD, sinkFD)
        toNodeIfindex = try NetworkNamespace.onThread(in: lab.generatorNetns) { () throws -> UInt32 in
            try Self.attach(loopFD, to: lab.generatorLoopDevice, in: lab.generatorNetns, as: "the generator")
            return try Self.ifindex(direct ? lab.generatorDirectDevice : lab.generatorDevice, in: lab.generatorNetns)
        }()
        let returnIfindex = try NetworkNamespace.onThread(in: lab.sinkNetns) { () throws -> UInt32 in
            try Self.attach(sinkFD, to: lab.sinkDevice, in: lab.sinkNetns, as: "the sink")
            try Self.attach(sinkFD, to: lab.sinkDirectDevice, in: lab.sinkNetns, as: "the sink")
            return try Self.ifindex(lab.sinkReturnDevice, in: lab.sinkNetns)
        }()
        returnPath = (lab.sinkNetns, lab.sinkReturnDevice, returnIfindex)
    }

    private static func ifindex(_ device: String, in netns: String) throws -> UInt32 {
        let ifindex = if_nametoindex(device)
        guard ifindex > 0 else { throw NetLabError.other("no device \(device) in \(netns)") }
        return ifindex
    }

    private static func attach(_ fd: Int32, to device: String, in netns: String, as what: String) throws {
        let ifindex = Int32(try Self.ifindex(device, in: netns))
        let result = clb_xdp_attach(ifindex, fd, 1 << 2 /* XDP_FLAGS_DRV_MODE */)
        guard result == 0 else { throw NetLabError.other("attach \(what) to \(device): \(String(cString: strerror(-result)))") }
    }

    /// Sets what the next frames look like (only while no generator runs).
    public func configure(_ load: Load) throws {
        precondition(load.frame.count == Self.frameBytes)
        precondition(load.l4ChecksumOffset == 0 || (32...62).contains(load.l4ChecksumOffset) && load.l4ChecksumOffset % 2 == 0)
        self.load = load
        try writeConfig(running: false)
    }

    private func writeConfig(running: Bool) throws {
        guard let load else { throw NetLabError.other("the traffic generator has no load configured") }
        var config = load.frame
        for word in [UInt32(Self.frameBytes), UInt32(max(load.flows, 1)), load.newFlows ? 1 : 0, UInt32(load.l4ChecksumOffset)] {
            config += withUnsafeBytes(of: word) { Array($0) }
        }
        config += sinkNetwork.address + sinkNetwork.mask
        for word in [UInt32(running ? 1 : 0), toNodeIfindex, returnPath?.ifindex ?? 0] {
            config += withUnsafeBytes(of: word) { Array($0) }
        }
        var key: UInt32 = 0
        guard bpf_map_update_elem(configFD, &key, config, 0) == 0 else {
            throw NetLabError.other("write bench_config: \(String(cString: strerror(errno)))")
        }
    }

    public func count(_ counter: Counter) -> UInt64 {
        var key: UInt32 = 0
        switch counter {
        case .sent:
            var value: UInt64 = 0
            return bpf_map_lookup_elem(sequenceFD, &key, &value) == 0 ? value : 0
        case .sunk, .passed:
            key = counter == .sunk ? 0 : 1
            let cpus = Int(libbpf_num_possible_cpus())
            var values = [UInt64](repeating: 0, count: max(cpus, 1))
            guard cpus > 0, bpf_map_lookup_elem(countersFD, &key, &values) == 0 else { return 0 }
            return values.reduce(0, &+)
        }
    }

    /// What `measure` saw in its window.
    public struct Window {
        public var seconds: Double
        public var sent: UInt64
        public var sunk: UInt64
        public var passed: UInt64
        public var sentPerSecond: Double { Double(sent) / seconds }
        public var sunkPerSecond: Double { Double(sunk) / seconds }
    }

    /// Runs the loop for `warmUp` + `seconds`, and returns what was sent and sunk in the
    /// last `seconds` (the warm-up lets established flows' state exist before counting;
    /// new-flow loads need none). The loop (`attach(to:)`) starts with frames sent into its
    /// return device and ends when its programs see `running` cleared.
    public func measure(warmUp: Double, seconds: Double) throws -> Window {
        guard let returnPath, let frame = load?.frame else {
            throw NetLabError.other("the traffic generator needs attach(to:) and configure before measure")
        }
        try writeConfig(running: true)
        do {
            try NetworkNamespace.onThread(in: returnPath.netns) {
                let result = clb_packet_send(Int32(returnPath.ifindex), frame, UInt32(frame.count), Self.loopFrames)
                guard result == 0 else {
                    throw NetLabError.other("start the loop on \(returnPath.device): \(String(cString: strerror(-result)))")
                }
            }()
        } catch {
            try? writeConfig(running: false)
            throw error
        }
        Thread.sleep(forTimeInterval: warmUp)
        let before = (count(.sent), count(.sunk), count(.passed))
        let start = ContinuousClock.now
        Thread.sleep(forTimeInterval: seconds)
        let after = (count(.sent), count(.sunk), count(.passed))
        let elapsed = ContinuousClock.now - start
        try writeConfig(running: false)
        // The loop's frames are dropped at their next program; what the node still holds in
        // its queues drains within milliseconds. Neither counts: the window has closed.
        Thread.sleep(forTimeInterval: 0.05)
        let window = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Window(seconds: window, sent: after.0 - before.0, sunk: after.1 - before.1, passed: after.2 - before.2)
    }

    // MARK: - Frames

    /// Ethernet + IPv4 + UDP, 64 bytes, checksum 0 ("none", valid for IPv4).
    public static func udpFrame(sourceMAC: [UInt8], destinationMAC: [UInt8], source: String, destination: String, sourcePort: UInt16,
                         destinationPort: UInt16) -> [UInt8] {
        let udpLength = frameBytes - 14 - 20
        var l4 = be16(sourcePort) + be16(destinationPort) + be16(UInt16(udpLength)) + [0, 0]
        l4 += [UInt8](repeating: 0x5a, count: udpLength - 8)
        return ethernetIPv4(sourceMAC, destinationMAC, source, destination, proto: 17, l4: l4, padTo: frameBytes)
    }

    /// Ethernet + IPv4 + TCP SYN (20-byte header, valid checksum), padded to 64 bytes.
    public static func tcpSYNFrame(sourceMAC: [UInt8], destinationMAC: [UInt8], source: String, destination: String, sourcePort: UInt16,
                            destinationPort: UInt16) -> [UInt8] {
        var tcp = be16(sourcePort) + be16(destinationPort) + [0x1c, 0x0f, 0x3e, 0x21] + [0, 0, 0, 0]
        tcp += [0x50, 0x02] + be16(64_240) + [0, 0] + [0, 0]
        let pseudo = ipv4(source) + ipv4(destination) + [0, 6] + be16(UInt16(tcp.count))
        let sum = checksum(pseudo + tcp)
        (tcp[16], tcp[17]) = (UInt8(sum >> 8), UInt8(sum & 0xff))
        return ethernetIPv4(sourceMAC, destinationMAC, source, destination, proto: 6, l4: tcp, padTo: frameBytes)
    }

    /// Where tcpSYNFrame's checksum sits.
    public static let tcpChecksumOffset = 14 + 20 + 16

    private static func ethernetIPv4(_ sourceMAC: [UInt8], _ destinationMAC: [UInt8], _ source: String, _ destination: String,
                                     proto: UInt8, l4: [UInt8], padTo length: Int) -> [UInt8] {
        var ip: [UInt8] = [0x45, 0] + be16(UInt16(20 + l4.count)) + [0, 0, 0x40, 0, 64, proto, 0, 0] + ipv4(source) + ipv4(destination)
        let sum = checksum(ip)
        (ip[10], ip[11]) = (UInt8(sum >> 8), UInt8(sum & 0xff))
        let frame = destinationMAC + sourceMAC + [0x08, 0x00] + ip + l4
        return frame + [UInt8](repeating: 0, count: max(0, length - frame.count))
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        for i in stride(from: 0, to: bytes.count, by: 2) {
            sum += UInt32(bytes[i]) << 8 | (i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0)
        }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }

    private static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }
    private static func ipv4(_ text: String) -> [UInt8] { text.split(separator: ".").map { UInt8($0)! } }
}
