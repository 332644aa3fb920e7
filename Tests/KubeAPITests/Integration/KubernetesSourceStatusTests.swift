import Controller
import Foundation
import KubeAPI
import ServiceModel
import XCTest

/// What the Kubernetes source shows to health and metrics, against the fake API server:
/// synced informers, restarts and relists after a 410, the own Node, arriving changes.
final class KubernetesSourceStatusTests: XCTestCase {
    private var server: FakeAPIServer!
    private var client: KubeClient?
    private var task: Task<Void, Error>?

    override func tearDown() async throws {
        task?.cancel()
        _ = await task?.result
        client?.shutdown()
        server?.stop()
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0
        func increment() { lock.withLock { count += 1 } }
        var value: Int { lock.withLock { count } }
    }

    private func eventually(_ what: String, _ condition: () -> Bool) async throws {
        let deadline = Date().addingTimeInterval(30)
        while !condition() {
            guard Date() < deadline else { throw TestTimeout(what: what) }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    func testTheStatusShowsSyncedInformersTheirRestartsAndTheNode() async throws {
        server = try FakeAPIServer()
        try server.upsert("services", TestObjects.service("web"))
        try server.upsert("endpointslices", TestObjects.slice("web-1", service: "web", addresses: ["10.0.0.1"]))
        try server.upsert("nodes", TestObjects.node("node-a", zone: "zone-a"))
        let changes = Counter()
        let status = KubernetesSourceStatus { changes.increment() }
        XCTAssertEqual(status.resources, [], "nothing before a Kubernetes source runs")
        XCTAssertFalse(status.allSynced)

        let client = try KubeClient(configuration: try server.clientConfiguration(), limits: .init(qps: 1000, burst: 1000),
                                    logger: testLogger)
        self.client = client
        let service = KubernetesSyncService(
            client: client, nodeName: "node-a", serviceProxyName: nil, minimumSyncInterval: .milliseconds(10),
            informerOptions: InformerHarness<Service>.options(), status: status, logger: testLogger) { _, _, _ in }
        task = Task { try await service.run() }

        try await eventually("every informer synced") { status.allSynced }
        XCTAssertEqual(status.resources.map(\.name), ["services", "endpointslices", "node"])
        XCTAssertEqual(status.node?.metadata.labels["topology.kubernetes.io/zone"], "zone-a")
        XCTAssertGreaterThanOrEqual(changes.value, 3, "the initial objects arrived as changes")
        XCTAssertEqual(status.resources.map(\.statistics.relists), [0, 0, 0])

        try server.waitForWatchers("services")
        let before = changes.value
        try server.upsert("services", TestObjects.service("api", clusterIP: "10.96.0.20"))
        try await eventually("the new Service to be reported as a change") { changes.value > before }

        try server.command("watch_error", ["resource": "services", "code": 410, "reason": "Expired"])
        try await eventually("a relist of services") { status.resources[0].statistics.relists == 1 }
        try server.waitForWatchers("services")
        try await eventually("the watch restarted") { status.resources[0].statistics.watchRestarts >= 1 }
        XCTAssertEqual(status.resources[1].statistics.relists, 0, "the slices' informer went on watching")

        // A stopped source keeps its counts (a reload replaces the source).
        task?.cancel()
        _ = await task?.result
        task = nil
        XCTAssertEqual(status.resources[0].statistics.relists, 1)
        XCTAssertFalse(status.resources[0].synced, "no informer runs any more")
        XCTAssertNil(status.node)
    }
}
