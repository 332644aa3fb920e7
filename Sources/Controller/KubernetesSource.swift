import Foundation
import KubeAPI
import Logging
import ServiceLifecycle
import ServiceModel

/// Keeps the datapath in step with a Kubernetes cluster: informers for Services and
/// EndpointSlices (kube-proxy's label selector, or only this proxy's objects when
/// `serviceProxyName` is set) and for this proxy's own Node, feeding `ProxySyncer`.
///
/// Nothing is programmed until both the Service and the EndpointSlice informers have
/// their initial state (kube-proxy's `OnServiceSynced` + `OnEndpointSlicesSynced`):
/// programming earlier would refuse connections to services whose slices have not
/// arrived. Until then the pinned maps of a previous run keep serving. Stale frontends
/// are pruned only once the Node informer is synced too. Bursts of changes are coalesced:
/// at most one sync per `minimumSyncInterval`, always with the latest objects.
///
/// On SIGTERM it stops; the datapath stays programmed for the next controller.
public struct KubernetesSyncService: ServiceLifecycle.Service {
    public let client: KubeClient
    public let nodeName: String
    public let serviceProxyName: String?
    public let minimumSyncInterval: Duration
    public let informerOptions: InformerOptions
    /// Informer state and arriving changes, for health and metrics.
    public let status: KubernetesSourceStatus?
    private let apply: @Sendable (ManifestObjects, _ prune: Bool, _ observedAt: ContinuousClock.Instant?) -> Void
    /// Whether the last sync left frontends on their previous state (a full map…): then
    /// the loop syncs again after a backoff, even if the cluster does not change.
    private let retryPending: @Sendable () -> Bool
    private let logger: Logger

    /// Syncs through `syncer`.
    public init(client: KubeClient, syncer: ProxySyncer, serviceProxyName: String?,
                minimumSyncInterval: Duration = .milliseconds(100), informerOptions: InformerOptions = InformerOptions(),
                status: KubernetesSourceStatus? = nil, logger: Logger) {
        self.init(client: client, nodeName: syncer.nodeName, serviceProxyName: serviceProxyName,
                  minimumSyncInterval: minimumSyncInterval, informerOptions: informerOptions, status: status, logger: logger,
                  retryPending: { syncer.hasPendingRetries }) {
            syncer.sync($0, prune: $1, observedAt: $2)
        }
    }

    /// Hands every snapshot to `apply` (tests, benchmarks).
    public init(client: KubeClient, nodeName: String, serviceProxyName: String?,
                minimumSyncInterval: Duration = .milliseconds(100), informerOptions: InformerOptions = InformerOptions(),
                status: KubernetesSourceStatus? = nil, logger: Logger, retryPending: @escaping @Sendable () -> Bool = { false },
                apply: @escaping @Sendable (ManifestObjects, _ prune: Bool, _ observedAt: ContinuousClock.Instant?) -> Void) {
        self.client = client
        self.nodeName = nodeName
        self.serviceProxyName = serviceProxyName
        self.minimumSyncInterval = minimumSyncInterval
        self.informerOptions = informerOptions
        self.status = status
        self.apply = apply
        self.retryPending = retryPending
        self.logger = logger
    }

    public func run() async throws {
        let changes = ChangeSignal()
        let status = self.status
        let services = Informer<ServiceModel.Service>(
            client: client, query: .services(serviceProxyName: serviceProxyName), options: informerOptions
        ) { event in
            if case .rejected(let rejection) = event { changes.reject(rejection) }
            status?.noteChange()
            changes.poke()
        }
        let slices = Informer<EndpointSlice>(
            client: client, query: .endpointSlices(serviceProxyName: serviceProxyName), options: informerOptions
        ) { event in
            if case .rejected(let rejection) = event { changes.reject(rejection) }
            status?.noteChange()
            changes.poke()
        }
        let node = Informer<ServiceModel.Node>(
            client: client, query: .node(named: nodeName), options: informerOptions
        ) { event in
            if case .rejected(let rejection) = event { changes.reject(rejection) }
            // Node status changes every few seconds (heartbeats, conditions); only the parts
            // the translation reads are worth a sync.
            if case .updated(let old, let new) = event, ProxyNode(node: old) == ProxyNode(node: new) { return }
            status?.noteChange()
            changes.poke()
        }
        status?.attach(services: services, slices: slices, node: node)
        defer { status?.detach() }
        logger.info("watching the Kubernetes API", metadata: [
            "server": "\(client.configuration.server)", "credentials": "\(client.configuration.origin)",
            "serviceProxyName": "\(serviceProxyName ?? "-")", "node": "\(nodeName)",
        ])
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await services.run() }
                group.addTask { await slices.run() }
                group.addTask { await node.run() }
                group.addTask {
                    await syncLoop(changes: changes, services: services, slices: slices, node: node)
                }
                await group.waitForAll()
            }
        }
        changes.finish()
        logger.info("stopping; the datapath stays programmed")
    }

    private func syncLoop(changes: ChangeSignal, services: Informer<ServiceModel.Service>,
                          slices: Informer<EndpointSlice>, node: Informer<ServiceModel.Node>) async {
        var waitingLogged = false
        var retryDelay: Duration = .seconds(1)
        let retry = PendingRetry()
        for await _ in changes.stream {
            guard services.hasSynced && slices.hasSynced else {
                if !waitingLogged {
                    logger.info("waiting for the initial Services and EndpointSlices before programming anything")
                    waitingLogged = true
                }
                continue
            }
            let objects = ManifestObjects(
                services: services.objects(), endpointSlices: slices.objects(), nodes: node.objects(),
                rejected: changes.takeRejections())
            // The oldest change this sync programs: network programming latency runs
            // from when it was observed to when the maps hold it.
            apply(objects, node.hasSynced, changes.takeFirstPoke())
            if retryPending() {
                // One retry at a time; woken, not poked: a retry is no new change for the
                // latency figure.
                if retry.schedule() {
                    let delay = retryDelay
                    retryDelay = min(retryDelay * 2, .seconds(30))
                    logger.warning("retrying frontends left on their previous state", metadata: ["retryIn": "\(delay)"])
                    Task {
                        try? await Task.sleep(for: delay)
                        retry.fired()
                        changes.wake()
                    }
                }
            } else {
                retryDelay = .seconds(1)
            }
            // Changes arriving meanwhile collapse into the one pending signal.
            do {
                try await Task.sleep(for: minimumSyncInterval)
            } catch {
                return
            }
        }
    }
}

/// "Something changed": any number of pokes between two reads count as one.
final class ChangeSignal: @unchecked Sendable {
    let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation
    private let lock = NSLock()
    private var firstPoke: ContinuousClock.Instant?

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func poke() {
        lock.withLock { if firstPoke == nil { firstPoke = ContinuousClock.now } }
        continuation.yield()
    }

    /// Runs the loop again without recording a change (a retry).
    func wake() {
        continuation.yield()
    }

    /// Objects the informers refused since the last sync, handed to the next one (logs, metrics).
    private var rejections: [Rejection] = []

    func reject(_ rejection: Rejection) {
        lock.withLock { rejections.append(rejection) }
    }

    func takeRejections() -> [Rejection] {
        lock.withLock {
            defer { rejections = [] }
            return rejections
        }
    }

    /// When the first change since the previous call arrived (nil if none did).
    func takeFirstPoke() -> ContinuousClock.Instant? {
        lock.withLock {
            defer { firstPoke = nil }
            return firstPoke
        }
    }

    func finish() {
        continuation.finish()
    }
}

/// Whether a retry wake-up is already on its way.
final class PendingRetry: @unchecked Sendable {
    private let lock = NSLock()
    private var scheduled = false

    /// True if the caller should schedule one (none was).
    func schedule() -> Bool {
        lock.withLock {
            defer { scheduled = true }
            return !scheduled
        }
    }

    func fired() { lock.withLock { scheduled = false } }
}
