import Controller
import ServiceModel

/// Hands every sync and every arriving change to the metrics and the health state.
public final class SyncTelemetry: ProxySyncObserver, @unchecked Sendable {
    public let metrics: SwiftlaneMetrics?
    public let health: ProxyHealth

    public init(metrics: SwiftlaneMetrics?, health: ProxyHealth) {
        self.metrics = metrics
        self.health = health
    }

    public func proxySyncer(
        _ syncer: ProxySyncer, didSync report: ProxySyncer.Report, objects: ManifestObjects, prune: Bool
    ) {
        metrics?.recordSync(report, objects: objects, state: syncer.reconciler.state)
        health.recordSync(
            failures: report.failures.count, complete: prune,
            node: objects.nodes.first { $0.metadata.name == syncer.nodeName })
    }

    /// A change arrived from the source; the next sync will program it.
    public func changeArrived() {
        health.recordQueued()
        metrics?.recordQueued()
    }
}
