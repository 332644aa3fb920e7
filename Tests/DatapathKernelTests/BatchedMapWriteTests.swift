import Datapath
import Foundation
import Glibc
import NetLab
import Reconciler
import ServiceModel
import XCTest

/// The kernel maps written the way a large sync writes them: frontend changes merged phase
/// by phase into batched bpf() calls (BPF_MAP_UPDATE_BATCH / BPF_MAP_DELETE_BATCH), on the
/// writer thread while the rest is planned. What the maps hold afterwards is exactly the
/// reconciler's picture, and a batched delete skips a key that is already gone.
final class BatchedMapWriteTests: XCTestCase {
    private var pinPath = ""
    private var cgroup: Cgroup2?
    private var datapath: SocketLoadBalancer!

    override func setUpWithError() throws {
        try requireKernelBPF()
        pinPath = uniquePinPath("batch")
        cgroup = try Cgroup2.create(name: "swiftlane-batch-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        datapath = try SocketLoadBalancer.install(DatapathOptions(pinPath: pinPath, cgroupPath: cgroup!.path), logger: testLogger)
    }

    override func tearDown() {
        datapath = nil
        SocketLoadBalancer.uninstall(pinPath: pinPath)
        try? cgroup?.destroy()
    }

    private func frontend(_ index: Int, backends: Int) -> DesiredFrontend {
        DesiredFrontend(
            key: FrontendKey(address: IPAddress(v4: 0xC613_0000 | UInt32(index)), port: 80, proto: index % 2 == 0 ? .tcp : .udp),
            service: "ns-\(index % 7)/svc-\(index)", kind: .clusterIP, flags: [],
            backends: (0..<backends).map {
                BackendAddress(address: IPAddress(v4: 0x0A01_0000 | UInt32(index * 4 + $0)), port: 8080, proto: index % 2 == 0 ? .tcp : .udp)
            })
    }

    func testMergedRunsLandInTheKernelMapsExactlyAsPlanned() throws {
        let maps = datapath.maps
        var reconciler = Reconciler(adopting: try maps.readState(), slotCapacity: maps.slotCapacity)
        let count = Reconciler.concurrentApplyThreshold + 500
        let desired = (0..<count).map { frontend($0, backends: 1 + $0 % 4) }
        let before = maps.syscalls
        let added = reconciler.reconcile(desired, prune: true, maps: maps)
        XCTAssertTrue(added.failed.isEmpty, "\(added.failed.prefix(3))")
        let writes = added.opCount
        XCTAssertGreaterThan(writes, count * 5)
        // Five phases (rev-NAT, metadata, backends, slots, frontends) per run of 1,024.
        XCTAssertLessThanOrEqual(maps.syscalls - before, 5 * ((count + 1_023) / 1_024), "\(writes) writes")
        XCTAssertEqual(try maps.readState(), reconciler.state)

        // A third flipped to new backends, a third removed: merged removals and upserts.
        var next: [DesiredFrontend] = []
        for index in 0..<count where index % 3 != 1 {
            next.append(index % 3 == 0 ? frontend(index + 100_000, backends: 2).withKey(desired[index].key) : desired[index])
        }
        let changed = reconciler.reconcile(next, prune: true, maps: maps)
        XCTAssertTrue(changed.failed.isEmpty, "\(changed.failed.prefix(3))")
        let state = try maps.readState()
        XCTAssertEqual(state, reconciler.state)
        for frontend in next {
            XCTAssertEqual(state.activeBackends(of: frontend.key), frontend.backends, "\(frontend.key)")
        }
        XCTAssertEqual(state.masters.count, next.count)
    }

    func testABatchedDeleteSkipsKeysThatAreAlreadyGone() throws {
        let maps = datapath.maps
        var reconciler = Reconciler(adopting: try maps.readState(), slotCapacity: maps.slotCapacity)
        XCTAssertTrue(reconciler.reconcile((0..<40).map { frontend($0, backends: 3) }, prune: true, maps: maps).failed.isEmpty)
        let ids = try maps.readState().backends.keys.sorted()
        XCTAssertEqual(ids.count, 120)
        // Behind the reconciler's back: some of what it will delete is gone already.
        try maps.apply([.deleteBackend(ids[0]), .deleteBackend(999_999), .deleteBackend(ids[1]), .deleteBackend(ids[2])])
        XCTAssertNil(maps.backends.lookup(ids[0]))
        XCTAssertNil(maps.backends.lookup(ids[2]))
        XCTAssertNotNil(maps.backends.lookup(ids[3]))
        // Removing everything deletes those ids again, in batches: no error, nothing left.
        let emptied = reconciler.reconcile([], prune: true, maps: maps)
        XCTAssertTrue(emptied.failed.isEmpty, "\(emptied.failed)")
        let state = try maps.readState()
        XCTAssertEqual(state.masters.count + state.backends.count + state.revNats.count + state.meta.count, 0)
    }
}

private extension DesiredFrontend {
    /// The same backends served on another frontend key.
    func withKey(_ key: FrontendKey) -> DesiredFrontend {
        DesiredFrontend(key: key, service: service, kind: kind, flags: flags, backends: backends)
    }
}
