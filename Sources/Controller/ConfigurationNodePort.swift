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

    public init() {}

    /// The datapath's options for this configuration; `flowEntries`: `mapSizes.nodePortFlows`
    /// (nil: the default), which the socket load balancer gave the shared map already.
    public func options(pinPath: String, nodePortAddresses: [String], flowEntries: UInt32? = nil) -> NodePortOptions {
        NodePortOptions(pinPath: pinPath, devices: devices, mode: mode, acceleration: acceleration,
                        nodePortAddresses: nodePortAddresses, conntrackMaxEntries: flowEntries ?? UInt32(SL_DEFAULT_NAT_MAX))
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
            func seconds(_ key: String, _ range: ClosedRange<Int>) throws -> Double? {
                guard let value = try ct.int(key) else { return nil }
                guard range.contains(value) else {
                    throw SwiftlaneConfiguration.Invalid(key: "nodePort.conntrack.\(key)", message: "\(value) is outside \(range)")
                }
                return Double(value)
            }
            if let value = try seconds("tcpSeconds", 10...604_800) { conntrack.tcp = value }
            if let value = try seconds("tcpClosingSeconds", 1...3600) { conntrack.tcpClosing = value }
            if let value = try seconds("udpSeconds", 1...86_400) { conntrack.udp = value }
            if let value = try seconds("gcIntervalSeconds", 1...3600) { conntrackGCIntervalSeconds = Int(value) }
            try ct.rejectUnknown()
        }
        try keys.rejectUnknown()
    }
}
