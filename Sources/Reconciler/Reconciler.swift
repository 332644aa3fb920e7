import ServiceModel

/// The ordered writes that move one frontend (or the garbage collector) from its old
/// state to its new one. Applied as a unit: a failure inside leaves the frontend on its
/// previous backend set, because the master entry is only written after every slot and
/// backend it needs.
public struct FrontendChange: Sendable, CustomStringConvertible {
    public enum Reason: String, Sendable { case added, changed, removed, garbage }
    public var key: FrontendKey?
    public var service: String
    public var reason: Reason
    public var ops: [MapOp]

    public var description: String {
        "\(reason.rawValue) \(key.map { "\($0)" } ?? "-") (\(service)): \(ops.count) ops"
    }
}

/// Computes and applies the minimal map writes that make the maps serve a desired set of
/// frontends.
///
/// A frontend's backend set is replaced atomically: the new set is written as slots of a
/// new revision, the master entry is flipped to that revision in one update, and only
/// then are the old revision's slots and unreferenced backends removed. Backend and
/// rev-NAT ids are stable and reference-counted, and adopted from the maps at start-up.
public struct Reconciler: Sendable {
    /// What the reconciler believes the maps hold (exactly, after every successful apply).
    public private(set) var state: MapState
    private var backendIDs: [BackendAddress: UInt32] = [:]
    private var backendRefs: [UInt32: Int] = [:]
    private var revNatIDs: [RevNatEntry: UInt32] = [:]
    private var revNatRefs: [UInt32: Int] = [:]
    /// Slots and backends no master points at (left by a crash mid-apply, or duplicates).
    private var strays = Set<SlotKey>()
    private var nextBackendID: UInt32 = 1
    private var nextRevNatID: UInt32 = 1

    /// Adopts whatever the maps hold: ids stay as they are, nothing is rewritten.
    public init(adopting state: MapState = MapState()) {
        self.state = state
        rebuildIndexes()
    }

    /// The frontends currently programmed, with the backends their active revision uses.
    public var programmedFrontends: [FrontendKey: [BackendAddress]] {
        Dictionary(uniqueKeysWithValues: state.masters.keys.map { ($0, state.activeBackends(of: $0)) })
    }

    public func backendID(for backend: BackendAddress) -> UInt32? { backendIDs[backend] }
    public func revNatID(for key: FrontendKey) -> UInt32? { revNatIDs[RevNatEntry(address: key.address, port: key.port)] }

    // MARK: - Diff

    /// The changes that take the maps from `state` to `desired`. With `prune == false`
    /// (before every source has synced) nothing is removed, only added or changed.
    /// Applying the same desired set twice yields no change the second time.
    public func changes(to desired: [DesiredFrontend], prune: Bool, keeping: Set<FrontendKey> = []) -> [FrontendChange] {
        var planner = self
        var result: [FrontendChange] = []
        var wanted = Set<FrontendKey>()
        var unique: [DesiredFrontend] = []
        for frontend in desired where wanted.insert(frontend.key).inserted { unique.append(frontend) }
        // Removals and leftovers go first: they free map space for what is added next.
        if prune {
            for key in planner.state.masters.keys.sorted() where !wanted.contains(key) && !keeping.contains(key) {
                result.append(planner.planRemoval(of: key))
            }
            if !planner.strays.isEmpty {
                let garbage = planner.strays.sorted { ($0.frontend, $0.revision, $0.slot) < ($1.frontend, $1.revision, $1.slot) }
                    .map { MapOp.deleteSlot($0) }
                for op in garbage { planner.record(op) }
                result.append(FrontendChange(key: nil, service: "-", reason: .garbage, ops: garbage))
            }
        }
        for frontend in unique {
            if let change = planner.plan(frontend) { result.append(change) }
        }
        if let collection = planner.collectUnreferenced() { result.append(collection) }
        return result
    }

    private mutating func plan(_ frontend: DesiredFrontend) -> FrontendChange? {
        let key = frontend.key
        let existing = state.masters[key]
        let revNatID = existing?.revNatID ?? allocateRevNat(for: key)
        var ops: [MapOp] = []
        let revNat = RevNatEntry(address: key.address, port: key.port)
        if state.revNats[revNatID] != revNat { ops.append(.upsertRevNat(revNatID, revNat)) }

        let current = existing.map { _ in state.activeBackends(of: key) } ?? []
        let sameBackends = existing != nil && current == frontend.backends
        let count = UInt16(clamping: frontend.backends.count)
        var master = MasterEntry(
            revision: existing?.revision ?? 1, count: count, revNatID: revNatID,
            flags: frontend.flags, kind: frontend.kind, affinitySeconds: frontend.affinitySeconds)

        if sameBackends {
            if existing == master && ops.isEmpty { return nil }
            ops.append(.upsertMaster(key, master))
        } else {
            if let existing {
                master.revision = existing.revision == UInt16.max ? 1 : existing.revision + 1
            }
            for backend in frontend.backends.prefix(Int(count)) where backendIDs[backend] == nil {
                let id = allocateBackend(backend)
                ops.append(.upsertBackend(id, backend))
            }
            for (index, backend) in frontend.backends.prefix(Int(count)).enumerated() {
                let slot = SlotKey(frontend: key, revision: master.revision, slot: UInt16(index + 1))
                ops.append(.upsertSlot(slot, SlotEntry(backendID: backendIDs[backend]!, revNatID: revNatID, backend: backend)))
            }
            ops.append(.upsertMaster(key, master))
            if let existing {
                for index in 0..<existing.count {
                    ops.append(.deleteSlot(SlotKey(frontend: key, revision: existing.revision, slot: index + 1)))
                }
            }
        }
        for op in ops { record(op) }
        return FrontendChange(key: key, service: frontend.service, reason: existing == nil ? .added : .changed, ops: ops)
    }

    private mutating func planRemoval(of key: FrontendKey) -> FrontendChange {
        let master = state.masters[key]!
        // The master goes first so that no new connection reaches the slots being removed.
        var ops: [MapOp] = [.deleteMaster(key)]
        for index in 0..<master.count {
            ops.append(.deleteSlot(SlotKey(frontend: key, revision: master.revision, slot: index + 1)))
        }
        for op in ops { record(op) }
        return FrontendChange(key: key, service: "-", reason: .removed, ops: ops)
    }

    /// Backends and rev-NAT entries no slot or master references any more. They go last,
    /// after every flip, so a backend moving from one frontend to another keeps its id.
    private mutating func collectUnreferenced() -> FrontendChange? {
        var ops: [MapOp] = []
        for (id, refs) in backendRefs where refs == 0 { ops.append(.deleteBackend(id)) }
        for (id, refs) in revNatRefs where refs == 0 { ops.append(.deleteRevNat(id)) }
        guard !ops.isEmpty else { return nil }
        ops.sort { $0.description < $1.description }
        for op in ops { record(op) }
        return FrontendChange(key: nil, service: "-", reason: .garbage, ops: ops)
    }

    // MARK: - Apply

    /// Outcome of a reconcile: the failed frontends were left exactly as they were.
    public struct ApplyReport: Sendable {
        public var applied: [FrontendChange] = []
        public var failed: [(change: FrontendChange, error: String)] = []
        public var opCount: Int { applied.reduce(0) { $0 + $1.ops.count } }
    }

    /// Makes `maps` serve `desired`. A change that fails (map full, ENOMEM…) leaves its
    /// frontend on its previous state: the maps are read back, the frontend is set aside
    /// (kept as it is, not removed), and the remaining changes are planned again from the
    /// truth, so that no later change relies on a write that never happened. The caller
    /// retries the failed frontends on its next sync.
    public mutating func reconcile(_ desired: [DesiredFrontend], prune: Bool, maps: LoadBalancerMaps) -> ApplyReport {
        var report = ApplyReport()
        var setAside = Set<FrontendKey>()
        while true {
            let pending = changes(to: desired.filter { !setAside.contains($0.key) }, prune: prune, keeping: setAside)
            var failure: FrontendChange?
            for change in pending {
                do {
                    try maps.apply(change.ops)
                    for op in change.ops { record(op) }
                    report.applied.append(change)
                } catch {
                    report.failed.append((change, "\((error as? MapApplyError)?.underlying ?? error)"))
                    failure = change
                    rollBack(change, appliedCount: (error as? MapApplyError)?.appliedCount ?? change.ops.count, maps: maps)
                    break
                }
            }
            guard let failed = failure else { return report }
            if let truth = try? maps.readState() { self = Reconciler(adopting: truth) }
            // Garbage collection failing is retried on the next sync; nothing depends on it.
            guard let key = failed.key, setAside.insert(key).inserted else { return report }
        }
    }

    /// Undoes the writes a failed change made before its master flip, so that what it
    /// wrote does not take up space others need. Once the master has flipped, the
    /// frontend is on its new set and what remains are leftovers the next sync removes.
    private func rollBack(_ change: FrontendChange, appliedCount: Int, maps: LoadBalancerMaps) {
        let applied = change.ops.prefix(appliedCount)
        if applied.contains(where: { if case .upsertMaster = $0 { return true } else { return false } }) { return }
        let undo: [MapOp] = applied.reversed().compactMap { op in
            switch op {
            case .upsertSlot(let key, _) where state.slots[key] == nil: return .deleteSlot(key)
            case .upsertBackend(let id, _) where state.backends[id] == nil: return .deleteBackend(id)
            case .upsertRevNat(let id, _) where state.revNats[id] == nil: return .deleteRevNat(id)
            default: return nil
            }
        }
        try? maps.apply(undo)
    }

    // MARK: - Bookkeeping

    private mutating func record(_ op: MapOp) {
        switch op {
        case .upsertSlot(let key, let entry):
            strays.remove(key)
            if let old = state.slots[key] { backendRefs[old.backendID, default: 1] -= 1 }
            backendRefs[entry.backendID, default: 0] += 1
        case .deleteSlot(let key):
            strays.remove(key)
            if let old = state.slots[key] { backendRefs[old.backendID, default: 1] -= 1 }
        case .upsertMaster(let key, let entry):
            if let old = state.masters[key] { revNatRefs[old.revNatID, default: 1] -= 1 }
            revNatRefs[entry.revNatID, default: 0] += 1
        case .deleteMaster(let key):
            if let old = state.masters[key] { revNatRefs[old.revNatID, default: 1] -= 1 }
        case .upsertBackend(let id, let backend):
            backendIDs[backend] = id
            if backendRefs[id] == nil { backendRefs[id] = 0 }
        case .deleteBackend(let id):
            if let backend = state.backends[id], backendIDs[backend] == id { backendIDs[backend] = nil }
            backendRefs[id] = nil
        case .upsertRevNat(let id, let entry):
            revNatIDs[entry] = id
            if revNatRefs[id] == nil { revNatRefs[id] = 0 }
        case .deleteRevNat(let id):
            if let entry = state.revNats[id], revNatIDs[entry] == id { revNatIDs[entry] = nil }
            revNatRefs[id] = nil
        }
        state.apply(op)
    }

    private mutating func rebuildIndexes() {
        backendIDs = [:]; backendRefs = [:]; revNatIDs = [:]; revNatRefs = [:]; strays = []
        for (id, backend) in state.backends.sorted(by: { $0.key < $1.key }) {
            backendRefs[id] = 0
            // Two ids for one address (never written by this reconciler): keep the lowest,
            // the other is referenced by nothing new and is collected once unreferenced.
            if backendIDs[backend] == nil { backendIDs[backend] = id }
        }
        for (id, entry) in state.revNats.sorted(by: { $0.key < $1.key }) {
            revNatRefs[id] = 0
            if revNatIDs[entry] == nil { revNatIDs[entry] = id }
        }
        for master in state.masters.values {
            revNatRefs[master.revNatID, default: 0] += 1
        }
        // Every slot holds a reference, strays included, so that a backend is only
        // collected after the last slot naming it is gone.
        for (key, slot) in state.slots {
            backendRefs[slot.backendID, default: 0] += 1
            if isStray(key) { strays.insert(key) }
        }
        nextBackendID = (state.backends.keys.max() ?? 0) &+ 1
        nextRevNatID = (state.revNats.keys.max() ?? 0) &+ 1
    }

    /// A slot that no master's active revision covers; it holds no reference.
    private func isStray(_ key: SlotKey) -> Bool {
        guard let master = state.masters[key.frontend] else { return true }
        return master.revision != key.revision || key.slot < 1 || key.slot > master.count
    }

    private mutating func allocateBackend(_ backend: BackendAddress) -> UInt32 {
        let id = Self.nextFree(from: &nextBackendID) { state.backends[$0] != nil || backendRefs[$0] != nil }
        backendIDs[backend] = id
        return id
    }

    private mutating func allocateRevNat(for key: FrontendKey) -> UInt32 {
        let entry = RevNatEntry(address: key.address, port: key.port)
        if let id = revNatIDs[entry] { return id }
        let id = Self.nextFree(from: &nextRevNatID) { state.revNats[$0] != nil || revNatRefs[$0] != nil }
        revNatIDs[entry] = id
        return id
    }

    /// Ids grow monotonically and wrap, skipping 0 and ids in use, so a freed id is not
    /// handed out again while stale readers might still hold it.
    private static func nextFree(from cursor: inout UInt32, isUsed: (UInt32) -> Bool) -> UInt32 {
        while cursor == 0 || isUsed(cursor) { cursor &+= 1 }
        defer { cursor &+= 1 }
        return cursor
    }
}
