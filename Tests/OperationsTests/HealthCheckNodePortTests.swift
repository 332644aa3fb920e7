import Foundation
import Glibc
import Logging
import Reconciler
import XCTest

@testable import Operations

/// healthCheckNodePort listeners (spec A.10) opened, answered and closed as the table
/// changes, over real loopback sockets.
final class HealthCheckNodePortTests: XCTestCase {
    private final class TableBox: @unchecked Sendable {
        let lock = NSLock()
        var table: [UInt16: HealthCheckEntry] = [:]
        var healthy = true
    }

    /// A port the kernel just handed out (bound, then released).
    private func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else { throw POSIXError(.EADDRINUSE) }
        return UInt16(bigEndian: address.sin_port)
    }

    private func waitUntil(_ condition: @escaping () -> Bool) async throws {
        for _ in 0..<500 where !condition() { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertTrue(condition(), "condition not reached")
    }

    private func get(_ port: UInt16) async throws -> (status: Int, headers: [String: String], body: String) {
        try await Task.detached { try SimpleHTTP.get(port: Int(port), path: "/any/path") }.value
    }

    func testListenersFollowTheTableAndAnswerWithKubeProxysBodyAndHeaders() async throws {
        let box = TableBox()
        let (ready, draining) = (try freePort(), try freePort())
        box.table = [ready: HealthCheckEntry(service: "shop/web", localEndpoints: 2),
                     draining: HealthCheckEntry(service: "shop/old", localEndpoints: 0)]
        let servers = HealthCheckNodePorts(
            host: "127.0.0.1", pollInterval: .milliseconds(20), logger: Logger(label: "test"),
            proxyHealthy: { box.lock.withLock { box.healthy } }, table: { box.lock.withLock { box.table } })
        let task = Task { try await servers.run() }
        defer { task.cancel() }
        try await waitUntil { servers.listening == [ready, draining] }

        var answer = try await get(ready)
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.headers["content-type"], "application/json")
        XCTAssertEqual(answer.headers["x-content-type-options"], "nosniff")
        XCTAssertEqual(answer.headers["x-load-balancing-endpoint-weight"], "2")
        let body = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
        XCTAssertEqual((body?["service"] as? [String: String]) ?? [:], ["namespace": "shop", "name": "web"])
        XCTAssertEqual(body?["localEndpoints"] as? Int, 2)
        XCTAssertEqual(body?["serviceProxyHealthy"] as? Bool, true)
        XCTAssertTrue(answer.body.hasPrefix("{\n\t\"service\""), "tab-indented")
        XCTAssertFalse(answer.body.hasSuffix("\n"), "no trailing newline")

        answer = try await get(draining)
        XCTAssertEqual(answer.status, 503, "no local endpoint")
        XCTAssertEqual(answer.headers["x-load-balancing-endpoint-weight"], "0")

        box.lock.withLock { box.healthy = false }
        answer = try await get(ready)
        XCTAssertEqual(answer.status, 503, "an unhealthy proxy fails every health check")
        XCTAssertTrue(answer.body.contains("\"serviceProxyHealthy\": false"))
        box.lock.withLock { box.healthy = true }

        // The count changes in place; a removed port's listener closes.
        box.lock.withLock {
            box.table = [ready: HealthCheckEntry(service: "shop/web", localEndpoints: 1)]
        }
        try await waitUntil { servers.listening == [ready] }
        answer = try await get(ready)
        XCTAssertEqual(answer.headers["x-load-balancing-endpoint-weight"], "1")
        do {
            _ = try await get(draining)
            XCTFail("the removed port still answers")
        } catch {}

        task.cancel()
        _ = try? await task.value
        XCTAssertEqual(servers.listening, [], "shutdown closes every listener")
    }
}
