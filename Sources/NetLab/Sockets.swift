import Foundation
import Glibc

// MARK: - Endpoint

/// An IP address and port, written `198.18.7.11:8080` or `[fd00:198:18:7::11]:8080`.
/// IPv4-mapped IPv6 addresses (`::ffff:198.18.7.1`) are shown and compared as IPv4, which
/// is how a dual-stack server sees an IPv4 client.
public struct LabEndpoint: Hashable, Codable, Sendable, CustomStringConvertible {
    /// Textual address without brackets.
    public let ip: String
    public let port: UInt16

    /// Builds an endpoint; `ip` is validated and normalised (`inet_pton` + `inet_ntop`).
    public init(ip: String, port: UInt16) throws {
        guard let normalized = LabEndpoint.normalize(ip) else {
            throw NetLabError.invalidArgument("not an IP address: '\(ip)'")
        }
        self.ip = normalized
        self.port = port
    }

    /// Parses `ip:port` or `[v6]:port`.
    public init(_ text: String) throws {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"),
                text[text.index(after: close)...].hasPrefix(":")
            else { throw NetLabError.invalidArgument("expected [v6]:port, got '\(text)'") }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon else {
                throw NetLabError.invalidArgument("expected ip:port or [v6]:port, got '\(text)'")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = UInt16(portText) else {
            throw NetLabError.invalidArgument("bad port in '\(text)'")
        }
        try self.init(ip: String(host), port: port)
    }

    /// Whether the address is IPv6 (after unmapping IPv4-mapped addresses).
    public var isIPv6: Bool { ip.contains(":") }

    public var description: String { isIPv6 ? "[\(ip)]:\(port)" : "\(ip):\(port)" }

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        try self.init(try container.decode(String.self))
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// `inet_pton` then `inet_ntop`, unmapping `::ffff:a.b.c.d`; nil for garbage.
    static func normalize(_ ip: String) -> String? {
        var v4 = in_addr()
        if inet_pton(AF_INET, ip, &v4) == 1 { return ntop4(v4) }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, ip, &v6) == 1 { return ntop6(v6) }
        return nil
    }

    static func ntop4(_ addr: in_addr) -> String {
        var addr = addr
        var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        inet_ntop(AF_INET, &addr, &buffer, socklen_t(buffer.count))
        return String(cString: buffer)
    }

    static func ntop6(_ addr: in6_addr) -> String {
        // IPv4-mapped: ::ffff:0:0/96.
        let bytes = withUnsafeBytes(of: addr) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
            var v4 = in_addr()
            withUnsafeMutableBytes(of: &v4) { $0.copyBytes(from: bytes[12..<16]) }
            return ntop4(v4)
        }
        var addr = addr
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        inet_ntop(AF_INET6, &addr, &buffer, socklen_t(buffer.count))
        return String(cString: buffer)
    }
}

// MARK: - sockaddr conversion

/// A `sockaddr_storage` with its length; the bridge between `LabEndpoint` and the C API.
struct SockAddr {
    var storage = sockaddr_storage()
    var length: socklen_t = socklen_t(MemoryLayout<sockaddr_storage>.size)

    init() {}

    /// The sockaddr for `endpoint`; IPv4 endpoints become `sockaddr_in` unless
    /// `family` is AF_INET6, in which case they are IPv4-mapped.
    init(_ endpoint: LabEndpoint, family: Int32? = nil) {
        let wantV6 = endpoint.isIPv6 || family == AF_INET6
        if wantV6 {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = endpoint.port.bigEndian
            if endpoint.isIPv6 {
                _ = inet_pton(AF_INET6, endpoint.ip, &sin6.sin6_addr)
            } else {
                _ = inet_pton(AF_INET6, "::ffff:" + endpoint.ip, &sin6.sin6_addr)
            }
            withUnsafeMutableBytes(of: &storage) { dst in
                withUnsafeBytes(of: sin6) { dst.copyMemory(from: $0) }
            }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        } else {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = endpoint.port.bigEndian
            _ = inet_pton(AF_INET, endpoint.ip, &sin.sin_addr)
            withUnsafeMutableBytes(of: &storage) { dst in
                withUnsafeBytes(of: sin) { dst.copyMemory(from: $0) }
            }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        }
    }

    var family: Int32 { Int32(storage.ss_family) }

    /// The endpoint, or nil for a family other than AF_INET/AF_INET6.
    var endpoint: LabEndpoint? {
        switch family {
        case AF_INET:
            let sin = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in.self) }
            return try? LabEndpoint(ip: LabEndpoint.ntop4(sin.sin_addr), port: UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let sin6 = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in6.self) }
            return try? LabEndpoint(ip: LabEndpoint.ntop6(sin6.sin6_addr), port: UInt16(bigEndian: sin6.sin6_port))
        default:
            return nil
        }
    }

    /// Calls `body` with a `sockaddr` pointer and length (for connect, bind, sendto).
    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    /// Fills from a call such as getpeername/accept/recvfrom.
    static func fill<R>(_ body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> R) -> (R, SockAddr)
    {
        var result = SockAddr()
        let returned = withUnsafeMutableBytes(of: &result.storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &result.length)
        }
        return (returned, result)
    }
}

// MARK: - Socket helpers

enum Sock {
    static let stream = Int32(SOCK_STREAM.rawValue)
    static let dgram = Int32(SOCK_DGRAM.rawValue)
    static let cloexec = Int32(SOCK_CLOEXEC.rawValue)
    static let nonblock = Int32(SOCK_NONBLOCK.rawValue)

    static func setInt(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws {
        var value = value
        if setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            throw NetLabError.system(what: "setsockopt(\(level), \(name))", errno: errno)
        }
    }

    /// Raises the soft RLIMIT_NOFILE towards the hard limit so that `needed` descriptors
    /// fit (hold and serve keep one per connection; the usual soft limit is 1024).
    static func ensureDescriptors(_ needed: Int) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let wanted = rlim_t(needed + 64)
        guard limit.rlim_cur < wanted else { return }
        limit.rlim_cur = min(max(wanted, limit.rlim_cur), limit.rlim_max)
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    static func setNonBlocking(_ fd: Int32, _ on: Bool) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK)
    }

    /// Pending error of a socket (SO_ERROR), 0 when none.
    static func pendingError(_ fd: Int32) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) != 0 { return errno }
        return value
    }

    static func peer(_ fd: Int32) -> LabEndpoint? {
        let (status, address) = SockAddr.fill { getpeername(fd, $0, $1) }
        return status == 0 ? address.endpoint : nil
    }

    static func local(_ fd: Int32) -> LabEndpoint? {
        let (status, address) = SockAddr.fill { getsockname(fd, $0, $1) }
        return status == 0 ? address.endpoint : nil
    }

    /// Closes with SO_LINGER {1, 0}: the kernel sends RST and keeps no TIME_WAIT entry,
    /// so tight connect loops do not run out of ephemeral ports.
    static func closeWithReset(_ fd: Int32) {
        var option = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
        close(fd)
    }

    /// poll() on one descriptor; returns revents, 0 on timeout, -1 with errno on error.
    static func wait(_ fd: Int32, events: Int16, timeoutMs: Int) -> Int32 {
        let deadline = Clock.nowNs() &+ UInt64(max(timeoutMs, 0)) &* 1_000_000
        while true {
            var entry = pollfd(fd: fd, events: events, revents: 0)
            let remaining = Clock.remainingMs(until: deadline)
            let ready = poll(&entry, 1, Int32(remaining))
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 { return -1 }
            if ready == 0 { return 0 }
            return Int32(entry.revents)
        }
    }

    /// Reads from `fd` until a newline arrives, EOF, error or the deadline. Returns the
    /// line without the newline, or an error name ("EOF", "ETIMEDOUT", errno names).
    static func readLine(_ fd: Int32, timeoutMs: Int, limit: Int = 4096) -> Result<String, LineError> {
        let deadline = Clock.nowNs() &+ UInt64(max(timeoutMs, 0)) &* 1_000_000
        var collected = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            if let newline = collected.firstIndex(of: UInt8(ascii: "\n")) {
                return .success(String(decoding: collected[..<newline], as: UTF8.self))
            }
            if collected.count > limit { return .failure(LineError("LINE_TOO_LONG")) }
            let count = recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT))
            if count > 0 {
                collected.append(contentsOf: chunk[0..<count])
                continue
            }
            if count == 0 { return .failure(LineError("EOF")) }
            if errno == EINTR { continue }
            if errno != EAGAIN && errno != EWOULDBLOCK { return .failure(LineError(ErrnoName.name(errno))) }
            let remaining = Clock.remainingMs(until: deadline)
            if remaining <= 0 { return .failure(LineError("ETIMEDOUT")) }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&entry, 1, Int32(remaining))
        }
    }

    /// send() of the whole buffer (blocking semantics via poll), MSG_NOSIGNAL.
    static func sendAll(_ fd: Int32, _ bytes: [UInt8], timeoutMs: Int) -> Int32 {
        var offset = 0
        let deadline = Clock.nowNs() &+ UInt64(max(timeoutMs, 0)) &* 1_000_000
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes {
                send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if sent > 0 {
                offset += sent
                continue
            }
            if errno == EINTR { continue }
            if errno != EAGAIN && errno != EWOULDBLOCK { return errno }
            let remaining = Clock.remainingMs(until: deadline)
            if remaining <= 0 { return ETIMEDOUT }
            var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&entry, 1, Int32(remaining))
        }
        return 0
    }
}

struct LineError: Error {
    let name: String
    init(_ name: String) { self.name = name }
}

// MARK: - Clock

enum Clock {
    /// CLOCK_MONOTONIC in nanoseconds.
    static func nowNs() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec)
    }

    /// Milliseconds left until `deadline` (rounded up, never negative).
    static func remainingMs(until deadline: UInt64) -> Int {
        let now = nowNs()
        if now >= deadline { return 0 }
        return Int((deadline - now + 999_999) / 1_000_000)
    }

    static func sleepMs(_ ms: Int) {
        guard ms > 0 else { return }
        var request = timespec(tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

// MARK: - errno names

/// Symbolic errno names ("ECONNREFUSED"), used as keys in probe reports so that tests
/// compare names rather than platform-specific numbers.
public enum ErrnoName {
    private static let table: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO",
        EBADF: "EBADF", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EACCES: "EACCES",
        EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", EINVAL: "EINVAL",
        ENFILE: "ENFILE", EMFILE: "EMFILE", ENOSPC: "ENOSPC", EPIPE: "EPIPE",
        ENOTSOCK: "ENOTSOCK", EDESTADDRREQ: "EDESTADDRREQ", EMSGSIZE: "EMSGSIZE",
        EPROTOTYPE: "EPROTOTYPE", ENOPROTOOPT: "ENOPROTOOPT",
        EPROTONOSUPPORT: "EPROTONOSUPPORT", EOPNOTSUPP: "EOPNOTSUPP",
        EAFNOSUPPORT: "EAFNOSUPPORT", EADDRINUSE: "EADDRINUSE",
        EADDRNOTAVAIL: "EADDRNOTAVAIL", ENETDOWN: "ENETDOWN", ENETUNREACH: "ENETUNREACH",
        ENETRESET: "ENETRESET", ECONNABORTED: "ECONNABORTED", ECONNRESET: "ECONNRESET",
        ENOBUFS: "ENOBUFS", EISCONN: "EISCONN", ENOTCONN: "ENOTCONN",
        ETIMEDOUT: "ETIMEDOUT", ECONNREFUSED: "ECONNREFUSED", EHOSTDOWN: "EHOSTDOWN",
        EHOSTUNREACH: "EHOSTUNREACH", EALREADY: "EALREADY", EINPROGRESS: "EINPROGRESS",
        EPROTO: "EPROTO", ENOSYS: "ENOSYS",  // ENOTSUP == EOPNOTSUPP, EWOULDBLOCK == EAGAIN on Linux
    ]

    /// "ECONNREFUSED" for ECONNREFUSED; "E<number>" for codes not in the table.
    public static func name(_ code: Int32) -> String {
        table[code] ?? "E\(code)"
    }
}

// MARK: - Latency statistics

/// Summary of latency samples in nanoseconds (nearest-rank percentiles).
public struct LatencyStats: Codable, Equatable, Sendable {
    public var count: Int
    public var minNs: UInt64
    public var p50Ns: UInt64
    public var p90Ns: UInt64
    public var p99Ns: UInt64
    public var maxNs: UInt64
    public var meanNs: UInt64

    public init(samples: [UInt64]) {
        let sorted = samples.sorted()
        count = sorted.count
        func rank(_ percent: Int) -> UInt64 {
            guard !sorted.isEmpty else { return 0 }
            let index = max(0, (sorted.count * percent + 99) / 100 - 1)
            return sorted[min(index, sorted.count - 1)]
        }
        minNs = sorted.first ?? 0
        maxNs = sorted.last ?? 0
        p50Ns = rank(50)
        p90Ns = rank(90)
        p99Ns = rank(99)
        meanNs = sorted.isEmpty ? 0 : sorted.reduce(0, &+) / UInt64(sorted.count)
    }
}

// MARK: - JSON

/// One-line, key-sorted JSON: the wire format between `swiftlane probe` and `ProbeRunner`.
public enum ProbeJSON {
    public static func encode<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from line: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(line.utf8))
        } catch {
            throw NetLabError.other("cannot decode \(type) from '\(line)': \(error)")
        }
    }
}
