import Foundation
import Glibc

/// One pod of a `NodeLab`: a network namespace behind its node's bridge.
public struct NodeLabPod: Hashable, Codable, Sendable {
    /// "a1", "a2", … on node A; "b1", … on node B (the name its probe server announces).
    public let name: String
    public let netns: String
    public let ipv4: String
    /// The pod's ULA IPv6 address (the lab is dual-stack, see `NodeLab`).
    public let ipv6: String
    /// The veth end inside `netns`.
    public let interface: String
    /// The veth end enslaved to the node's bridge.
    public let bridgePort: String
}

/// One node of a `NodeLab`.
public struct NodeLabNode: Hashable, Codable, Sendable {
    public let name: String
    public let netns: String
    /// Bridge of the node's pods (pod gateway `bridgeIPv4`).
    public let bridge: String
    public let bridgeIPv4: String
    /// Pod network of this node (CIDR).
    public let podCIDR: String
    /// The bridge's IPv6 address (the pods' IPv6 gateway) and the node's IPv6 pod network.
    public let bridgeIPv6: String
    public let podCIDR6: String
}

/// A throwaway two-node topology for the external-traffic datapath:
///
/// ```
///  client <p>-x            node A <p>-a                       node B <p>-b
///  ┌───────────────┐ veth  ┌──────────────────────────┐ veth  ┌──────────────────────┐
///  │ <p>x          ├───────┤ <p>ax  (external device) │       │                      │
///  │ 198.18.S.1/26 │       │        198.18.S.2/26     │       │                      │
///  └───────────────┘       │ <p>ab  198.18.S.65/26    ├───────┤ <p>ba 198.18.S.66/26 │
///                          │ <p>abr 198.18.S.129/26   │       │ <p>bbr 198.18.S.193/26│
///                          └──┬───────────────────────┘       └──┬───────────────────┘
///                        pods <p>-a1… .130, .131 …          pods <p>-b1… .194, .195 …
/// ```
///
/// Node A forwards between all its links and routes node B's pod network via node B (and
/// node B the reverse); pods route 198.18.0.0/15 via their node. The client reaches node A's
/// external address on-link and the service range `serviceIPv4(_:)` (198.19.S.0/24, for
/// externalIPs and LoadBalancer VIPs) via node A. No namespace has a default route, and
/// nothing of the lab lives in the host namespace: every veth is created inside a lab
/// namespace with its peer placed directly into another one.
///
/// With `sharedFabric` the external link is a bridge in a namespace of its own (<p>-f,
/// bridge <p>fbr) joining the client, node A's external device and a third device of node
/// B (<p>bx, 198.18.S.3/26): node B then reaches the client directly, as direct server
/// return needs (its replies must not pass node A). Node B routes the client's segment
/// on-link instead of via node A and uses loose reverse-path filtering (the client's
/// packets reach it from node A, its route back leaves through <p>bx). Still no default
/// route anywhere.
///
/// The lab is dual-stack: every link above also carries a ULA IPv6 address of
/// fd00:5eed:S::/48 (S written in decimal, `ipv6Prefix`): the client's link :1::/64 (client
/// ::1, node A ::2, node B's <p>bx ::3), the link between the nodes :2::/64 (node A ::1,
/// node B ::2), node A's pods :a::/64 and node B's :b::/64 (bridge ::1, pods ::2, ::3, …)
/// and the service range :5::/64 (`serviceIPv6(_:)`), with the same routes as IPv4: the
/// client reaches only its link, the service range and the nodes' link (via node A),
/// pods fd00:5eed:S::/48 via their node, never a default route. Addresses (link-local
/// ones too) skip duplicate address detection so they work at once; nodes forward IPv6.
///
/// Names start with "sn" + a short random id; `teardown()` (also run from deinit) removes
/// every namespace (and with them every link, bridge and tc attachment made on them) and
/// stops the lab's processes. The lab writes the same record as `ClusterLab` under
/// `/run/netlab`, so `ClusterLab.removeOrphans()` cleans up after a process that died.
public final class NodeLab: @unchecked Sendable {
    public let id: String
    public let prefix: String
    /// S in 198.18.S.0/24 (1…250).
    public let subnet: Int
    public let clientNetns: String
    public let clientIPv4: String
    public let clientIPv6: String
    public let nodeA: NodeLabNode
    public let nodeB: NodeLabNode
    /// The client's device (towards node A's external device).
    public var clientDevice: String { prefix + "x" }
    /// Node A's device towards the client, and its address.
    public let externalDevice: String
    public let externalIPv4: String
    public let externalIPv6: String
    /// Node A's device towards node B, and its address (node A's InternalIP).
    public let interNodeDevice: String
    public let nodeAIPv4: String
    public let nodeAIPv6: String
    /// Node B's device towards node A, and its address.
    public let nodeBDevice: String
    public let nodeBIPv4: String
    public let nodeBIPv6: String
    /// With `sharedFabric`: node B's device on the client's segment, and its address.
    public let nodeBExternalDevice: String?
    public let nodeBExternalIPv4: String?
    public private(set) var pods: [NodeLabPod] = []

    private var namespaces: [String] = []
    private var processes: [LabProcess] = []
    private var nextPod: [String: Int] = ["a": 1, "b": 1]
    private var tornDown = false
    private var completeChecksums = false
    private var ownsRecord = false
    private let lock = NSLock()

    /// Builds the client, both nodes and `podsOnA` / `podsOnB` pods. On any failure
    /// everything made so far is removed before the error is rethrown.
    public init(podsOnA: Int = 1, podsOnB: Int = 1, id: String? = nil, subnet: Int? = nil, sharedFabric: Bool = false) throws {
        let chosenID = id ?? String((0..<6).map { _ in Array("0123456789abcdef").randomElement()! })
        guard (1...8).contains(chosenID.count), chosenID.allSatisfy({ ($0.isASCII && $0.isLowercase) || $0.isNumber })
        else { throw NetLabError.invalidArgument("lab id '\(chosenID)' must be 1-8 of [a-z0-9]") }
        let s = subnet ?? Int.random(in: 1...250)
        guard (1...250).contains(s) else { throw NetLabError.invalidArgument("subnet \(s) must be 1...250") }
        guard (0...50).contains(podsOnA), (0...50).contains(podsOnB) else {
            throw NetLabError.invalidArgument("at most 50 pods per node")
        }
        self.id = chosenID
        self.prefix = "sn" + chosenID
        self.subnet = s
        self.clientNetns = prefix + "-x"
        let v6 = Self.ipv6Prefix(subnet: s)
        self.clientIPv4 = "198.18.\(s).1"
        self.clientIPv6 = "\(v6):1::1"
        self.nodeA = NodeLabNode(name: "node-a", netns: prefix + "-a", bridge: prefix + "abr",
                                 bridgeIPv4: "198.18.\(s).129", podCIDR: "198.18.\(s).128/26",
                                 bridgeIPv6: "\(v6):a::1", podCIDR6: "\(v6):a::/64")
        self.nodeB = NodeLabNode(name: "node-b", netns: prefix + "-b", bridge: prefix + "bbr",
                                 bridgeIPv4: "198.18.\(s).193", podCIDR: "198.18.\(s).192/26",
                                 bridgeIPv6: "\(v6):b::1", podCIDR6: "\(v6):b::/64")
        self.externalDevice = prefix + "ax"
        self.externalIPv4 = "198.18.\(s).2"
        self.externalIPv6 = "\(v6):1::2"
        self.interNodeDevice = prefix + "ab"
        self.nodeAIPv4 = "198.18.\(s).65"
        self.nodeAIPv6 = "\(v6):2::1"
        self.nodeBDevice = prefix + "ba"
        self.nodeBIPv4 = "198.18.\(s).66"
        self.nodeBIPv6 = "\(v6):2::2"
        self.nodeBExternalDevice = sharedFabric ? prefix + "bx" : nil
        self.nodeBExternalIPv4 = sharedFabric ? "198.18.\(s).3" : nil
        do {
            try build()
            for _ in 0..<podsOnA { try addPod(on: nodeA) }
            for _ in 0..<podsOnB { try addPod(on: nodeB) }
        } catch {
            teardown()
            throw error
        }
    }

    deinit { teardown() }

    /// An address of the service range (198.19.S.host), routed by the client via node A.
    public func serviceIPv4(_ host: Int) -> String { "198.19.\(subnet).\(host)" }

    /// An address of the IPv6 service range (fd00:5eed:S:5::host, host written in hex),
    /// routed by the client via node A.
    public func serviceIPv6(_ host: Int) -> String { "\(Self.ipv6Prefix(subnet: subnet)):5::\(String(host, radix: 16))" }

    /// The lab's /48 without its trailing "::": "fd00:5eed:S" (S in decimal digits, valid
    /// hex, so every lab's range differs like its IPv4 subnet).
    public static func ipv6Prefix(subnet: Int) -> String { "fd00:5eed:\(subnet)" }

    /// The lab's ULA range (fd00:5eed:S::/48).
    public var ipv6Range: String { "\(Self.ipv6Prefix(subnet: subnet))::/48" }

    public var podsOnA: [NodeLabPod] { lock.withLock { pods.filter { $0.name.hasPrefix("a") } } }
    public var podsOnB: [NodeLabPod] { lock.withLock { pods.filter { $0.name.hasPrefix("b") } } }

    // MARK: - Building

    private func build() throws {
        for netns in [clientNetns, nodeA.netns, nodeB.netns] {
            try addNamespace(netns)
            try ip(netns, "link", "set", "lo", "up")
        }
        let s = subnet
        if let nodeBExternalDevice, let nodeBExternalIPv4 {
            try buildFabric(nodeBDevice: nodeBExternalDevice, nodeBAddress: nodeBExternalIPv4)
        } else {
            // client <-> node A (external link)
            try ip(clientNetns, "link", "add", clientDevice, "type", "veth", "peer", "name", externalDevice, "netns", nodeA.netns)
        }
        try ip(clientNetns, "addr", "add", "\(clientIPv4)/26", "dev", clientDevice)
        try ip(clientNetns, "link", "set", clientDevice, "up")
        try ip(nodeA.netns, "addr", "add", "\(externalIPv4)/26", "dev", externalDevice)
        try ip(nodeA.netns, "link", "set", externalDevice, "up")
        try ip(clientNetns, "route", "add", "198.19.\(s).0/24", "via", externalIPv4)
        try ip(clientNetns, "route", "add", "198.18.\(s).64/26", "via", externalIPv4)
        let v6 = Self.ipv6Prefix(subnet: s)
        try ip(clientNetns, "addr", "add", "\(clientIPv6)/64", "dev", clientDevice, "nodad")
        try ip(nodeA.netns, "addr", "add", "\(externalIPv6)/64", "dev", externalDevice, "nodad")
        try ip(clientNetns, "-6", "route", "add", "\(v6):5::/64", "via", externalIPv6)
        try ip(clientNetns, "-6", "route", "add", "\(v6):2::/64", "via", externalIPv6)
        // node A <-> node B
        try ip(nodeA.netns, "link", "add", interNodeDevice, "type", "veth", "peer", "name", nodeBDevice, "netns", nodeB.netns)
        try ip(nodeA.netns, "addr", "add", "\(nodeAIPv4)/26", "dev", interNodeDevice)
        try ip(nodeA.netns, "link", "set", interNodeDevice, "up")
        try ip(nodeB.netns, "addr", "add", "\(nodeBIPv4)/26", "dev", nodeBDevice)
        try ip(nodeB.netns, "link", "set", nodeBDevice, "up")
        try ip(nodeA.netns, "addr", "add", "\(nodeAIPv6)/64", "dev", interNodeDevice, "nodad")
        try ip(nodeB.netns, "addr", "add", "\(nodeBIPv6)/64", "dev", nodeBDevice, "nodad")
        // pod bridges and the routes between the nodes' pod networks
        for node in [nodeA, nodeB] {
            try ip(node.netns, "link", "add", "name", node.bridge, "type", "bridge",
                   "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0")
            try ip(node.netns, "addr", "add", "\(node.bridgeIPv4)/26", "dev", node.bridge)
            try ip(node.netns, "addr", "add", "\(node.bridgeIPv6)/64", "dev", node.bridge, "nodad")
            try ip(node.netns, "link", "set", node.bridge, "up")
            try Shell.run(["ip", "netns", "exec", node.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
            try Shell.run(["ip", "netns", "exec", node.netns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        }
        try ip(nodeA.netns, "route", "add", nodeB.podCIDR, "via", nodeBIPv4)
        try ip(nodeB.netns, "route", "add", nodeA.podCIDR, "via", nodeAIPv4)
        try ip(nodeA.netns, "-6", "route", "add", nodeB.podCIDR6, "via", nodeBIPv6)
        try ip(nodeB.netns, "-6", "route", "add", nodeA.podCIDR6, "via", nodeAIPv6)
        if nodeBExternalDevice == nil {
            try ip(nodeB.netns, "route", "add", "198.18.\(s).0/26", "via", nodeAIPv4)
            try ip(nodeB.netns, "-6", "route", "add", "\(v6):1::/64", "via", nodeAIPv6)
        } else {
            try Shell.run(["ip", "netns", "exec", nodeB.netns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2"])
        }
    }

    /// With `sharedFabric`: the bridge port that node A's external device is plugged into
    /// (namespace, device). A native-XDP redirect out of the external device lands on it.
    public var fabricPortOfExternalDevice: (netns: String, device: String)? {
        nodeBExternalDevice == nil ? nil : (prefix + "-f", prefix + "fa")
    }

    /// The shared external segment: a bridge in its own namespace with the client's, node
    /// A's external and node B's `nodeBDevice` links (each veth made in the fabric
    /// namespace with its peer placed directly into the other one).
    private func buildFabric(nodeBDevice: String, nodeBAddress: String) throws {
        let fabric = prefix + "-f", bridge = prefix + "fbr"
        try addNamespace(fabric)
        try ip(fabric, "link", "set", "lo", "up")
        try ip(fabric, "link", "add", "name", bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0")
        try ip(fabric, "link", "set", bridge, "up")
        for (port, peer, netns) in [("fx", clientDevice, clientNetns), ("fa", externalDevice, nodeA.netns), ("fb", nodeBDevice, nodeB.netns)] {
            try ip(fabric, "link", "add", prefix + port, "type", "veth", "peer", "name", peer, "netns", netns)
            try ip(fabric, "link", "set", prefix + port, "master", bridge, "up")
        }
        try ip(nodeB.netns, "addr", "add", "\(nodeBAddress)/26", "dev", nodeBDevice)
        try ip(nodeB.netns, "addr", "add", "\(Self.ipv6Prefix(subnet: subnet)):1::3/64", "dev", nodeBDevice, "nodad")
        try ip(nodeB.netns, "link", "set", nodeBDevice, "up")
    }

    /// Adds a pod namespace behind `node`'s bridge (next address of its pod network).
    @discardableResult
    public func addPod(on node: NodeLabNode) throws -> NodeLabPod {
        let letter = node == nodeA ? "a" : "b"
        let index: Int = lock.withLock {
            let value = nextPod[letter, default: 1]
            nextPod[letter] = value + 1
            return value
        }
        guard index <= 50 else { throw NetLabError.invalidArgument("at most 50 pods per node") }
        let base = letter == "a" ? 129 : 193
        let pod = NodeLabPod(name: "\(letter)\(index)", netns: "\(prefix)-\(letter)\(index)",
                             ipv4: "198.18.\(subnet).\(base + index)",
                             ipv6: "\(Self.ipv6Prefix(subnet: subnet)):\(letter)::\(String(index + 1, radix: 16))",
                             interface: "\(prefix)p",
                             bridgePort: "\(prefix)\(letter)v\(index)")
        try addNamespace(pod.netns)
        try ip(node.netns, "link", "add", pod.bridgePort, "type", "veth", "peer", "name", pod.interface, "netns", pod.netns)
        try ip(node.netns, "link", "set", pod.bridgePort, "master", node.bridge, "up")
        try ip(pod.netns, "link", "set", "lo", "up")
        try ip(pod.netns, "addr", "add", "\(pod.ipv4)/26", "dev", pod.interface)
        try ip(pod.netns, "link", "set", pod.interface, "up")
        try ip(pod.netns, "route", "add", "198.18.0.0/15", "via", node.bridgeIPv4)
        try ip(pod.netns, "addr", "add", "\(pod.ipv6)/64", "dev", pod.interface, "nodad")
        try ip(pod.netns, "-6", "route", "add", ipv6Range, "via", node.bridgeIPv6)
        lock.withLock { pods.append(pod) }
        if lock.withLock({ completeChecksums }) { try ethtool(pod.netns, "-K", pod.interface, "tx", "off") }
        return pod
    }

    /// Turns TX checksum offload off on every veth end that sends towards node A (the
    /// client's, node B's, every pod's, also of pods added later), so that their frames
    /// carry complete TCP/UDP checksums, as a NIC delivers them. With offload on, a veth
    /// frame keeps the partial checksum its sender left (pseudo header only, "to be
    /// completed by hardware"): the skb says so, which tc helpers honour, but XDP sees only
    /// bytes and would update it as a complete one (see docs/external-traffic.md).
    public func sendCompleteChecksums() throws {
        lock.withLock { completeChecksums = true }
        try ethtool(clientNetns, "-K", clientDevice, "tx", "off")
        try ethtool(nodeB.netns, "-K", nodeBDevice, "tx", "off")
        for pod in lock.withLock({ pods }) { try ethtool(pod.netns, "-K", pod.interface, "tx", "off") }
    }

    // MARK: - Processes

    /// Starts `<binary> probe serve` in a pod and waits until it listens.
    @discardableResult
    public func startProbeServer(on pod: NodeLabPod, binary: String = ProbeRunner.defaultBinary(),
                                 tcpPort: UInt16 = 8080, udpPort: UInt16 = 8053) throws -> LabProcess {
        let process = track(try LabProcess.start(
            argv: [binary, "probe", "serve", "--name", pod.name, "--tcp-port", "\(tcpPort)", "--udp-port", "\(udpPort)"],
            netns: pod.netns))
        _ = try process.readJSON(ProbeServer.Listening.self, timeout: 15)
        return process
    }

    /// A runner for probes from the external client namespace (no cgroup: nothing of the
    /// socket load balancer applies there).
    public func clientProbe(binary: String = ProbeRunner.defaultBinary()) -> ProbeRunner {
        ProbeRunner(binary: binary, netns: clientNetns, cgroup: nil)
    }

    @discardableResult
    public func track(_ process: LabProcess) -> LabProcess {
        lock.withLock { processes.append(process) }
        return process
    }

    /// Runs a short command inside `netns` (`ip netns exec`).
    @discardableResult
    public func exec(_ argv: [String], netns: String, allowFailure: Bool = false) throws -> (
        status: Int32, stdout: String, stderr: String
    ) {
        try Shell.run(["ip", "netns", "exec", netns] + argv, allowFailure: allowFailure)
    }

    // MARK: - Teardown

    /// Stops the lab's processes and deletes every namespace it made (their links, bridges
    /// and tc attachments go with them) and its record. Safe to call repeatedly; never
    /// throws. Returns the problems met.
    @discardableResult
    public func teardown() -> [String] {
        let (tracked, toDelete): ([LabProcess], [String]) = lock.withLock {
            if tornDown { return ([], []) }
            tornDown = true
            defer { processes.removeAll() }
            return (processes, namespaces.reversed())
        }
        var problems: [String] = []
        for process in tracked { process.stop() }
        for name in toDelete {
            do { try ClusterLab.removeNamespace(name) } catch { problems.append("\(error)") }
        }
        if ownsRecord { unlink(recordPath) }
        lock.withLock {
            namespaces.removeAll()
            pods.removeAll()
        }
        for problem in problems {
            FileHandle.standardError.write(Data("netlab teardown \(prefix): \(problem)\n".utf8))
        }
        return problems
    }

    // MARK: - Internals

    private var recordPath: String { LabRecord.path(prefix) }

    /// The same record as ClusterLab's, so `ClusterLab.removeOrphans()` handles both.
    private func saveRecord() throws {
        let record = lock.withLock { LabRecord(prefix: prefix, ownerPid: getpid(), namespaces: namespaces, cgroups: []) }
        try record.save(owned: &ownsRecord)
    }

    private func addNamespace(_ name: String) throws {
        // The record is written before the namespace exists, so a crash in between
        // leaves nothing unrecorded.
        lock.withLock { namespaces.append(name) }
        try saveRecord()
        do {
            try Shell.run(["ip", "netns", "add", name])
        } catch {
            lock.withLock { namespaces.removeAll { $0 == name } }
            throw error
        }
        // No duplicate address detection on the lab's links, link-local addresses included:
        // a tentative address delays the first IPv6 exchanges by a second or more.
        try Shell.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                       "net.ipv6.conf.default.accept_dad=0"])
    }

    private func ethtool(_ netns: String, _ args: String...) throws {
        try Shell.run(["ip", "netns", "exec", netns, "ethtool"] + args)
    }

    @discardableResult
    private func ip(_ netns: String, _ args: String...) throws -> (status: Int32, stdout: String, stderr: String) {
        try Shell.run(["ip", "-n", netns] + args)
    }
}
