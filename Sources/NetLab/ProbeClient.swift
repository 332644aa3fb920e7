import Foundation
import Glibc

// MARK: - Reports

/// Outcome of `ProbeClient.tcp`: one connection per attempt, each reading the server's
/// greeting line.
public struct TCPProbeReport: Codable, Equatable, Sendable {
    public var target: String
    public var attempts: Int = 0
    /// Connected and got a greeting.
    public var ok: Int = 0
    /// Failed attempts by errno name (ECONNREFUSED, ENETUNREACH, ETIMEDOUT, …) or by
    /// "EOF" / "NO_GREETING" when the connection worked but the greeting did not arrive.
    public var failures: [String: Int] = [:]
    /// Successful attempts by backend name (from the greeting).
    public var backends: [String: Int] = [:]
    /// Connections whose getpeername() differed from the target (a missing
    /// getpeername rewrite shows up here).
    public var peerNameMismatches: Int = 0
    /// Client addresses as the backends reported them (sorted, unique).
    public var seenClientAddresses: [String] = []
    /// Outcome of each attempt in order: the backend name or the failure name (first
    /// `ProbeClient.sequenceLimit` attempts only).
    public var sequence: [String] = []
    /// Time from connect() to an established connection, successful attempts only.
    public var connectLatency: LatencyStats = LatencyStats(samples: [])
    /// First failure, as text, for error messages.
    public var firstError: String?

    public init(target: String) { self.target = target }
}

/// Outcome of `ProbeClient.udp`: one new socket and one request/reply per attempt.
public struct UDPProbeReport: Codable, Equatable, Sendable {
    public var target: String
    public var connected: Bool
    public var attempts: Int = 0
    public var ok: Int = 0
    /// Attempts without a reply within the timeout.
    public var timeouts: Int = 0
    /// Attempts that failed with an errno (connect/send/recv), by errno name.
    public var errors: [String: Int] = [:]
    public var backends: [String: Int] = [:]
    /// Replies whose source address (recvfrom) differed from the target: a missing
    /// recvmsg rewrite.
    public var replySourceMismatches: Int = 0
    /// Connected sockets only: getpeername() differed from the target.
    public var peerNameMismatches: Int = 0
    /// With `payloadBytes` above `ProbeServer.fullSizeReplyThreshold`: replies that were not
    /// the request's length or whose bytes after the greeting line differed from it.
    public var damagedReplies: Int = 0
    public var seenClientAddresses: [String] = []
    /// Outcome of each attempt in order: the backend name, the errno name, or ETIMEDOUT
    /// for a missing reply (first `ProbeClient.sequenceLimit` attempts only).
    public var sequence: [String] = []
    /// Request-to-reply time, successful attempts only.
    public var roundTripLatency: LatencyStats = LatencyStats(samples: [])
    public var firstError: String?

    public init(target: String, connected: Bool) {
        self.target = target
        self.connected = connected
    }
}

/// Outcome of a `bulkEcho` transfer: bytes sent and echoed back, and the first problem.
public struct BulkEchoReport: Codable, Equatable, Sendable {
    public var target: String
    public var requested: Int
    public var backend: String?
    public var sent = 0
    public var echoed = 0
    public var seconds = 0.0
    /// nil when every byte came back equal.
    public var error: String?

    public init(target: String, requested: Int) {
        self.target = target
        self.requested = requested
    }
}

/// State of a `hold` run: what was established first, and what survived later.
public struct HoldReport: Codable, Equatable, Sendable {
    public var target: String
    public var requested: Int
    /// Connections that connected and received a greeting.
    public var established: Int = 0
    /// Establishment failures by errno name.
    public var failures: [String: Int] = [:]
    /// Established connections by backend name.
    public var backends: [String: Int] = [:]
    /// Set after the second phase: connections whose "ping" came back.
    public var survived: Int?
    /// Survivors by backend name.
    public var survivedBackends: [String: Int]?
    /// Lost connections by reason (errno name, "EOF", "ETIMEDOUT", "BAD_ECHO").
    public var lost: [String: Int]?

    public init(target: String, requested: Int) {
        self.target = target
        self.requested = requested
    }
}

/// State of a `udp-hold` run: connected UDP sockets held open across a change (a backend
/// leaving its service), what each reached first, and what became of each afterwards.
public struct UDPHoldReport: Codable, Equatable, Sendable {
    /// One held socket.
    public struct Socket: Codable, Equatable, Sendable {
        /// First exchange: the backend that answered, or the failure (errno name of
        /// connect/send/recv, ETIMEDOUT for no reply).
        public var first: String
        /// Second exchange on the same socket: the backend that answered, or what the
        /// application saw: the recv() error if there was one (ECONNABORTED for a socket
        /// that was destroyed), else the send() error, else ETIMEDOUT.
        public var second: String?
        /// errno name of the second send(), nil when it went out.
        public var sendError: String?
        /// errno name of the second recv(), nil when a reply came (or nothing was pending
        /// after a failed send).
        public var receiveError: String?
        /// After a failed second exchange, what a resolver does: connect() the same socket
        /// to the target again and exchange. The backend that answered, or the failure.
        public var reconnected: String?

        public init(first: String) { self.first = first }
    }

    public var target: String
    public var sockets: [Socket] = []
    /// False in the first report (sockets established), true in the second.
    public var finished = false

    public init(target: String) { self.target = target }
}

/// Outcome of `ProbeClient.connectLoopLatency`.
public struct ConnectLoopReport: Codable, Equatable, Sendable {
    public enum Proto: String, Codable, Sendable, CaseIterable { case tcp, udp }
    public var target: String
    public var proto: Proto
    public var iterations: Int
    public var ok: Int = 0
    public var failures: [String: Int] = [:]
    /// Nanoseconds per connect() (TCP: until established; UDP: the syscall alone).
    public var latency: LatencyStats = LatencyStats(samples: [])
    /// Wall time of the measured loop, including close() and socket().
    public var totalNs: UInt64 = 0

    public init(target: String, proto: Proto, iterations: Int) {
        self.target = target
        self.proto = proto
        self.iterations = iterations
    }
}

// MARK: - Client

/// Client probes, run in the client network namespace (and, for the datapath tests, in a
/// cgroup with the socket hooks attached). They never block longer than their timeouts:
/// a missing translation fails with ENETUNREACH (no default route) instead of hanging.
public enum ProbeClient {
    /// Reports keep the per-attempt `sequence` for at most this many attempts.
    public static let sequenceLimit = 10_000

    /// `count` sequential TCP connections to `target` (`ip:port` or `[v6]:port`), each
    /// with a non-blocking connect bounded by `connectTimeoutMs`, a greeting read with the
    /// same bound, then close. With `durationSeconds`, attempts continue until that much
    /// time has passed (and `count` > 0 still caps them).
    public static func tcp(
        target: String,
        count: Int = 10,
        intervalMs: Int = 0,
        durationSeconds: Double? = nil,
        connectTimeoutMs: Int = 1000
    ) throws -> TCPProbeReport {
        let endpoint = try LabEndpoint(target)
        var report = TCPProbeReport(target: endpoint.description)
        var samples: [UInt64] = []
        var clients = Set<String>()
        let deadline = durationSeconds.map { Clock.nowNs() &+ UInt64($0 * 1e9) }
        while true {
            if let deadline {
                if Clock.nowNs() >= deadline || (count > 0 && report.attempts >= count) { break }
            } else if report.attempts >= count {
                break
            }
            if report.attempts > 0 { Clock.sleepMs(intervalMs) }
            report.attempts += 1
            switch connectOnce(endpoint, timeoutMs: connectTimeoutMs) {
            case .failure(let error):
                record(&report.failures, error.name)
                append(&report.sequence, error.name)
                if report.firstError == nil { report.firstError = "connect \(endpoint): \(error.name)" }
            case .success(let (fd, elapsed)):
                defer { close(fd) }
                if Sock.peer(fd) != endpoint { report.peerNameMismatches += 1 }
                switch Sock.readLine(fd, timeoutMs: connectTimeoutMs) {
                case .failure(let error):
                    let name = error.name == "ETIMEDOUT" ? "NO_GREETING" : error.name
                    record(&report.failures, name)
                    append(&report.sequence, name)
                    if report.firstError == nil { report.firstError = "greeting from \(endpoint): \(name)" }
                case .success(let line):
                    let (backend, client) = parseGreeting(line)
                    report.ok += 1
                    record(&report.backends, backend)
                    append(&report.sequence, backend)
                    clients.insert(client)
                    samples.append(elapsed)
                }
            }
        }
        report.seenClientAddresses = clients.sorted()
        report.connectLatency = LatencyStats(samples: samples)
        return report
    }

    /// `count` UDP request/reply exchanges, each on a new socket. Connected mode calls
    /// connect() then send()/recvfrom() and checks getpeername(); unconnected mode uses
    /// sendto()/recvfrom(). Both check that the reply's source equals the target.
    public static func udp(
        target: String,
        count: Int = 10,
        connected: Bool = false,
        timeoutMs: Int = 1000,
        intervalMs: Int = 0,
        payloadBytes: Int = 0
    ) throws -> UDPProbeReport {
        let endpoint = try LabEndpoint(target)
        var report = UDPProbeReport(target: endpoint.description, connected: connected)
        var samples: [UInt64] = []
        var clients = Set<String>()
        let destination = SockAddr(endpoint)
        var buffer = [UInt8](repeating: 0, count: 65536)
        for attempt in 0..<max(count, 0) {
            if attempt > 0 { Clock.sleepMs(intervalMs) }
            report.attempts += 1
            let fd = socket(destination.family, Sock.dgram | Sock.cloexec, 0)
            if fd < 0 { throw NetLabError.system(what: "socket", errno: errno) }
            defer { close(fd) }
            func fail(_ step: String, _ code: Int32) {
                record(&report.errors, ErrnoName.name(code))
                append(&report.sequence, ErrnoName.name(code))
                if report.firstError == nil { report.firstError = "\(step) \(endpoint): \(ErrnoName.name(code))" }
            }
            // "probe N", padded to payloadBytes with bytes that differ per attempt and offset.
            var payload = Array("probe \(attempt)".utf8)
            if payloadBytes > payload.count {
                payload += (payload.count..<min(payloadBytes, 65507)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ attempt) }
            }
            let start = Clock.nowNs()
            if connected {
                if destination.withSockaddr({ connect(fd, $0, $1) }) != 0 {
                    fail("connect", errno)
                    continue
                }
                if Sock.peer(fd) != endpoint { report.peerNameMismatches += 1 }
                if payload.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) < 0 {
                    fail("send", errno)
                    continue
                }
            } else {
                let sent = payload.withUnsafeBytes { bytes in
                    destination.withSockaddr { sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), $0, $1) }
                }
                if sent < 0 {
                    fail("sendto", errno)
                    continue
                }
            }
            let revents = Sock.wait(fd, events: Int16(POLLIN), timeoutMs: timeoutMs)
            if revents == 0 {
                report.timeouts += 1
                append(&report.sequence, "ETIMEDOUT")
                if report.firstError == nil { report.firstError = "no reply from \(endpoint) in \(timeoutMs) ms" }
                continue
            }
            let (received, source) = SockAddr.fill { recvfrom(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT), $0, $1) }
            if received < 0 {
                // ICMP errors (port unreachable → ECONNREFUSED) surface here on connected sockets.
                fail("recvfrom", errno)
                continue
            }
            let elapsed = Clock.nowNs() &- start
            if source.endpoint != endpoint { report.replySourceMismatches += 1 }
            // A full-size reply: the greeting line, then the request's bytes from there on.
            let greetingEnd = buffer[0..<received].firstIndex(of: 0x0a) ?? received
            if payload.count > ProbeServer.fullSizeReplyThreshold
                && (received != payload.count || greetingEnd == received
                    || buffer[(greetingEnd + 1)..<received] != payload[(greetingEnd + 1)...])
            {
                report.damagedReplies += 1
            }
            let (backend, client) = parseGreeting(String(decoding: buffer[0..<greetingEnd], as: UTF8.self))
            report.ok += 1
            record(&report.backends, backend)
            append(&report.sequence, backend)
            clients.insert(client)
            samples.append(elapsed)
        }
        report.seenClientAddresses = clients.sorted()
        report.roundTripLatency = LatencyStats(samples: samples)
        return report
    }

    /// One TCP connection to `target` that, after the greeting, sends `bytes` bytes (a
    /// repeating pattern) while reading the echo, then checks the echo byte for byte. It
    /// moves full-size segments, which the greeting probes never do: what path-MTU
    /// discovery and segmentation offloads change shows here. Never blocks past
    /// `timeoutMs` in all.
    public static func bulkEcho(target: String, bytes: Int, timeoutMs: Int = 10_000) throws -> BulkEchoReport {
        let endpoint = try LabEndpoint(target)
        var report = BulkEchoReport(target: endpoint.description, requested: bytes)
        let start = Clock.nowNs()
        let deadline = start &+ UInt64(max(timeoutMs, 0)) &* 1_000_000
        let fd: Int32
        switch connectOnce(endpoint, timeoutMs: timeoutMs) {
        case .failure(let error):
            report.error = "connect: \(error.name)"
            return report
        case .success(let (connected, _)):
            fd = connected
        }
        defer { close(fd) }
        switch Sock.readLine(fd, timeoutMs: timeoutMs) {
        case .failure(let error):
            report.error = "greeting: \(error.name)"
            return report
        case .success(let line):
            report.backend = parseGreeting(line).backend
        }
        let pattern = (0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) }
        var chunk = [UInt8](repeating: 0, count: 65536)
        var mismatchAt: Int?
        while report.echoed < bytes {
            let remaining = Clock.remainingMs(until: deadline)
            if remaining <= 0 {
                report.error = "ETIMEDOUT after \(report.sent) sent, \(report.echoed) echoed"
                break
            }
            var entry = pollfd(fd: fd, events: Int16(POLLIN) | (report.sent < bytes ? Int16(POLLOUT) : 0), revents: 0)
            if poll(&entry, 1, Int32(min(remaining, 100))) < 0 && errno != EINTR {
                report.error = "poll: \(ErrnoName.name(errno))"
                break
            }
            if report.sent < bytes && entry.revents & Int16(POLLOUT) != 0 {
                let sent = pattern.withUnsafeBytes {
                    send(fd, $0.baseAddress! + report.sent, bytes - report.sent, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                }
                if sent > 0 { report.sent += sent }
            }
            let count = recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT))
            if count > 0 {
                let end = min(report.echoed + count, bytes)
                if mismatchAt == nil, !chunk[0..<(end - report.echoed)].elementsEqual(pattern[report.echoed..<end]) {
                    mismatchAt = report.echoed
                }
                report.echoed += count
            } else if count == 0 {
                report.error = "EOF after \(report.echoed) echoed"
                break
            } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                report.error = "recv: \(ErrnoName.name(errno))"
                break
            }
        }
        if let mismatchAt { report.error = report.error ?? "echo differs from byte \(mismatchAt)" }
        report.seconds = Double(Clock.nowNs() &- start) / 1e9
        return report
    }

    /// Whether an ICMP error about a reply reaches the backend that sent it: a UDP
    /// responder on `backendPort` in `backendNetns` takes one datagram that a client in
    /// `clientNetns` sends to `target`, connects its socket to whoever it came from (the
    /// client, or the node that source-NATed it), and once the client's socket is closed
    /// sends one more datagram there. The client's host answers with port unreachable; the
    /// responder's next recv() reports what came back: "ECONNREFUSED" when the error
    /// reached it, "ETIMEDOUT" when nothing did within `timeoutMs`.
    public static func udpLateReplyOutcome(clientNetns: String, target: String, backendNetns: String, backendPort: UInt16,
                                           timeoutMs: Int = 1000) throws -> String {
        let endpoint = try LabEndpoint(target)
        let any = SockAddr(try LabEndpoint(ip: endpoint.isIPv6 ? "::" : "0.0.0.0", port: backendPort))
        let bound = DispatchSemaphore(value: 0), clientClosed = DispatchSemaphore(value: 0)
        let backend = NetworkNamespace.onThread(in: backendNetns) { () throws -> String in
            let fd = socket(any.family, Sock.dgram | Sock.cloexec, 0)
            if fd < 0 { throw NetLabError.system(what: "socket", errno: errno) }
            defer { close(fd) }
            if any.withSockaddr({ bind(fd, $0, $1) }) != 0 {
                bound.signal()
                throw NetLabError.system(what: "bind", errno: errno)
            }
            bound.signal()
            guard Sock.wait(fd, events: Int16(POLLIN), timeoutMs: timeoutMs) > 0 else { return "NO_REQUEST" }
            var buffer = [UInt8](repeating: 0, count: 512)
            let (count, peer) = SockAddr.fill { recvfrom(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT), $0, $1) }
            if count < 0 { return ErrnoName.name(errno) }
            if peer.withSockaddr({ connect(fd, $0, $1) }) != 0 { return "connect " + ErrnoName.name(errno) }
            _ = clientClosed.wait(timeout: .now() + .milliseconds(timeoutMs))
            let late = Array("late".utf8)
            if late.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) < 0 {
                return "send " + ErrnoName.name(errno)
            }
            guard Sock.wait(fd, events: Int16(POLLIN), timeoutMs: timeoutMs) > 0 else { return "ETIMEDOUT" }
            return recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT)) < 0 ? ErrnoName.name(errno) : "DATA"
        }
        bound.wait()
        let client = NetworkNamespace.onThread(in: clientNetns) { () throws -> Void in
            let fd = socket(SockAddr(endpoint).family, Sock.dgram | Sock.cloexec, 0)
            if fd < 0 { throw NetLabError.system(what: "socket", errno: errno) }
            let hello = Array("hello".utf8)
            _ = hello.withUnsafeBytes { bytes in
                SockAddr(endpoint).withSockaddr { sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), $0, $1) }
            }
            // Long enough for the request to arrive; then nothing listens on the port.
            Clock.sleepMs(100)
            close(fd)
        }
        let clientResult = Result { try client() }
        clientClosed.signal()
        let outcome = Result { try backend() }
        try clientResult.get()
        return try outcome.get()
    }

    /// Opens `connections` TCP connections and records the backend each reached, calls
    /// `between` with that first report (the CLI prints it and waits for a line on stdin),
    /// then sends "ping\n" on every connection and waits up to `echoTimeoutMs` for the
    /// echo. The returned report tells how many survived.
    public static func hold(
        target: String,
        connections: Int,
        connectTimeoutMs: Int = 1000,
        echoTimeoutMs: Int = 2000,
        between: (HoldReport) throws -> Void = ProbeClient.printAndWaitForLine
    ) throws -> HoldReport {
        let endpoint = try LabEndpoint(target)
        var report = HoldReport(target: endpoint.description, requested: connections)
        Sock.ensureDescriptors(connections)
        var open: [(fd: Int32, backend: String)] = []
        defer { for entry in open { close(entry.fd) } }
        for _ in 0..<max(connections, 0) {
            switch connectOnce(endpoint, timeoutMs: connectTimeoutMs) {
            case .failure(let error):
                record(&report.failures, error.name)
            case .success(let (fd, _)):
                switch Sock.readLine(fd, timeoutMs: connectTimeoutMs) {
                case .failure(let error):
                    record(&report.failures, error.name == "ETIMEDOUT" ? "NO_GREETING" : error.name)
                    close(fd)
                case .success(let line):
                    let backend = parseGreeting(line).backend
                    record(&report.backends, backend)
                    open.append((fd, backend))
                }
            }
        }
        report.established = open.count
        try between(report)

        // Phase two: ping everyone first, then collect echoes against one deadline so a
        // silently dead connection costs one timeout, not one per connection.
        var lost: [String: Int] = [:]
        var survivedBackends: [String: Int] = [:]
        var waiting: [Int32: (backend: String, received: [UInt8])] = [:]
        let ping = Array("ping\n".utf8)
        for entry in open {
            let code = Sock.sendAll(entry.fd, ping, timeoutMs: echoTimeoutMs)
            if code == 0 {
                waiting[entry.fd] = (entry.backend, [])
            } else {
                record(&lost, ErrnoName.name(code))
            }
        }
        let deadline = Clock.nowNs() &+ UInt64(echoTimeoutMs) &* 1_000_000
        var chunk = [UInt8](repeating: 0, count: 256)
        while !waiting.isEmpty {
            let remaining = Clock.remainingMs(until: deadline)
            if remaining <= 0 { break }
            var fds = waiting.keys.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), Int32(remaining))
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { break }
            for entry in fds where entry.revents != 0 {
                guard var state = waiting[entry.fd] else { continue }
                let count = recv(entry.fd, &chunk, chunk.count, Int32(MSG_DONTWAIT))
                if count > 0 {
                    state.received.append(contentsOf: chunk[0..<count])
                    if state.received.count >= ping.count {
                        waiting[entry.fd] = nil
                        if state.received == ping {
                            record(&survivedBackends, state.backend)
                        } else {
                            record(&lost, "BAD_ECHO")
                        }
                    } else {
                        waiting[entry.fd] = state
                    }
                } else if count == 0 {
                    waiting[entry.fd] = nil
                    record(&lost, "EOF")
                } else if errno != EAGAIN && errno != EINTR {
                    waiting[entry.fd] = nil
                    record(&lost, ErrnoName.name(errno))
                }
            }
        }
        for _ in waiting { record(&lost, "ETIMEDOUT") }
        report.survivedBackends = survivedBackends
        report.survived = survivedBackends.values.reduce(0, +)
        report.lost = lost
        return report
    }

    /// The CLI's pause between the two phases of `hold`: prints the first report as one
    /// JSON line on stdout, then blocks until a line (or EOF) arrives on stdin.
    public static func printAndWaitForLine(_ report: HoldReport) throws {
        print(try ProbeJSON.encode(report))
        fflush(stdout)
        _ = readLine()
    }

    /// Benchmark loop. TCP: `iterations` × (socket, blocking connect until established,
    /// close with RST so no TIME_WAIT piles up), timing each connect(). UDP: one socket
    /// connect()ed `iterations` times to the same target, timing each connect() — there is
    /// no packet, so this measures the syscall plus any cgroup connect hook. `warmup`
    /// iterations run first and are not recorded.
    public static func connectLoopLatency(
        target: String,
        proto: ConnectLoopReport.Proto,
        iterations: Int = 1000,
        warmup: Int = 100,
        connectTimeoutMs: Int = 1000
    ) throws -> ConnectLoopReport {
        let endpoint = try LabEndpoint(target)
        var report = ConnectLoopReport(target: endpoint.description, proto: proto, iterations: iterations)
        let destination = SockAddr(endpoint)
        var samples: [UInt64] = []
        samples.reserveCapacity(max(iterations, 0))
        switch proto {
        case .tcp:
            var timeout = timeval(tv_sec: connectTimeoutMs / 1000, tv_usec: (connectTimeoutMs % 1000) * 1000)
            var measuredStart = Clock.nowNs()
            for index in 0..<(max(warmup, 0) + max(iterations, 0)) {
                if index == warmup { measuredStart = Clock.nowNs() }
                let fd = socket(destination.family, Sock.stream | Sock.cloexec, 0)
                if fd < 0 { throw NetLabError.system(what: "socket", errno: errno) }
                // A blocking connect() honours SO_SNDTIMEO on Linux.
                _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                let start = Clock.nowNs()
                let status = destination.withSockaddr { connect(fd, $0, $1) }
                let code = status == 0 ? 0 : errno
                let elapsed = Clock.nowNs() &- start
                Sock.closeWithReset(fd)
                guard index >= warmup else { continue }
                if status == 0 {
                    report.ok += 1
                    samples.append(elapsed)
                } else {
                    record(&report.failures, code == EINPROGRESS ? "ETIMEDOUT" : ErrnoName.name(code))
                }
            }
            report.totalNs = Clock.nowNs() &- measuredStart
        case .udp:
            let fd = socket(destination.family, Sock.dgram | Sock.cloexec, 0)
            if fd < 0 { throw NetLabError.system(what: "socket", errno: errno) }
            defer { close(fd) }
            var measuredStart = Clock.nowNs()
            for index in 0..<(max(warmup, 0) + max(iterations, 0)) {
                if index == warmup { measuredStart = Clock.nowNs() }
                let start = Clock.nowNs()
                let status = destination.withSockaddr { connect(fd, $0, $1) }
                let code = status == 0 ? 0 : errno
                let elapsed = Clock.nowNs() &- start
                guard index >= warmup else { continue }
                if status == 0 {
                    report.ok += 1
                    samples.append(elapsed)
                } else {
                    record(&report.failures, ErrnoName.name(code))
                }
            }
            report.totalNs = Clock.nowNs() &- measuredStart
        }
        report.latency = LatencyStats(samples: samples)
        return report
    }

    // MARK: - Internals

    /// Non-blocking connect bounded by poll(); returns a blocking-mode fd and the
    /// nanoseconds until established, or an errno name.
    static func connectOnce(_ endpoint: LabEndpoint, timeoutMs: Int) -> Result<(Int32, UInt64), LineError> {
        let destination = SockAddr(endpoint)
        let fd = socket(destination.family, Sock.stream | Sock.cloexec | Sock.nonblock, 0)
        if fd < 0 { return .failure(LineError(ErrnoName.name(errno))) }
        let start = Clock.nowNs()
        let status = destination.withSockaddr { connect(fd, $0, $1) }
        if status != 0 {
            let code = errno
            guard code == EINPROGRESS else {
                close(fd)
                return .failure(LineError(ErrnoName.name(code)))
            }
            let revents = Sock.wait(fd, events: Int16(POLLOUT), timeoutMs: timeoutMs)
            if revents == 0 {
                close(fd)
                return .failure(LineError("ETIMEDOUT"))
            }
            let pending = revents < 0 ? errno : Sock.pendingError(fd)
            if pending != 0 {
                close(fd)
                return .failure(LineError(ErrnoName.name(pending)))
            }
        }
        let elapsed = Clock.nowNs() &- start
        return .success((fd, elapsed))
    }

    /// "<name> <peer-ip>" → (name, peer-ip); tolerant of a missing second field.
    static func parseGreeting(_ line: String) -> (backend: String, client: String) {
        let parts = line.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ", maxSplits: 1)
        return (parts.first.map(String.init) ?? "?", parts.count > 1 ? String(parts[1]) : "?")
    }

    static func record(_ counts: inout [String: Int], _ key: String) {
        counts[key, default: 0] += 1
    }

    static func append(_ sequence: inout [String], _ outcome: String) {
        if sequence.count < sequenceLimit { sequence.append(outcome) }
    }
}

// MARK: - Connected UDP sockets held across a change

extension ProbeClient {
    /// Opens `sockets` connected UDP sockets to `target`, one exchange each (which backend
    /// answered), calls `between` with that first report (the CLI prints it and waits for
    /// a line on stdin), then exchanges once more on every socket and reports the outcome
    /// and errno names; a socket whose second exchange fails is connect()ed to the target
    /// again, as a resolver would, and exchanges once more.
    public static func udpHold(
        target: String,
        sockets count: Int,
        timeoutMs: Int = 1000,
        between: (UDPHoldReport) throws -> Void = ProbeClient.printAndWaitForLine
    ) throws -> UDPHoldReport {
        let endpoint = try LabEndpoint(target)
        let destination = SockAddr(endpoint)
        var report = UDPHoldReport(target: endpoint.description)
        Sock.ensureDescriptors(count)
        var fds: [Int32] = []
        defer { for fd in fds where fd >= 0 { close(fd) } }
        func connectAndExchange(_ fd: Int32, _ tag: String) -> String {
            if destination.withSockaddr({ connect(fd, $0, $1) }) != 0 { return ErrnoName.name(errno) }
            let outcome = udpExchange(fd, payload: tag, timeoutMs: timeoutMs)
            return outcome.backend ?? outcome.receiveError ?? outcome.sendError ?? "ETIMEDOUT"
        }
        for index in 0..<max(count, 0) {
            let fd = socket(destination.family, Sock.dgram | Sock.cloexec, 0)
            if fd < 0 { throw NetLabError.system(what: "socket", errno: errno) }
            fds.append(fd)
            report.sockets.append(UDPHoldReport.Socket(first: connectAndExchange(fd, "hold \(index)")))
        }
        try between(report)

        for (index, fd) in fds.enumerated() {
            let outcome = udpExchange(fd, payload: "again \(index)", timeoutMs: timeoutMs)
            report.sockets[index].sendError = outcome.sendError
            report.sockets[index].receiveError = outcome.receiveError
            report.sockets[index].second = outcome.backend ?? outcome.receiveError ?? outcome.sendError ?? "ETIMEDOUT"
            if outcome.backend == nil {
                report.sockets[index].reconnected = connectAndExchange(fd, "reconnect \(index)")
            }
        }
        report.finished = true
        return report
    }

    /// The CLI's pause between the two phases of `udp-hold` (see `printAndWaitForLine`).
    public static func printAndWaitForLine(_ report: UDPHoldReport) throws {
        print(try ProbeJSON.encode(report))
        fflush(stdout)
        _ = readLine()
    }

    /// One request/reply on a connected UDP socket. A destroyed socket is no longer
    /// connected, so its send() fails (EDESTADDRREQ); its pending error (ECONNABORTED) is
    /// what recv() returns, and is read even after a failed send.
    static func udpExchange(_ fd: Int32, payload: String, timeoutMs: Int)
        -> (backend: String?, sendError: String?, receiveError: String?)
    {
        let bytes = Array(payload.utf8)
        var sendError: String?
        if bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) < 0 {
            sendError = ErrnoName.name(errno)
        }
        let revents = Sock.wait(fd, events: Int16(POLLIN), timeoutMs: sendError == nil ? timeoutMs : 0)
        if revents == 0 { return (nil, sendError, sendError == nil ? "ETIMEDOUT" : nil) }
        if revents < 0 { return (nil, sendError, ErrnoName.name(errno)) }
        var buffer = [UInt8](repeating: 0, count: 2048)
        let received = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        if received < 0 { return (nil, sendError, ErrnoName.name(errno)) }
        return (parseGreeting(String(decoding: buffer[0..<received], as: UTF8.self)).backend, sendError, nil)
    }
}
