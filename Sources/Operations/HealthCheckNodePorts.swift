import Controller
import Foundation
import Logging
import NIOHTTP1
import Reconciler
import ServiceLifecycle

/// Serves every Service's `healthCheckNodePort` (kube-proxy A.10): one plain HTTP listener
/// per port of the health-check table the controller programs (`sl_health_v1`), answering
/// any method and path with 200 when the Service has local ready endpoints and the proxy
/// is healthy, else 503, and kube-proxy's JSON body and headers.
///
/// The table is polled (`pollInterval`) for listeners to open and close; each answer reads
/// it afresh. A port that cannot be bound is logged (kube-proxy emits the event
/// `FailedToStartServiceHealthcheck`) and retried at the next poll. Listeners bind `host`
/// (all addresses by default; kube-proxy narrows this to `nodePortAddresses`, not done
/// yet).
public final class HealthCheckNodePorts: Service, @unchecked Sendable {
    public typealias Table = @Sendable () -> [UInt16: HealthCheckEntry]

    private let table: Table
    private let host: String
    private let pollInterval: Duration
    private let proxyHealthy: @Sendable () -> Bool
    private let logger: Logger
    private let lock = NSLock()
    private var running: [UInt16: Task<Void, Never>] = [:]
    private var failed: Set<UInt16> = []
    private var bound: Set<UInt16> = []

    public init(host: String = "0.0.0.0", pollInterval: Duration = .seconds(1), logger: Logger,
                proxyHealthy: @escaping @Sendable () -> Bool, table: @escaping Table) {
        self.host = host
        self.pollInterval = pollInterval
        self.logger = logger
        self.proxyHealthy = proxyHealthy
        self.table = table
    }

    /// Ports whose listener is bound right now.
    public var listening: Set<UInt16> { lock.withLock { bound } }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                self.reconcile()
                do { try await Task.sleep(for: self.pollInterval) } catch { break }
            }
        }
        let tasks = lock.withLock { () -> [Task<Void, Never>] in
            defer { running.removeAll() }
            return Array(running.values)
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
    }

    /// Opens and closes listeners to match the table.
    func reconcile() {
        let wanted = table()
        let (toStop, toStart) = lock.withLock { () -> ([Task<Void, Never>], [UInt16]) in
            for port in failed { running[port] = nil }
            failed.removeAll()
            let stop = running.filter { wanted[$0.key] == nil }
            for port in stop.keys { running[port] = nil }
            return (Array(stop.values), wanted.keys.filter { running[$0] == nil }.sorted())
        }
        for task in toStop { task.cancel() }
        for port in toStart {
            let server = HTTPEndpointServer(
                name: "healthCheckNodePort", address: BindAddress(host: host, port: Int(port)), logger: logger,
                onBound: { [weak self] _ in self?.lock.withLock { _ = self?.bound.insert(port) } }
            ) { [weak self] _ in
                self?.respond(port: port) ?? Self.response(for: nil, proxyHealthy: false)
            }
            let logger = self.logger
            let task = Task { [weak self] in
                do {
                    try await server.run()
                } catch {
                    logger.warning("FailedToStartServiceHealthcheck", metadata: ["port": "\(port)", "error": "\(error)"])
                    self?.lock.withLock { _ = self?.failed.insert(port) }
                }
                self?.lock.withLock { _ = self?.bound.remove(port) }
            }
            lock.withLock { running[port] = task }
        }
    }

    /// Answers from the table as it is now (not as of the last poll): a load balancer
    /// must see a drained node at once. Health checks are rare; one table read each.
    private func respond(port: UInt16) -> EndpointResponse {
        Self.response(for: table()[port], proxyHealthy: proxyHealthy())
    }

    /// kube-proxy's answer: 200 iff there are local ready endpoints and the proxy is
    /// healthy; the body is tab-indented JSON without a trailing newline.
    public static func response(for entry: HealthCheckEntry?, proxyHealthy: Bool) -> EndpointResponse {
        let count = entry?.localEndpoints ?? 0
        let name = entry?.service ?? "/"
        let parts = name.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let (namespace, service) = parts.count == 2 ? (parts[0], parts[1]) : ("", name)
        func quoted(_ text: String) -> String {
            "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        let body = "{\n\t\"service\": {\n\t\t\"namespace\": \(quoted(namespace)),\n\t\t\"name\": \(quoted(service))\n\t},\n"
            + "\t\"localEndpoints\": \(count),\n\t\"serviceProxyHealthy\": \(proxyHealthy)\n}"
        return EndpointResponse(
            status: count > 0 && proxyHealthy ? .ok : .serviceUnavailable,
            headers: [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"),
                      ("X-Load-Balancing-Endpoint-Weight", "\(count)")],
            body: body)
    }
}
