import Controller
import Foundation
import KubeAPI
import Logging
import NIOHTTP1
import Reconciler
import ServiceLifecycle
import struct ServiceModel.CIDR
import struct ServiceModel.LoadBalancerPlan
import struct ServiceModel.ProxyNode
import struct ServiceModel.TranslationOptions
import struct ServiceModel.IPAddress
import enum ServiceModel.IPFamily

/// Serves every Service's `healthCheckNodePort` (kube-proxy A.10): one plain HTTP listener
/// per port of the health-check table the controller programs (`sl_health_v1`), answering
/// any method and path with 200 when the Service has local ready endpoints and the proxy
/// is healthy, else 503, and kube-proxy's JSON body and headers.
///
/// The table is polled (`pollInterval`) for listeners to open and close; each answer reads
/// it afresh. Each port is served on every address `addresses()` gives at that poll (A.12:
/// the node addresses `nodePortAddresses` selects, see `listenAddresses`; the IPv4
/// wildcard when it selects all). A port that cannot be bound is logged and reported
/// through `onBindFailure` (kube-proxy's event `FailedToStartServiceHealthcheck`), and
/// retried at the next poll.
public final class HealthCheckNodePorts: Service, @unchecked Sendable {
    public typealias Table = @Sendable () -> [UInt16: HealthCheckEntry]

    /// One listening socket: a port on one address.
    struct Listener: Hashable {
        var host: String
        var port: UInt16
    }

    private let table: Table
    private let addresses: @Sendable () -> [String]
    private let pollInterval: Duration
    private let proxyHealthy: @Sendable () -> Bool
    private let logger: Logger
    private let lock = NSLock()
    private var running: [Listener: Task<Void, Never>] = [:]
    private var failed: Set<Listener> = []
    private var bound: Set<Listener> = []
    /// Listeners whose bind failure was reported; reported again only after a success.
    private var reported: Set<Listener> = []

    /// Told when a port cannot be bound: the Service (namespace/name), the port, the address
    /// and the error.
    public var onBindFailure: (@Sendable (_ service: String, _ port: UInt16, _ host: String, _ error: String) -> Void)?

    public init(addresses: @escaping @Sendable () -> [String] = { ["0.0.0.0"] }, pollInterval: Duration = .seconds(1),
                logger: Logger, proxyHealthy: @escaping @Sendable () -> Bool, table: @escaping Table) {
        self.addresses = addresses
        self.pollInterval = pollInterval
        self.logger = logger
        self.proxyHealthy = proxyHealthy
        self.table = table
    }

    /// Ports with at least one bound listener right now.
    public var listening: Set<UInt16> { lock.withLock { Set(bound.map(\.port)) } }

    /// The addresses each port is bound on right now.
    public var listeningAddresses: [UInt16: Set<String>] {
        lock.withLock { Dictionary(grouping: bound, by: \.port).mapValues { Set($0.map(\.host)) } }
    }

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

    /// Opens and closes listeners to match the table and the addresses.
    func reconcile() {
        let entries = table()
        let hosts = addresses()
        let wanted = Set(entries.keys.flatMap { port in hosts.map { Listener(host: $0, port: port) } })
        let (toStop, toStart) = lock.withLock { () -> ([Task<Void, Never>], [Listener]) in
            for listener in failed { running[listener] = nil }
            failed.removeAll()
            let stop = running.filter { !wanted.contains($0.key) }
            for listener in stop.keys { running[listener] = nil }
            let start = wanted.filter { running[$0] == nil }.sorted { ($0.port, $0.host) < ($1.port, $1.host) }
            return (Array(stop.values), start)
        }
        for task in toStop { task.cancel() }
        for listener in toStart {
            let port = listener.port
            let server = HTTPEndpointServer(
                name: "healthCheckNodePort", address: BindAddress(host: listener.host, port: Int(port)), logger: logger,
                onBound: { [weak self] _ in
                    self?.lock.withLock {
                        _ = self?.bound.insert(listener)
                        _ = self?.reported.remove(listener)
                    }
                }
            ) { [weak self] _ in
                self?.respond(port: port) ?? Self.response(for: nil, proxyHealthy: false)
            }
            let logger = self.logger
            let service = entries[port]?.service ?? "?"
            let task = Task { [weak self] in
                do {
                    try await server.run()
                } catch {
                    let metadata: Logger.Metadata = [
                        "service": "\(service)", "port": "\(port)", "address": "\(listener.host)", "error": "\(error)",
                    ]
                    // Retried every poll: said once until the port was served again.
                    let first = self?.lock.withLock { self?.reported.insert(listener).inserted ?? false } ?? false
                    if first {
                        logger.warning("FailedToStartServiceHealthcheck", metadata: metadata)
                        self?.onBindFailure?(service, port, listener.host, "\(error)")
                    } else {
                        logger.debug("FailedToStartServiceHealthcheck (again)", metadata: metadata)
                    }
                    self?.lock.withLock { _ = self?.failed.insert(listener) }
                }
                self?.lock.withLock { _ = self?.bound.remove(listener) }
            }
            lock.withLock { running[listener] = task }
        }
    }

    /// kube-proxy's Warning on the Service when its health-check port cannot be served.
    public static func bindFailureEvent(service: String, port: UInt16, host: String, error: String, node: String) -> ClusterEvent {
        ClusterEvent(
            regarding: .service(qualifiedName: service), type: .warning, reason: "FailedToStartServiceHealthcheck", action: "Listen",
            note: "node \(node) failed to start healthcheck \"\(service)\" on port \(port) (address \(host)): \(error)")
    }

    /// The addresses health-check ports listen on (A.10, A.12): per family, the node's
    /// addresses inside `nodePortAddresses` (`primary` = the node's first address of the
    /// family), loopback excepted; the IPv4 wildcard when the IPv4 entries select every
    /// address (none given, or a /0). An IPv6 wildcard is not bound: on Linux it would
    /// also take the IPv4 port.
    public static func listenAddresses(nodePortAddresses: [String], localAddresses: [IPAddress],
                                       primary: [IPAddress]) -> [String] {
        // The plan's own reading of the list (per family, `primary` resolved).
        let node = ProxyNode(name: "", addresses: primary)
        let options = TranslationOptions(nodePortAddresses: nodePortAddresses)
        var result: [String] = []
        for family in [IPFamily.v4, .v6] {
            let cidrs = LoadBalancerPlan.nodePortCIDRs(family: family, node: node, options: options)
            if cidrs.isEmpty || cidrs.contains(where: \.isMatchAll) {
                if family == .v4 { result.append("0.0.0.0") }
                continue
            }
            let selected = localAddresses.filter { address in
                address.family == family && !address.isLoopback && cidrs.contains { $0.contains(address) }
            }
            result += Set(selected.map(\.description)).sorted()
        }
        return result
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
