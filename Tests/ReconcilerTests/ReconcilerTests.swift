import Reconciler
import ServiceModel
import XCTest

final class ReconcilerTests: XCTestCase {
    private func ip(_ text: String) -> IPAddress { IPAddress(sloppy: text)! }
    private func key(_ vip: String, _ port: UInt16 = 80, _ proto: TransportProtocol = .tcp) -> FrontendKey {
        FrontendKey(address: ip(vip), port: port, proto: proto)
    }
    private func backends(_ addresses: [String], port: UInt16 = 8080) -> [BackendAddress] {
        addresses.map { BackendAddress(address: ip($0), port: port, proto: .tcp) }
    }
    private func frontend(_ vip: String, _ addresses: [String], flags: ServiceFlags = []) -> DesiredFrontend {
        DesiredFrontend(key: key(vip), service: "default/web", kind: .clusterIP, flags: flags, backends: backends(addresses))
    }

    func testApplyingTheSameDesiredStateTwiceProducesNoOperations() {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        let desired = [frontend("198.19.0.1", ["198.18.0.11", "198.18.0.12"]), frontend("198.19.0.2", ["198.18.0.12"])]
        let first = reconciler.reconcile(desired, prune: true, maps: maps)
        XCTAssertGreaterThan(first.opCount, 0)
        XCTAssertEqual(reconciler.changes(to: desired, prune: true).count, 0)
        let second = reconciler.reconcile(desired, prune: true, maps: maps)
        XCTAssertEqual(second.opCount, 0)
        XCTAssertEqual(maps.state.referenced, reconciler.state)
    }

    func testANewBackendSetIsWrittenIntoAFreshSlotRangeBeforeTheMasterFlips() throws {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11", "198.18.0.12"])], prune: true, maps: maps)
        let oldMaster = try XCTUnwrap(maps.state.masters[key("198.19.0.1")])
        let changes = reconciler.changes(to: [frontend("198.19.0.1", ["198.18.0.13"])], prune: true)
        let ops = changes.flatMap(\.ops)
        let flip = try XCTUnwrap(ops.firstIndex { if case .upsertMaster = $0 { return true } else { return false } })
        // Every write the new set needs comes before the flip; every removal after.
        for (index, op) in ops.enumerated() {
            switch op {
            case .upsertBackend, .writeSlot, .upsertRevNat, .upsertMeta, .addSourceRange:
                XCTAssertLessThan(index, flip, "\(op)")
            case .deleteBackend, .deleteRevNat, .deleteMaster, .deleteMeta, .deleteSourceRange:
                XCTAssertGreaterThan(index, flip, "\(op)")
            case .upsertMaster, .upsertHealthCheck, .deleteHealthCheck: break
            }
            if case .writeSlot(let slot, _) = op { XCTAssertFalse(oldMaster.slots.contains(slot), "the old range is never overwritten") }
        }
        XCTAssertEqual(ops.filter { if case .upsertMaster = $0 { return true } else { return false } }.count, 1,
                       "one master update flips the whole set")
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.13"])], prune: true, maps: maps)
        XCTAssertEqual(maps.state.activeBackends(of: key("198.19.0.1")), backends(["198.18.0.13"]))
        XCTAssertEqual(maps.state.masters[key("198.19.0.1")]?.revision, oldMaster.revision &+ 1)
        XCTAssertEqual(maps.state.backends.count, 1, "unreferenced backends are gone")
    }

    func testAReleasedSlotRangeIsReusedOnlyAfterItsQuarantine() throws {
        let maps = InMemoryLoadBalancerMaps()
        let now = ManualClock()
        var reconciler = Reconciler(slotCapacity: 64, quarantineNanoseconds: 1_000, clock: now.read)
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11", "198.18.0.12"])], prune: true, maps: maps)
        let first = try XCTUnwrap(maps.state.masters[key("198.19.0.1")]).slots
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.13", "198.18.0.14"])], prune: true, maps: maps)
        let second = try XCTUnwrap(maps.state.masters[key("198.19.0.1")]).slots
        XCTAssertFalse(first.overlaps(second))
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11", "198.18.0.12"])], prune: true, maps: maps)
        let third = try XCTUnwrap(maps.state.masters[key("198.19.0.1")]).slots
        XCTAssertFalse(third.overlaps(first), "still quarantined: a reader may hold the first entry")
        now.advance(by: 1_000)
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.13", "198.18.0.14"])], prune: true, maps: maps)
        XCTAssertEqual(try XCTUnwrap(maps.state.masters[key("198.19.0.1")]).slots, first, "after the quarantine the range is free again")
    }

    func testAReaderSeesEitherTheOldOrTheNewSetAfterEveryOperation() {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        let old = ["198.18.0.11", "198.18.0.12"], new = ["198.18.0.12", "198.18.0.13", "198.18.0.14"]
        _ = reconciler.reconcile([frontend("198.19.0.1", old)], prune: true, maps: maps)
        var state = maps.state
        for op in reconciler.changes(to: [frontend("198.19.0.1", new)], prune: true).flatMap(\.ops) {
            state.apply(op)
            let seen = state.activeBackends(of: key("198.19.0.1"))
            XCTAssertTrue(seen == backends(old) || seen == backends(new), "after \(op): \(seen)")
        }
    }

    func testBackendIDsAreStableAndSharedAcrossFrontends() {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11"])], prune: true, maps: maps)
        let id = reconciler.backendID(for: backends(["198.18.0.11"])[0])
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11", "198.18.0.12"]),
                                  frontend("198.19.0.2", ["198.18.0.11"])], prune: true, maps: maps)
        XCTAssertEqual(reconciler.backendID(for: backends(["198.18.0.11"])[0]), id)
        XCTAssertEqual(maps.state.backends.count, 2)
    }

    func testAdoptingTheMapsKeepsIdsAndRewritesNothing() throws {
        let maps = InMemoryLoadBalancerMaps()
        var first = Reconciler()
        let desired = [frontend("198.19.0.1", ["198.18.0.11", "198.18.0.12"]), frontend("198.19.0.2", ["198.18.0.13"])]
        _ = first.reconcile(desired, prune: true, maps: maps)
        var adopted = Reconciler(adopting: try maps.readState())
        XCTAssertEqual(adopted.reconcile(desired, prune: true, maps: maps).opCount, 0)
        for backend in backends(["198.18.0.11", "198.18.0.12", "198.18.0.13"]) {
            XCTAssertEqual(adopted.backendID(for: backend), first.backendID(for: backend))
        }
    }

    func testNothingIsRemovedBeforeTheSourcesHaveSynced() {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11"])], prune: true, maps: maps)
        XCTAssertEqual(reconciler.reconcile([], prune: false, maps: maps).opCount, 0)
        XCTAssertEqual(maps.state.masters.count, 1)
        _ = reconciler.reconcile([], prune: true, maps: maps)
        XCTAssertEqual(maps.state, MapState(), "after sync, everything not desired is removed")
    }

    func testRemovalIsOneMasterDeleteThenGarbage() {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11", "198.18.0.12"])], prune: true, maps: maps)
        let ops = reconciler.changes(to: [], prune: true).flatMap(\.ops)
        XCTAssertEqual(ops.first, .deleteMaster(key("198.19.0.1")))
        XCTAssertEqual(Set(ops.dropFirst()), [.deleteMeta(key("198.19.0.1")), .deleteBackend(1), .deleteBackend(2), .deleteRevNat(1)])
    }

    func testAFullSlotArrayLeavesThatFrontendOnItsPreviousStateAndOthersProceed() {
        let maps = InMemoryLoadBalancerMaps()
        let now = ManualClock()
        // Slots 1..<9: 8 usable. web takes slot 1, api slots 2...5.
        var reconciler = Reconciler(slotCapacity: 9, quarantineNanoseconds: 10, clock: now.read)
        let api = frontend("198.19.0.3", (31...34).map { "198.18.0.\($0)" })
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11"]), api], prune: true, maps: maps)
        let before = maps.state.activeBackends(of: key("198.19.0.1"))
        let grown = frontend("198.19.0.1", (11...14).map { "198.18.0.\($0)" })
        let small = frontend("198.19.0.2", ["198.18.0.20"])
        // 4 slots wanted, only 6...8 free: web fails, the small newcomer still gets a slot.
        let report = reconciler.reconcile([grown, api, small], prune: true, maps: maps)
        XCTAssertEqual(report.failed.map { $0.change.key }, [key("198.19.0.1")])
        XCTAssertTrue(report.failed.first?.error.contains("slot array full") ?? false, "\(report.failed)")
        XCTAssertEqual(maps.state.activeBackends(of: key("198.19.0.1")), before, "the failed frontend still serves its old set")
        XCTAssertEqual(maps.state.activeBackends(of: key("198.19.0.2")), backends(["198.18.0.20"]))
        // api goes away; its range is free once its quarantine has passed, and the retry
        // then completes the change.
        XCTAssertEqual(reconciler.reconcile([grown, small], prune: true, maps: maps).failed.count, 1, "api's range is still quarantined")
        now.advance(by: 10)
        XCTAssertTrue(reconciler.reconcile([grown, small], prune: true, maps: maps).failed.isEmpty)
        XCTAssertEqual(maps.state.activeBackends(of: key("198.19.0.1")).count, 4)
        XCTAssertEqual(maps.state.referenced, reconciler.state)
    }

    func testAFullServiceMapLeavesOthersUntouchedAndRollsBackNewBackends() {
        let maps = InMemoryLoadBalancerMaps(serviceCapacity: 1)
        var reconciler = Reconciler()
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11"])], prune: true, maps: maps)
        let report = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11"]), frontend("198.19.0.2", ["198.18.0.12"])],
                                          prune: true, maps: maps)
        XCTAssertEqual(report.failed.map { $0.change.key }, [key("198.19.0.2")])
        XCTAssertEqual(Set(maps.state.backends.values), Set(backends(["198.18.0.11"])), "the failed frontend's new backend was removed again")
        XCTAssertEqual(maps.state.activeBackends(of: key("198.19.0.1")), backends(["198.18.0.11"]))
    }

    func testSlotsWrittenByACrashBeforeTheFlipAreSimplyFreeAfterAdoption() throws {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11"])], prune: true, maps: maps)
        // A crash between writing a new set and flipping the master leaves written slots
        // and a backend that nothing active uses.
        try maps.apply([
            .upsertBackend(99, backends(["198.18.0.99"])[0]),
            .writeSlot(40, SlotEntry(backendID: 99, backend: backends(["198.18.0.99"])[0])),
        ])
        var restarted = Reconciler(adopting: try maps.readState())
        XCTAssertEqual(restarted.slots.freeCount, Int(Reconciler.defaultSlotCapacity) - 2, "only slot 1 (in use) and slot 0 are taken")
        _ = restarted.reconcile([frontend("198.19.0.1", ["198.18.0.11"])], prune: true, maps: maps)
        XCTAssertNil(maps.state.backends[99], "the orphan backend is collected")
        XCTAssertEqual(restarted.reconcile([frontend("198.19.0.1", ["198.18.0.11"])], prune: true, maps: maps).opCount, 0)
    }

    func testOnlyLoadBalancerFrontendsWithSourceRangesAreFlaggedForTheFirewall() {
        let ranges = [CIDR(address: ip("203.0.113.0"), prefixLength: 24)!]
        func external(_ kind: FrontendKind, _ address: String?, _ port: UInt16, ranges: [CIDR] = []) -> Frontend {
            Frontend(service: "default/lb", portName: "p80", protocol: .tcp, kind: kind, address: address.map(ip),
                     family: .v4, port: port, action: .forward, backends: [Backend(address: ip("10.0.0.1"), port: 8080)],
                     sourceRanges: ranges)
        }
        let plan = LoadBalancerPlan(frontends: [
            external(.nodePort, nil, 30080), external(.externalIP, "192.0.2.1", 80),
            external(.loadBalancer, "198.51.100.1", 80, ranges: ranges), external(.loadBalancer, "198.51.100.2", 81),
        ], healthChecks: [])
        let flagged = DesiredFrontend.frontends(from: plan).frontends.filter { $0.flags.contains(.sourceRanges) }
        XCTAssertEqual(flagged.map(\.key), [key("198.51.100.1")], "the VIP with ranges, not its NodePort or externalIP")
        XCTAssertEqual(flagged.first?.sourceRanges, ranges)
    }

    func testAFlagOnlyChangeRewritesJustTheMaster() {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        _ = reconciler.reconcile([frontend("198.19.0.1", [])], prune: true, maps: maps)
        let ops = reconciler.changes(to: [frontend("198.19.0.1", [], flags: [.drop])], prune: true).flatMap(\.ops)
        XCTAssertEqual(ops.count, 1)
        guard case .upsertMaster(_, let master) = ops[0] else { return XCTFail("\(ops)") }
        XCTAssertEqual(master.flags, [.drop])
    }
}

/// A clock the test moves by hand.
/// Changes of many frontends written together, phase by phase (and, from
/// `Reconciler.concurrentApplyThreshold` frontends, on a second thread while the rest are
/// planned), as the kernel maps take them.
final class MergedApplyTests: XCTestCase {
    private func frontend(_ index: Int, _ backends: [UInt32], port: UInt16 = 8080) -> DesiredFrontend {
        DesiredFrontend(key: FrontendKey(address: IPAddress(v4: 0xC613_0000 | UInt32(index)), port: 80, proto: .tcp),
                        service: "default/web-\(index)", kind: .clusterIP, flags: [],
                        backends: backends.map { BackendAddress(address: IPAddress(v4: 0xC612_0000 | $0), port: port, proto: .tcp) })
    }

    /// What a reader of the maps relies on, checked before every single write: a frontend
    /// entry is written only once every slot of its range, their backends and its rev-NAT
    /// entry are in place; a slot of a range a frontend points at is never overwritten; a
    /// backend is deleted only when no frontend's range uses it.
    private func checkReaders(_ maps: InMemoryLoadBalancerMaps) -> () -> [String] {
        var violations: [String] = []
        maps.beforeEachOp = { state, op in
            switch op {
            case .upsertMaster(let key, let entry):
                if state.revNats[entry.revNatID] == nil { violations.append("\(key) before its rev-NAT entry") }
                for index in entry.slots {
                    guard let slot = state.slots[index] else { violations.append("\(key) before slot \(index)"); continue }
                    if state.backends[slot.backendID] == nil { violations.append("\(key) before backend \(slot.backendID)") }
                }
            case .writeSlot(let index, _):
                if let owner = state.masters.first(where: { $0.value.slots.contains(index) }) {
                    violations.append("slot \(index) of live \(owner.key) overwritten")
                }
            case .deleteBackend(let id):
                let live = state.masters.values.contains { master in master.slots.contains { state.slots[$0]?.backendID == id } }
                if live { violations.append("backend \(id) deleted while in use") }
            default: break
            }
        }
        return { violations }
    }

    func testManyFrontendsWrittenTogetherNeverExposeAHalfWrittenFrontend() {
        let maps = InMemoryLoadBalancerMaps()
        let violations = checkReaders(maps)
        var reconciler = Reconciler()
        let count = Reconciler.concurrentApplyThreshold + 100
        let first = (0..<count).map { frontend($0, [UInt32($0 % 50), UInt32($0 % 50 + 1)]) }
        let added = reconciler.reconcile(first, prune: true, maps: maps)
        XCTAssertTrue(added.failed.isEmpty, "\(added.failed)")
        XCTAssertEqual(added.applied.count, count)
        XCTAssertEqual(maps.state.masters.count, count)
        XCTAssertEqual(maps.state.referenced, reconciler.state)

        // A third flip to other backends, a third removed, the rest unchanged, and new ones.
        var second: [DesiredFrontend] = []
        for index in 0..<count where index % 3 != 1 {
            second.append(index % 3 == 0 ? frontend(index, [UInt32(100 + index % 70)]) : first[index])
        }
        second += (count..<(count + 300)).map { frontend($0, [7, 8, 9]) }
        let changed = reconciler.reconcile(second, prune: true, maps: maps)
        XCTAssertTrue(changed.failed.isEmpty, "\(changed.failed)")
        XCTAssertEqual(violations(), [])
        XCTAssertEqual(maps.state.referenced, reconciler.state)
        XCTAssertEqual(maps.state.masters.count, second.count)
        for desired in second.prefix(500) {
            XCTAssertEqual(maps.state.activeBackends(of: desired.key), desired.backends, "\(desired.key)")
        }
        XCTAssertEqual(reconciler.changes(to: second, prune: true).count, 0, "nothing left to do")
    }

    /// A failure inside a merged run: which change failed is not known from the run, so the
    /// reconciler reads the maps back and goes one change at a time; exactly the frontends
    /// that do not fit fail, every other one is served, nothing is left half-written.
    func testAFailureInsideAMergedRunFailsExactlyTheFrontendsThatDoNotFit() {
        let maps = InMemoryLoadBalancerMaps(serviceCapacity: 2_590)
        let violations = checkReaders(maps)
        var reconciler = Reconciler()
        let desired = (0..<2_600).map { frontend($0, [UInt32($0 % 40)], port: UInt16(1_000 + $0 % 7)) }
        let report = reconciler.reconcile(desired, prune: true, maps: maps)
        XCTAssertEqual(report.failed.count, 10)
        XCTAssertEqual(Set(report.failed.compactMap(\.change.key)), Set(desired.suffix(10).map(\.key)), "the last ones do not fit")
        XCTAssertEqual(maps.state.masters.count, 2_590)
        // Nothing left by the failed ones (their slots are simply free: no entry points there).
        XCTAssertEqual(Set(maps.state.backends.keys), Set(maps.state.referenced.slots.values.map(\.backendID)))
        XCTAssertEqual(Set(maps.state.meta.keys), Set(maps.state.masters.keys))
        XCTAssertEqual(Set(maps.state.revNats.keys), Set(maps.state.masters.values.map(\.revNatID)))
        XCTAssertEqual(maps.state.referenced, reconciler.state)
        XCTAssertEqual(violations(), [])
        // Room again: the retry programs them.
        maps.serviceCapacity = nil
        XCTAssertTrue(reconciler.reconcile(desired, prune: true, maps: maps).failed.isEmpty)
        XCTAssertEqual(maps.state.masters.count, 2_600)
    }

    /// Every frontend change lists its ops in phase order, so merging changes by phase
    /// keeps each change's own order.
    func testEveryFrontendChangeListsItsOpsInPhaseOrder() {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        var ranged = frontend(1, [1, 2])
        ranged.sourceRanges = [CIDR(sloppy: "203.0.113.0/24")!]
        _ = reconciler.reconcile([ranged, frontend(2, [3])], prune: true, maps: maps)
        var moved = frontend(1, [4])
        moved.sourceRanges = [CIDR(sloppy: "198.51.100.0/24")!]
        for change in reconciler.changes(to: [moved, frontend(3, [5])], prune: true) where change.key != nil {
            let phases = change.ops.map(\.phase)
            XCTAssertEqual(phases, phases.sorted(), "\(change)")
        }
    }
}

final class ManualClock: @unchecked Sendable {
    private var nanoseconds: UInt64 = 1_000_000

    func advance(by delta: UInt64) { nanoseconds += delta }

    var read: @Sendable () -> UInt64 { { [self] in nanoseconds } }
}

final class DesiredFrontendTests: XCTestCase {
    /// Backends and source ranges come out sorted and free of duplicates, whatever the input.
    func testBackendsAndRangesAreSortedAndUnique() {
        func backend(_ last: UInt32, _ port: UInt16) -> BackendAddress {
            BackendAddress(address: IPAddress(v4: 0x0A00_0000 | last), port: port, proto: .tcp)
        }
        let key = FrontendKey(address: IPAddress(v4: 0x0A60_0001), port: 80, proto: .tcp)
        let backends = [backend(3, 80), backend(1, 80), backend(3, 80), backend(2, 81), backend(1, 80), backend(2, 80)]
        let ranges = [CIDR(sloppy: "10.0.0.0/8")!, CIDR(sloppy: "192.0.2.0/24")!, CIDR(sloppy: "10.0.0.0/8")!]
        let frontend = DesiredFrontend(key: key, service: "ns/a", kind: .clusterIP, backends: backends, sourceRanges: ranges)
        XCTAssertEqual(frontend.backends, [backend(1, 80), backend(2, 80), backend(2, 81), backend(3, 80)])
        XCTAssertEqual(frontend.sourceRanges, [CIDR(sloppy: "10.0.0.0/8")!, CIDR(sloppy: "192.0.2.0/24")!])
        XCTAssertEqual(DesiredFrontend(key: key, service: "ns/a", kind: .clusterIP, backends: []).backends, [])
        XCTAssertEqual(DesiredFrontend(key: key, service: "ns/a", kind: .clusterIP, backends: [backend(1, 80)]).backends,
                       [backend(1, 80)])
    }
}

final class SlotAllocatorTests: XCTestCase {
    /// Claims anywhere (inside gaps, across several, on taken slots) and first-fit
    /// allocations against a plain set of free slots.
    func testClaimsAndAllocationsMatchASetOfFreeSlots() {
        var allocator = SlotAllocator(capacity: 300, inUse: [10..<20, 40..<41, 100..<180])
        var free = Set<UInt32>(1..<300).subtracting(Array(10..<20) + [40] + Array(100..<180))
        var state: UInt64 = 42
        func next(_ bound: UInt32) -> UInt32 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt32(truncatingIfNeeded: state >> 33) % bound
        }
        for round in 0..<400 {
            if round % 2 == 0 {
                let start = 1 + next(295), length = 1 + next(min(12, 300 - start))
                allocator.claim(start..<(start + length))
                free.subtract(start..<(start + length))
            } else {
                let count = Int(1 + next(6))
                // First fit over coalesced gaps is the lowest start with `count` free slots
                // in a row.
                let firstFit = (UInt32(1)..<300).first { (start: UInt32) -> Bool in
                    let end = start + UInt32(count)
                    return end <= 300 && (start..<end).allSatisfy { free.contains($0) }
                }
                let range = allocator.allocate(count, now: 0)
                XCTAssertEqual(range?.lowerBound, firstFit, "round \(round)")
                if let range { free.subtract(range) }
            }
            XCTAssertEqual(allocator.freeCount, free.count, "round \(round)")
        }
    }
}
