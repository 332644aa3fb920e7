import Glibc
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
    /// Set when the change could not even be planned (no room in the slot array).
    public var planningError: String?
    /// The addresses of the backends this change deletes (garbage collection).
    public var removedBackends: [BackendAddress] = []

    public var description: String {
        "\(reason.rawValue) \(key.map { "\($0)" } ?? "-") (\(service)): \(ops.count) ops"
            + (planningError.map { " — \($0)" } ?? "")
    }
}

/// Computes and applies the minimal map writes that make the maps serve a desired set of
/// frontends.
///
/// A frontend's backend set is replaced atomically: the new set is written into a fresh
/// range of the slot array, the frontend's entry is flipped to that range in one update,
/// and the old range is quarantined (left intact for readers that loaded the old entry)
/// before it is reused. Backend and rev-NAT ids are stable and reference-counted, and
/// adopted from the maps at start-up.
public struct Reconciler: Sendable {
    /// What the reconciler believes the maps hold (exactly, after every successful apply).
    public private(set) var state: MapState
    public private(set) var slots: SlotAllocator
    private var backendIDs: [BackendAddress: UInt32] = [:]
    private var backendRefs: [UInt32: Int] = [:]
    private var revNatIDs: [RevNatEntry: UInt32] = [:]
    private var revNatRefs: [UInt32: Int] = [:]
    /// Ids whose reference count dropped to 0 (candidates for collection), so a sync does
    /// not scan every backend.
    private var unreferencedBackends = Set<UInt32>()
    private var unreferencedRevNats = Set<UInt32>()
    /// Metadata and source ranges of no frontend (found when the maps are re-read).
    private var orphanMeta = Set<FrontendKey>()
    private var orphanRanges = Set<SourceRange>()
    private var nextBackendID: UInt32 = 1
    private var nextRevNatID: UInt32 = 1
    /// Monotonic nanoseconds; injected so tests can step through quarantines.
    private let clock: @Sendable () -> UInt64

    public static let defaultSlotCapacity: UInt32 = 262_144

    public static let monotonicNanoseconds: @Sendable () -> UInt64 = {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    /// Adopts whatever the maps hold: ids and slot ranges stay as they are, nothing is
    /// rewritten.
    public init(adopting state: MapState = MapState(), slotCapacity: UInt32 = Reconciler.defaultSlotCapacity,
                quarantineNanoseconds: UInt64 = 1_000_000_000,
                clock: @escaping @Sendable () -> UInt64 = Reconciler.monotonicNanoseconds) {
        self.state = state.referenced
        self.clock = clock
        self.slots = SlotAllocator(capacity: slotCapacity, inUse: state.masters.values.map(\.slots),
                                   quarantineNanoseconds: quarantineNanoseconds)
        rebuildIndexes()
    }

    public func backendID(for backend: BackendAddress) -> UInt32? { backendIDs[backend] }
    public func revNatID(for key: FrontendKey) -> UInt32? { revNatIDs[RevNatEntry(address: key.address, port: key.port)] }

    // MARK: - Diff

    /// The changes that take the maps from `state` to `desired`. With `prune == false`
    /// (before every source has synced) nothing is removed, only added or changed;
    /// frontends in `keeping` are never removed. Applying the same desired set twice
    /// yields no change the second time.
    public func changes(to desired: [DesiredFrontend], healthChecks: [UInt16: HealthCheckEntry]? = nil, prune: Bool,
                        keeping: Set<FrontendKey> = []) -> [FrontendChange] {
        var planner = self
        var result: [FrontendChange] = []
        planner.planEverything(desired, healthChecks: healthChecks, prune: prune, keeping: keeping) { result.append($0) }
        return result
    }

    /// The changes that bring just these frontends to their desired state and remove just
    /// `removing` (an incremental sync: one Service changed, the rest untouched). Health
    /// checks, when given, are the complete desired set.
    public func changes(upserting: [DesiredFrontend], removing: [FrontendKey], healthChecks: [UInt16: HealthCheckEntry]? = nil)
        -> [FrontendChange]
    {
        var planner = self
        var result: [FrontendChange] = []
        planner.planOnly(upserting: upserting, removing: removing, healthChecks: healthChecks) { result.append($0) }
        return result
    }

    /// Plans (and records into this reconciler's picture of the maps) the full diff, each
    /// change handed to `emit` as soon as it is planned, in the order it must be applied.
    /// Planning in place, rather than on a copy, matters at scale: the first write to a
    /// copied picture would duplicate every slot and backend.
    private mutating func planEverything(_ desired: [DesiredFrontend], healthChecks: [UInt16: HealthCheckEntry]?, prune: Bool,
                                         keeping: Set<FrontendKey>, emit: (FrontendChange) -> Void) {
        var wanted = Set<FrontendKey>()
        var unique: [DesiredFrontend] = []
        for frontend in desired where wanted.insert(frontend.key).inserted { unique.append(frontend) }
        reserveCapacity(for: unique)
        // Removals go first: they free service-map entries for what is added next.
        if prune {
            for key in state.masters.keys.sorted() where !wanted.contains(key) && !keeping.contains(key) {
                emit(planRemoval(of: key))
            }
        }
        for frontend in unique {
            if let change = plan(frontend) { emit(change) }
        }
        if let healthChecks, let change = planHealthChecks(healthChecks, prune: prune) { emit(change) }
        if let collection = collectUnreferenced() { emit(collection) }
    }

    /// Plans (and records) an incremental diff; see `changes(upserting:removing:)`.
    private mutating func planOnly(upserting: [DesiredFrontend], removing: [FrontendKey],
                                   healthChecks: [UInt16: HealthCheckEntry]?, emit: (FrontendChange) -> Void) {
        let upserted = Set(upserting.map(\.key))
        for key in removing.sorted() where state.masters[key] != nil && !upserted.contains(key) {
            emit(planRemoval(of: key))
        }
        var seen = Set<FrontendKey>()
        for frontend in upserting where seen.insert(frontend.key).inserted {
            if let change = plan(frontend) { emit(change) }
        }
        if let healthChecks, let change = planHealthChecks(healthChecks, prune: true) { emit(change) }
        if let collection = collectUnreferenced() { emit(collection) }
    }

    private mutating func plan(_ frontend: DesiredFrontend) -> FrontendChange? {
        let key = frontend.key
        let existing = state.masters[key]
        let reason: FrontendChange.Reason = existing == nil ? .added : .changed
        let revNatID = existing?.revNatID ?? allocateRevNat(for: key)
        var ops: [MapOp] = []
        // Recorded as it is planned: copying each op back out of `ops` to record it
        // afterwards was a sixth of planning from empty.
        func add(_ op: consuming MapOp) {
            record(op)
            ops.append(op)
        }
        let revNat = RevNatEntry(address: key.address, port: key.port)
        if state.revNats[revNatID] != revNat { add(.upsertRevNat(revNatID, revNat)) }
        if state.meta[key] != frontend.meta { add(.upsertMeta(key, frontend.meta)) }
        // Allowed sources go in before the frontend opens (or changes); stale ones are
        // removed after every flip, by planStaleSourceRanges.
        for cidr in frontend.sourceRanges where !state.sourceRanges.contains(SourceRange(revNatID: revNatID, cidr: cidr)) {
            add(.addSourceRange(SourceRange(revNatID: revNatID, cidr: cidr)))
        }

        let backends = Array(frontend.backends.prefix(Int(UInt16.max)))
        var master = MasterEntry(
            slotBase: existing?.slotBase ?? 0, count: UInt16(backends.count), revision: existing?.revision ?? 1,
            revNatID: revNatID, flags: frontend.flags, kind: frontend.kind, affinitySeconds: frontend.affinitySeconds)

        if let existing, existing.count == master.count, state.activeBackends(of: key) == backends {
            if existing != master { add(.upsertMaster(key, master)) }
        } else {
            master.revision = existing.map { $0.revision &+ 1 } ?? 1
            if backends.isEmpty {
                master.slotBase = 0
            } else {
                guard let range = slots.allocate(backends.count, now: clock()) else {
                    return FrontendChange(key: key, service: frontend.service, reason: reason, ops: [],
                                          planningError: "slot array full: no free range of \(backends.count) slots (E2BIG)")
                }
                master.slotBase = range.lowerBound
            }
            for backend in backends where backendIDs[backend] == nil {
                add(.upsertBackend(allocateBackend(backend), backend))
            }
            for (offset, backend) in backends.enumerated() {
                add(.writeSlot(master.slotBase + UInt32(offset), SlotEntry(backendID: backendIDs[backend]!, backend: backend)))
            }
            add(.upsertMaster(key, master))
        }
        // The node-scope entry of an eTP=Local frontend shares its rev-NAT id; the ranges
        // belong to the default entry alone.
        if key.scope == .default, !state.sourceRanges.isEmpty {
            let wanted = Set(frontend.sourceRanges)
            let stale = state.sourceRanges.filter { $0.revNatID == revNatID && !wanted.contains($0.cidr) }
            for range in stale { add(.deleteSourceRange(range)) }
        }
        if ops.isEmpty { return nil }
        return FrontendChange(key: key, service: frontend.service, reason: reason, ops: ops)
    }

    private mutating func planRemoval(of key: FrontendKey) -> FrontendChange {
        let service = state.meta[key]?.service ?? "-"
        // The master goes first: no new connection reaches the frontend after it.
        var ops: [MapOp] = [.deleteMaster(key)]
        if state.meta[key] != nil { ops.append(.deleteMeta(key)) }
        if let revNatID = state.masters[key]?.revNatID, revNatRefs[revNatID] == 1, !state.sourceRanges.isEmpty {
            for range in state.sourceRanges where range.revNatID == revNatID { ops.append(.deleteSourceRange(range)) }
        }
        for op in ops { record(op) }
        return FrontendChange(key: key, service: service, reason: .removed, ops: ops)
    }

    /// healthCheckNodePort listeners: written as desired; removed only after sync.
    private mutating func planHealthChecks(_ desired: [UInt16: HealthCheckEntry], prune: Bool) -> FrontendChange? {
        var ops: [MapOp] = []
        for (port, entry) in desired.sorted(by: { $0.key < $1.key }) where state.healthChecks[port] != entry {
            ops.append(.upsertHealthCheck(port, entry))
        }
        if prune {
            for port in state.healthChecks.keys.sorted() where desired[port] == nil { ops.append(.deleteHealthCheck(port)) }
        }
        guard !ops.isEmpty else { return nil }
        for op in ops { record(op) }
        return FrontendChange(key: nil, service: "-", reason: .changed, ops: ops)
    }

    /// Backends and rev-NAT entries nothing references any more. They go last, after
    /// every flip, so a backend moving from one frontend to another keeps its id.
    private mutating func collectUnreferenced() -> FrontendChange? {
        var ops: [MapOp] = []
        var removed: [BackendAddress] = []
        for id in unreferencedBackends.sorted() where backendRefs[id] == 0 {
            ops.append(.deleteBackend(id))
            if let backend = state.backends[id] { removed.append(backend) }
        }
        for id in unreferencedRevNats.sorted() where revNatRefs[id] == 0 { ops.append(.deleteRevNat(id)) }
        // Left by a change that failed before its master write (found when re-reading).
        for key in orphanMeta.sorted() where state.masters[key] == nil { ops.append(.deleteMeta(key)) }
        for range in orphanRanges.sorted(by: { ($0.revNatID, $0.cidr) < ($1.revNatID, $1.cidr) }) where (revNatRefs[range.revNatID] ?? 0) == 0 {
            ops.append(.deleteSourceRange(range))
        }
        orphanMeta = []
        orphanRanges = []
        guard !ops.isEmpty else { return nil }
        for op in ops { record(op) }
        return FrontendChange(key: nil, service: "-", reason: .garbage, ops: ops, removedBackends: removed)
    }

    // MARK: - Apply

    /// Outcome of a reconcile: the failed frontends were left exactly as they were.
    public struct ApplyReport: Sendable {
        public var applied: [FrontendChange] = []
        public var failed: [(change: FrontendChange, error: String)] = []
        /// Backends deleted because no frontend uses them any more (their sockets may
        /// need terminating).
        public var removedBackends: [BackendAddress] = []
        public var opCount: Int { applied.reduce(0) { $0 + $1.ops.count } }
    }

    /// Makes `maps` serve `desired`. Changes are written in merged runs (`applyMerged`:
    /// the changes of up to `togetherLimit` frontends phase by phase, a few batched bpf()
    /// calls a run instead of a few per frontend), each frontend still flipping only once
    /// all it points at is written. A change that fails (map full, ENOMEM…) leaves its
    /// frontend on its previous state: the maps are read back, the frontend is set aside
    /// (kept as it is, not removed), and the remaining changes are planned again from the
    /// truth, so that no later change relies on a write that never happened; what the
    /// failed change had written before its master (backends, metadata) is collected as
    /// garbage in that second pass. The caller retries the failed frontends on its next
    /// sync.
    public mutating func reconcile(_ desired: [DesiredFrontend], healthChecks: [UInt16: HealthCheckEntry]? = nil, prune: Bool,
                                   maps: LoadBalancerMaps) -> ApplyReport {
        reconcile(.everything(desired, prune: prune), healthChecks: healthChecks, maps: maps)
    }

    /// What a reconcile covers: every frontend (a full sync), or only some (incremental).
    public enum Target: Sendable {
        /// Make the maps serve exactly these frontends (removing others only if `prune`).
        case everything([DesiredFrontend], prune: Bool)
        /// Bring these frontends to their desired state and remove these keys; leave the
        /// rest alone.
        case only(upserting: [DesiredFrontend], removing: [FrontendKey])
    }

    public mutating func reconcile(_ target: Target, healthChecks: [UInt16: HealthCheckEntry]? = nil,
                                   maps: LoadBalancerMaps) -> ApplyReport {
        var report = ApplyReport()
        // The usual case: planned and written in merged runs.
        if applyMerged(target, healthChecks: healthChecks, to: maps, into: &report) { return report }
        // Something failed, but which change is not known: from the maps' truth, planned
        // again and written one change at a time, to find it and set it aside.
        if let truth = try? maps.readState() { resync(to: truth) }
        var setAside = Set<FrontendKey>()
        while true {
            // Planning records each change into `state` as if applied; a failure below
            // re-reads the maps, which puts the picture back to the truth.
            var pending: [FrontendChange] = []
            switch target {
            case .everything(let desired, let prune):
                planEverything(desired.filter { !setAside.contains($0.key) }, healthChecks: healthChecks,
                               prune: prune, keeping: setAside) { pending.append($0) }
            case .only(let upserting, let removing):
                planOnly(upserting: upserting.filter { !setAside.contains($0.key) },
                         removing: removing.filter { !setAside.contains($0) }, healthChecks: healthChecks) { pending.append($0) }
            }
            var failure: FrontendChange?
            for change in pending {
                if let error = change.planningError {
                    report.failed.append((change, error))
                    failure = change
                    break
                }
                do {
                    try maps.apply(change.ops)
                    report.applied.append(change)
                    report.removedBackends += change.removedBackends
                } catch {
                    report.failed.append((change, "\((error as? MapApplyError)?.underlying ?? error)"))
                    failure = change
                    break
                }
            }
            guard let failed = failure else { return report }
            if let truth = try? maps.readState() { resync(to: truth) }
            // Garbage collection failing is retried on the next sync; nothing depends on it.
            guard let key = failed.key, setAside.insert(key).inserted else { return report }
        }
    }

    /// Plans `target` and applies it as it goes, runs of added, changed or removed
    /// frontends merged (up to `togetherLimit` a run), each applied run into `report`:
    /// true when everything was applied; false at the first failure or at a change that
    /// could not be planned (the caller then finds out which from the maps' truth).
    /// Large syncs write on a second thread, overlapping planning.
    private mutating func applyMerged(_ target: Target, healthChecks: [UInt16: HealthCheckEntry]?, to maps: LoadBalancerMaps,
                                      into report: inout ApplyReport) -> Bool {
        let size: Int
        switch target {
        case .everything(let desired, _): size = desired.count
        case .only(let upserting, let removing): size = upserting.count + removing.count
        }
        let applier = ChangeApplier(maps: maps, concurrent: size >= Self.concurrentApplyThreshold)
        let clock = self.clock, quarantine = slots.quarantineNanoseconds
        var run: [FrontendChange] = [], runKind: Int?, runStarted: UInt64 = 0
        var unplannable = false
        // Changes merged phase by phase write one change's slots before an earlier one's
        // flip: safe only if no range released by one was handed to another, which the
        // quarantine rules out when the run was planned within less than it.
        func flush() {
            applier.submit(run, merge: clock() &- runStarted < quarantine)
            run = []
        }
        let emit = { (change: FrontendChange) in
            guard !unplannable else { return }
            guard change.planningError == nil else {
                unplannable = true
                return
            }
            let kind = Self.mergeable(change)
            if !run.isEmpty, kind == nil || kind != runKind || run.count >= Self.togetherLimit { flush() }
            if run.isEmpty { runStarted = clock() }
            run.append(change)
            runKind = kind
        }
        switch target {
        case .everything(let desired, let prune):
            planEverything(desired, healthChecks: healthChecks, prune: prune, keeping: [], emit: emit)
        case .only(let upserting, let removing):
            planOnly(upserting: upserting, removing: removing, healthChecks: healthChecks, emit: emit)
        }
        if !unplannable { flush() }
        applier.finish()
        report.applied += applier.applied
        for change in applier.applied { report.removedBackends += change.removedBackends }
        return !applier.failed && !unplannable
    }

    /// From this many frontends a sync on, changes are written on a second thread while
    /// the rest are planned (below, starting the thread costs more than it saves).
    public static let concurrentApplyThreshold = 2048

    /// Frontend changes merged into one `applyTogether`: a bound on what a failure makes
    /// the reconciler redo one by one, and on the memory of the merged phases.
    static let togetherLimit = 1024

    /// Which run a change can be merged into: upserts with upserts, removals with
    /// removals (removals first free entries that the upserts after them may need).
    private static func mergeable(_ change: FrontendChange) -> Int? {
        switch change.reason {
        case .added, .changed: change.key == nil ? nil : 0
        case .removed: 1
        case .garbage: nil
        }
    }

    /// Starts over from what the maps really hold, keeping the quarantine of released
    /// ranges (readers may still be reading them).
    private mutating func resync(to truth: MapState) {
        let quarantine = slots.stillQuarantined(at: clock())
        var fresh = Reconciler(adopting: truth, slotCapacity: slots.capacity,
                               quarantineNanoseconds: slots.quarantineNanoseconds, clock: clock)
        fresh.slots.adoptQuarantine(quarantine)
        self = fresh
    }

    // MARK: - Bookkeeping

    /// Room for `desired` in the picture and the indexes up front: from empty, growing
    /// each of them one rehash at a time was a good part of planning.
    private mutating func reserveCapacity(for desired: [DesiredFrontend]) {
        let slotCount = desired.reduce(0) { $0 + $1.backends.count }
        guard desired.count > state.masters.count || slotCount > state.slots.count else { return }
        state.masters.reserveCapacity(desired.count)
        state.meta.reserveCapacity(desired.count)
        state.revNats.reserveCapacity(desired.count)
        state.slots.reserveCapacity(slotCount)
        revNatIDs.reserveCapacity(desired.count)
        revNatRefs.reserveCapacity(desired.count)
        // Backends are shared between frontends: the slots are an upper bound.
        state.backends.reserveCapacity(slotCount)
        backendIDs.reserveCapacity(slotCount)
        backendRefs.reserveCapacity(slotCount)
    }

    private mutating func record(_ op: MapOp) {
        switch op {
        case .writeSlot(let index, let entry):
            if let old = state.slots[index] { adjustBackendRefs(old.backendID, by: -1) }
            adjustBackendRefs(entry.backendID, by: 1)
        case .upsertMaster(let key, let entry):
            let old = state.masters[key]
            if let old { adjustRevNatRefs(old.revNatID, by: -1) }
            adjustRevNatRefs(entry.revNatID, by: 1)
            if old?.slots != entry.slots {
                if let old { releaseSlots(of: old) }
                slots.claim(entry.slots)
            }
        case .deleteMaster(let key):
            if let old = state.masters[key] {
                adjustRevNatRefs(old.revNatID, by: -1)
                releaseSlots(of: old)
            }
        case .upsertBackend(let id, let backend):
            backendIDs[backend] = id
            if backendRefs[id] == nil { adjustBackendRefs(id, by: 0) }
        case .deleteBackend(let id):
            if let backend = state.backends[id], backendIDs[backend] == id { backendIDs[backend] = nil }
            backendRefs[id] = nil
            unreferencedBackends.remove(id)
        case .upsertRevNat(let id, let entry):
            revNatIDs[entry] = id
            if revNatRefs[id] == nil { adjustRevNatRefs(id, by: 0) }
        case .deleteRevNat(let id):
            if let entry = state.revNats[id], revNatIDs[entry] == id { revNatIDs[entry] = nil }
            revNatRefs[id] = nil
            unreferencedRevNats.remove(id)
        case .upsertMeta, .deleteMeta, .addSourceRange, .deleteSourceRange, .upsertHealthCheck, .deleteHealthCheck:
            break
        }
        state.apply(op)
    }

    /// The master's range stops referencing its backends and goes into quarantine.
    private mutating func releaseSlots(of master: MasterEntry) {
        for index in master.slots {
            if let slot = state.slots[index] { adjustBackendRefs(slot.backendID, by: -1) }
        }
        slots.release(master.slots, now: clock())
    }

    private mutating func rebuildIndexes() {
        backendIDs = [:]; backendRefs = [:]; revNatIDs = [:]; revNatRefs = [:]
        unreferencedBackends = []; unreferencedRevNats = []; orphanMeta = []; orphanRanges = []
        for (id, backend) in state.backends.sorted(by: { $0.key < $1.key }) {
            backendRefs[id] = 0
            // Two ids for one address (never written by this reconciler): keep the lowest;
            // the other is referenced by nothing new and is collected once unreferenced.
            if backendIDs[backend] == nil { backendIDs[backend] = id }
        }
        for (id, entry) in state.revNats.sorted(by: { $0.key < $1.key }) {
            revNatRefs[id] = 0
            if revNatIDs[entry] == nil { revNatIDs[entry] = id }
        }
        for master in state.masters.values { revNatRefs[master.revNatID, default: 0] += 1 }
        for slot in state.slots.values { backendRefs[slot.backendID, default: 0] += 1 }
        unreferencedBackends = Set(backendRefs.filter { $0.value == 0 }.keys)
        unreferencedRevNats = Set(revNatRefs.filter { $0.value == 0 }.keys)
        orphanMeta = Set(state.meta.keys.filter { state.masters[$0] == nil })
        orphanRanges = state.sourceRanges.filter { (revNatRefs[$0.revNatID] ?? 0) == 0 }
        nextBackendID = (state.backends.keys.max() ?? 0) &+ 1
        nextRevNatID = (state.revNats.keys.max() ?? 0) &+ 1
    }

    private mutating func adjustBackendRefs(_ id: UInt32, by delta: Int) {
        let count = (backendRefs[id] ?? 0) + delta
        backendRefs[id] = count
        if count == 0 { unreferencedBackends.insert(id) } else { unreferencedBackends.remove(id) }
    }

    private mutating func adjustRevNatRefs(_ id: UInt32, by delta: Int) {
        let count = (revNatRefs[id] ?? 0) + delta
        revNatRefs[id] = count
        if count == 0 { unreferencedRevNats.insert(id) } else { unreferencedRevNats.remove(id) }
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
