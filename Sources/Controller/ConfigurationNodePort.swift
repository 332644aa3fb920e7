import CLibBPF
import Datapath
import Foundation

// MARK: - nodePort keys

/// The `nodePort` keys: the external-traffic datapath (NodePort, externalIPs and
/// LoadBalancer VIPs on tc; `bpf/nodeport.c`).
public struct NodePortSettings: Equatable, Sendable {
    /// Off by default while the datapath is IPv4/SNAT/tc only: attaching to a node's devices
    /// is a decision the operator makes.
    public var enabled = false
    /// Devices to attach to; empty = autodetect (every non-bridge device with an IPv4 address).
    public var devices: [String] = []
    public var mode: NodePortOptions.Mode = .snat
    public var acceleration: NodePortOptions.Acceleration = .none
    /// Idle timeouts of tracked flows (`nodePort.conntrack.*Seconds`).
    public var conntrack = NodePortDatapath.ConntrackTimeouts()
    /// How often idle flows are collected (`nodePort.conntrack.gcIntervalSeconds`).
    public var conntrackGCIntervalSeconds: Int = 10
    /// The port unreachables the datapath sends (`nodePort.icmpErrors.perSecond`, `.burst`).
    public var icmpErrorLimit = NodePortOptions.ICMPErrorLimit()

    public init() {}

    /// The datapath's options for this configuration; `flowEntries`: `mapSizes.nodePortFlows`
    /// (nil: the default), which the socket load balancer gave the shared map already.
    public func options(pinPath: String, nodePortAddresses: [String], flowEntries: UInt32? = nil) -> NodePortOptions {
        var options = NodePortOptions(
            pinPath: pinPath, devices: devices, mode: mode, acceleration: acceleration,
            nodePortAddresses: nodePortAddresses, conntrackMaxEntries: flowEntries ?? UInt32(SL_DEFAULT_NAT_MAX))
        options.icmpErrorLimit = icmpErrorLimit
        return options
    }

    /// Reads `nodePort` out of the top-level mapping.
    mutating func parse(_ reader: inout KeyReader) throws {
        guard let mapping = try reader.mapping("nodePort") else { return }
        var keys = KeyReader(mapping: mapping, prefix: "nodePort.")
        if let value = try keys.bool("enabled") { enabled = value }
        if let list = try keys.stringList("devices") {
            for name in list where name.isEmpty || name.utf8.count > 15 || name.contains("/") || name.contains(" ") {
                throw SwiftlaneConfiguration.Invalid(key: "nodePort.devices", message: "\"\(name)\" is not a device name")
            }
            devices = list
        }
        if let text = try keys.string("mode") {
            guard let value = NodePortOptions.Mode(rawValue: text) else {
                throw SwiftlaneConfiguration.Invalid(key: "nodePort.mode", message: "\"\(text)\" is not snat or dsr")
            }
            mode = value
        }
        if let text = try keys.string("acceleration") {
            guard let value = NodePortOptions.Acceleration(rawValue: text) else {
                throw SwiftlaneConfiguration.Invalid(key: "nodePort.acceleration", message: "\"\(text)\" is not none, generic or native")
            }
            acceleration = value
        }
        if let conntrackMapping = try keys.mapping("conntrack") {
            var ct = KeyReader(mapping: conntrackMapping, prefix: "nodePort.conntrack.")
            if let value = try ct.int("tcpSeconds", in: 10...604_800) { conntrack.tcp = Double(value) }
            if let value = try ct.int("tcpClosingSeconds", in: 1...3600) { conntrack.tcpClosing = Double(value) }
            if let value = try ct.int("udpSeconds", in: 1...86_400) { conntrack.udp = Double(value) }
            if let value = try ct.int("gcIntervalSeconds", in: 1...3600) { conntrackGCIntervalSeconds = value }
            try ct.rejectUnknown()
        }
        if let icmpMapping = try keys.mapping("icmpErrors") {
            var icmp = KeyReader(mapping: icmpMapping, prefix: "nodePort.icmpErrors.")
            if let value = try icmp.int("perSecond", in: 0...1_000_000) { icmpErrorLimit.perSecond = UInt32(value) }
            if let value = try icmp.int("burst", in: 1...1_000_000) { icmpErrorLimit.burst = UInt32(value) }
            try icmp.rejectUnknown()
        }
        try keys.rejectUnknown()
    }
}
