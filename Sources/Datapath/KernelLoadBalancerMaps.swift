import CLibBPF
import Glibc
import Reconciler

/// The pinned load-balancer maps as a `LoadBalancerMaps`: what the reconciler writes
/// lands in the kernel, in the order given.
public final class KernelLoadBalancerMaps: LoadBalancerMaps, @unchecked Sendable {
    public let services: BPFMap<sl_service_key, sl_service_value>
    public let slots: BPFMap<UInt32, sl_backend_slot>
    public let backends: BPFMap<UInt32, sl_backend>
    public let revNats: BPFMap<UInt32, sl_revnat>
    public let sockRevNats: BPFMap<sl_sock_revnat_key, sl_sock_revnat_value>
    public let counters: BPFMap<UInt32, UInt64>
    public let affinity: BPFMap<sl_affinity_key, sl_affinity_value>
    public let meta: BPFMap<sl_service_key, sl_frontend_meta>
    public let sourceRanges: BPFMap<sl_source_range_key, UInt8>
    public let healthChecks: BPFMap<UInt32, sl_health_check>

    /// Opens the maps pinned under `pinPath` (no program is loaded).
    public init(pinPath: String) throws {
        func path(_ name: String) -> String { pinPath + "/" + name }
        services = try BPFMap(pinnedAt: path(SL_MAP_NAME_SERVICES), name: SL_MAP_NAME_SERVICES)
        slots = try BPFMap(pinnedAt: path(SL_MAP_NAME_SLOTS), name: SL_MAP_NAME_SLOTS)
        backends = try BPFMap(pinnedAt: path(SL_MAP_NAME_BACKENDS), name: SL_MAP_NAME_BACKENDS)
        revNats = try BPFMap(pinnedAt: path(SL_MAP_NAME_REVNAT), name: SL_MAP_NAME_REVNAT)
        sockRevNats = try BPFMap(pinnedAt: path(SL_MAP_NAME_SOCK_REVNAT), name: SL_MAP_NAME_SOCK_REVNAT)
        counters = try BPFMap(pinnedAt: path(SL_MAP_NAME_COUNTERS), name: SL_MAP_NAME_COUNTERS)
        affinity = try BPFMap(pinnedAt: path(SL_MAP_NAME_AFFINITY), name: SL_MAP_NAME_AFFINITY)
        meta = try BPFMap(pinnedAt: path(SL_MAP_NAME_FRONTEND_META), name: SL_MAP_NAME_FRONTEND_META)
        sourceRanges = try BPFMap(pinnedAt: path(SL_MAP_NAME_SOURCE_RANGES), name: SL_MAP_NAME_SOURCE_RANGES)
        healthChecks = try BPFMap(pinnedAt: path(SL_MAP_NAME_HEALTH_CHECKS), name: SL_MAP_NAME_HEALTH_CHECKS)
    }

    public var slotCapacity: UInt32 { slots.info.max_entries }

    /// bpf() calls made so far by `apply` (for the benchmarks: writes per change).
    public private(set) var syscalls = 0
    /// Whether this kernel takes batched updates; found out on first use.
    private var batchUpdates = true

    public func apply(_ ops: [MapOp]) throws {
        var index = 0
        while index < ops.count {
            // A run of writes to one map (a new backend set's slots, new backends; and when
            // changes are applied together, every revNat, metadata, frontend entry or
            // deletion of a phase) goes in one bpf() call.
            if batchUpdates, let end = try applyRun(ops, from: index) {
                index = end
                continue
            }
            do {
                syscalls += 1
                try apply(ops[index])
            } catch {
                throw MapApplyError(appliedCount: index, op: ops[index], underlying: error)
            }
            index += 1
        }
    }

    /// Changes of different frontends in one go, phase by phase (see `MapOp.phase`): every
    /// change's rev-NAT, metadata, backends and slots before any of their frontend entries,
    /// so each frontend still flips only once all it points at is written, and each phase
    /// is a few batched calls instead of a few calls per frontend.
    public func applyTogether(_ changes: [[MapOp]]) throws {
        for ops in MapOp.byPhase(changes) { try apply(ops) }
    }

    /// Writes the run of ops from `start` that go to one map in one batched call; returns
    /// where the run ends, or nil when there is no run of two or more, the op has no
    /// batched form (the LPM trie of source ranges, health checks), or the kernel has no
    /// batched map operations (then `batchUpdates` is cleared, nothing written).
    private func applyRun(_ ops: [MapOp], from start: Int) throws -> Int? {
        switch ops[start] {
        case .writeSlot:
            return try applyBatch(ops, from: start, of: slots) { op in
                if case .writeSlot(let slot, let entry) = op { (slot, sl_backend_slot(entry)) } else { nil }
            }
        case .upsertBackend:
            return try applyBatch(ops, from: start, of: backends) { op in
                if case .upsertBackend(let id, let backend) = op { (id, sl_backend(backend)) } else { nil }
            }
        case .upsertRevNat:
            return try applyBatch(ops, from: start, of: revNats) { op in
                if case .upsertRevNat(let id, let entry) = op { (id, sl_revnat(entry)) } else { nil }
            }
        case .upsertMeta:
            return try applyBatch(ops, from: start, of: meta) { op in
                if case .upsertMeta(let key, let entry) = op { (sl_service_key(key), sl_frontend_meta(entry)) } else { nil }
            }
        case .upsertMaster:
            return try applyBatch(ops, from: start, of: services) { op in
                if case .upsertMaster(let key, let entry) = op { (sl_service_key(key), sl_service_value(entry)) } else { nil }
            }
        case .deleteMaster:
            return try deleteBatch(ops, from: start, of: services) { op in
                if case .deleteMaster(let key) = op { sl_service_key(key) } else { nil }
            }
        case .deleteMeta:
            return try deleteBatch(ops, from: start, of: meta) { op in
                if case .deleteMeta(let key) = op { sl_service_key(key) } else { nil }
            }
        case .deleteBackend:
            return try deleteBatch(ops, from: start, of: backends) { op in
                if case .deleteBackend(let id) = op { id } else { nil }
            }
        case .deleteRevNat:
            return try deleteBatch(ops, from: start, of: revNats) { op in
                if case .deleteRevNat(let id) = op { id } else { nil }
            }
        case .addSourceRange, .deleteSourceRange, .upsertHealthCheck, .deleteHealthCheck:
            return nil
        }
    }

    private func applyBatch<Key, Value>(_ ops: [MapOp], from start: Int, of map: BPFMap<Key, Value>,
                                        _ entry: (MapOp) -> (Key, Value)?) throws -> Int? {
        guard start + 1 < ops.count, entry(ops[start + 1]) != nil else { return nil }  // no run
        var keys: [Key] = [], values: [Value] = []
        var end = start
        while end < ops.count, let (key, value) = entry(ops[end]) {
            keys.append(key)
            values.append(value)
            end += 1
        }
        guard keys.count > 1 else { return nil }
        syscalls += 1
        do {
            try map.updateBatch(keys, values)
            return end
        } catch let failure as BPFMap<Key, Value>.BatchError {
            return try batchFailed(failure, ops, from: start)
        }
    }

    private func deleteBatch<Key, Value>(_ ops: [MapOp], from start: Int, of map: BPFMap<Key, Value>,
                                         _ key: (MapOp) -> Key?) throws -> Int? {
        guard start + 1 < ops.count, key(ops[start + 1]) != nil else { return nil }  // no run
        var keys: [Key] = []
        var end = start
        while end < ops.count, let key = key(ops[end]) {
            keys.append(key)
            end += 1
        }
        guard keys.count > 1 else { return nil }
        syscalls += 1
        do {
            try map.deleteBatch(keys)
            return end
        } catch let failure as BPFMap<Key, Value>.BatchError {
            return try batchFailed(failure, ops, from: start)
        }
    }

    /// nil (write one by one from now on) for a kernel without batched operations, which
    /// refuses before writing anything; otherwise the failure, at the op it stopped at.
    private func batchFailed<Key, Value>(_ failure: BPFMap<Key, Value>.BatchError, _ ops: [MapOp], from start: Int) throws -> Int? {
        if failure.written == 0, failure.error.errno == EINVAL || failure.error.errno == ENOTSUP {
            batchUpdates = false
            return nil
        }
        throw MapApplyError(appliedCount: start + failure.written, op: ops[start + failure.written], underlying: failure.error)
    }

    private func apply(_ op: MapOp) throws {
        switch op {
        case .upsertBackend(let id, let backend): try backends.update(id, sl_backend(backend))
        case .deleteBackend(let id): try backends.delete(id)
        case .upsertRevNat(let id, let entry): try revNats.update(id, sl_revnat(entry))
        case .deleteRevNat(let id): try revNats.delete(id)
        case .writeSlot(let index, let entry): try slots.update(index, sl_backend_slot(entry))
        case .upsertMaster(let key, let entry): try services.update(sl_service_key(key), sl_service_value(entry))
        case .deleteMaster(let key): try services.delete(sl_service_key(key))
        case .upsertMeta(let key, let entry): try meta.update(sl_service_key(key), sl_frontend_meta(entry))
        case .deleteMeta(let key): try meta.delete(sl_service_key(key))
        case .addSourceRange(let range): try sourceRanges.update(sl_source_range_key(range), 1)
        case .deleteSourceRange(let range): try sourceRanges.delete(sl_source_range_key(range))
        case .upsertHealthCheck(let port, let entry): try healthChecks.update(UInt32(port), sl_health_check(entry))
        case .deleteHealthCheck(let port): try healthChecks.delete(UInt32(port))
        }
    }

    /// Reads every map back: each frontend and the slots of its active range. Entries that
    /// do not decode (foreign writes, corruption) are left out, so the reconciler rewrites
    /// what it needs and never trusts them.
    public func readState() throws -> MapState {
        var state = MapState()
        for (key, value) in services.entries() {
            guard let frontend = key.frontendKey, let master = value.masterEntry else { continue }
            state.masters[frontend] = master
            for index in master.slots {
                if let slot = slots.lookup(index)?.slotEntry { state.slots[index] = slot }
            }
        }
        for (id, value) in backends.entries() {
            if let backend = value.backendAddress { state.backends[id] = backend }
        }
        for (id, value) in revNats.entries() {
            if let entry = value.revNatEntry { state.revNats[id] = entry }
        }
        for (key, value) in meta.entries() {
            if let frontend = key.frontendKey { state.meta[frontend] = value.frontendMeta }
        }
        for key in sourceRanges.keys() {
            if let range = key.sourceRange { state.sourceRanges.insert(range) }
        }
        for (port, value) in healthChecks.entries() where port <= UInt32(UInt16.max) {
            state.healthChecks[UInt16(port)] = value.healthCheckEntry
        }
        return state
    }

    /// The per-CPU outcome counters summed across CPUs, by reason name.
    public func outcomeCounters() -> [String: UInt64] {
        var result: [String: UInt64] = [:]
        for (index, name) in OutcomeReason.names.enumerated() {
            result[name] = counters.perCPUSum(UInt32(index))
        }
        return result
    }
}
