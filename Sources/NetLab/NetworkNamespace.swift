import Foundation
import Glibc

/// Entering a named network namespace (`/run/netns/NAME`, as made by `ip netns add`) from
/// inside a process, for in-process probes (the benchmark) instead of `ip netns exec`.
public enum NetworkNamespace {
    /// Moves the *calling thread* into the namespace with setns(2). Network namespaces are
    /// per thread: only sockets created afterwards on this thread live in the namespace,
    /// so call it on the thread that runs the probes (normally the main thread), after
    /// `Cgroup2.join` if the sockets should also see a cgroup's hooks.
    public static func enter(_ name: String) throws {
        let path = name.hasPrefix("/") ? name : "/run/netns/\(name)"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw NetLabError.system(what: "open \(path)", errno: errno) }
        defer { close(fd) }
        // setns() is not exported by the Glibc module (it needs _GNU_SOURCE).
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else {
            throw NetLabError.other("setns not found in libc")
        }
        typealias SetNS = @convention(c) (Int32, Int32) -> Int32
        let setns = unsafeBitCast(symbol, to: SetNS.self)
        let cloneNewNet: Int32 = 0x4000_0000  // CLONE_NEWNET
        if setns(fd, cloneNewNet) != 0 {
            throw NetLabError.system(what: "setns \(path)", errno: errno)
        }
    }

    /// Runs `body` on a new thread that first enters `netns` (namespaces are per thread,
    /// so sockets and attachments made there belong to the namespace); the returned
    /// function waits for the thread and returns its result or rethrows its error.
    public static func onThread<T>(in netns: String, _ body: @escaping () throws -> T) -> () throws -> T {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<T, Error>?
        let thread = Thread {
            result = Result {
                try enter(netns)
                return try body()
            }
            done.signal()
        }
        thread.stackSize = 1 << 20
        thread.start()
        return {
            done.wait()
            return try result!.get()
        }
    }

    /// Names from `ip netns list` (first field of each line).
    public static func list() throws -> [String] {
        try Shell.run(["ip", "netns", "list"]).stdout.split(separator: "\n")
            .compactMap { $0.split(separator: " ").first.map(String.init) }
    }
}
