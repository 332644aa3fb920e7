import Foundation
import Glibc

/// One backend "pod" of a lab: its own network namespace with one veth into the lab bridge.
public struct LabBackend: Hashable, Codable, Sendable {
    /// 1-based position, stable for the life of the lab.
    public let index: Int
    /// "b1", "b2", …: the name the probe server announces.
    public let name: String
    public let netns: String
    /// 198.18.X.(10+index).
    public let ipv4: String
    /// fd00:198:18:X::(10+index).
    public let ipv6: String
    /// The veth end inside `netns`.
    public let interface: String
    /// The veth end enslaved to the bridge in the client namespace.
    public let bridgePort: String
}

/// A throwaway cluster-shaped topology built from network namespaces:
///
/// ```
///   client netns  <prefix>-c                      backend netns <prefix>-b1 … -bN
///   ┌──────────────────────────────┐  veth pairs  ┌────────────────────────────┐
///   │ bridge <prefix>br            ├──────────────┤ <prefix>e1  198.18.X.11/24 │
///   │   198.18.X.1/24              │              │             fd00:…:X::11/64│
///   │   fd00:198:18:X::1/64        │              └────────────────────────────┘
///   │ (clients run here)           │  …
///   └──────────────────────────────┘
/// ```
///
/// The bridge lives in the client namespace, so the client reaches every backend on-link
/// and the host namespace holds nothing of the lab. No namespace has a default route: a
/// connect() to an address outside the lab subnet (a ClusterIP that the datapath failed to
/// translate, say `vipIPv4(1)`) fails at once with ENETUNREACH instead of leaving the lab.
/// Addresses come from 198.18.0.0/15 and fd00:198:18::/48 only; X is random per lab.
///
/// Names start with "sl" + a short random id, so parallel labs never collide; every
/// interface name fits in 15 characters. `clientCgroup` is a fresh cgroup v2 child for
/// the clients (the place to attach socket hooks). `teardown()` removes every namespace,
/// link and cgroup the lab made, even after a half-finished init, and runs from deinit as a
/// safety net. A record of what each live lab made is kept under `/run/netlab` so that
/// `removeOrphans()` can clean up after a process that died without tearing down.
public final class ClusterLab: @unchecked Sendable {
    /// The random (or given) id; `prefix` is "sl" + id.
    public let id: String
    public let prefix: String
    /// X in 198.18.X.0/24 and fd00:198:18:X::/64 (0…250; random 1…250 unless given).
    public let subnet: Int
    public let clientNetns: String
    public let bridge: String
    public let clientIPv4: String
    public let clientIPv6: String
    /// A cgroup v2 child named after the prefix, for the client processes.
    public private(set) var clientCgroup: Cgroup2
    public private(set) var backends: [LabBackend] = []

    private var namespaces: [String] = []
    private var processes: [LabProcess] = []
    private var nextIndex = 1
    private var tornDown = false
    /// Set once this lab wrote its record: a failed init must not remove the record of
    /// another lab with the same prefix.
    private var ownsRecord = false
    private let lock = NSLock()

    /// Where live labs record what they made (one JSON file per lab).
    public static let recordDirectory = "/run/netlab"

    /// Builds the client namespace with its bridge, `backends` backend namespaces and the
    /// client cgroup. `id` (1–8 lowercase letters or digits) defaults to a random one;
    /// `subnet` (0…250) defaults to a random one in 1…250. Labs are isolated from each
    /// other, so two labs with the same subnet still work; a fixed subnet gives fixed
    /// addresses (the demo uses 0, so its VIPs are 198.19.0.x and fd00:198:18:f000::x). On any failure everything made so far is
    /// removed before the error is rethrown.
    public init(backends count: Int = 3, id: String? = nil, subnet: Int? = nil) throws {
        let chosenID = id ?? ClusterLab.randomID()
        guard (1...8).contains(chosenID.count),
            chosenID.allSatisfy({ ($0.isASCII && $0.isLowercase) || $0.isNumber })
        else { throw NetLabError.invalidArgument("lab id '\(chosenID)' must be 1-8 of [a-z0-9]") }
        let chosenSubnet = subnet ?? Int.random(in: 1...250)
        guard (0...250).contains(chosenSubnet) else {
            throw NetLabError.invalidArgument("subnet \(chosenSubnet) must be 0...250")
        }
        guard (0...200).contains(count) else { throw NetLabError.invalidArgument("backends \(count) must be 0...200") }
        self.id = chosenID
        self.prefix = "sl" + chosenID
        self.subnet = chosenSubnet
        self.clientNetns = prefix + "-c"
        self.bridge = prefix + "br"
        self.clientIPv4 = "198.18.\(chosenSubnet).1"
        self.clientIPv6 = "fd00:198:18:\(chosenSubnet)::1"
        self.clientCgroup = Cgroup2(path: "")
        do {
            clientCgroup = try Cgroup2.create(name: prefix)
            try saveRecord()
            try addNamespace(clientNetns)
            try ip(clientNetns, "link", "set", "lo", "up")
            try ip(
                clientNetns, "link", "add", "name", bridge, "type", "bridge",
                "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0")
            try ip(clientNetns, "addr", "add", "\(clientIPv4)/24", "dev", bridge)
            try ip(clientNetns, "addr", "add", "\(clientIPv6)/64", "dev", bridge, "nodad")
            try ip(clientNetns, "link", "set", bridge, "up")
            for _ in 0..<count { _ = try addBackend() }
        } catch {
            teardown()
            throw error
        }
    }

    deinit {
        teardown()
    }

    // MARK: - Backends

    /// Adds one more backend namespace (next index) and plugs it into the bridge.
    @discardableResult
    public func addBackend() throws -> LabBackend {
        lock.lock()
        let index = nextIndex
        nextIndex += 1
        lock.unlock()
        guard index <= 240 else { throw NetLabError.invalidArgument("at most 240 backends per lab") }
        let backend = LabBackend(
            index: index, name: "b\(index)", netns: "\(prefix)-b\(index)",
            ipv4: "198.18.\(subnet).\(10 + index)", ipv6: "fd00:198:18:\(subnet)::\(10 + index)",
            interface: "\(prefix)e\(index)", bridgePort: "\(prefix)v\(index)")
        try addNamespace(backend.netns)
        // The veth is created inside the client namespace with its peer placed directly in
        // the backend namespace: the host namespace never sees either end.
        try ip(
            clientNetns, "link", "add", backend.bridgePort, "type", "veth",
            "peer", "name", backend.interface, "netns", backend.netns)
        try ip(clientNetns, "link", "set", backend.bridgePort, "master", bridge, "up")
        try ip(backend.netns, "link", "set", "lo", "up")
        try ip(backend.netns, "addr", "add", "\(backend.ipv4)/24", "dev", backend.interface)
        try ip(backend.netns, "addr", "add", "\(backend.ipv6)/64", "dev", backend.interface, "nodad")
        try ip(backend.netns, "link", "set", backend.interface, "up")
        lock.lock()
        backends.append(backend)
        lock.unlock()
        return backend
    }

    /// Removes a backend: its lab processes, its veth and its namespace.
    ///
    /// `graceful` (default) stops the processes first, so their connections end with a
    /// FIN (clients read EOF). Otherwise the veth goes first: the backend vanishes from
    /// the wire and its connections die silently, as when a node disappears (clients
    /// see timeouts).
    public func removeBackendNetns(_ backend: LabBackend, graceful: Bool = true) throws {
        if graceful { stopProcesses(in: backend.netns) }
        _ = try? Shell.run(["ip", "-n", clientNetns, "link", "del", backend.bridgePort], allowFailure: true)
        if !graceful { stopProcesses(in: backend.netns) }
        try deleteNamespace(backend.netns)
        lock.lock()
        backends.removeAll { $0.netns == backend.netns }
        namespaces.removeAll { $0 == backend.netns }
        lock.unlock()
        try? saveRecord()
    }

    /// A ClusterIP-like address inside 198.19.0.0/16 that no lab namespace routes.
    public func vipIPv4(_ host: Int) -> String { "198.19.\(subnet).\(host)" }

    /// An IPv6 service address (fd00:198:18:fXXX::/64) that no lab namespace routes.
    public func vipIPv6(_ host: Int) -> String { "fd00:198:18:f\(String(format: "%03d", subnet))::\(host)" }

    // MARK: - Processes

    /// Starts `argv` in `netns` (default: the client namespace) and tracks it: teardown
    /// stops it.
    public func spawn(_ argv: [String], netns: String? = nil) throws -> LabProcess {
        track(try LabProcess.start(argv: argv, netns: netns ?? clientNetns))
    }

    /// Hands a process started elsewhere (`Dnsmasq.start`, `LabProcess.start`) to the lab:
    /// teardown stops it (and `removeBackendNetns` does, if it runs in that namespace).
    @discardableResult
    public func track(_ process: LabProcess) -> LabProcess {
        lock.lock()
        processes.append(process)
        lock.unlock()
        return process
    }

    /// Starts `<binary> probe serve` in one backend's namespace and waits until it listens.
    @discardableResult
    public func startProbeServer(
        on backend: LabBackend, binary: String = ProbeRunner.defaultBinary(), tcpPort: UInt16 = 8080,
        udpPort: UInt16 = 8053
    ) throws -> LabProcess {
        let process = try spawn(
            [binary, "probe", "serve", "--name", backend.name, "--tcp-port", "\(tcpPort)", "--udp-port", "\(udpPort)"],
            netns: backend.netns)
        _ = try process.readJSON(ProbeServer.Listening.self, timeout: 15)
        return process
    }

    /// Starts a probe server in every backend namespace; returns them by backend name.
    @discardableResult
    public func startProbeServers(
        binary: String = ProbeRunner.defaultBinary(), tcpPort: UInt16 = 8080, udpPort: UInt16 = 8053
    ) throws -> [String: LabProcess] {
        var started: [String: LabProcess] = [:]
        for backend in backends {
            started[backend.name] = try startProbeServer(
                on: backend, binary: binary, tcpPort: tcpPort, udpPort: udpPort)
        }
        return started
    }

    /// A runner for probes from the client namespace inside `clientCgroup`.
    public func probeRunner(binary: String = ProbeRunner.defaultBinary(), inCgroup: Bool = true) -> ProbeRunner {
        ProbeRunner(binary: binary, netns: clientNetns, cgroup: inCgroup ? clientCgroup.path : nil)
    }

    /// Runs a short command inside `netns` (`ip netns exec`).
    @discardableResult
    public func exec(_ argv: [String], netns: String? = nil, allowFailure: Bool = false) throws -> (
        status: Int32, stdout: String, stderr: String
    ) {
        try Shell.run(["ip", "netns", "exec", netns ?? clientNetns] + argv, allowFailure: allowFailure)
    }

    // MARK: - Teardown

    /// Removes everything the lab created: stops its processes (by pid), deletes the
    /// backend and client namespaces (and with them the bridge and veths), destroys the
    /// cgroup and the record. Safe to call repeatedly; never throws. Returns the problems
    /// met (empty when all went well).
    @discardableResult
    public func teardown() -> [String] {
        lock.lock()
        if tornDown {
            lock.unlock()
            return []
        }
        tornDown = true
        let tracked = processes
        processes.removeAll()
        let toDelete = namespaces.reversed()
        lock.unlock()

        var problems: [String] = []
        for process in tracked { process.stop() }
        lock.lock()
        let ports = backends.map(\.bridgePort)
        lock.unlock()
        for port in ports {
            _ = try? Shell.run(["ip", "-n", clientNetns, "link", "del", port], allowFailure: true)
        }
        for name in toDelete {
            do {
                try ClusterLab.removeNamespace(name)
            } catch {
                problems.append("\(error)")
            }
        }
        if !clientCgroup.path.isEmpty {
            do { try clientCgroup.destroy() } catch { problems.append("\(error)") }
        }
        if ownsRecord { unlink(recordPath) }
        lock.lock()
        backends.removeAll()
        namespaces.removeAll()
        lock.unlock()
        for problem in problems {
            FileHandle.standardError.write(Data("netlab teardown \(prefix): \(problem)\n".utf8))
        }
        return problems
    }

    /// Tears down labs whose owning process is gone (crashed test, killed demo), using the
    /// records under `recordDirectory`. Processes left in those namespaces were started by
    /// that lab; they are signalled by pid. Returns the prefixes cleaned.
    @discardableResult
    public static func removeOrphans() -> [String] {
        var cleaned: [String] = []
        let files = (try? FileManager.default.contentsOfDirectory(atPath: recordDirectory)) ?? []
        for file in files where file.hasSuffix(".json") {
            let path = recordDirectory + "/" + file
            guard let text = SysFile.read(path), let record = try? ProbeJSON.decode(LabRecord.self, from: text) else {
                continue
            }
            if kill(record.ownerPid, 0) == 0 || errno == EPERM { continue }
            for name in record.namespaces.reversed() { try? removeNamespace(name) }
            for cgroup in record.cgroups { try? Cgroup2(path: cgroup).destroy() }
            unlink(path)
            cleaned.append(record.prefix)
        }
        return cleaned
    }

    // MARK: - Internals

    private var recordPath: String { LabRecord.path(prefix) }

    private func saveRecord() throws {
        lock.lock()
        let record = LabRecord(prefix: prefix, ownerPid: getpid(), namespaces: namespaces, cgroups: [clientCgroup.path])
        lock.unlock()
        try record.save(owned: &ownsRecord)
    }

    private func addNamespace(_ name: String) throws {
        try Shell.run(["ip", "netns", "add", name])
        lock.lock()
        namespaces.append(name)
        lock.unlock()
        try saveRecord()
    }

    private func deleteNamespace(_ name: String) throws {
        try ClusterLab.removeNamespace(name)
    }

    /// Stops tracked processes running in `netns`.
    private func stopProcesses(in netns: String) {
        lock.lock()
        let matching = processes.filter { $0.netns == netns }
        processes.removeAll { $0.netns == netns }
        lock.unlock()
        for process in matching { process.stop() }
    }

    /// Signals whatever still runs in the namespace (only lab processes can be there),
    /// then deletes it. A missing namespace is fine.
    /// Deletes a namespace, ending (SIGTERM, then SIGKILL) the processes still in it.
    static func removeNamespace(_ name: String) throws {
        let listed = try Shell.run(["ip", "netns", "list"]).stdout
        let exists = listed.split(separator: "\n").contains { $0.split(separator: " ").first.map(String.init) == name }
        guard exists else { return }
        let pids = { () -> [Int32] in
            let out = (try? Shell.run(["ip", "netns", "pids", name], allowFailure: true).stdout) ?? ""
            return out.split(separator: "\n").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
        }
        var remaining = pids()
        if !remaining.isEmpty {
            for pid in remaining { kill(pid, SIGTERM) }
            for _ in 0..<100 where !remaining.isEmpty {
                usleep(20_000)
                remaining = pids()
            }
            for pid in remaining { kill(pid, SIGKILL) }
        }
        try Shell.run(["ip", "netns", "del", name])
    }

    @discardableResult
    private func ip(_ netns: String, _ args: String...) throws -> (status: Int32, stdout: String, stderr: String) {
        try Shell.run(["ip", "-n", netns] + args)
    }

    private static func randomID() -> String {
        let alphabet = Array("0123456789abcdef")
        return String((0..<6).map { _ in alphabet[Int.random(in: 0..<alphabet.count)] })
    }
}

/// What a lab (ClusterLab, NodeLab) writes under `ClusterLab.recordDirectory` before it
/// creates anything, so `ClusterLab.removeOrphans()` can clean up after a crashed owner.
struct LabRecord: Codable {
    var prefix: String
    var ownerPid: Int32
    var namespaces: [String]
    var cgroups: [String]

    static func path(_ prefix: String) -> String { ClusterLab.recordDirectory + "/\(prefix).json" }

    /// Writes the record; the first write of a lab refuses a record that already exists
    /// (another lab chose the same id).
    func save(owned: inout Bool) throws {
        let path = Self.path(prefix)
        try FileManager.default.createDirectory(atPath: ClusterLab.recordDirectory, withIntermediateDirectories: true)
        if !owned && FileManager.default.fileExists(atPath: path) {
            throw NetLabError.other("lab record \(path) already exists (id collision)")
        }
        try Data(ProbeJSON.encode(self).utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        owned = true
    }
}
