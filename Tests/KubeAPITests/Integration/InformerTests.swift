import Foundation
import KubeAPI
import ServiceModel
import XCTest

/// Informers against the fake API server over HTTPS (HTTP/2 unless a test says otherwise),
/// with faults injected into the server.
final class InformerTests: XCTestCase {
    private var server: FakeAPIServer!
    private var harness: InformerHarness<Service>?

    override func tearDown() async throws {
        await harness?.stop()
        harness = nil
        server?.stop()
        server = nil
    }

    private func start(_ query: ResourceQuery = .services(), options: InformerOptions = InformerHarness<Service>.options(),
                       configuration: ClientConfiguration? = nil, clock: any MonotonicClock = SystemClock(),
                       limits: KubeClient.Limits = .init(qps: 1000, burst: 1000)) throws -> InformerHarness<Service> {
        let harness = try InformerHarness<Service>(
            configuration: try configuration ?? server.clientConfiguration(), query: query, options: options,
            clock: clock, limits: limits)
        self.harness = harness
        harness.start()
        return harness
    }

    private func addServices(_ names: [String]) throws {
        for (index, name) in names.enumerated() {
            try server.upsert("services", TestObjects.service(name, clusterIP: "10.96.0.\(index + 1)"))
        }
    }

    // MARK: - LIST

    func testTheInitialListIsPaginatedThenTheWatchStartsFromTheListVersion() async throws {
        server = try FakeAPIServer()
        try addServices(["a", "b", "c", "d", "e"])
        let harness = try start(options: InformerHarness<Service>.options(pageSize: 2))
        try await harness.waitForSync()
        XCTAssertEqual(harness.names(), ["default/a", "default/b", "default/c", "default/d", "default/e"])
        try server.waitForWatchers("services")
        let requests = try server.requests()
        let lists = requests.filter(\.isList)
        XCTAssertEqual(lists.count, 3, "5 objects in pages of 2")
        XCTAssertEqual(lists[0].query["resourceVersion"], "0")
        XCTAssertEqual(lists[0].query["limit"], "2")
        XCTAssertNil(lists[0].query["continue"])
        for page in lists.dropFirst() {
            XCTAssertNotNil(page.query["continue"])
            XCTAssertNil(page.query["resourceVersion"], "a continue request carries no resourceVersion")
            XCTAssertEqual(page.query["limit"], "2")
        }
        XCTAssertEqual(Set(lists.map { $0.query["labelSelector"] }), ["!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"])
        let watch = try XCTUnwrap(requests.first(where: \.isWatch))
        XCTAssertEqual(watch.query["allowWatchBookmarks"], "true")
        XCTAssertEqual(watch.query["resourceVersion"], harness.informer.lastResourceVersion)
        XCTAssertTrue((300..<600).contains(Int(watch.query["timeoutSeconds"] ?? "") ?? 0))
        XCTAssertEqual(watch.http, "HTTP/2")
        XCTAssertEqual(harness.log.syncedCount, 1)
    }

    func testAnExpiredContinueTokenRestartsTheListInOnePiece() async throws {
        server = try FakeAPIServer()
        try addServices(["a", "b", "c", "d", "e"])
        try server.fault(["resource": "services", "verb": "continue", "status": 410, "body": "continue-expired"])
        let harness = try start(options: InformerHarness<Service>.options(pageSize: 2))
        try await harness.waitForSync()
        XCTAssertEqual(harness.names().count, 5)
        let lists = try server.requests().filter(\.isList)
        XCTAssertEqual(lists.map(\.status), [200, 410, 200])
        XCTAssertNil(lists[2].query["continue"], "the list starts over")
        XCTAssertNil(lists[2].query["limit"], "and is not paged, so it cannot expire again")
        XCTAssertEqual(harness.log.deletions, [])
    }

    // MARK: - WATCH

    func testWatchEventsAreDeliveredAndBookmarksOnlyMoveTheResumePoint() async throws {
        server = try FakeAPIServer()
        try addServices(["a"])
        let harness = try start()
        try await harness.waitForSync()
        try server.waitForWatchers("services")
        try server.upsert("services", TestObjects.service("b", clusterIP: "10.96.0.2"))
        try server.upsert("services", TestObjects.service("a", clusterIP: "10.96.0.1", port: 8080))
        try server.delete("services", key: "default/b")
        try await harness.log.wait(for: "added b, updated a, deleted b") { events in
            events.contains { if case .deleted(let s) = $0 { return s.metadata.name == "b" } else { return false } }
        }
        let kinds = harness.log.events.compactMap { event -> String? in
            switch event {
            case .added(let s): return "added \(s.metadata.name)"
            case .updated(_, let s): return "updated \(s.metadata.name) \(s.spec.ports.first?.port ?? 0)"
            case .deleted(let s): return "deleted \(s.metadata.name)"
            case .synced: return "synced"
            case .rejected(let rejection): return "rejected \(rejection.object)"
            }
        }
        XCTAssertEqual(kinds, ["added a", "synced", "added b", "updated a 8080", "deleted b"])

        let bookmark = try server.command("bookmark", ["resource": "services"])["rv"] as? String
        let deadline = Date().addingTimeInterval(30)
        while harness.informer.lastResourceVersion != bookmark {
            guard Date() < deadline else { throw TestTimeout(what: "the bookmark's version") }
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTAssertEqual(harness.names(), ["default/a"], "a bookmark is never taken for an object")
        try server.requests(clear: true)
        try server.command("end_watches")
        try server.waitForWatchers("services")
        let resumed = try XCTUnwrap(try server.requests().first(where: \.isWatch))
        XCTAssertEqual(resumed.query["resourceVersion"], bookmark, "resumes from the bookmark")
        XCTAssertEqual(try server.requests().filter(\.isList).count, 0, "no relist after a clean end")
    }

    func testAServiceThatLeavesTheSelectorIsDeleted() async throws {
        server = try FakeAPIServer()
        try addServices(["a", "b"])
        try server.upsert("services", TestObjects.service("other", labels: ["service.kubernetes.io/service-proxy-name": "x"]))
        try server.upsert("services", TestObjects.service("hl", labels: ["service.kubernetes.io/headless": ""]))
        let harness = try start()
        try await harness.waitForSync()
        XCTAssertEqual(harness.names(), ["default/a", "default/b"], "kube-proxy's selector hides the other two")
        try server.waitForWatchers("services")
        try server.upsert("services", TestObjects.service("a", labels: ["service.kubernetes.io/service-proxy-name": "x"]))
        try server.upsert("services", TestObjects.service("other"))
        try await harness.waitForObjects(["default/b", "default/other"])
        XCTAssertEqual(harness.log.deletions, ["a"])
    }

    func testServiceProxyNameSelectsOnlyThisProxysObjects() async throws {
        server = try FakeAPIServer()
        try addServices(["plain"])
        try server.upsert("services", TestObjects.service("mine", labels: ["service.kubernetes.io/service-proxy-name": "swiftlane"]))
        try server.upsert("services", TestObjects.service("theirs", labels: ["service.kubernetes.io/service-proxy-name": "other"]))
        let harness = try start(.services(serviceProxyName: "swiftlane"))
        try await harness.waitForSync()
        XCTAssertEqual(harness.names(), ["default/mine"])
    }

    func testAnExpiredWatchRelistsAndDeliversTheDeletionsItMissed() async throws {
        server = try FakeAPIServer()
        try addServices(["a", "b", "c"])
        let harness = try start()
        try await harness.waitForSync()
        try server.waitForWatchers("services")
        try server.delete("services", key: "default/b", silently: true)
        try server.upsert("services", TestObjects.service("d", clusterIP: "10.96.0.4"))
        try await harness.waitForObjects(["default/a", "default/b", "default/c", "default/d"])
        let lastSeen = harness.informer.lastResourceVersion
        try server.requests(clear: true)
        try server.command("watch_error", ["resource": "services", "code": 410, "reason": "Expired"])
        try await harness.waitForObjects(["default/a", "default/c", "default/d"])
        XCTAssertEqual(harness.log.deletions, ["b"], "the relist replaced the cache: b's deletion is synthesized, nothing else")
        let relist = try XCTUnwrap(try server.requests().first(where: \.isList))
        XCTAssertEqual(relist.query["resourceVersion"], lastSeen, "not older than what was already seen")
        XCTAssertNil(relist.query["limit"], "a relist not older than the last seen version is not paged")
        XCTAssertEqual(harness.log.syncedCount, 1)
    }

    func testALegacyGoneErrorAndACompactedVersionRelistFromAConsistentRead() async throws {
        server = try FakeAPIServer()
        try addServices(["a", "b"])
        let harness = try start()
        try await harness.waitForSync()
        try server.waitForWatchers("services")
        try server.delete("services", key: "default/a", silently: true)
        try server.command("compact")
        try server.requests(clear: true)
        try server.command("watch_error", ["resource": "services", "code": 410, "reason": "Gone"])
        try await harness.waitForObjects(["default/b"])
        let lists = try server.requests().filter(\.isList)
        XCTAssertEqual(lists.map(\.status), [410, 200], "the last version is compacted away too")
        XCTAssertEqual(lists.last?.query["resourceVersion"], "", "so the second relist is a consistent read")
        XCTAssertEqual(harness.log.deletions, ["a"])
    }

    func testAConnectionResetInTheMiddleOfAnObjectResumesWithoutLosingIt() async throws {
        server = try FakeAPIServer()
        try addServices(["a"])
        let harness = try start()
        try await harness.waitForSync()
        try server.waitForWatchers("services")
        try server.fault(["resource": "services", "verb": "watch", "cut_after_events": 1])
        try server.command("end_watches")
        try server.waitForWatchers("services")
        try server.requests(clear: true)
        let first = try server.upsert("services", TestObjects.service("x", clusterIP: "10.96.0.20"))
        try server.upsert("services", TestObjects.service("y", clusterIP: "10.96.0.21"))
        try await harness.waitForObjects(["default/a", "default/x", "default/y"])
        let watches = try server.requests().filter(\.isWatch)
        XCTAssertEqual(watches.first?.query["resourceVersion"], first, "resumed after the last whole object")
        XCTAssertEqual(try server.requests().filter(\.isList).count, 0)
        XCTAssertEqual(harness.log.events.filter { if case .added = $0 { return true } else { return false } }.count, 3,
                       "half an object is never applied, and nothing is applied twice")
    }

    func testTheServerEndingTheStreamAtItsTimeoutResumesFromTheSameVersion() async throws {
        server = try FakeAPIServer()
        try addServices(["a"])
        var options = InformerHarness<Service>.options()
        options.lifecycle.watchTimeoutSeconds = 2..<3
        let harness = try start(options: options)
        try await harness.waitForSync()
        let version = harness.informer.lastResourceVersion
        let deadline = Date().addingTimeInterval(30)
        var watches: [ServedRequest] = []
        while watches.count < 3 {
            guard Date() < deadline else { throw TestTimeout(what: "three watches") }
            try await Task.sleep(for: .milliseconds(100))
            watches = try server.requests().filter(\.isWatch)
        }
        XCTAssertEqual(Set(watches.map { $0.query["resourceVersion"] }), [version])
        XCTAssertEqual(Set(watches.map { $0.query["timeoutSeconds"] }), ["2"])
        XCTAssertEqual(try server.requests().filter(\.isList).count, 1, "a timeout is not a reason to relist")
    }

    func testAStreamThatDripsOneByteAtATimeDeliversEveryEvent() async throws {
        server = try FakeAPIServer()
        try addServices(["a", "b"])
        try server.fault(["resource": "services", "verb": "list", "drip": true])
        let harness = try start()
        try await harness.waitForSync()
        XCTAssertEqual(harness.names(), ["default/a", "default/b"], "a list dripped byte by byte")
        try server.waitForWatchers("services")
        try server.fault(["resource": "services", "verb": "watch", "drip": true])
        try server.command("end_watches")
        try server.waitForWatchers("services")
        for name in ["c", "d", "e"] { try server.upsert("services", TestObjects.service(name)) }
        try await harness.waitForObjects(["default/a", "default/b", "default/c", "default/d", "default/e"])
        XCTAssertTrue(try server.requests().contains { $0.isWatch && $0.query["resourceVersion"] != nil })
    }

    func testGarbageAndOverLongLinesBreakTheStreamWhichResumesFromTheLastVersion() async throws {
        server = try FakeAPIServer()
        try addServices(["a"])
        var options = InformerHarness<Service>.options()
        options.maximumEventBytes = 4096
        let harness = try start(options: options)
        try await harness.waitForSync()
        try server.waitForWatchers("services")
        let version = harness.informer.lastResourceVersion
        for fault: [String: Any] in [["inject": "this is not JSON\n"], ["overlong": 10_000], ["inject": "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"x\"}}"]] {
            var arguments = fault
            arguments["resource"] = "services"
            arguments["verb"] = "watch"
            try server.fault(arguments)
        }
        try server.requests(clear: true)
        try server.command("end_watches")
        try server.upsert("services", TestObjects.service("b"))
        try await harness.waitForObjects(["default/a", "default/b"])
        let watches = try server.requests().filter(\.isWatch)
        XCTAssertGreaterThanOrEqual(watches.count, 4, "three broken streams, then a good one")
        XCTAssertEqual(Set(watches.prefix(3).map { $0.query["resourceVersion"] }), [version])
        XCTAssertFalse(harness.names().contains("default/x"), "nothing from a broken line is applied")
    }

    // MARK: - Credentials and errors

    func testA401ReadsTheRotatedTokenFileAndCarriesOn() async throws {
        server = try FakeAPIServer(tokens: ["first-token"])
        let tokenFile = NSTemporaryDirectory() + "kubeapi-token-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: tokenFile) }
        try "first-token\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        try addServices(["a"])
        let harness = try start(configuration: try server.clientConfiguration(tokenFile: tokenFile))
        try await harness.waitForSync()
        try server.waitForWatchers("services")
        try "second-token\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        try server.command("set_tokens", ["tokens": ["second-token"]])
        try server.requests(clear: true)
        try server.command("end_watches")
        try server.waitForWatchers("services")
        try server.upsert("services", TestObjects.service("b"))
        try await harness.waitForObjects(["default/a", "default/b"])
        let watches = try server.requests().filter(\.isWatch)
        XCTAssertEqual(watches.first?.authorization, "Bearer first-token", "the token is cached between reads")
        XCTAssertEqual(watches.first?.status, 401)
        XCTAssertEqual(watches.dropFirst().first?.authorization, "Bearer second-token", "re-read after the 401")
        XCTAssertEqual(watches.dropFirst().first?.status, 200)
    }

    func testA429WaitsExactlyItsRetryAfterOnTheInjectedClock() async throws {
        server = try FakeAPIServer()
        try addServices(["a"])
        try server.fault(["resource": "services", "verb": "list", "status": 429, "retryAfter": 7])
        let clock = ManualClock()
        let harness = try start(clock: clock)
        let wait = try await clock.nextSleep()
        XCTAssertEqual(wait, .seconds(7))
        XCTAssertFalse(harness.informer.hasSynced)
        clock.advance(by: wait)
        try await harness.waitForSync()
        XCTAssertEqual(try server.requests().filter(\.isList).map(\.status), [429, 200])
    }

    func testRepeated500sBackOffExponentiallyWithJitterOnTheInjectedClock() async throws {
        server = try FakeAPIServer()
        try addServices(["a"])
        try server.fault(["resource": "services", "verb": "list", "status": 500, "count": 7])
        let clock = ManualClock()
        var options = InformerHarness<Service>.options()
        options.lifecycle.backoff = Backoff.Policy()
        let harness = try start(options: options, clock: clock)
        var base = 0.8
        for failure in 1...7 {
            let wait = try await clock.nextSleep().inSecondsForTest
            XCTAssertGreaterThanOrEqual(wait, base, "failure \(failure)")
            XCTAssertLessThan(wait, 2 * base, "failure \(failure): at most one base of jitter")
            XCTAssertFalse(harness.informer.hasSynced)
            clock.advance(by: .seconds(wait))
            base = min(base * 2, 30)
        }
        try await harness.waitForSync()
        XCTAssertEqual(try server.requests().filter(\.isList).count, 8)
    }

    func testTheRateLimitSpacesRequestsOnTheInjectedClock() async throws {
        server = try FakeAPIServer()
        try addServices(["a", "b", "c"])
        let clock = ManualClock()
        let harness = try start(options: InformerHarness<Service>.options(pageSize: 1), clock: clock, limits: .init(qps: 2, burst: 1))
        for _ in 0..<2 {
            let wait = try await clock.nextSleep()
            XCTAssertEqual(wait, .milliseconds(500), "one token every half second")
            clock.advance(by: .milliseconds(500))
        }
        try await harness.waitForSync()
    }

    // MARK: - Streaming list

    func testAStreamingListSyncsWithoutAListAndKeepsWatching() async throws {
        server = try FakeAPIServer()
        try addServices(["a", "b"])
        let harness = try start(options: InformerHarness<Service>.options(streaming: true))
        try await harness.waitForSync()
        XCTAssertEqual(harness.names(), ["default/a", "default/b"])
        try server.upsert("services", TestObjects.service("c"))
        try await harness.waitForObjects(["default/a", "default/b", "default/c"])
        let requests = try server.requests()
        XCTAssertEqual(requests.filter(\.isList).count, 0)
        let watch = try XCTUnwrap(requests.first)
        XCTAssertEqual(watch.query["sendInitialEvents"], "true")
        XCTAssertEqual(watch.query["resourceVersionMatch"], "NotOlderThan")
        XCTAssertEqual(watch.query["resourceVersion"], "")
        XCTAssertEqual(watch.query["allowWatchBookmarks"], "true")
        XCTAssertEqual(requests.filter(\.isWatch).count, 1, "the initial events and the changes come on one stream")
    }

    func testAServerThatRejectsStreamingListsIsListedInstead() async throws {
        server = try FakeAPIServer(watchList: "rejected")
        try addServices(["a", "b"])
        let harness = try start(options: InformerHarness<Service>.options(streaming: true))
        try await harness.waitForSync()
        XCTAssertEqual(harness.names(), ["default/a", "default/b"])
        let requests = try server.requests()
        XCTAssertEqual(requests.first?.status, 422)
        XCTAssertEqual(requests.filter(\.isList).count, 1)
    }

    func testAServerThatIgnoresStreamingListsIsDetectedByTheDeadline() async throws {
        server = try FakeAPIServer(watchList: "ignored")
        try addServices(["a", "b"])
        var options = InformerHarness<Service>.options(streaming: true)
        options.lifecycle.initialEventsDeadline = .milliseconds(300)
        let harness = try start(options: options)
        try await harness.waitForSync()
        XCTAssertEqual(harness.names(), ["default/a", "default/b"])
        let requests = try server.requests()
        XCTAssertEqual(requests.first?.query["sendInitialEvents"], "true")
        XCTAssertEqual(requests.filter(\.isList).count, 1, "fell back to LIST once the end marker did not come")
        XCTAssertEqual(harness.log.deletions, [])
    }

    // MARK: - Node and fixtures

    func testTheNodeInformerSeesOnlyItsOwnNode() async throws {
        server = try FakeAPIServer()
        try server.upsert("nodes", TestObjects.node("node-a", zone: "zone-a"))
        try server.upsert("nodes", TestObjects.node("node-b", zone: "zone-b"))
        let harness = try InformerHarness<ServiceModel.Node>(
            configuration: try server.clientConfiguration(), query: .node(named: "node-a"),
            options: InformerHarness<ServiceModel.Node>.options())
        harness.start()
        try await harness.waitForSync()
        XCTAssertEqual(harness.informer.objects().map(\.metadata.name), ["node-a"])
        XCTAssertEqual(harness.informer.objects().first?.metadata.labels["topology.kubernetes.io/zone"], "zone-a")
        XCTAssertEqual(try server.requests().first?.query["fieldSelector"], "metadata.name=node-a")
        await harness.stop()
    }

    func testFixtureObjectsSurviveTheRoundTripUnchanged() async throws {
        server = try FakeAPIServer()
        var expected: [Service] = []
        for name in ["service-clusterip.json", "service-nodeport.json"] {
            let data = try fixture(name)
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            try server.upsert("services", object)
            expected.append(try JSONDecoder().decode(Service.self, from: data))
        }
        let harness = try start()
        try await harness.waitForSync()
        let served = harness.informer.objects()
        XCTAssertEqual(served.map(\.spec), expected.sorted { $0.cacheKey < $1.cacheKey }.map(\.spec),
                       "unknown fields ignored, targetPort int-or-string, nulls accepted")
    }
}
