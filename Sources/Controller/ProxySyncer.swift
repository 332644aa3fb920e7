import Foundation
import Logging
import Reconciler
import ServiceModel

/// Turns the current objects into map writes: translation (kube-proxy's rules) →
/// desired frontends → reconcile against what the maps hold.
public final class ProxySyncer: @unchecked Sendable {
    public let nodeName: String
    public var options: TranslationOptions
    private let maps: LoadBalancerMaps
    private let logger: Logger
    public private(set) var reconciler: Reconciler
    private var lastDiagnostics: [String] = []
    private var lastDesired: [DesiredFrontend]?

    /// What one sync did.
    public struct Report: Sendable {
        public var frontends: Int
        public var changes: Int
        public var ops: Int
        public var failures: [String]
        public var duration: Duration
    }

    /// Adopts the maps' current contents: nothing is rewritten until a sync finds a
    /// difference, and ids already in use keep their values.
    public init(nodeName: String, options: TranslationOptions = TranslationOptions(), maps: LoadBalancerMaps, logger: Logger) throws {
        self.nodeName = nodeName
        self.options = options
        self.maps = maps
        self.logger = logger
        self.reconciler = Reconciler(adopting: try maps.readState())
    }

    /// The node as the translation sees it: from a Node object of that name if the source
    /// has one, otherwise just its name.
    func proxyNode(from nodes: [ServiceModel.Node]) -> ProxyNode {
        guard let node = nodes.first(where: { $0.metadata.name == nodeName }) else {
            return ProxyNode(name: nodeName, labels: [:], addresses: [], podCIDRs: [])
        }
        return ProxyNode(node: node)
    }

    /// Computes the plan for `objects` and brings the maps to it. `prune` is false until
    /// every source has delivered its initial state.
    @discardableResult
    public func sync(_ objects: ManifestObjects, prune: Bool = true) -> Report {
        let clock = ContinuousClock()
        let start = clock.now
        let result = Translator.plan(
            services: objects.services, endpointSlices: objects.endpointSlices,
            node: proxyNode(from: objects.nodes), options: options)
        let diagnostics = result.diagnostics.map { "\($0.object): \($0.field): \($0.message)" }
            + DesiredFrontend.frontends(from: result.plan).conflicts
        if diagnostics != lastDiagnostics {
            for line in diagnostics where !lastDiagnostics.contains(line) { logger.warning("\(line)") }
            lastDiagnostics = diagnostics
        }
        let (desired, conflicts) = DesiredFrontend.frontends(from: result.plan)
        for conflict in conflicts where !lastDiagnostics.contains(conflict) {
            logger.warning("duplicate frontend ignored", metadata: ["conflict": "\(conflict)"])
        }
        let report = reconciler.reconcile(desired, healthChecks: DesiredFrontend.healthChecks(from: result.plan), prune: prune, maps: maps)
        for (change, error) in report.failed {
            logger.error("frontend left on its previous state", metadata: [
                "service": "\(change.service)", "frontend": "\(change.key.map { "\($0)" } ?? "-")", "error": "\(error)",
            ])
        }
        if !report.applied.isEmpty {
            logger.info("maps updated", metadata: [
                "frontends": "\(desired.count)", "changes": "\(report.applied.count)", "ops": "\(report.opCount)",
            ])
            for change in report.applied { logger.debug("\(change)") }
        }
        lastDesired = desired
        return Report(frontends: desired.count, changes: report.applied.count, ops: report.opCount,
                      failures: report.failed.map { "\($0.change.service): \($0.error)" }, duration: clock.now - start)
    }
}
