import Foundation
import KubeAPI
import Logging
import ServiceModel
import XCTest

/// Everything an informer reported, in order.
final class EventLog<Object: KubeObject>: @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [InformerEvent<Object>] = []

    func record(_ event: InformerEvent<Object>) {
        lock.withLock { recorded.append(event) }
    }

    var events: [InformerEvent<Object>] { lock.withLock { recorded } }

    /// Names of deleted objects, in order.
    var deletions: [String] {
        events.compactMap { if case .deleted(let object) = $0 { return object.metadata.name } else { return nil } }
    }

    var syncedCount: Int {
        events.filter { if case .synced = $0 { return true } else { return false } }.count
    }

    /// Polls until `condition` holds (a liveness limit, not a timing assertion).
    func wait(for what: String, limit: TimeInterval = 30, _ condition: ([InformerEvent<Object>]) -> Bool) async throws {
        let deadline = Date().addingTimeInterval(limit)
        while !condition(events) {
            guard Date() < deadline else { throw TestTimeout(what: what) }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// A client and an informer on a fake server, running until `stop()`.
final class InformerHarness<Object: KubeObject>: @unchecked Sendable {
    let client: KubeClient
    let informer: Informer<Object>
    let log = EventLog<Object>()
    private var task: Task<Void, Never>?

    /// Options with a fast backoff (so retries do not slow the tests) and no streaming list.
    static func options(pageSize: Int? = 500, streaming: Bool = false) -> InformerOptions {
        var options = InformerOptions()
        options.lifecycle.pageSize = pageSize
        options.lifecycle.streamingList = streaming
        options.lifecycle.backoff = Backoff.Policy(initial: .milliseconds(20), maximum: .milliseconds(200))
        options.random = RandomSource(seed: 3)
        return options
    }

    init(configuration: ClientConfiguration, query: ResourceQuery, options: InformerOptions = options(),
         clock: any MonotonicClock = SystemClock(), limits: KubeClient.Limits = .init(qps: 1000, burst: 1000),
         transport: TransportOptions = TransportOptions()) throws {
        client = try KubeClient(configuration: configuration, limits: limits, transportOptions: transport,
                                clock: clock, logger: testLogger)
        let log = self.log
        informer = Informer<Object>(client: client, query: query, options: options) { log.record($0) }
    }

    func start() {
        let informer = self.informer
        task = Task { await informer.run() }
    }

    func stop() async {
        task?.cancel()
        await task?.value
        client.shutdown()
    }

    func names() -> [String] { informer.objects().map(\.cacheKey) }

    func waitForSync() async throws {
        try await log.wait(for: "the initial sync") { $0.contains { if case .synced = $0 { return true } else { return false } } }
    }

    func waitForObjects(_ keys: [String], limit: TimeInterval = 30) async throws {
        let deadline = Date().addingTimeInterval(limit)
        while names() != keys.sorted() {
            guard Date() < deadline else { throw TestTimeout(what: "objects \(keys), have \(names())") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}
