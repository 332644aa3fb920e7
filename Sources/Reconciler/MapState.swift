import ServiceModel

// MARK: - Swift mirror of the datapath maps
//
// These values say what the BPF maps hold, in Swift terms (IPAddress, host-order ports).
// Converting them to the C ABI structs happens in exactly one place:
// Datapath/KernelLoadBalancerMaps.swift.

/// Which traffic a service-map entry serves (`enum sl_scope` in abi.h).
public enum FrontendScope: UInt8, Sendable, Hashable, Comparable {
    /// Traffic from this node's pods and processes (socket LB) and, for external kinds,
    /// traffic from outside the node.
    case `default` = 0
    /// The node-originated set of an externalTrafficPolicy=Local frontend.
    case node = 1

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A frontend as the service map keys it: address, port, protocol, scope.
public struct FrontendKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    public var proto: TransportProtocol
    public var scope: FrontendScope

    public init(address: IPAddress, port: UInt16, proto: TransportProtocol, scope: FrontendScope = .default) {
        self.address = address
        self.port = port
        self.proto = proto
        self.scope = scope
    }

    public var description: String {
        let host = address.family == .v6 ? "[\(address)]" : "\(address)"
        return "\(host):\(port)/\(proto.rawValue)" + (scope == .default ? "" : " scope=node")
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.address, lhs.port, lhs.proto.rawValue, lhs.scope) < (rhs.address, rhs.port, rhs.proto.rawValue, rhs.scope)
    }
}

/// `enum sl_service_flags`.
public struct ServiceFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let reject = ServiceFlags(rawValue: 1 << 0)
    public static let drop = ServiceFlags(rawValue: 1 << 1)
    public static let affinity = ServiceFlags(rawValue: 1 << 2)
    /// Traffic from this node uses the frontend's `.node`-scope entry (eTP=Local).
    public static let nodeScope = ServiceFlags(rawValue: 1 << 3)
    /// A LoadBalancer VIP with loadBalancerSourceRanges: the external datapath serves only
    /// clients inside them (the ranges alone cannot tell "none" from "client not in them").
    public static let sourceRanges = ServiceFlags(rawValue: 1 << 4)
}

/// Which Service and port a frontend belongs to (introspection only).
public struct FrontendMeta: Hashable, Sendable {
    public var service: String
    public var portName: String

    public init(service: String, portName: String) {
        self.service = service
        self.portName = portName
    }
}

/// One allowed client network of a LoadBalancer frontend (by its rev-NAT id).
public struct SourceRange: Hashable, Sendable {
    public var revNatID: UInt32
    public var cidr: CIDR

    public init(revNatID: UInt32, cidr: CIDR) {
        self.revNatID = revNatID
        self.cidr = cidr
    }
}

/// A healthCheckNodePort listener as the health-check map holds it.
public struct HealthCheckEntry: Hashable, Sendable {
    public var service: String
    public var localEndpoints: UInt32

    public init(service: String, localEndpoints: UInt32) {
        self.service = service
        self.localEndpoints = localEndpoints
    }
}

/// A frontend's entry in the service map: its active backend set is the slot range
/// `slotBase ..< slotBase + count`.
public struct MasterEntry: Hashable, Sendable {
    /// First slot of the active backend set; 0 when there is none.
    public var slotBase: UInt32
    /// Number of backends in the active set; 0 means no backend.
    public var count: UInt16
    /// Bumped at every flip to a new backend set (for introspection).
    public var revision: UInt16
    public var revNatID: UInt32
    public var flags: ServiceFlags
    public var kind: FrontendKind
    /// ClientIP affinity timeout in seconds, 0 = none.
    public var affinitySeconds: UInt32

    public init(slotBase: UInt32, count: UInt16, revision: UInt16, revNatID: UInt32, flags: ServiceFlags,
                kind: FrontendKind, affinitySeconds: UInt32) {
        self.slotBase = slotBase
        self.count = count
        self.revision = revision
        self.revNatID = revNatID
        self.flags = flags
        self.kind = kind
        self.affinitySeconds = affinitySeconds
    }

    /// The slot indexes of the active backend set.
    public var slots: Range<UInt32> { slotBase..<(slotBase + UInt32(count)) }
}

/// A backend slot: a copy of the backend's address and its id.
public struct SlotEntry: Hashable, Sendable {
    public var backendID: UInt32
    public var backend: BackendAddress

    public init(backendID: UInt32, backend: BackendAddress) {
        self.backendID = backendID
        self.backend = backend
    }
}

/// A backend address as the backend map holds it.
public struct BackendAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    public var proto: TransportProtocol

    public init(address: IPAddress, port: UInt16, proto: TransportProtocol) {
        self.address = address
        self.port = port
        self.proto = proto
    }

    public var description: String {
        address.family == .v6 ? "[\(address)]:\(port)" : "\(address):\(port)"
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.address, lhs.port, lhs.proto.rawValue) < (rhs.address, rhs.port, rhs.proto.rawValue)
    }
}

/// The frontend a reply must appear to come from.
public struct RevNatEntry: Hashable, Sendable {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }
}

/// Everything the load-balancer maps hold that a frontend can reach. Slots outside every
/// active range are not part of the state: the kernel array may still hold their old
/// contents (that is what keeps a released range readable while it is quarantined), but
/// nothing refers to them and they are free to be written again.
public struct MapState: Equatable, Sendable {
    public var masters: [FrontendKey: MasterEntry] = [:]
    public var slots: [UInt32: SlotEntry] = [:]
    public var backends: [UInt32: BackendAddress] = [:]
    public var revNats: [UInt32: RevNatEntry] = [:]
    public var meta: [FrontendKey: FrontendMeta] = [:]
    public var sourceRanges: Set<SourceRange> = []
    public var healthChecks: [UInt16: HealthCheckEntry] = [:]

    public init() {}

    /// Applies one operation to this in-memory picture. A master that moves to another
    /// range (or goes away) releases its old range's slots.
    public mutating func apply(_ op: MapOp) {
        switch op {
        case .upsertBackend(let id, let backend): backends[id] = backend
        case .deleteBackend(let id): backends[id] = nil
        case .upsertRevNat(let id, let entry): revNats[id] = entry
        case .deleteRevNat(let id): revNats[id] = nil
        case .writeSlot(let index, let entry): slots[index] = entry
        case .upsertMaster(let key, let entry):
            if let old = masters[key], old.slots != entry.slots { release(old.slots) }
            masters[key] = entry
        case .deleteMaster(let key):
            if let old = masters[key] { release(old.slots) }
            masters[key] = nil
        case .upsertMeta(let key, let entry): meta[key] = entry
        case .deleteMeta(let key): meta[key] = nil
        case .addSourceRange(let range): sourceRanges.insert(range)
        case .deleteSourceRange(let range): sourceRanges.remove(range)
        case .upsertHealthCheck(let port, let entry): healthChecks[port] = entry
        case .deleteHealthCheck(let port): healthChecks[port] = nil
        }
    }

    private mutating func release(_ range: Range<UInt32>) {
        for index in range { slots[index] = nil }
    }

    /// The backends a frontend's active set points at, in slot order.
    public func activeBackends(of key: FrontendKey) -> [BackendAddress] {
        guard let master = masters[key] else { return [] }
        return master.slots.compactMap { slots[$0]?.backend }
    }

    /// This state without slots that no master's range covers (what reading the maps
    /// back yields).
    public var referenced: MapState {
        var copy = self
        let live = Set(masters.values.flatMap { Array($0.slots) })
        copy.slots = slots.filter { live.contains($0.key) }
        return copy
    }
}

/// One write to the load-balancer maps.
public enum MapOp: Hashable, Sendable, CustomStringConvertible {
    case upsertBackend(UInt32, BackendAddress)
    case deleteBackend(UInt32)
    case upsertRevNat(UInt32, RevNatEntry)
    case deleteRevNat(UInt32)
    case writeSlot(UInt32, SlotEntry)
    case upsertMaster(FrontendKey, MasterEntry)
    case deleteMaster(FrontendKey)
    case upsertMeta(FrontendKey, FrontendMeta)
    case deleteMeta(FrontendKey)
    case addSourceRange(SourceRange)
    case deleteSourceRange(SourceRange)
    case upsertHealthCheck(UInt16, HealthCheckEntry)
    case deleteHealthCheck(UInt16)

    public var description: String {
        switch self {
        case .upsertBackend(let id, let backend): return "backend[\(id)] = \(backend)"
        case .deleteBackend(let id): return "delete backend[\(id)]"
        case .upsertRevNat(let id, let entry): return "revnat[\(id)] = \(entry.address):\(entry.port)"
        case .deleteRevNat(let id): return "delete revnat[\(id)]"
        case .writeSlot(let index, let entry): return "slot[\(index)] = backend \(entry.backendID) \(entry.backend)"
        case .upsertMaster(let key, let entry):
            return "\(key) -> slots \(entry.slotBase)+\(entry.count) rev \(entry.revision) flags \(entry.flags.rawValue)"
        case .deleteMaster(let key): return "delete \(key)"
        case .upsertMeta(let key, let entry): return "meta \(key) = \(entry.service) \(entry.portName)"
        case .deleteMeta(let key): return "delete meta \(key)"
        case .addSourceRange(let range): return "source range revnat \(range.revNatID) \(range.cidr)"
        case .deleteSourceRange(let range): return "delete source range revnat \(range.revNatID) \(range.cidr)"
        case .upsertHealthCheck(let port, let entry): return "health check :\(port) \(entry.service) local=\(entry.localEndpoints)"
        case .deleteHealthCheck(let port): return "delete health check :\(port)"
        }
    }
}

extension MapOp {
    /// Where the op sits in the order the reconciler writes a frontend change: what the
    /// frontend entry points at (rev-NAT, metadata, allowed sources, backends, slots)
    /// before the entry, and what only the old state used after it; a removal deletes the
    /// entry before what it pointed at. Every frontend change (added, changed, removed)
    /// lists its ops in this order, so such changes of different frontends can be merged
    /// phase by phase without any frontend pointing at something not yet written
    /// (`LoadBalancerMaps.applyTogether`).
    public var phase: Int {
        switch self {
        case .upsertRevNat: 0
        case .upsertMeta: 1
        case .addSourceRange: 2
        case .upsertBackend: 3
        case .writeSlot: 4
        case .upsertMaster, .deleteMaster: 5
        case .deleteMeta: 6
        case .deleteSourceRange: 7
        case .deleteBackend, .deleteRevNat: 8
        case .upsertHealthCheck, .deleteHealthCheck: 9
        }
    }

    public static let phaseCount = 10

    /// The ops of `changes` regrouped phase by phase (each phase's ops in change order),
    /// as `LoadBalancerMaps.applyTogether` writes them.
    public static func byPhase(_ changes: [[MapOp]]) -> [[MapOp]] {
        var phases = [[MapOp]](repeating: [], count: phaseCount)
        for ops in changes {
            for op in ops { phases[op.phase].append(op) }
        }
        return phases.filter { !$0.isEmpty }
    }
}

/// A write that failed part-way: the first `appliedCount` operations took effect.
public struct MapApplyError: Error, CustomStringConvertible {
    public var appliedCount: Int
    public var op: MapOp
    public var underlying: Error

    public init(appliedCount: Int, op: MapOp, underlying: Error) {
        self.appliedCount = appliedCount
        self.op = op
        self.underlying = underlying
    }

    public var description: String { "\(op): \(underlying)" }
}

/// Where map operations are applied: the kernel maps (Datapath) or an in-memory fake.
public protocol LoadBalancerMaps: AnyObject {
    /// Applies the operations in order; at the first one that fails, throws a
    /// `MapApplyError` saying how many were applied before it.
    func apply(_ ops: [MapOp]) throws
    /// Reads back everything the maps hold.
    func readState() throws -> MapState
    /// Entries of the slot array (slot 0 is never used).
    var slotCapacity: UInt32 { get }
    /// Applies the changes of several frontends (each in `MapOp.phase` order) so that no
    /// frontend entry is written before what it points at; the changes may be interleaved
    /// phase by phase. At a failure, which changes took effect is not said: the caller
    /// reads the maps back.
    func applyTogether(_ changes: [[MapOp]]) throws
}

extension LoadBalancerMaps {
    /// One change after another.
    public func applyTogether(_ changes: [[MapOp]]) throws {
        for ops in changes { try apply(ops) }
    }
}

/// An in-memory `LoadBalancerMaps` for unprivileged tests, with optional capacity limits
/// to exercise map-full handling.
public final class InMemoryLoadBalancerMaps: LoadBalancerMaps {
    public private(set) var state = MapState()
    public private(set) var appliedOps: [MapOp] = []
    /// Maximum entries of the service map; nil = unlimited.
    public var serviceCapacity: Int?

    public struct MapFull: Error, CustomStringConvertible {
        public var description: String { "service map full (E2BIG)" }
    }

    public let slotCapacity: UInt32
    /// Whether `applyTogether` interleaves the changes phase by phase, as the kernel maps
    /// do (otherwise one change after another).
    public var mergesByPhase: Bool
    /// Called before each op with what the maps hold then: what a reader would see.
    public var beforeEachOp: ((MapState, MapOp) -> Void)?

    public init(serviceCapacity: Int? = nil, slotCapacity: UInt32 = 262_144, mergesByPhase: Bool = true) {
        self.serviceCapacity = serviceCapacity
        self.slotCapacity = slotCapacity
        self.mergesByPhase = mergesByPhase
    }

    public func apply(_ ops: [MapOp]) throws {
        for (index, op) in ops.enumerated() {
            if let capacity = serviceCapacity {
                if case .upsertMaster(let key, _) = op, state.masters[key] == nil, state.masters.count >= capacity {
                    throw MapApplyError(appliedCount: index, op: op, underlying: MapFull())
                }
            }
            beforeEachOp?(state, op)
            state.apply(op)
            appliedOps.append(op)
        }
    }

    public func applyTogether(_ changes: [[MapOp]]) throws {
        guard mergesByPhase else {
            for ops in changes { try apply(ops) }
            return
        }
        for ops in MapOp.byPhase(changes) { try apply(ops) }
    }

    public func readState() throws -> MapState { state.referenced }
}
