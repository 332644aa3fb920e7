import Foundation
import Glibc

/// A cgroup v2 directory that NetLab created (or was handed) as a child of the cgroup2
/// mount. Socket hooks (connect4, sendmsg4, …) are attached to such a child, never to the
/// root: attaching to the root would capture every process on the machine.
public struct Cgroup2: Hashable, Sendable {
    /// Absolute path of the cgroup directory.
    public let path: String

    /// Wraps an existing cgroup directory (no check is made).
    public init(path: String) {
        self.path = path
    }

    /// The cgroup2 mount point, read from /proc/mounts: `/sys/fs/cgroup` on a unified
    /// node, `/sys/fs/cgroup/unified` on a hybrid one. Throws when no cgroup2 is mounted.
    public static func root() throws -> String {
        guard let mounts = SysFile.read("/proc/mounts") else {
            throw NetLabError.other("cannot read /proc/mounts")
        }
        var found: [String] = []
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3, fields[2] == "cgroup2" else { continue }
            found.append(unescapeMountPath(String(fields[1])))
        }
        // Prefer the conventional places when several cgroup2 mounts exist.
        for preferred in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] where found.contains(preferred) {
            return preferred
        }
        guard let first = found.first else {
            throw NetLabError.other("no cgroup2 filesystem in /proc/mounts")
        }
        return first
    }

    /// Creates `<parent>/<name>` (parent defaults to the cgroup2 root). The name must be a
    /// single path component; an existing directory is an error, so two labs never share
    /// a cgroup by accident.
    public static func create(name: String, parent: String? = nil) throws -> Cgroup2 {
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
            throw NetLabError.invalidArgument("cgroup name '\(name)'")
        }
        let base = try parent ?? root()
        let path = base + "/" + name
        if mkdir(path, 0o755) != 0 {
            throw NetLabError.system(what: "mkdir \(path)", errno: errno)
        }
        return Cgroup2(path: path)
    }

    /// Moves process `pid` (all its threads) into this cgroup. Sockets created by the
    /// process afterwards carry this cgroup, so the hooks attached here apply to them;
    /// sockets created before the move do not.
    public func add(pid: Int32) throws {
        try SysFile.write(String(pid), to: path + "/cgroup.procs")
    }

    /// Moves the calling process into the cgroup at `path`. Call it before creating any
    /// socket that the cgroup's hooks should see.
    ///
    /// `ip netns exec` remounts /sys in a private mount namespace, which hides the cgroup2
    /// mount (`/sys/fs/cgroup…` is empty there). When `path` is not visible, the same path
    /// is tried through the launcher's root (`/proc/<ppid>/root/…`, the namespace the
    /// path was computed in; `ip netns exec` execs in place, so the parent is the
    /// launcher), then through `/proc/1/root/…`.
    public static func join(path: String) throws {
        let pid = String(getpid())
        var lastError: Error?
        for prefix in ["", "/proc/\(getppid())/root", "/proc/1/root"] {
            let procs = prefix + path + "/cgroup.procs"
            guard access(procs, F_OK) == 0 else { continue }
            do {
                try SysFile.write(pid, to: procs)
                return
            } catch {
                lastError = error
            }
        }
        throw lastError
            ?? NetLabError.other(
                "cgroup \(path) not found, neither directly nor through /proc/<ppid>/root or /proc/1/root")
    }

    /// Whether the directory still exists.
    public var exists: Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    /// Process ids currently in this cgroup (not in its children).
    public func pids() -> [Int32] {
        guard let text = SysFile.read(path + "/cgroup.procs") else { return [] }
        return text.split(separator: "\n").compactMap { Int32($0) }
    }

    /// Removes the cgroup: child cgroups first, then any remaining processes are moved to
    /// the parent's cgroup.procs, then rmdir. Missing directories are fine, so this is
    /// idempotent. Never removes the cgroup2 root.
    public func destroy() throws {
        guard exists else { return }
        if let root = try? Cgroup2.root(), (path as NSString).standardizingPath == root {
            throw NetLabError.invalidArgument("refusing to destroy the cgroup2 root \(path)")
        }
        for child in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
            var info = stat()
            let childPath = path + "/" + child
            if stat(childPath, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
                try Cgroup2(path: childPath).destroy()
            }
        }
        let parent = (path as NSString).deletingLastPathComponent
        // A process that exits between reading cgroup.procs and the write gives ESRCH;
        // an exiting (not yet reaped) process keeps the cgroup busy for a moment, hence
        // the retry loop around rmdir.
        var lastError: Int32 = 0
        for _ in 0..<100 {
            for pid in pids() {
                try? SysFile.write(String(pid), to: parent + "/cgroup.procs")
            }
            if rmdir(path) == 0 || errno == ENOENT { return }
            lastError = errno
            if lastError != EBUSY { break }
            usleep(20_000)
        }
        throw NetLabError.system(what: "rmdir \(path)", errno: lastError)
    }

    /// /proc/mounts escapes space, tab, newline and backslash as octal (`\040`).
    private static func unescapeMountPath(_ raw: String) -> String {
        guard raw.contains("\\") else { return raw }
        var out = [UInt8]()
        let bytes = Array(raw.utf8)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\\"), index + 3 < bytes.count,
                let value = UInt8(String(decoding: bytes[(index + 1)...(index + 3)], as: UTF8.self), radix: 8)
            {
                out.append(value)
                index += 4
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
