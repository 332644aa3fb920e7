import Foundation
import Glibc

/// Every failure NetLab reports. Each case carries enough context to read the failure
/// without a debugger: the command line and its stderr, the path and the errno text.
public enum NetLabError: Error, CustomStringConvertible {
    /// A command exited non-zero (or could not be started).
    case commandFailed(argv: [String], status: Int32, stderr: String)
    /// A system call failed; `what` names the call and its object.
    case system(what: String, errno: Int32)
    /// A value given by the caller is malformed.
    case invalidArgument(String)
    /// A wait ran out of time.
    case timeout(String)
    /// Anything else (unexpected output, missing mount, …).
    case other(String)

    public var description: String {
        switch self {
        case .commandFailed(let argv, let status, let stderr):
            let trimmed = stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            return "command failed (status \(status)): \(argv.joined(separator: " "))"
                + (trimmed.isEmpty ? "" : ": \(trimmed)")
        case .system(let what, let code):
            return "\(what): \(ErrnoName.name(code)) (\(String(cString: strerror(code))))"
        case .invalidArgument(let text):
            return "invalid argument: \(text)"
        case .timeout(let text):
            return "timed out: \(text)"
        case .other(let text):
            return text
        }
    }
}

/// Runs short-lived commands to completion (`ip`, `sh`, `dig`).
public enum Shell {
    /// Runs `argv` (argv[0] is looked up in PATH, then /usr/sbin and /sbin) and collects
    /// its output. Throws `NetLabError.commandFailed` with argv and stderr when the
    /// command exits non-zero, unless `allowFailure` is set.
    @discardableResult
    public static func run(
        _ argv: [String], allowFailure: Bool = false
    ) throws -> (status: Int32, stdout: String, stderr: String) {
        guard let first = argv.first else { throw NetLabError.invalidArgument("empty argv") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try which(first))
        process.arguments = Array(argv.dropFirst())
        let outPipe = Pipe()
        let errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw NetLabError.commandFailed(argv: argv, status: -1, stderr: "\(error)")
        }
        // Both pipes are drained together so a chatty stderr cannot block the child
        // while we wait on stdout.
        try? outPipe.fileHandleForWriting.close()
        try? errPipe.fileHandleForWriting.close()
        let (out, err) = drain(
            outPipe.fileHandleForReading.fileDescriptor, errPipe.fileHandleForReading.fileDescriptor)
        process.waitUntilExit()
        let status = process.terminationStatus
        let result = (status: status, stdout: out, stderr: err)
        if status != 0 && !allowFailure {
            throw NetLabError.commandFailed(argv: argv, status: status, stderr: err)
        }
        return result
    }

    /// The absolute path of `command`: returned as is when it contains a slash, else the
    /// first executable match in PATH, /usr/sbin, /sbin, /usr/bin, /bin.
    public static func which(_ command: String) throws -> String {
        if command.contains("/") { return command }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        for dir in dirs where !dir.isEmpty {
            let candidate = dir + "/" + command
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw NetLabError.other("command not found: \(command)")
    }

    /// Reads two descriptors until both reach EOF.
    private static func drain(_ fdA: Int32, _ fdB: Int32) -> (String, String) {
        var buffers = [Data(), Data()]
        var fds = [
            pollfd(fd: fdA, events: Int16(POLLIN), revents: 0), pollfd(fd: fdB, events: Int16(POLLIN), revents: 0),
        ]
        var open = 2
        var chunk = [UInt8](repeating: 0, count: 65536)
        while open > 0 {
            let ready = poll(&fds, nfds_t(fds.count), -1)
            if ready < 0 {
                if errno == EINTR { continue }
                break
            }
            for index in fds.indices where fds[index].fd >= 0 && fds[index].revents != 0 {
                let count = read(fds[index].fd, &chunk, chunk.count)
                if count > 0 {
                    buffers[index].append(contentsOf: chunk[0..<count])
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    fds[index].fd = -1
                    open -= 1
                }
            }
        }
        return (String(decoding: buffers[0], as: UTF8.self), String(decoding: buffers[1], as: UTF8.self))
    }
}

// MARK: - Small file helpers (errno-preserving, unlike FileManager)

enum SysFile {
    /// Writes `text` to an existing file (cgroup.procs and friends) with one write(2).
    static func write(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        if fd < 0 { throw NetLabError.system(what: "open \(path)", errno: errno) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if written < 0 { throw NetLabError.system(what: "write '\(text)' to \(path)", errno: errno) }
    }

    /// The file's contents, or nil when it cannot be read.
    /// Reads to EOF in chunks: pseudo files (/proc, cgroupfs) report a size of 0.
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return nil }
        defer { close(fd) }
        var data = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = Glibc.read(fd, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            if count < 0 { return nil }
            if count == 0 { break }
            data.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: data, as: UTF8.self)
    }
}
