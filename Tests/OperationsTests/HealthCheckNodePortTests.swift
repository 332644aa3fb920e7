import Controller
import Foundation
import Glibc
import Logging
import Reconciler
import ServiceModel
import XCTest

@testable import Datapath
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
            addresses: { ["127.0.0.1"] }, pollInterval: .milliseconds(20), logger: Logger(label: "test"),
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

    /// A.12's address set: per family, the node addresses inside the CIDRs; all of IPv4
    /// (the wildcard) when nothing restricts it; `primary` is the node's first address.
    func testHealthCheckPortsListenOnTheAddressesNodePortAddressesSelects() {
        let local = ["10.0.0.5", "192.168.7.2", "127.0.0.1", "fd00::5", "2001:db8::9"].compactMap(IPAddress.init(sloppy:))
        func addresses(_ config: [String], primary: [String] = []) -> [String] {
            HealthCheckNodePorts.listenAddresses(
                nodePortAddresses: config, localAddresses: local, primary: primary.compactMap(IPAddress.init(sloppy:)))
        }
        XCTAssertEqual(addresses([]), ["0.0.0.0"], "default: every address")
        XCTAssertEqual(addresses(["10.0.0.0/8"]), ["10.0.0.5"])
        XCTAssertEqual(addresses(["10.0.0.0/8", "0.0.0.0/0"]), ["0.0.0.0"], "a zero CIDR selects everything")
        XCTAssertEqual(addresses(["127.0.0.0/8", "192.168.0.0/16"]), ["192.168.7.2"], "never loopback")
        XCTAssertEqual(addresses(["fd00::/8"]), ["0.0.0.0", "fd00::5"], "IPv6 CIDRs leave IPv4 unrestricted")
        XCTAssertEqual(addresses(["primary"], primary: ["192.168.7.2", "2001:db8::9"]), ["192.168.7.2", "2001:db8::9"])
        XCTAssertEqual(addresses(["172.16.0.0/12"]), [], "no node address in the range: no listener")
    }

    /// Every selected address gets its own listener; a port taken by someone else is
    /// reported (kube-proxy's FailedToStartServiceHealthcheck) and retried until free.
    func testEachAddressIsServedAndABindFailureIsReportedAndRetried() async throws {
        let box = TableBox()
        let port = try freePort()
        box.table = [port: HealthCheckEntry(service: "shop/web", localEndpoints: 1)]
        // Someone else holds the port on 127.0.0.2.
        let squatter = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.2")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(squatter, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(bound, 0, "the squatter binds")
        XCTAssertEqual(listen(squatter, 1), 0)
        final class Failures: @unchecked Sendable {
            let lock = NSLock()
            var seen: [(String, UInt16, String)] = []
        }
        let failures = Failures()
        let servers = HealthCheckNodePorts(
            addresses: { ["127.0.0.1", "127.0.0.2"] }, pollInterval: .milliseconds(20), logger: Logger(label: "test"),
            proxyHealthy: { true }, table: { box.lock.withLock { box.table } })
        servers.onBindFailure = { service, port, host, _ in failures.lock.withLock { failures.seen.append((service, port, host)) } }
        let task = Task { try await servers.run() }
        defer { task.cancel() }
        try await waitUntil { failures.lock.withLock { !failures.seen.isEmpty } && servers.listening == [port] }
        let first = try XCTUnwrap(failures.lock.withLock { failures.seen.first })
        XCTAssertEqual(first.0, "shop/web")
        XCTAssertEqual(first.1, port)
        XCTAssertEqual(first.2, "127.0.0.2")
        XCTAssertEqual(servers.listeningAddresses[port], ["127.0.0.1"])
        let event = HealthCheckNodePorts.bindFailureEvent(service: first.0, port: port, host: first.2, error: "in use", node: "node-a")
        XCTAssertEqual(event.reason, "FailedToStartServiceHealthcheck")
        XCTAssertEqual(event.type, .warning)
        XCTAssertEqual(event.regarding, .service(namespace: "shop", name: "web"))
        XCTAssertTrue(event.note.hasPrefix("node node-a failed to start healthcheck \"shop/web\" on port \(port)"), event.note)

        close(squatter)
        try await waitUntil { servers.listeningAddresses[port] == ["127.0.0.1", "127.0.0.2"] }
        let answer = try await Task.detached { try SimpleHTTP.get(host: "127.0.0.2", port: Int(port), path: "/") }.value
        XCTAssertEqual(answer.status, 200)
    }

    /// The whole path: a LoadBalancer Service with externalTrafficPolicy=Local through the
    /// controller into the pinned health-check map, served from there.
    func testTheControllersHealthCheckTableIsServedWithLocalReadyEndpointCounts() async throws {
        guard geteuid() == 0 else { throw XCTSkip("kernel test: needs root for BPF maps") }
        let pinPath = "/sys/fs/bpf/swiftlane-test-hc-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { SocketLoadBalancer.uninstall(pinPath: pinPath) }
        let logger = Logger(label: "test")
        let datapath = try NodePortDatapath.load(NodePortOptions(pinPath: pinPath), logger: logger)
        let maps = try KernelLoadBalancerMaps(pinPath: pinPath)
        let syncer = try ProxySyncer(nodeName: "node-a", maps: maps, logger: logger)
        let port = try freePort()
        func manifest(_ endpoints: [(ip: String, node: String, ready: Bool)]) -> String {
            """
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: shop}
            spec:
              type: LoadBalancer
              clusterIP: 10.96.0.20
              externalTrafficPolicy: Local
              healthCheckNodePort: \(port)
              ports: [{name: http, port: 80, protocol: TCP, nodePort: 30080}]
            status: {loadBalancer: {ingress: [{ip: 192.0.2.50}]}}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
            addressType: IPv4
            endpoints: [\(endpoints.map { "{addresses: [\($0.ip)], nodeName: \($0.node), conditions: {ready: \($0.ready)}}" }.joined(separator: ", "))]
            ports: [{name: http, port: 8080, protocol: TCP}]
            """
        }
        func sync(_ yaml: String) throws {
            XCTAssertEqual(syncer.sync(try ManifestDecoder.decode(Data(yaml.utf8), source: "hc.yaml")).failures, [])
        }
        try sync(manifest([("10.0.0.1", "node-a", true), ("10.0.0.2", "node-a", true), ("10.0.0.3", "node-b", true),
                           ("10.0.0.4", "node-a", false)]))
        let servers = HealthCheckNodePorts(
            addresses: { ["127.0.0.1"] }, pollInterval: .milliseconds(20), logger: logger, proxyHealthy: { true },
            table: { maps.healthCheckTable() })
        let task = Task { try await servers.run() }
        defer { task.cancel() }
        try await waitUntil { servers.listening == [port] }
        var answer = try await get(port)
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.headers["x-load-balancing-endpoint-weight"], "2", "local and ready only")
        XCTAssertTrue(answer.body.contains("\"name\": \"web\""), answer.body)

        try sync(manifest([("10.0.0.3", "node-b", true)]))
        try await waitUntil { maps.healthCheckTable()[port]?.localEndpoints == 0 }
        answer = try await get(port)
        XCTAssertEqual(answer.status, 503, "no local endpoint: the load balancer must drain this node")
        XCTAssertEqual(answer.headers["x-load-balancing-endpoint-weight"], "0")

        try sync("")
        try await waitUntil { servers.listening.isEmpty }
        withExtendedLifetime(datapath) {}
    }
}
