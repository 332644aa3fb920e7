import Foundation
import Glibc

/// The smallest topology that measures one node's forwarding and nothing else:
///
///     generator ns --veth-- node ns --veth-- sink ns  (backends: addresses behind the sink)
///          ^------------------ veth ------------------'  (the loop's return path)
///          `------------------ veth ------------------^  (direct: the loop without a node)
///
/// Frames go round a closed loop in XDP programs (XDPTrafficGenerator): the generator sends
/// them to the node, the sink counts those that reach the backends and sends them back to
/// the generator, so no socket sits on either end. The node forwards the backends' range to
/// the sink, and its external device has NAPI enabled (GRO on) so that veth accepts XDP
/// frames whatever program, if any, runs on it. That NAPI runs in the softirq of the CPU that
/// sent the frames, so all of the loop's stages share one core, and what the node costs per
/// packet decides the rate. (Threaded NAPI would give the node a core of its own, but
/// then every frame crosses CPUs twice a lap, and on this machine's two cores that cache
/// traffic costs more than the generator and sink together.)
///
/// No namespace has a route out of the lab: a frame the node fails to translate goes to the
/// node's own stack or to the sink, never anywhere else. Names carry a random id and are
/// recorded like ClusterLab's, so `ClusterLab.removeOrphans()` removes them after a crash.
public final class ForwardingLab: @unchecked Sendable {
    public let prefix: String
    public let generatorNetns: String
    public let nodeNetns: String
    public let sinkNetns: String
    public let generatorDevice: String
    /// The generator's loop (XDPTrafficGenerator): frames come back from the sink on a veth
    /// pair of their own (no addresses), sinkReturnDevice -> generatorLoopDevice.
    public let generatorLoopDevice: String
    public let sinkReturnDevice: String
    /// A pair from the generator straight to the sink, bypassing the node: what the loop
    /// costs without a node (the benchmark's "direct" floor).
    public let generatorDirectDevice: String
    public let sinkDirectDevice: String
    public let nodeExternalDevice: String
    public let nodeInternalDevice: String
    public let sinkDevice: String
    public let generatorIPv4: String
    public let nodeExternalIPv4: String
    public let nodeInternalIPv4: String
    public let sinkIPv4: String
    /// The backends' range (routed by the node to the sink), as a CIDR.
    public let backendCIDR: String
    private let subnet: Int
    private var namespaces: [String] = []
    private var ownsRecord = false
    private var tornDown = false
    private let lock = NSLock()

    /// Backend `index` (0-based, at most 62) in `backendCIDR`.
    public func backendIPv4(_ index: Int) -> String { "198.18.\(subnet).\(130 + index)" }

    /// The node ports of `nodePortManifest`: TCP 80 → 8080 and UDP 54 → 9000.
    public static let tcpNodePort: UInt16 = 30080
    public static let udpNodePort: UInt16 = 30054

    /// The NodePort Service the lab is built for (cluster IP 10.96.0.10, the node ports
    /// above), served by its first `backends` backends, all on node-b (remote).
    public func nodePortManifest(backends: Int, namespace: String) -> String {
        let endpoints = (0..<backends).map {
            "- {addresses: [\"\(backendIPv4($0))\"], conditions: {ready: true}, nodeName: node-b}"
        }
        return """
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: \(namespace)}
            spec:
              type: NodePort
              clusterIP: 10.96.0.10
              ports:
              - {name: http, port: 80, protocol: TCP, nodePort: \(Self.tcpNodePort)}
              - {name: flood, port: 54, protocol: UDP, nodePort: \(Self.udpNodePort)}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-1, namespace: \(namespace), labels: {kubernetes.io/service-name: web}}
            addressType: IPv4
            endpoints:
            \(endpoints.joined(separator: "\n"))
            ports:
            - {name: http, port: 8080, protocol: TCP}
            - {name: flood, port: 9000, protocol: UDP}
            """
    }

    public init(id: String? = nil, subnet: Int? = nil) throws {
        let chosenID = id ?? String((0..<6).map { _ in Array("0123456789abcdef").randomElement()! })
        guard (1...8).contains(chosenID.count), chosenID.allSatisfy({ ($0.isASCII && $0.isLowercase) || $0.isNumber })
        else { throw NetLabError.invalidArgument("lab id '\(chosenID)' must be 1-8 of [a-z0-9]") }
        let s = subnet ?? Int.random(in: 1...250)
        guard (1...250).contains(s) else { throw NetLabError.invalidArgument("subnet \(s) must be 1...250") }
        self.subnet = s
        prefix = "sf" + chosenID
        generatorNetns = prefix + "-g"
        nodeNetns = prefix + "-n"
        sinkNetns = prefix + "-s"
        generatorDevice = prefix + "g"
        generatorLoopDevice = prefix + "x"
        sinkReturnDevice = prefix + "r"
        generatorDirectDevice = prefix + "d"
        sinkDirectDevice = prefix + "e"
        nodeExternalDevice = prefix + "ne"
        nodeInternalDevice = prefix + "ni"
        sinkDevice = prefix + "s"
        generatorIPv4 = "198.18.\(s).1"
        nodeExternalIPv4 = "198.18.\(s).2"
        nodeInternalIPv4 = "198.18.\(s).65"
        sinkIPv4 = "198.18.\(s).66"
        backendCIDR = "198.18.\(s).128/26"
        do {
            try build()
        } catch {
            teardown()
            throw error
        }
    }

    private func build() throws {
        for name in [generatorNetns, nodeNetns, sinkNetns] { try addNamespace(name) }
        try ip(generatorNetns, "link", "add", generatorDevice, "type", "veth", "peer", "name", nodeExternalDevice, "netns", nodeNetns)
        try ip(sinkNetns, "link", "add", sinkReturnDevice, "type", "veth", "peer", "name", generatorLoopDevice, "netns", generatorNetns)
        try ip(sinkNetns, "link", "set", sinkReturnDevice, "up")
        try ip(generatorNetns, "link", "set", generatorLoopDevice, "up")
        try ip(generatorNetns, "link", "add", generatorDirectDevice, "type", "veth", "peer", "name", sinkDirectDevice, "netns", sinkNetns)
        try ip(generatorNetns, "link", "set", generatorDirectDevice, "up")
        try ip(sinkNetns, "link", "set", sinkDirectDevice, "up")
        try ip(nodeNetns, "link", "add", nodeInternalDevice, "type", "veth", "peer", "name", sinkDevice, "netns", sinkNetns)
        for (netns, device, address) in [
            (generatorNetns, generatorDevice, generatorIPv4 + "/26"), (nodeNetns, nodeExternalDevice, nodeExternalIPv4 + "/26"),
            (nodeNetns, nodeInternalDevice, nodeInternalIPv4 + "/26"), (sinkNetns, sinkDevice, sinkIPv4 + "/26"),
        ] {
            try ip(netns, "addr", "add", address, "dev", device)
            try ip(netns, "link", "set", device, "up")
        }
        for netns in [generatorNetns, nodeNetns, sinkNetns] { try ip(netns, "link", "set", "lo", "up") }
        try ip(nodeNetns, "route", "add", backendCIDR, "via", sinkIPv4)
        try exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns: nodeNetns)
        // Static neighbours: no ARP exchange in the middle of a measurement (the sink answers
        // none, and answering ARP is not what is measured).
        try ip(nodeNetns, "neigh", "replace", sinkIPv4, "dev", nodeInternalDevice, "lladdr", try macText(sinkDevice, sinkNetns),
               "nud", "permanent")
        try ip(generatorNetns, "neigh", "replace", nodeExternalIPv4, "dev", generatorDevice, "lladdr",
               try macText(nodeExternalDevice, nodeNetns), "nud", "permanent")
        try exec(["ethtool", "-K", nodeExternalDevice, "gro", "on"], netns: nodeNetns)
    }

    /// A device's MAC address as six bytes.
    public func mac(_ device: String, _ netns: String) throws -> [UInt8] {
        try macText(device, netns).split(separator: ":").map { UInt8($0, radix: 16)! }
    }

    private func macText(_ device: String, _ netns: String) throws -> String {
        let text = try exec(["cat", "/sys/class/net/\(device)/address"], netns: netns).stdout
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs a short command inside `netns` (`ip netns exec`).
    @discardableResult
    public func exec(_ argv: [String], netns: String, allowFailure: Bool = false) throws -> (
        status: Int32, stdout: String, stderr: String
    ) {
        try Shell.run(["ip", "netns", "exec", netns] + argv, allowFailure: allowFailure)
    }

    /// Deletes the namespaces (their veths, programs and qdiscs go with them) and the
    /// record. Safe to call repeatedly; never throws; returns the problems met.
    @discardableResult
    public func teardown() -> [String] {
        let toDelete: [String] = lock.withLock {
            if tornDown { return [] }
            tornDown = true
            return namespaces.reversed()
        }
        var problems: [String] = []
        for name in toDelete {
            do { try ClusterLab.removeNamespace(name) } catch { problems.append("\(error)") }
        }
        if ownsRecord { unlink(LabRecord.path(prefix)) }
        lock.withLock { namespaces.removeAll() }
        for problem in problems {
            FileHandle.standardError.write(Data("netlab teardown \(prefix): \(problem)\n".utf8))
        }
        return problems
    }

    private func addNamespace(_ name: String) throws {
        // Recorded before it exists: a crash in between leaves nothing unrecorded.
        lock.withLock { namespaces.append(name) }
        let record = lock.withLock { LabRecord(prefix: prefix, ownerPid: getpid(), namespaces: namespaces, cgroups: []) }
        try record.save(owned: &ownsRecord)
        do {
            try Shell.run(["ip", "netns", "add", name])
        } catch {
            lock.withLock { namespaces.removeAll { $0 == name } }
            throw error
        }
    }

    @discardableResult
    private func ip(_ netns: String, _ args: String...) throws -> (status: Int32, stdout: String, stderr: String) {
        try Shell.run(["ip", "-n", netns] + args)
    }
}

extension ForwardingLab {
    /// A generator template: 64-byte UDP from the generator to `destination` (default: the
    /// node's external address), addressed to the node's MAC.
    public func udpFrame(to destination: String? = nil, sourcePort: UInt16 = 10_000, destinationPort: UInt16) throws -> [UInt8] {
        XDPTrafficGenerator.udpFrame(sourceMAC: try mac(generatorDevice, generatorNetns),
                                     destinationMAC: try mac(nodeExternalDevice, nodeNetns), source: generatorIPv4,
                                     destination: destination ?? nodeExternalIPv4, sourcePort: sourcePort,
                                     destinationPort: destinationPort)
    }

    /// The same for a TCP SYN.
    public func tcpSYNFrame(to destination: String? = nil, sourcePort: UInt16 = 1024, destinationPort: UInt16) throws -> [UInt8] {
        XDPTrafficGenerator.tcpSYNFrame(sourceMAC: try mac(generatorDevice, generatorNetns),
                                        destinationMAC: try mac(nodeExternalDevice, nodeNetns), source: generatorIPv4,
                                        destination: destination ?? nodeExternalIPv4, sourcePort: sourcePort,
                                        destinationPort: destinationPort)
    }
}
