import Controller
import Foundation
import ServiceModel

/// The proxy's health as kube-proxy's health server defines it (semantics spec A.10),
/// plus readiness:
///
/// - **`/healthz`** is 200 unless a change has waited longer than `timeout` without being
///   programmed (kube-proxy: 2 × syncPeriod = 60 s by default), or this proxy's Node is
///   being deleted (deletionTimestamp, or the `ToBeDeletedByClusterAutoscaler` taint), so
///   load balancers stop sending to a node that is going away.
/// - **`/livez`** is the same without the Node check.
/// - **`/readyz`** is 200 once the source has its complete initial state (informers
///   synced), the datapath is attached, and the last sync programmed every frontend. The
///   DaemonSet's readiness gates its rolling update on it: the next node is upgraded only
///   after this one serves everything again.
///
/// A sync that leaves frontends on their previous state (a full map) does not count as
/// "updated": the change stays pending, and `/healthz` fails once it is older than
/// `timeout`, as kube-proxy's does when its rule restore keeps failing.
public final class ProxyHealth: @unchecked Sendable {
    public let timeout: Duration
    private let clock: @Sendable () -> Date
    private let lock = NSLock()
    private var oldestPending: Date?
    private var lastUpdated: Date?
    private var lastSync: (failures: Int, complete: Bool)?
    private var lastSyncedNode: ServiceModel.Node?

    private var hooks = Hooks()

    private struct Hooks {
        var sourceReady: @Sendable () -> (Bool, String) = { (false, "no source attached") }
        var datapathAttached: @Sendable () -> (Bool, String) = { (false, "no datapath attached") }
        var liveNode: @Sendable () -> ServiceModel.Node? = { nil }
        var answered: @Sendable (_ endpoint: String, _ code: Int) -> Void = { _, _ in }
    }

    /// The source's readiness: (ready, why not). Set by the wiring, again when a reload
    /// replaces the source.
    public var sourceReady: @Sendable () -> (Bool, String) {
        get { lock.withLock { hooks.sourceReady } }
        set { lock.withLock { hooks.sourceReady = newValue } }
    }
    /// The datapath's attachment: (attached, why not). Set by the wiring.
    public var datapathAttached: @Sendable () -> (Bool, String) {
        get { lock.withLock { hooks.datapathAttached } }
        set { lock.withLock { hooks.datapathAttached = newValue } }
    }
    /// This proxy's Node as the source sees it now (the Kubernetes Node informer); when it
    /// says nil, the Node from the objects of the last sync (manifest files) is used.
    public var liveNode: @Sendable () -> ServiceModel.Node? {
        get { lock.withLock { hooks.liveNode } }
        set { lock.withLock { hooks.liveNode = newValue } }
    }
    /// Told the status code of every `/healthz` and `/livez` answer (metrics).
    public var answered: @Sendable (_ endpoint: String, _ code: Int) -> Void {
        get { lock.withLock { hooks.answered } }
        set { lock.withLock { hooks.answered = newValue } }
    }

    public init(timeout: Duration = .seconds(60), clock: @escaping @Sendable () -> Date = { Date() }) {
        self.timeout = timeout
        self.clock = clock
    }

    // MARK: - Events

    /// A change arrived that is not programmed yet (kube-proxy's `QueuedUpdate`).
    public func recordQueued() {
        let now = clock()
        lock.withLock {
            if oldestPending == nil { oldestPending = now }
        }
    }

    /// A sync finished. `complete`: its input was the source's whole state (informers
    /// synced, Node known). Without failures it is kube-proxy's `Updated`.
    public func recordSync(failures: Int, complete: Bool, node: ServiceModel.Node?) {
        let now = clock()
        lock.withLock {
            lastSync = (failures, complete)
            lastSyncedNode = node
            if failures == 0 {
                lastUpdated = now
                oldestPending = nil
            } else if oldestPending == nil {
                oldestPending = now
            }
        }
    }

    // MARK: - Answers

    /// Whether no change has waited longer than `timeout`, and when the proxy last synced.
    public func isHealthy() -> (healthy: Bool, lastUpdated: Date?) {
        let now = clock()
        return lock.withLock {
            guard let pending = oldestPending else { return (true, lastUpdated) }
            return (now.timeIntervalSince(pending) <= timeout.seconds, lastUpdated)
        }
    }

    /// False while the Node is being deleted (kube-proxy's node eligibility).
    public func isNodeEligible() -> Bool {
        guard let node = liveNode() ?? lock.withLock({ lastSyncedNode }) else { return true }
        if node.metadata.deletionTimestamp != nil { return false }
        return !node.spec.taints.contains { $0.key == WellKnown.toBeDeletedTaint }
    }

    public func healthz() -> EndpointResponse {
        let eligible = isNodeEligible()
        return answer(endpoint: "healthz", extraCondition: eligible, extraField: ", \"nodeEligible\": \(eligible)")
    }

    public func livez() -> EndpointResponse {
        answer(endpoint: "livez", extraCondition: true, extraField: "")
    }

    /// kube-proxy's body, `{"lastUpdated": …,"currentTime": …}`, with RFC 3339 times. When
    /// healthy, lastUpdated is the current time (kube-proxy keeps that quirk so that old
    /// clients reading it as "last sync loop run" keep working).
    private func answer(endpoint: String, extraCondition: Bool, extraField: String) -> EndpointResponse {
        let now = clock()
        let (healthy, lastUpdated) = isHealthy()
        let ok = healthy && extraCondition
        // Never synced: Go's zero time, as kube-proxy prints it for a zero time.Time.
        let shown = ok ? Self.format(now) : lastUpdated.map(Self.format) ?? "0001-01-01T00:00:00Z"
        let body = "{\"lastUpdated\": \"\(shown)\",\"currentTime\": \"\(Self.format(now))\"\(extraField)}"
        let code = ok ? 200 : 503
        answered(endpoint, code)
        return EndpointResponse(
            status: ok ? .ok : .serviceUnavailable,
            headers: [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff")], body: body)
    }

    /// One line per check, as the Kubernetes API server's `/readyz?verbose` prints them.
    public func readyz() -> EndpointResponse {
        var checks: [(name: String, ok: Bool, detail: String)] = []
        let (sourceOK, sourceDetail) = sourceReady()
        checks.append(("source", sourceOK, sourceDetail))
        let (datapathOK, datapathDetail) = datapathAttached()
        checks.append(("datapath", datapathOK, datapathDetail))
        let sync = lock.withLock { lastSync }
        switch sync {
        case nil:
            checks.append(("programmed", false, "no sync yet"))
        case (let failures, let complete)? where !complete || failures > 0:
            checks.append(
                (
                    "programmed", false,
                    complete
                        ? "the last sync left \(failures) frontends on their previous state"
                        : "the Node is not known yet"
                ))
        default:
            checks.append(("programmed", true, ""))
        }
        let ready = checks.allSatisfy(\.ok)
        var body = ""
        for check in checks {
            body += check.ok ? "[+]\(check.name) ok\n" : "[-]\(check.name) failed: \(check.detail)\n"
        }
        body += ready ? "readyz check passed\n" : "readyz check failed\n"
        return EndpointResponse(
            status: ready ? .ok : .serviceUnavailable,
            headers: [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")],
            body: body)
    }

    /// Routes the health server's requests: any method, kube-proxy's two paths plus readyz.
    public func respond(to request: EndpointRequest) -> EndpointResponse {
        switch request.path {
        case "/healthz": return healthz()
        case "/livez": return livez()
        case "/readyz": return readyz()
        default: return .notFound(request.path)
        }
    }

    static func format(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
