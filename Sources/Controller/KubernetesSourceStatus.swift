import Foundation
import KubeAPI
import ServiceModel

/// What a running `KubernetesSyncService` shows to health checks and metrics: whether
/// each informer has its initial state, how often it had to start over, this proxy's own
/// Node as last seen, and each change as it arrives (before it is programmed).
///
/// One status outlives the sources it watches: when a configuration reload replaces the
/// source, the counts of the old informers are kept, so the metrics stay monotonic.
public final class KubernetesSourceStatus: @unchecked Sendable {
    /// One informer's state.
    public struct Resource: Equatable, Sendable {
        /// `services`, `endpointslices` or `node`.
        public var name: String
        public var synced: Bool
        /// Since the controller started, across source restarts.
        public var statistics: InformerStatistics
    }

    private let lock = NSLock()
    private var current: [(name: String, synced: () -> Bool, statistics: () -> InformerStatistics)] = []
    private var retired: [String: InformerStatistics] = [:]
    private var nodeObject: () -> ServiceModel.Node? = { nil }
    private let changeArrived: @Sendable () -> Void

    /// `changeArrived` is called on an informer's task for every event that leads to a sync.
    public init(changeArrived: @escaping @Sendable () -> Void = {}) {
        self.changeArrived = changeArrived
    }

    /// The informers of the running source (and of earlier ones), in a fixed order; empty
    /// until a Kubernetes source has run.
    public var resources: [Resource] {
        lock.withLock {
            // Nothing before a Kubernetes source first ran (a manifest-directory source).
            let names = ["services", "endpointslices", "node"].filter { name in
                retired[name] != nil || current.contains { $0.name == name }
            }
            return names.map { name in
                let live = current.first { $0.name == name }
                var statistics = retired[name] ?? InformerStatistics()
                if let live {
                    let now = live.statistics()
                    statistics.watchesOpened += now.watchesOpened
                    statistics.relists += now.relists
                }
                return Resource(name: name, synced: live?.synced() ?? false, statistics: statistics)
            }
        }
    }

    /// Whether the Service and EndpointSlice informers have their initial state (nothing is
    /// programmed before) and the Node informer too (stale frontends are pruned only after).
    public var allSynced: Bool {
        let resources = self.resources
        return !resources.isEmpty && resources.allSatisfy(\.synced)
    }

    /// This proxy's Node as the Node informer last saw it; nil before it is listed or when
    /// the API server has no such Node.
    public var node: ServiceModel.Node? { lock.withLock { nodeObject }() }

    // MARK: - Called by KubernetesSyncService

    func attach(
        services: Informer<ServiceModel.Service>, slices: Informer<EndpointSlice>, node: Informer<ServiceModel.Node>
    ) {
        lock.withLock {
            current = [
                ("services", { services.hasSynced }, { services.statistics }),
                ("endpointslices", { slices.hasSynced }, { slices.statistics }),
                ("node", { node.hasSynced }, { node.statistics }),
            ]
            nodeObject = { node.objects().first }
        }
    }

    /// The source stopped: keep its counts, forget its informers.
    func detach() {
        lock.withLock {
            for informer in current {
                let statistics = informer.statistics()
                retired[informer.name, default: InformerStatistics()].watchesOpened += statistics.watchesOpened
                retired[informer.name, default: InformerStatistics()].relists += statistics.relists
            }
            current = []
            nodeObject = { nil }
        }
    }

    func noteChange() {
        changeArrived()
    }
}
