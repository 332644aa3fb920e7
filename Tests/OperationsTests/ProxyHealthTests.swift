import Controller
import Foundation
import Logging
import ServiceModel
import XCTest

@testable import Operations

/// kube-proxy's health semantics (spec A.10) and readiness, answered by the real HTTP
/// server on loopback, on a clock the test moves.
final class ProxyHealthTests: XCTestCase {
    private let clock = ManualClock(Date(timeIntervalSince1970: 1_800_000_000))
    private var health: ProxyHealth!
    private var server: HTTPEndpointServer!
    private var serverTask: Task<Void, Error>!
    private var port = 0

    override func setUp() async throws {
        let clock = self.clock
        health = ProxyHealth(timeout: .seconds(60), clock: { clock.now })
        health.sourceReady = { (true, "") }
        health.datapathAttached = { (true, "") }
        let health = self.health!
        let bound = AsyncStream<Int>.makeStream()
        server = HTTPEndpointServer(
            name: "health", address: BindAddress(host: "127.0.0.1", port: 0), logger: Logger(label: "test"),
            onBound: { bound.continuation.yield($0) }
        ) { health.respond(to: $0) }
        let server = self.server!
        serverTask = Task { try await server.run() }
        var iterator = bound.stream.makeAsyncIterator()
        let first = await iterator.next()
        port = try XCTUnwrap(first)
    }

    override func tearDown() async throws {
        serverTask.cancel()
        _ = try? await serverTask.value
    }

    private func get(_ path: String) async throws -> (status: Int, headers: [String: String], body: String) {
        let port = self.port
        return try await Task.detached { try SimpleHTTP.get(port: port, path: path) }.value
    }

    func testHealthzIsHealthyUntilAChangeWaitsLongerThanTheTimeout() async throws {
        var answer = try await get("/healthz")
        XCTAssertEqual(answer.status, 200, "nothing queued: healthy, as kube-proxy while it starts")
        XCTAssertEqual(answer.headers["content-type"], "application/json")
        XCTAssertEqual(answer.headers["x-content-type-options"], "nosniff")

        health.recordQueued()
        clock.advance(by: 60)
        answer = try await get("/healthz")
        XCTAssertEqual(answer.status, 200, "pending exactly the timeout is still healthy")
        clock.advance(by: 1)
        answer = try await get("/healthz")
        XCTAssertEqual(answer.status, 503, "a change older than 60 s unprogrammed")
        let stale = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
        XCTAssertEqual(stale?["lastUpdated"] as? String, "0001-01-01T00:00:00Z", "never synced: Go's zero time")
        let livezWhenStale = try await get("/livez").status
        XCTAssertEqual(livezWhenStale, 503)

        health.recordSync(failures: 0, complete: true, node: nil)
        answer = try await get("/healthz")
        XCTAssertEqual(answer.status, 200)
        let body = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
        XCTAssertEqual(body?["currentTime"] as? String, ProxyHealth.format(clock.now))
        XCTAssertEqual(body?["lastUpdated"] as? String, ProxyHealth.format(clock.now))
        XCTAssertEqual(body?["nodeEligible"] as? Bool, true)
    }

    func testASyncThatLeavesFrontendsBehindKeepsTheChangePending() async throws {
        health.recordSync(failures: 0, complete: true, node: nil)
        let synced = clock.now
        clock.advance(by: 5)
        health.recordSync(failures: 2, complete: true, node: nil)
        clock.advance(by: 30)
        health.recordSync(failures: 1, complete: true, node: nil)  // a retry that still fails
        clock.advance(by: 31)
        let answer = try await get("/healthz")
        XCTAssertEqual(answer.status, 503, "failing for 61 s since the first failed sync")
        let body = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
        XCTAssertEqual(
            body?["lastUpdated"] as? String, ProxyHealth.format(synced), "unhealthy: the last successful sync")
        let ready = try await get("/readyz")
        XCTAssertEqual(ready.status, 503)
        XCTAssertTrue(
            ready.body.contains("[-]programmed failed: the last sync left 1 frontends on their previous state"))
    }

    func testANodeBeingDeletedFailsHealthzButNotLivez() async throws {
        health.recordSync(failures: 0, complete: true, node: nil)
        var node = ServiceModel.Node(metadata: ObjectMeta(name: "node-a"))
        node.spec.taints = [Taint(key: WellKnown.toBeDeletedTaint, value: "1800000000", effect: "NoSchedule")]
        health.recordSync(failures: 0, complete: true, node: node)
        var answer = try await get("/healthz")
        XCTAssertEqual(answer.status, 503)
        XCTAssertTrue(answer.body.contains("\"nodeEligible\": false"), answer.body)
        let livezWhenDeleting = try await get("/livez").status
        XCTAssertEqual(livezWhenDeleting, 200, "livez ignores node eligibility")

        let deleting = ServiceModel.Node(
            metadata: ObjectMeta(name: "node-a", deletionTimestamp: "2027-01-01T00:00:00Z"))
        health.liveNode = { deleting }  // the Node informer's view wins over the last sync's
        answer = try await get("/healthz")
        XCTAssertEqual(answer.status, 503)
        health.liveNode = { ServiceModel.Node(metadata: ObjectMeta(name: "node-a")) }
        let healthzWhenEligible = try await get("/healthz").status
        XCTAssertEqual(healthzWhenEligible, 200)
    }

    func testReadyzNamesEveryFailingCheck() async throws {
        health.sourceReady = { (false, "waiting for the initial list of endpointslices") }
        health.datapathAttached = { (false, "not attached: /sys/fs/bpf/x/links/cgroup_connect4") }
        var answer = try await get("/readyz")
        XCTAssertEqual(answer.status, 503)
        XCTAssertEqual(
            answer.body,
            """
            [-]source failed: waiting for the initial list of endpointslices
            [-]datapath failed: not attached: /sys/fs/bpf/x/links/cgroup_connect4
            [-]programmed failed: no sync yet
            readyz check failed

            """)
        health.sourceReady = { (true, "") }
        health.datapathAttached = { (true, "") }
        health.recordSync(failures: 0, complete: false, node: nil)
        answer = try await get("/readyz")
        XCTAssertTrue(answer.body.contains("[-]programmed failed: the Node is not known yet"), answer.body)
        health.recordSync(failures: 0, complete: true, node: nil)
        answer = try await get("/readyz")
        XCTAssertEqual(answer.status, 200)
        let metricsOnHealthServer = try await get("/metrics").status
        XCTAssertEqual(metricsOnHealthServer, 404, "the health server serves only its three paths")
    }
}

/// A wall clock the test moves.
final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date

    init(_ start: Date) { current = start }

    var now: Date { lock.withLock { current } }

    func advance(by seconds: TimeInterval) {
        lock.withLock { current = current.addingTimeInterval(seconds) }
    }
}

/// One HTTP/1.0 GET over loopback with plain sockets.
enum SimpleHTTP {
    static func get(host: String = "127.0.0.1", port: Int, path: String) throws -> (status: Int, headers: [String: String], body: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr(host)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        let request = Array("GET \(path) HTTP/1.0\r\n\r\n".utf8)
        _ = write(fd, request, request.count)
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            response += buffer[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        let parts = text.components(separatedBy: "\r\n\r\n")
        let lines = parts[0].components(separatedBy: "\r\n")
        let status = Int(lines[0].split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            let pair = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if pair.count == 2 { headers[pair[0].lowercased()] = pair[1] }
        }
        return (status, headers, parts.dropFirst().joined(separator: "\r\n\r\n"))
    }
}
