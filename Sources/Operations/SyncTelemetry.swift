import Controller
import KubeAPI
import ServiceModel

/// Hands every sync and every arriving change to the metrics and the health state.
public final class SyncTelemetry: ProxySyncObserver, @unchecked Sendable {
    public let metrics: SwiftlaneMetrics?
    public let health: ProxyHealth
    /// Where a Service whose frontends could not be programmed is reported, so that
    /// `kubectl describe service` shows it (deduplicated by the recorder).
    public let events: EventRecorder?

    public init(metrics: SwiftlaneMetrics?, health: ProxyHealth, events: EventRecorder? = nil) {
        self.metrics = metrics
        self.health = health
        self.events = events
    }

    public func proxySyncer(
        _ syncer: ProxySyncer, didSync report: ProxySyncer.Report, objects: ManifestObjects, prune: Bool
    ) {
        metrics?.recordSync(report, objects: objects, state: syncer.reconciler.state)
        health.recordSync(
            failures: report.failures.count, complete: prune,
            node: objects.nodes.first { $0.metadata.name == syncer.nodeName })
        for (service, error) in report.failedServices.sorted(by: { $0.key < $1.key }) {
            events?.record(Self.programmingFailure(service: service, error: error, node: syncer.nodeName))
        }
        for rejection in report.rejected {
            if let event = Self.rejectionEvent(rejection, node: syncer.nodeName) { events?.record(event) }
        }
    }

    /// A Warning on the Service or EndpointSlice whose field (or whole object) was refused,
    /// so its owner sees it in `kubectl describe`; nil for what names no object of the API.
    static func rejectionEvent(_ rejection: Rejection, node: String) -> ClusterEvent? {
        let parts = rejection.object.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return nil }
        let reference: ObjectReference
        switch rejection.kind {
        case "Service": reference = .service(namespace: parts[0], name: parts[1])
        case "EndpointSlice":
            reference = ObjectReference(apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice", namespace: parts[0], name: parts[1])
        default: return nil
        }
        let what = rejection.field.isEmpty ? "the object" : rejection.field
        return ClusterEvent(
            regarding: reference, type: .warning, reason: "RejectedByProxy", action: "Translate",
            note: "node \(node) ignored \(what): \(rejection.message)")
    }

    /// A Warning on the Service: its frontends stay on their previous state (map full…).
    static func programmingFailure(service: String, error: String, node: String) -> ClusterEvent {
        ClusterEvent(
            regarding: .service(qualifiedName: service), type: .warning, reason: "FailedToProgramService", action: "Program",
            note: "node \(node) could not program service \(service) (frontends left on their previous state, retried with backoff): \(error)")
    }

    /// A change arrived from the source; the next sync will program it.
    public func changeArrived() {
        health.recordQueued()
        metrics?.recordQueued()
    }
}
