import Foundation
import Glibc

/// Measures what a cgroup connect hook adds to one `connect()` call, inside one process,
/// so machine noise between processes does not swamp a difference of tens of ns.
///
/// Two UDP sockets are created in the client namespace: one while the process is in the
/// hooked cgroup (a socket belongs to the cgroup it was created in), one after the process
/// has moved back out. Batches of `connect()` on each alternate; connected UDP has no
/// network round trip, so a batch's mean is the syscall's own cost. The hook's cost is
/// the median over batch pairs of (hooked mean − plain mean).
public enum HookCostProbe {
    public struct Report: Codable, Sendable {
        public var batches: Int
        public var batchSize: Int
        /// Median ns per connect() on the hooked socket (to the frontend).
        public var hookedNs: Double
        /// Median ns per connect() on the plain socket (to the backend, no hook).
        public var plainNs: Double
        /// Median of the per-pair differences.
        public var hookNs: Double
    }

    /// Runs on a thread of its own (setns changes only that thread's namespace); the
    /// process is in `cgroup` only while the hooked socket is created.
    public static func measure(netns: String, cgroup: String, hookedTarget: String, plainTarget: String,
                               batches: Int = 200, batchSize: Int = 1000) throws -> Report {
        final class Box: @unchecked Sendable { var outcome: Result<Report, Error> = .failure(NetLabError.other("did not run")) }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let runner = Thread {
            box.outcome = Result { try run(netns: netns, cgroup: cgroup, hookedTarget: hookedTarget, plainTarget: plainTarget,
                                           batches: batches, batchSize: batchSize) }
            done.signal()
        }
        runner.start()
        done.wait()
        return try box.outcome.get()
    }

    private static func run(netns: String, cgroup: String, hookedTarget: String, plainTarget: String,
                            batches: Int, batchSize: Int) throws -> Report {
        try NetworkNamespace.enter(netns)
        let hooked = try LabEndpoint(hookedTarget), plain = try LabEndpoint(plainTarget)
        let home = try currentCgroupPath()
        try Cgroup2.join(path: cgroup)
        let hookedSocket = socket(hooked.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        try Cgroup2.join(path: home)
        let plainSocket = socket(plain.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer {
            close(hookedSocket)
            close(plainSocket)
        }
        guard hookedSocket >= 0, plainSocket >= 0 else { throw NetLabError.system(what: "socket", errno: errno) }
        let hookedAddress = SockAddr(hooked), plainAddress = SockAddr(plain)

        func batchMean(_ fd: Int32, _ address: SockAddr) throws -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<batchSize {
                if address.withSockaddr({ connect(fd, $0, $1) }) != 0 {
                    throw NetLabError.system(what: "connect", errno: errno)
                }
            }
            return Double(DispatchTime.now().uptimeNanoseconds - start) / Double(batchSize)
        }
        _ = try batchMean(hookedSocket, hookedAddress)
        _ = try batchMean(plainSocket, plainAddress)
        var hookedMeans: [Double] = [], plainMeans: [Double] = [], differences: [Double] = []
        for _ in 0..<batches {
            let withHook = try batchMean(hookedSocket, hookedAddress)
            let without = try batchMean(plainSocket, plainAddress)
            hookedMeans.append(withHook)
            plainMeans.append(without)
            differences.append(withHook - without)
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        return Report(batches: batches, batchSize: batchSize, hookedNs: median(hookedMeans), plainNs: median(plainMeans),
                      hookNs: median(differences))
    }

    /// What one interleaved run measured for one target.
    public struct InterleavedFigures: Codable, Sendable {
        /// The timed operation: connect() for TCP, one request/reply exchange for UDP.
        public var latency: LatencyStats
        /// Whole cycles per second (socket, the operation, close), one flow at a time.
        public var cyclesPerSecond: Double
    }

    /// TCP connect() latency to two targets, measured alternately (one connect to each in
    /// turn) from one socket-creating thread in `netns` while the process is in `cgroup`
    /// (nil: wherever it is): both sides see the same machine at the same moments. Each
    /// connection is closed with RST so no TIME_WAIT piles up.
    public static func interleavedTCPConnect(netns: String, cgroup: String?, first: String, second: String,
                                             iterations: Int) throws -> (first: LatencyStats, second: LatencyStats) {
        let (a, b) = try interleavedTCP(netns: netns, cgroup: cgroup, first: [first], second: [second], iterations: iterations)
        return (a.latency, b.latency)
    }

    /// interleavedTCPConnect, with connections per second (socket + connect + close). Each
    /// side is a list of addresses taken in turn: a direct side that spreads over the same
    /// backends as a load-balanced side finds their caches as warm.
    public static func interleavedTCP(netns: String, cgroup: String?, first: [String], second: [String],
                                      iterations: Int) throws -> (first: InterleavedFigures, second: InterleavedFigures) {
        try interleaved(netns: netns, cgroup: cgroup, sides: [first, second], iterations: iterations) { endpoint, address in
            let fd = socket(endpoint.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw NetLabError.system(what: "socket", errno: errno) }
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            let start = DispatchTime.now().uptimeNanoseconds
            let status = address.withSockaddr { connect(fd, $0, $1) }
            let elapsed = DispatchTime.now().uptimeNanoseconds - start
            let failure = errno
            close(fd)
            if status != 0 { throw NetLabError.system(what: "connect \(endpoint)", errno: failure) }
            return elapsed
        }
    }

    /// UDP request/reply latency to two targets, alternately, like a DNS client: each
    /// exchange on a fresh socket (a new flow, so a netfilter datapath looks the service
    /// up again instead of reusing a conntrack entry): connect(), send, wait for the
    /// reply (1 s at most, then a failure), close. The time covers connect to reply.
    public static func interleavedUDP(netns: String, cgroup: String?, first: [String], second: [String],
                                      iterations: Int) throws -> (first: InterleavedFigures, second: InterleavedFigures) {
        var reply = [UInt8](repeating: 0, count: 512)
        let request = Array("ping".utf8)
        return try interleaved(netns: netns, cgroup: cgroup, sides: [first, second], iterations: iterations) { endpoint, address in
            let fd = socket(endpoint.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { throw NetLabError.system(what: "socket", errno: errno) }
            defer { close(fd) }
            var timeout = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let start = DispatchTime.now().uptimeNanoseconds
            guard address.withSockaddr({ connect(fd, $0, $1) }) == 0 else {
                throw NetLabError.system(what: "connect udp \(endpoint)", errno: errno)
            }
            guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else {
                throw NetLabError.system(what: "send udp \(endpoint)", errno: errno)
            }
            guard recv(fd, &reply, reply.count, 0) > 0 else { throw NetLabError.system(what: "recv udp \(endpoint)", errno: errno) }
            return DispatchTime.now().uptimeNanoseconds - start
        }
    }

    /// Runs `operation` on each side in turn (each side's addresses in rotation),
    /// `iterations` times each after 50 warm-up turns, on a thread of its own in `netns`
    /// (and `cgroup`, if given). `operation` returns the ns of the part it times; the whole
    /// turn counts toward the cycle rate.
    private static func interleaved(netns: String, cgroup: String?, sides: [[String]], iterations: Int,
                                    _ operation: @escaping (LabEndpoint, SockAddr) throws -> UInt64) throws
        -> (first: InterleavedFigures, second: InterleavedFigures)
    {
        final class Box: @unchecked Sendable {
            var outcome: Result<[InterleavedFigures], Error> = .failure(NetLabError.other("did not run"))
        }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) let operation = operation
        let runner = Thread {
            box.outcome = Result {
                try NetworkNamespace.enter(netns)
                let home = try currentCgroupPath()
                if let cgroup { try Cgroup2.join(path: cgroup) }
                defer { if cgroup != nil { try? Cgroup2.join(path: home) } }
                let endpoints = try sides.map { side in
                    guard !side.isEmpty else { throw NetLabError.invalidArgument("a side without addresses") }
                    return try side.map { try LabEndpoint($0) }.map { ($0, SockAddr($0)) }
                }
                var samples = [[UInt64]](repeating: [], count: endpoints.count)
                var cycleNs = [UInt64](repeating: 0, count: endpoints.count)
                for iteration in 0..<(iterations + 50) {
                    // Alternate which target goes first, so neither always finds the
                    // caches warmed by the other.
                    for index in (iteration % 2 == 0 ? Array(endpoints.indices) : Array(endpoints.indices.reversed())) {
                        let cycleStart = DispatchTime.now().uptimeNanoseconds
                        let (endpoint, address) = endpoints[index][iteration % endpoints[index].count]
                        let elapsed = try operation(endpoint, address)
                        if iteration >= 50 {  // the first 50 warm up
                            samples[index].append(elapsed)
                            cycleNs[index] += DispatchTime.now().uptimeNanoseconds - cycleStart
                        }
                    }
                }
                return endpoints.indices.map { index in
                    InterleavedFigures(latency: LatencyStats(samples: samples[index]),
                                       cyclesPerSecond: Double(iterations) / (Double(max(1, cycleNs[index])) / 1e9))
                }
            }
            done.signal()
        }
        runner.start()
        done.wait()
        let figures = try box.outcome.get()
        return (figures[0], figures[1])
    }

    /// This process's cgroup v2 directory, from /proc/self/cgroup ("0::/path").
    private static func currentCgroupPath() throws -> String {
        let text = try String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("0::") }) else {
            throw NetLabError.other("no cgroup v2 entry in /proc/self/cgroup")
        }
        let relative = String(line.dropFirst(3))
        return try Cgroup2.root() + (relative == "/" ? "" : relative)
    }
}
