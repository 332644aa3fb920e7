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
}

/// The master entry of a frontend (slot 0, revision 0).
public struct MasterEntry: Hashable, Sendable {
    /// Revision of the active backend set; never 0.
    public var revision: UInt16
    /// Number of slots in the active revision; 0 means no backend.
    public var count: UInt16
    public var revNatID: UInt32
    public var flags: ServiceFlags
    public var kind: FrontendKind
    /// ClientIP affinity timeout in seconds, 0 = none.
    public var affinitySeconds: UInt32

    public init(revision: UInt16, count: UInt16, revNatID: UInt32, flags: ServiceFlags, kind: FrontendKind, affinitySeconds: UInt32) {
        self.revision = revision
        self.count = count
        self.revNatID = revNatID
        self.flags = flags
        self.kind = kind
        self.affinitySeconds = affinitySeconds
    }
}

/// A backend slot: frontend, revision of the backend set, slot number 1...count.
public struct SlotKey: Hashable, Sendable {
    public var frontend: FrontendKey
    public var revision: UInt16
    public var slot: UInt16

    public init(frontend: FrontendKey, revision: UInt16, slot: UInt16) {
        self.frontend = frontend
        self.revision = revision
        self.slot = slot
    }
}

/// A backend slot's value: the backend id and a copy of its address (the socket path
/// reads the address straight from the slot, saving a lookup per connect).
public struct SlotEntry: Hashable, Sendable {
    public var backendID: UInt32
    public var revNatID: UInt32
    public var backend: BackendAddress

    public init(backendID: UInt32, revNatID: UInt32, backend: BackendAddress) {
        self.backendID = backendID
        self.revNatID = revNatID
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

/// Everything the load-balancer maps hold.
public struct MapState: Equatable, Sendable {
    public var masters: [FrontendKey: MasterEntry] = [:]
    public var slots: [SlotKey: SlotEntry] = [:]
    public var backends: [UInt32: BackendAddress] = [:]
    public var revNats: [UInt32: RevNatEntry] = [:]

    public init() {}

    /// Applies one operation to this in-memory picture.
    public mutating func apply(_ op: MapOp) {
        switch op {
        case .upsertBackend(let id, let backend): backends[id] = backend
        case .deleteBackend(let id): backends[id] = nil
        case .upsertRevNat(let id, let entry): revNats[id] = entry
        case .deleteRevNat(let id): revNats[id] = nil
        case .upsertSlot(let key, let entry): slots[key] = entry
        case .deleteSlot(let key): slots[key] = nil
        case .upsertMaster(let key, let entry): masters[key] = entry
        case .deleteMaster(let key): masters[key] = nil
        }
    }

    /// The backends a frontend's active revision points at, in slot order.
    public func activeBackends(of key: FrontendKey) -> [BackendAddress] {
        guard let master = masters[key] else { return [] }
        return (0..<master.count).compactMap { index in
            slots[SlotKey(frontend: key, revision: master.revision, slot: index + 1)]
                .flatMap { backends[$0.backendID] }
        }
    }
}

/// One write to the load-balancer maps.
public enum MapOp: Hashable, Sendable, CustomStringConvertible {
    case upsertBackend(UInt32, BackendAddress)
    case deleteBackend(UInt32)
    case upsertRevNat(UInt32, RevNatEntry)
    case deleteRevNat(UInt32)
    case upsertSlot(SlotKey, SlotEntry)
    case deleteSlot(SlotKey)
    case upsertMaster(FrontendKey, MasterEntry)
    case deleteMaster(FrontendKey)

    public var description: String {
        switch self {
        case .upsertBackend(let id, let backend): return "backend[\(id)] = \(backend)"
        case .deleteBackend(let id): return "delete backend[\(id)]"
        case .upsertRevNat(let id, let entry): return "revnat[\(id)] = \(entry.address):\(entry.port)"
        case .deleteRevNat(let id): return "delete revnat[\(id)]"
        case .upsertSlot(let key, let entry): return "\(key.frontend) rev \(key.revision) slot \(key.slot) = backend \(entry.backendID)"
        case .deleteSlot(let key): return "delete \(key.frontend) rev \(key.revision) slot \(key.slot)"
        case .upsertMaster(let key, let entry): return "\(key) -> rev \(entry.revision) count \(entry.count) flags \(entry.flags.rawValue)"
        case .deleteMaster(let key): return "delete \(key)"
        }
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
}

/// An in-memory `LoadBalancerMaps` for unprivileged tests, with optional capacity limits
/// to exercise map-full handling.
public final class InMemoryLoadBalancerMaps: LoadBalancerMaps {
    public private(set) var state = MapState()
    public private(set) var appliedOps: [MapOp] = []
    /// Maximum entries of the service map (masters + slots); nil = unlimited.
    public var serviceCapacity: Int?

    public struct MapFull: Error, CustomStringConvertible {
        public var description: String { "service map full (E2BIG)" }
    }

    public init(serviceCapacity: Int? = nil) { self.serviceCapacity = serviceCapacity }

    public func apply(_ ops: [MapOp]) throws {
        for (index, op) in ops.enumerated() {
            if let capacity = serviceCapacity {
                let used = state.masters.count + state.slots.count
                let full = MapApplyError(appliedCount: index, op: op, underlying: MapFull())
                switch op {
                case .upsertSlot(let key, _) where state.slots[key] == nil && used >= capacity: throw full
                case .upsertMaster(let key, _) where state.masters[key] == nil && used >= capacity: throw full
                default: break
                }
            }
            state.apply(op)
            appliedOps.append(op)
        }
    }

    public func readState() throws -> MapState { state }
}
