import Foundation
import Glibc

/// A long-running child process, optionally inside a network namespace
/// (`ip netns exec NS …`, which execs in place, so `pid` is the program's own pid).
///
/// stdout is a pipe read line by line (`readLine`, `readJSON`); stdin is a pipe
/// (`writeLine`, `closeStdin`); stderr goes to an unlinked temporary file (`stderrText`), so
/// a chatty child can never block on it and nothing is left on disk even after a crash.
/// `stop()` signals only this pid.
///
/// Started with posix_spawn and reaped here with waitpid(pid), not with Foundation's
/// `Process`: Foundation detects a child's exit through a descriptor the child inherits,
/// and a child that closes its inherited descriptors at start-up (dnsmasq does) makes
/// Foundation block in wait4() on it, after which no other child of the process is
/// reaped. Until reaped here, the pid stays a zombie, so signalling it can never hit a
/// reused pid.
public final class LabProcess: @unchecked Sendable {
    /// The argv actually executed (with the `ip netns exec NS` prefix when `netns` is set).
    public let argv: [String]
    public let netns: String?
    public let pid: Int32

    private let stdoutFD: Int32
    private var stdinFD: Int32
    private let stderrFD: Int32
    private var buffered: [UInt8] = []
    private var stdoutClosed = false
    private var status: Int32?
    private let lock = NSLock()
    private let readLock = NSLock()

    private init(argv: [String], netns: String?, pid: Int32, stdoutFD: Int32, stdinFD: Int32, stderrFD: Int32) {
        self.argv = argv
        self.netns = netns
        self.pid = pid
        self.stdoutFD = stdoutFD
        self.stdinFD = stdinFD
        self.stderrFD = stderrFD
    }

    deinit {
        stop()
        closeStdin()
        close(stdoutFD)
        close(stderrFD)
    }

    /// Starts `argv` (argv[0] looked up in PATH), inside `netns` when given. The child
    /// gets only stdin, stdout and stderr (every other descriptor is closed), and default
    /// handlers for SIGPIPE, SIGTERM, SIGINT, SIGHUP and SIGCHLD.
    public static func start(argv: [String], netns: String? = nil, environment: [String: String]? = nil) throws
        -> LabProcess
    {
        guard !argv.isEmpty else { throw NetLabError.invalidArgument("empty argv") }
        // Writing to the stdin of a child that already exited must fail with EPIPE, not
        // kill the whole test process with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        let full = netns.map { ["ip", "netns", "exec", $0] + argv } ?? argv
        let executable = try Shell.which(full[0])

        var outPipe: [Int32] = [-1, -1]
        var inPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0 else { throw NetLabError.system(what: "pipe", errno: errno) }
        guard pipe(&inPipe) == 0 else {
            let code = errno
            close(outPipe[0])
            close(outPipe[1])
            throw NetLabError.system(what: "pipe", errno: code)
        }
        let stderrPath = NSTemporaryDirectory() + "/netlab-stderr-\(UUID().uuidString)"
        // The child appends through its copy; we pread() through ours. Unlinked at once.
        let errFD = open(stderrPath, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o600)
        unlink(stderrPath)
        // Parent-side ends must not leak into other children (theirs or Foundation's).
        for fd in outPipe + inPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        defer {
            close(outPipe[1])
            close(inPipe[0])
        }
        guard errFD >= 0 else {
            let code = errno
            close(outPipe[0])
            close(inPipe[1])
            throw NetLabError.system(what: "open \(stderrPath)", errno: code)
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errFD, 2)
        // Close everything else we have open (glibc ignores already-closed descriptors).
        let inherited = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in inherited.compactMap({ Int32($0) }) where fd > 2 {
            posix_spawn_file_actions_addclose(&actions, fd)
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD] { sigaddset(&defaults, signal) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        var cArgv: [UnsafeMutablePointer<CChar>?] = full.map { strdup($0) } + [nil]
        var cEnv: [UnsafeMutablePointer<CChar>?] = env.map { strdup($0) } + [nil]
        defer {
            for pointer in cArgv { free(pointer) }
            for pointer in cEnv { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, &cArgv, &cEnv)
        guard result == 0 else {
            close(outPipe[0])
            close(inPipe[1])
            close(errFD)
            throw NetLabError.system(what: "posix_spawn \(full.joined(separator: " "))", errno: result)
        }
        return LabProcess(argv: full, netns: netns, pid: pid, stdoutFD: outPipe[0], stdinFD: inPipe[1], stderrFD: errFD)
    }

    /// Whether the process has not exited yet.
    public var isRunning: Bool { reap(blocking: false) == nil }

    /// Exit status, 128 + signal number when killed by a signal, nil while running.
    public var exitStatus: Int32? { reap(blocking: false) }

    /// What the process wrote to stderr so far.
    public var stderrText: String {
        var data = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = pread(stderrFD, &chunk, chunk.count, off_t(data.count))
            if count <= 0 { break }
            data.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The next stdout line (without newline); nil at EOF. Throws on timeout.
    public func readLine(timeout: Double) throws -> String? {
        readLock.lock()
        defer { readLock.unlock() }
        let deadline = Clock.nowNs() &+ UInt64(max(timeout, 0) * 1e9)
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeSubrange(...newline)
                return line
            }
            if stdoutClosed {
                guard !buffered.isEmpty else { return nil }
                let line = String(decoding: buffered, as: UTF8.self)
                buffered.removeAll()
                return line
            }
            let remaining = Clock.remainingMs(until: deadline)
            if remaining <= 0 {
                throw NetLabError.timeout(
                    "no stdout line from pid \(pid) (\(argv.joined(separator: " "))) in \(timeout)s; stderr: \(stderrText)"
                )
            }
            var entry = pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, Int32(min(remaining, 1000)))
            if ready <= 0 { continue }
            let count = read(stdoutFD, &chunk, chunk.count)
            if count > 0 {
                buffered.append(contentsOf: chunk[0..<count])
            } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                stdoutClosed = true
            }
        }
    }

    /// Decodes the next JSON line on stdout (lines not starting with `{` are skipped and
    /// reported if no JSON follows). Throws with stderr when the process ends first.
    public func readJSON<T: Decodable>(_ type: T.Type = T.self, timeout: Double = 30) throws -> T {
        var skipped: [String] = []
        let deadline = Date().addingTimeInterval(timeout)
        while let line = try readLine(timeout: max(deadline.timeIntervalSinceNow, 0)) {
            if line.hasPrefix("{") { return try ProbeJSON.decode(type, from: line) }
            if !line.isEmpty { skipped.append(line) }
        }
        _ = waitForExit(timeout: 2)
        throw NetLabError.commandFailed(
            argv: argv, status: exitStatus ?? -1,
            stderr: "no JSON on stdout" + (skipped.isEmpty ? "" : " (got: \(skipped.joined(separator: " | ")))")
                + "; stderr: \(stderrText)")
    }

    /// Writes `line` plus a newline to the process's stdin.
    public func writeLine(_ line: String) throws {
        lock.lock()
        let fd = stdinFD
        lock.unlock()
        guard fd >= 0 else { throw NetLabError.other("stdin of pid \(pid) is closed") }
        let bytes = Array((line + "\n").utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                throw NetLabError.system(what: "write to stdin of pid \(pid)", errno: errno)
            }
            offset += written
        }
    }

    /// Closes stdin (the child reads EOF). Idempotent.
    public func closeStdin() {
        lock.lock()
        defer { lock.unlock() }
        if stdinFD >= 0 {
            close(stdinFD)
            stdinFD = -1
        }
    }

    /// Waits until the process exits; returns its status, or nil if it still runs after
    /// `timeout` seconds.
    @discardableResult
    public func waitForExit(timeout: Double) -> Int32? {
        let deadline = Clock.nowNs() &+ UInt64(max(timeout, 0) * 1e9)
        while true {
            if let status = reap(blocking: false) { return status }
            if Clock.nowNs() >= deadline { return nil }
            usleep(5_000)
        }
    }

    /// SIGTERM to this pid, SIGKILL after 2 s if it is still there. Idempotent.
    public func stop() {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        if waitForExit(timeout: 2) != nil { return }
        kill(pid, SIGKILL)
        _ = waitForExit(timeout: 5)
    }

    /// waitpid(pid) once; caches the decoded status.
    private func reap(blocking: Bool) -> Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let status { return status }
        var raw: Int32 = 0
        let result = waitpid(pid, &raw, blocking ? 0 : WNOHANG)
        if result == pid {
            // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift cannot import.
            let signal = raw & 0x7f
            status = signal == 0 ? (raw >> 8) & 0xff : 128 + signal
        } else if result < 0 && errno == ECHILD {
            status = -1  // Not our child any more (reaped elsewhere).
        }
        return status
    }
}

// MARK: - Probe runner

/// Runs `<binary> probe …` in a namespace and cgroup and decodes its JSON report: the
/// way tests and the demo drive traffic through sockets that the cgroup's hooks see.
public struct ProbeRunner: Sendable {
    /// The swiftlane executable (anything with the `probe` subcommand).
    public var binary: String
    /// Namespace the client runs in (normally `ClusterLab.clientNetns`).
    public var netns: String?
    /// Cgroup directory the client joins before creating sockets, if any.
    public var cgroup: String?
    /// Upper bound on one probe run, seconds.
    public var timeout: Double

    public init(binary: String = ProbeRunner.defaultBinary(), netns: String?, cgroup: String?, timeout: Double = 120) {
        self.binary = binary
        self.netns = netns
        self.cgroup = cgroup
        self.timeout = timeout
    }

    /// `$SWIFTLANE_BIN`, else a `swiftlane` next to the running executable (the layout of
    /// `.build/debug` for tests and the bench), else the running executable itself.
    public static func defaultBinary() -> String {
        if let fromEnv = ProcessInfo.processInfo.environment["SWIFTLANE_BIN"], !fromEnv.isEmpty {
            return fromEnv
        }
        let selfPath =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let sibling = (selfPath as NSString).deletingLastPathComponent + "/swiftlane"
        if access(sibling, X_OK) == 0 { return sibling }
        return selfPath
    }

    public func tcp(
        target: String, count: Int = 10, intervalMs: Int = 0, durationSeconds: Double? = nil,
        connectTimeoutMs: Int = 1000
    ) throws -> TCPProbeReport {
        var args = [
            "tcp", "--target", target, "--count", "\(count)", "--interval-ms", "\(intervalMs)",
            "--connect-timeout-ms", "\(connectTimeoutMs)",
        ]
        if let durationSeconds { args += ["--duration-seconds", "\(durationSeconds)"] }
        return try run(args)
    }

    public func udp(target: String, count: Int = 10, connected: Bool = false, timeoutMs: Int = 1000,
                    payloadBytes: Int = 0) throws -> UDPProbeReport
    {
        var args = ["udp", "--target", target, "--count", "\(count)", "--timeout-ms", "\(timeoutMs)"]
        if connected { args.append("--connected") }
        if payloadBytes > 0 { args += ["--payload-bytes", "\(payloadBytes)"] }
        return try run(args)
    }

    public func latency(
        target: String, proto: ConnectLoopReport.Proto, iterations: Int = 1000, warmup: Int = 100
    ) throws -> ConnectLoopReport {
        try run([
            "latency", "--target", target, "--proto", proto.rawValue, "--iterations", "\(iterations)",
            "--warmup", "\(warmup)",
        ])
    }

    /// Starts `probe hold` and returns once its connections are established.
    public func startHold(target: String, connections: Int, connectTimeoutMs: Int = 1000, echoTimeoutMs: Int = 2000)
        throws -> HoldSession
    {
        let process = try LabProcess.start(
            argv: command([
                "hold", "--target", target, "--connections", "\(connections)",
                "--connect-timeout-ms", "\(connectTimeoutMs)", "--echo-timeout-ms", "\(echoTimeoutMs)",
            ]),
            netns: netns)
        do {
            let established = try process.readJSON(HoldReport.self, timeout: timeout)
            return HoldSession(process: process, established: established, timeout: timeout)
        } catch {
            process.stop()
            throw error
        }
    }

    /// Starts `probe udp-hold` and returns once its sockets have made their first exchange.
    public func startUDPHold(target: String, sockets: Int, timeoutMs: Int = 1000) throws -> UDPHoldSession {
        let process = try LabProcess.start(
            argv: command(["udp-hold", "--target", target, "--sockets", "\(sockets)", "--timeout-ms", "\(timeoutMs)"]),
            netns: netns)
        do {
            let established = try process.readJSON(UDPHoldReport.self, timeout: timeout)
            return UDPHoldSession(process: process, established: established, timeout: timeout)
        } catch {
            process.stop()
            throw error
        }
    }

    /// The argv for `probe <args> [--cgroup PATH]` (without the netns prefix).
    public func command(_ args: [String]) -> [String] {
        var argv = [binary, "probe"] + args
        if let cgroup { argv += ["--cgroup", cgroup] }
        return argv
    }

    private func run<T: Decodable>(_ args: [String]) throws -> T {
        let process = try LabProcess.start(argv: command(args), netns: netns)
        defer { process.stop() }
        process.closeStdin()
        let report = try process.readJSON(T.self, timeout: timeout)
        if let status = process.waitForExit(timeout: 10), status != 0 {
            throw NetLabError.commandFailed(argv: process.argv, status: status, stderr: process.stderrText)
        }
        return report
    }
}

/// A running `probe hold`: its connections are open; `finish()` lets it ping them all.
public final class HoldSession: @unchecked Sendable {
    public let process: LabProcess
    /// The first-phase report (which backends the connections reached).
    public let established: HoldReport
    private let timeout: Double

    init(process: LabProcess, established: HoldReport, timeout: Double) {
        self.process = process
        self.established = established
        self.timeout = timeout
    }

    /// Tells the probe to ping every connection and returns the final report.
    public func finish() throws -> HoldReport {
        defer { process.stop() }
        try process.writeLine("go")
        let report = try process.readJSON(HoldReport.self, timeout: timeout)
        _ = process.waitForExit(timeout: 10)
        return report
    }

    deinit { process.stop() }
}

/// A running `probe udp-hold`: its sockets are connected; `finish()` lets it exchange again.
public final class UDPHoldSession: @unchecked Sendable {
    public let process: LabProcess
    /// The first-phase report (which backend each socket reached).
    public let established: UDPHoldReport
    private let timeout: Double

    init(process: LabProcess, established: UDPHoldReport, timeout: Double) {
        self.process = process
        self.established = established
        self.timeout = timeout
    }

    /// Tells the probe to exchange again on every socket and returns the final report.
    public func finish() throws -> UDPHoldReport {
        defer { process.stop() }
        try process.writeLine("go")
        let report = try process.readJSON(UDPHoldReport.self, timeout: timeout)
        _ = process.waitForExit(timeout: 10)
        return report
    }

    deinit { process.stop() }
}
