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
        XCTAssertEqual(maps.state, reconciler.state)
    }

    func testANewBackendSetIsWrittenUnderANewRevisionBeforeTheMasterFlips() throws {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11", "198.18.0.12"])], prune: true, maps: maps)
        let oldMaster = try XCTUnwrap(maps.state.masters[key("198.19.0.1")])
        let changes = reconciler.changes(to: [frontend("198.19.0.1", ["198.18.0.13"])], prune: true)
        let ops = changes.flatMap(\.ops)
        let flip = try XCTUnwrap(ops.firstIndex { if case .upsertMaster = $0 { return true } else { return false } })
        // Every write the new revision needs comes before the flip; every removal after.
        for (index, op) in ops.enumerated() {
            switch op {
            case .upsertBackend, .upsertSlot, .upsertRevNat: XCTAssertLessThan(index, flip, "\(op)")
            case .deleteSlot, .deleteBackend, .deleteRevNat, .deleteMaster: XCTAssertGreaterThan(index, flip, "\(op)")
            case .upsertMaster: break
            }
            if case .upsertSlot(let slot, _) = op { XCTAssertNotEqual(slot.revision, oldMaster.revision) }
        }
        XCTAssertEqual(ops.filter { if case .upsertMaster = $0 { return true } else { return false } }.count, 1,
                       "one master update flips the whole set")
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.13"])], prune: true, maps: maps)
        XCTAssertEqual(maps.state.activeBackends(of: key("198.19.0.1")), backends(["198.18.0.13"]))
        XCTAssertEqual(maps.state.slots.count, 1, "the old revision's slots are gone")
        XCTAssertEqual(maps.state.backends.count, 1, "unreferenced backends are gone")
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

    func testRemovalDeletesTheMasterFirst() {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11", "198.18.0.12"])], prune: true, maps: maps)
        let ops = reconciler.changes(to: [], prune: true).flatMap(\.ops)
        XCTAssertEqual(ops.first, .deleteMaster(key("198.19.0.1")))
    }

    func testAFullMapLeavesThatFrontendOnItsPreviousStateAndOthersProceed() {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11"])], prune: true, maps: maps)
        let before = maps.state.activeBackends(of: key("198.19.0.1"))
        // Room for 3 more entries: the growing service (4 new slots) cannot fit, the small
        // new one (master + 1 slot) can.
        maps.serviceCapacity = maps.state.masters.count + maps.state.slots.count + 3
        let report = reconciler.reconcile([
            frontend("198.19.0.1", ["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.14"]),
            frontend("198.19.0.2", ["198.18.0.15"]),
        ], prune: true, maps: maps)
        XCTAssertEqual(report.failed.map { $0.change.key }, [key("198.19.0.1")])
        XCTAssertEqual(maps.state.activeBackends(of: key("198.19.0.1")), before, "the failed frontend still serves its old set")
        XCTAssertEqual(maps.state.activeBackends(of: key("198.19.0.2")), backends(["198.18.0.15"]))
        // When space returns, the next reconcile completes the change and clears leftovers.
        maps.serviceCapacity = nil
        _ = reconciler.reconcile([
            frontend("198.19.0.1", ["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.14"]),
            frontend("198.19.0.2", ["198.18.0.15"]),
        ], prune: true, maps: maps)
        XCTAssertEqual(maps.state.activeBackends(of: key("198.19.0.1")).count, 4)
        XCTAssertEqual(maps.state.slots.count, 5, "no stray slot survives")
        XCTAssertEqual(maps.state, reconciler.state)
    }

    func testStraySlotsLeftByACrashAreCollected() throws {
        let maps = InMemoryLoadBalancerMaps()
        var reconciler = Reconciler()
        _ = reconciler.reconcile([frontend("198.19.0.1", ["198.18.0.11"])], prune: true, maps: maps)
        // A crash between writing a new revision and flipping the master leaves slots of
        // revision 2 and a backend nothing active uses.
        try maps.apply([
            .upsertBackend(99, backends(["198.18.0.99"])[0]),
            .upsertSlot(SlotKey(frontend: key("198.19.0.1"), revision: 2, slot: 1), SlotEntry(backendID: 99, revNatID: 1, backend: backends(["198.18.0.99"])[0])),
        ])
        var restarted = Reconciler(adopting: try maps.readState())
        _ = restarted.reconcile([frontend("198.19.0.1", ["198.18.0.11"])], prune: true, maps: maps)
        XCTAssertEqual(maps.state.slots.count, 1)
        XCTAssertNil(maps.state.backends[99])
        XCTAssertEqual(restarted.reconcile([frontend("198.19.0.1", ["198.18.0.11"])], prune: true, maps: maps).opCount, 0)
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
