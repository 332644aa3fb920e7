import Foundation
import Glibc

/// A throwaway authoritative-only DNS server for the lab (dnsmasq from Debian's
/// dnsmasq-base): no upstream, no /etc/hosts, no config file, bound only to the given
/// addresses, port 53, in the foreground so `LabProcess.stop()` ends it.
public enum Dnsmasq {
    /// Starts dnsmasq in `netns`, listening on `listen` (addresses that exist in that
    /// namespace) and answering `records` (name → IPv4 or IPv6 address). Returns once
    /// dnsmasq has written its pid file (it binds its sockets before that); the pid file's
    /// temporary directory is removed then, since `LabProcess` already knows the pid.
    public static func start(
        netns: String,
        listen: [String],
        records: [String: String],
        binary: String = "dnsmasq",
        readyTimeout: Double = 5
    ) throws -> LabProcess {
        guard !listen.isEmpty else { throw NetLabError.invalidArgument("dnsmasq needs at least one listen address") }
        let dir = NSTemporaryDirectory() + "/netlab-dnsmasq-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let pidFile = dir + "/dnsmasq.pid"
        var argv = [
            binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--bind-interfaces", "--port=53", "--user=root", "--group=root", "--log-facility=-",
            "--pid-file=\(pidFile)",
        ]
        for address in listen { argv.append("--listen-address=\(address)") }
        for (name, ip) in records.sorted(by: { $0.key < $1.key }) { argv.append("--address=/\(name)/\(ip)") }
        let process: LabProcess
        do {
            process = try LabProcess.start(argv: argv, netns: netns)
        } catch {
            try? FileManager.default.removeItem(atPath: dir)
            throw error
        }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let deadline = Date().addingTimeInterval(readyTimeout)
        while access(pidFile, F_OK) != 0 {
            if !process.isRunning || Date() > deadline {
                process.stop()
                throw NetLabError.commandFailed(
                    argv: process.argv, status: process.exitStatus ?? -1,
                    stderr: "dnsmasq did not become ready: \(process.stderrText)")
            }
            usleep(10_000)
        }
        return process
    }
}

/// DNS look-ups through `dig`, from inside a namespace and (optionally) a cgroup, so the
/// query's UDP socket is seen by the cgroup's sendmsg/recvmsg hooks.
public enum Dig {
    /// `dig @server +short +time=1 +tries=2 [type] name` run as
    /// `sh -c 'echo $$ > CG/cgroup.procs && exec ip netns exec NS dig …'`: the shell joins
    /// the cgroup, then execs, so dig itself (same pid) creates its socket inside it.
    /// Returns the answer lines; throws when dig fails (for instance "no servers could be
    /// reached", exit status 9).
    public static func query(
        binary: String = "dig",
        netns: String,
        cgroup: String?,
        server: String,
        name: String,
        type: String = "A"
    ) throws -> [String] {
        let digArgs = ["@\(server)", "+short", "+time=1", "+tries=2", type, name]
        let argv: [String]
        if let cgroup {
            // Values travel as positional parameters, never spliced into the script.
            argv =
                [
                    "sh", "-c", "echo $$ > \"$1/cgroup.procs\" && shift && exec ip netns exec \"$@\"",
                    "sh", cgroup, netns, binary,
                ] + digArgs
        } else {
            argv = ["ip", "netns", "exec", netns, binary] + digArgs
        }
        let result = try Shell.run(argv, allowFailure: true)
        guard result.status == 0 else {
            throw NetLabError.commandFailed(argv: argv, status: result.status, stderr: result.stderr + result.stdout)
        }
        return result.stdout.split(separator: "\n").map { String($0) }
            .filter { !$0.isEmpty && !$0.hasPrefix(";") }
    }
}
