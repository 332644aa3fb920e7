import Controller
import Foundation
import KubeAPI
import ServiceModel
import XCTest

/// The controller's Kubernetes source against the fake API server, with the datapath
/// replaced by a recorder of what it would have programmed.
final class KubernetesSyncServiceTests: XCTestCase {
    private var server: FakeAPIServer!
    private var client: KubeClient?
    private var task: Task<Void, Error>?
    private let applied = AppliedLog()

    override func tearDown() async throws {
        task?.cancel()
        _ = await task?.result
        client?.shutdown()
        server?.stop()
    }

    /// Snapshots handed to the syncer, with their prune flag.
    final class AppliedLog: @unchecked Sendable {
        private let lock = NSLock()
        private var entries: [(objects: ManifestObjects, prune: Bool, observedAt: ContinuousClock.Instant?)] = []

        func record(_ objects: ManifestObjects, _ prune: Bool, _ observedAt: ContinuousClock.Instant?) {
            lock.withLock { entries.append((objects, prune, observedAt)) }
        }
        var all: [(objects: ManifestObjects, prune: Bool, observedAt: ContinuousClock.Instant?)] { lock.withLock { entries } }

        func wait(for what: String, _ condition: (ManifestObjects) -> Bool) async throws {
            let deadline = Date().addingTimeInterval(30)
            while !(all.last.map { condition($0.objects) } ?? false) {
                guard Date() < deadline else { throw TestTimeout(what: what) }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
    }

    private func startService(nodeName: String = "node-a", retryPending: @escaping @Sendable () -> Bool = { false }) throws {
        let client = try KubeClient(configuration: try server.clientConfiguration(), limits: .init(qps: 1000, burst: 1000),
                                    logger: testLogger)
        self.client = client
        let applied = self.applied
        let service = KubernetesSyncService(
            client: client, nodeName: nodeName, serviceProxyName: nil, minimumSyncInterval: .milliseconds(100),
            informerOptions: InformerHarness<Service>.options(), logger: testLogger, retryPending: retryPending
        ) { applied.record($0, $1, $2) }
        task = Task { try await service.run() }
    }

    private func names(_ objects: ManifestObjects) -> [String] {
        objects.services.map(\.metadata.name) + objects.endpointSlices.map(\.metadata.name)
    }

    func testNothingIsProgrammedBeforeBothServicesAndSlicesAreSynced() async throws {
        server = try FakeAPIServer()
        for name in ["a", "b"] {
            try server.upsert("services", TestObjects.service(name))
            try server.upsert("endpointslices", TestObjects.slice(name + "-1", service: name, addresses: ["10.0.0.1"]))
        }
        try server.upsert("nodes", TestObjects.node("node-a", zone: "zone-a"))
        try server.fault(["resource": "endpointslices", "verb": "list", "status": 500, "count": 4])
        try startService()
        try await applied.wait(for: "a first sync") { !$0.services.isEmpty }
        let first = try XCTUnwrap(applied.all.first)
        XCTAssertEqual(names(first.objects), ["a", "b", "a-1", "b-1"],
                       "the first sync waited for the slices although the services came first")
        XCTAssertEqual(try server.requests().filter { $0.path.hasSuffix("endpointslices") && $0.status == 500 }.count, 4)
        try await applied.wait(for: "a pruning sync with the node") { $0.nodes.count == 1 }
        XCTAssertEqual(applied.all.last?.prune, true, "stale frontends are pruned once every informer synced")
        XCTAssertEqual(applied.all.last?.objects.nodes.first?.metadata.labels["topology.kubernetes.io/zone"], "zone-a")
        XCTAssertTrue(applied.all.allSatisfy { $0.observedAt != nil },
                      "every sync carries when its change was observed (network programming latency)")
    }

    /// A sync that left frontends on their previous state (a full map) is retried after a
    /// backoff although the cluster does not change, until nothing is left to retry.
    func testASyncThatLeftFrontendsBehindIsRetriedWithoutAChange() async throws {
        server = try FakeAPIServer()
        try server.upsert("services", TestObjects.service("a"))
        try server.upsert("endpointslices", TestObjects.slice("a-1", service: "a", addresses: ["10.0.0.1"]))
        // Retries carry no observed change (the latency figure is for changes only). The
        // syncer says frontends are pending until two retries have happened.
        let applied = self.applied
        @Sendable func retries() -> Int { applied.all.filter { $0.observedAt == nil }.count }
        try startService(retryPending: { retries() < 2 })
        try await applied.wait(for: "the first sync") { !$0.services.isEmpty }
        let deadline = Date().addingTimeInterval(30)
        while retries() < 2 && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        XCTAssertEqual(retries(), 2, "two retries although nothing changed on the server")
        try await Task.sleep(for: .milliseconds(2500))
        XCTAssertEqual(retries(), 2, "no retry once nothing is pending")
    }

    func testABurstOfChangesIsCoalesced() async throws {
        server = try FakeAPIServer()
        try startService()
        try await applied.wait(for: "the initial (empty) sync") { _ in true }
        try server.waitForWatchers("services")
        let before = applied.all.count
        for index in 0..<60 {
            try server.upsert("services", TestObjects.service("s\(index)", clusterIP: "10.96.1.\(index)"))
        }
        try await applied.wait(for: "all 60 services") { $0.services.count == 60 }
        let syncs = applied.all.count - before
        XCTAssertLessThan(syncs, 30, "60 changes became \(syncs) syncs")
        XCTAssertGreaterThanOrEqual(syncs, 1)
    }

    func testARelistNeverDropsAServiceThatStillExists() async throws {
        server = try FakeAPIServer()
        for name in ["keep", "gone"] {
            try server.upsert("services", TestObjects.service(name))
            try server.upsert("endpointslices", TestObjects.slice(name + "-1", service: name, addresses: ["10.0.0.1"]))
        }
        try startService()
        try await applied.wait(for: "the initial sync") { $0.services.count == 2 }
        try server.waitForWatchers("services")
        try server.delete("services", key: "default/gone", silently: true)
        try server.command("watch_error", ["resource": "services", "code": 410, "reason": "Expired"])
        try await applied.wait(for: "the relisted state") { $0.services.map(\.metadata.name) == ["keep"] }
        for entry in applied.all {
            XCTAssertTrue(entry.objects.services.contains { $0.metadata.name == "keep" }, "a sync without `keep`")
        }
    }

    func testANodeZoneChangeIsSynced() async throws {
        server = try FakeAPIServer()
        try server.upsert("nodes", TestObjects.node("node-a", zone: "zone-a"))
        try startService()
        try await applied.wait(for: "the node") { $0.nodes.count == 1 }
        try server.waitForWatchers("nodes")
        try server.upsert("nodes", TestObjects.node("node-a", zone: "zone-b"))
        try await applied.wait(for: "the new zone") {
            $0.nodes.first?.metadata.labels["topology.kubernetes.io/zone"] == "zone-b"
        }
    }
}
