import Foundation
import KubeAPI
import XCTest

/// Events reach the API server as events.k8s.io/v1 Events (the fake server checks them
/// as the API server's validation would), deduplicated, retried on server errors only.
final class EventRecorderTests: XCTestCase {
    private var server: FakeAPIServer!
    private var clients: [KubeClient] = []
    private var runs: [Task<Void, Never>] = []

    override func tearDown() {
        for run in runs { run.cancel() }
        runs = []
        for client in clients { client.shutdown() }
        clients = []
        server?.stop()
        server = nil
    }

    private final class Outcomes: @unchecked Sendable {
        private let lock = NSLock()
        private var seen: [(String, EventRecorder.Outcome)] = []
        func add(_ reason: String, _ outcome: EventRecorder.Outcome) { lock.withLock { seen.append((reason, outcome)) } }
        func count(_ outcome: EventRecorder.Outcome) -> Int { lock.withLock { seen.filter { $0.1 == outcome }.count } }
        var total: Int { lock.withLock { seen.count } }
    }

    private func recorder(httpVersion: TransportOptions.HTTPVersion = .http2OverTLS, connected: Bool = true)
        throws -> (EventRecorder, Outcomes)
    {
        let recorder = EventRecorder(
            reportingInstance: "swiftlane-node-a", retryDelays: [.milliseconds(50), .milliseconds(50)], logger: testLogger)
        if connected {
            var options = TransportOptions()
            options.httpVersion = httpVersion
            let client = try KubeClient(configuration: try server.clientConfiguration(), transportOptions: options, logger: testLogger)
            clients.append(client)
            recorder.client = client
        }
        let outcomes = Outcomes()
        recorder.onOutcome = { outcomes.add($0, $1) }
        runs.append(Task { await recorder.run() })
        return (recorder, outcomes)
    }

    private func waitFor(_ outcomes: Outcomes, total: Int, timeout: TimeInterval = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while outcomes.total < total {
            guard Date() < deadline else { throw TestTimeout(what: "\(total) event outcomes (have \(outcomes.total))") }
            Thread.sleep(forTimeInterval: 0.02)
        }
    }

    private func postedEvents() throws -> [[String: Any]] {
        try server.command("events")["events"] as? [[String: Any]] ?? []
    }

    private static let healthCheckFailure = ClusterEvent(
        regarding: .service(namespace: "shop", name: "web"), type: .warning, reason: "FailedToStartServiceHealthcheck",
        action: "Listen", note: "node node-a failed to start healthcheck \"shop/web\" on port 32000: address in use")

    func testAnEventIsPostedAsAnEventsV1EventOverHTTP2AndHTTP1() throws {
        for (alpn, version) in [("h2,http/1.1", TransportOptions.HTTPVersion.http2OverTLS), ("http/1.1", .http1)] {
            server = try FakeAPIServer(mode: .tls(alpn: alpn))
            let (recorder, outcomes) = try recorder(httpVersion: version)
            let before = Date()
            recorder.record(Self.healthCheckFailure)
            try waitFor(outcomes, total: 1)
            XCTAssertEqual(outcomes.count(.posted), 1, alpn)

            let events = try postedEvents()
            XCTAssertEqual(events.count, 1, alpn)
            let event = try XCTUnwrap(events.first)
            XCTAssertEqual(event["apiVersion"] as? String, "events.k8s.io/v1")
            XCTAssertEqual(event["type"] as? String, "Warning")
            XCTAssertEqual(event["reason"] as? String, "FailedToStartServiceHealthcheck")
            XCTAssertEqual(event["action"] as? String, "Listen")
            XCTAssertEqual(event["reportingController"] as? String, "swiftlane")
            XCTAssertEqual(event["reportingInstance"] as? String, "swiftlane-node-a")
            XCTAssertEqual(event["note"] as? String, Self.healthCheckFailure.note)
            let metadata = try XCTUnwrap(event["metadata"] as? [String: Any])
            XCTAssertEqual(metadata["namespace"] as? String, "shop")
            XCTAssertTrue((metadata["name"] as? String ?? "").hasPrefix("web."), "\(metadata)")
            let regarding = try XCTUnwrap(event["regarding"] as? [String: Any])
            XCTAssertEqual(regarding["kind"] as? String, "Service")
            XCTAssertEqual(regarding["namespace"] as? String, "shop")
            XCTAssertEqual(regarding["name"] as? String, "web")
            XCTAssertEqual(regarding["uid"] as? String, "shop/web")
            // MicroTime: RFC 3339 with microseconds, in UTC, at about now.
            let stamp = try XCTUnwrap(event["eventTime"] as? String)
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let time = try XCTUnwrap(formatter.date(from: stamp), stamp)
            XCTAssertEqual(stamp.split(separator: ".").last?.count, 7, "six fraction digits and Z: \(stamp)")
            XCTAssertLessThan(abs(time.timeIntervalSince(before)), 60)
            let served = try server.requests().filter { $0.method == "POST" }
            XCTAssertEqual(served.map(\.path), ["/apis/events.k8s.io/v1/namespaces/shop/events"])
            XCTAssertEqual(served.first?.http, alpn == "http/1.1" ? "HTTP/1.1" : "HTTP/2")
            server.stop()
        }
    }

    func testEventsAboutTheNodeGoToTheDefaultNamespace() throws {
        server = try FakeAPIServer()
        let (recorder, outcomes) = try recorder()
        recorder.record(ClusterEvent(regarding: .node("node-a"), type: .normal, reason: "Starting", action: "StartSwiftlane", note: ""))
        try waitFor(outcomes, total: 1)
        let event = try XCTUnwrap(try postedEvents().first)
        XCTAssertEqual((event["metadata"] as? [String: Any])?["namespace"] as? String, "default")
        XCTAssertEqual((event["regarding"] as? [String: Any])?["kind"] as? String, "Node")
        XCTAssertEqual((event["regarding"] as? [String: Any])?["uid"] as? String, "node-a")
        XCTAssertEqual(event["type"] as? String, "Normal")
    }

    func testAnIdenticalEventWithinTheWindowIsSuppressedAndADifferentOneIsNot() throws {
        server = try FakeAPIServer()
        let (recorder, outcomes) = try recorder()
        for _ in 0..<5 { recorder.record(Self.healthCheckFailure) }
        var other = Self.healthCheckFailure
        other.note += " (again, on another port)"
        recorder.record(other)
        try waitFor(outcomes, total: 6)
        XCTAssertEqual(outcomes.count(.suppressed), 4)
        XCTAssertEqual(outcomes.count(.posted), 2)
        XCTAssertEqual(try postedEvents().count, 2)
    }

    func testServerErrorsAreRetriedAndRejectionsAreNot() throws {
        server = try FakeAPIServer()
        let (recorder, outcomes) = try recorder()
        try server.fault(["resource": "events", "verb": "create", "status": 503, "count": 2])
        recorder.record(Self.healthCheckFailure)
        try waitFor(outcomes, total: 1)
        XCTAssertEqual(outcomes.count(.posted), 1, "posted on the third try")
        XCTAssertEqual(try server.requests(clear: true).filter { $0.method == "POST" }.count, 3)

        try server.fault(["resource": "events", "verb": "create", "status": 422, "count": 5])
        var rejected = Self.healthCheckFailure
        rejected.reason = "Rejected"
        recorder.record(rejected)
        try waitFor(outcomes, total: 2)
        XCTAssertEqual(outcomes.count(.failed), 1)
        XCTAssertEqual(try server.requests().filter { $0.method == "POST" }.count, 1, "a 422 is not retried")
        XCTAssertEqual(try postedEvents().count, 1)
    }

    func testWithoutAnAPIServerEventsAreOnlyLogged() throws {
        let (recorder, outcomes) = try recorder(connected: false)
        recorder.record(Self.healthCheckFailure)
        try waitFor(outcomes, total: 1)
        XCTAssertEqual(outcomes.count(.unsent), 1)
    }

    func testTheNoteIsCappedAtTheAPIServersLimit() throws {
        var long = Self.healthCheckFailure
        long.note = String(repeating: "é", count: 2000)
        let body = EventRecorder.body(for: long, reportingController: "swiftlane", reportingInstance: "n", at: Date())
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: body) as? [String: Any])
        let note = try XCTUnwrap(object["note"] as? String)
        XCTAssertLessThanOrEqual(note.utf8.count, 1024)
        XCTAssertTrue(note.hasSuffix("..."))
    }
}
