import Foundation
import Logging
import Reconciler
import ServiceModel

/// Turns the current objects into map writes: translation (kube-proxy's rules) →
/// desired frontends → reconcile against what the maps hold.
///
/// Syncs are incremental: each Service's translation is cached with the inputs it came
/// from (the Service and its EndpointSlices), and only Services whose inputs changed are
/// translated and reconciled again, so one endpoint change costs the same at 10 services
/// as at 10,000. A change of node, options or sync state re-translates everything.
public final class ProxySyncer: @unchecked Sendable {
    public let nodeName: String
    public var options: TranslationOptions
    private let maps: LoadBalancerMaps
    private let logger: Logger
    public private(set) var reconciler: Reconciler

    /// What one Service translates from: two syncs with equal inputs program the same.
    /// A class: the syncer keeps and compares thousands of them every sync, and copying
    /// the Kubernetes structs they hold costs a retain per field.
    private final class ServiceInputs: Equatable {
        /// The Service, if any (at most one): kept as the array the translator takes, so
        /// translating does not copy the struct (a retain per field) into a new array.
        private(set) var services: [ServiceModel.Service]
        private(set) var slices: [EndpointSlice] = []

        init(service: ServiceModel.Service? = nil) { services = service.map { [$0] } ?? [] }

        func setService(_ service: ServiceModel.Service) { services = [service] }
        /// The Service's metadata, read in place (`services.first` would copy the Service).
        var serviceMetadata: ObjectMeta? { services.isEmpty ? nil : services[0].metadata }
        func addSlice(_ slice: EndpointSlice) { slices.append(slice) }

        func sortSlices() {
            if slices.count > 1 { slices.sort { $0.metadata.name < $1.metadata.name } }
        }

        /// Objects from the API server always carry a resourceVersion, changed at every
        /// modification: equal versions mean equal objects, and the deep comparison (the
        /// cost of a sync at scale) is skipped. Objects without one (manifest files) are
        /// compared field by field.
        static func == (lhs: ServiceInputs, rhs: ServiceInputs) -> Bool {
            guard lhs.slices.count == rhs.slices.count,
                  same(lhs.serviceMetadata, rhs.serviceMetadata) ?? (lhs.services == rhs.services)
            else { return false }
            for (left, right) in zip(lhs.slices, rhs.slices) where !(same(left.metadata, right.metadata) ?? (left == right)) {
                return false
            }
            return true
        }

        /// nil when a version is missing (then the objects are compared).
        private static func same(_ left: ObjectMeta?, _ right: ObjectMeta?) -> Bool? {
            switch (left, right) {
            case (nil, nil): return true
            case (let left?, let right?):
                guard let a = left.resourceVersion, let b = right.resourceVersion else { return nil }
                return a == b && left.name == right.name && left.namespace == right.namespace
            default: return false
            }
        }
    }

    /// "namespace/name" without building a string per object per sync.
    private struct ServiceKey: Hashable, Comparable, CustomStringConvertible {
        var namespace: String
        var name: String

        var description: String { "\(namespace)/\(name)" }
        static func < (lhs: Self, rhs: Self) -> Bool { (lhs.namespace, lhs.name) < (rhs.namespace, rhs.name) }
    }

    /// One object as a sync saw it: who it is and which version.
    private struct SeenObject {
        var namespace: String
        var name: String
        var resourceVersion: String?
        /// The Service it belongs to: a slice's label, a Service's own name.
        var serviceName: String?
    }

    private final class Translated {
        let inputs: ServiceInputs
        let frontends: [DesiredFrontend]
        let healthCheck: (port: UInt16, entry: HealthCheckEntry)?

        init(inputs: ServiceInputs, frontends: [DesiredFrontend], healthCheck: (port: UInt16, entry: HealthCheckEntry)?) {
            self.inputs = inputs
            self.frontends = frontends
            self.healthCheck = healthCheck
        }
    }

    private var translated: [ServiceKey: Translated] = [:]
    private var healthChecks: [ServiceKey: (port: UInt16, entry: HealthCheckEntry)] = [:]
    /// Which Service serves each frontend key (the first by name when two claim one).
    private var owners: [FrontendKey: ServiceKey] = [:]
    private var keysByService: [ServiceKey: [FrontendKey]] = [:]
    /// Services that asked for a frontend key another Service held: they get it when it
    /// is freed.
    private var shadowed: [FrontendKey: Set<ServiceKey>] = [:]
    /// Services whose last reconcile failed (map full…): reconciled again next sync even
    /// if their inputs did not change.
    private var retryServices = Set<ServiceKey>()
    private var translatedFor: (node: ProxyNode, options: TranslationOptions, pruned: Bool)?
    /// What the previous sync saw at each position, and where each Service's objects sit:
    /// sources list objects sorted by name, so between two syncs an unchanged object stays
    /// at its index and a change is found by comparing versions position by position,
    /// without regrouping everything (see `changedByPosition`). Only identities and
    /// versions are kept, not the objects: holding the previous arrays made every sync
    /// after a change free (or copy) all of them.
    private var seen: (services: [SeenObject], slices: [SeenObject])?
    private var serviceIndex: [ServiceKey: Int] = [:]
    private var sliceIndexes: [ServiceKey: [Int]] = [:]
    /// Called with the UDP backends a sync removed from every frontend, after the maps no
    /// longer offer them: terminates the connected sockets socket LB pinned to them
    /// (Datapath.UDPSocketTerminator), so clients reconnect to a live backend.
    public var terminateUDPSockets: ((Set<BackendAddress>) -> Void)?
    /// Whether the last sync left Services to retry (their frontends kept their previous
    /// state); sources with no timer of their own sync again after a backoff.
    public var hasPendingRetries: Bool { !retryServices.isEmpty }
    /// Frontends left on their previous state, by Service, since start (for metrics).
    public private(set) var failuresByService: [String: Int] = [:]
    /// Told about every sync (metrics, health; see ProxySyncObserver).
    public var observer: (any ProxySyncObserver)?
    /// Collected while a sync runs, for its report.
    private var rejectedThisSync: [Rejection] = []

    /// What one sync did.
    public struct Report: Sendable {
        public var frontends: Int
        /// Services translated again because their inputs changed.
        public var servicesChanged: Int
        public var changes: Int
        public var ops: Int
        public var failures: [String]
        /// Objects and fields refused: by the source (`ManifestObjects.rejected`), by the
        /// translation of the Services translated this sync (invalid IPs, ports…), and
        /// frontends already served for another Service. Each is logged once, here or by
        /// the source, naming the object and the field.
        public var rejected: [Rejection] = []
        /// How long the translation and the map writes took.
        public var duration: Duration
        /// From the change being observed to the maps being programmed (kube-proxy's
        /// network programming latency), when the caller said when it observed it.
        public var networkProgrammingLatency: Duration?
        /// Services with a frontend left on its previous state, and the first error.
        public var failedServices: [String: String] = [:]
    }

    /// Adopts the maps' current contents: nothing is rewritten until a sync finds a
    /// difference, and ids already in use keep their values.
    public init(nodeName: String, options: TranslationOptions = TranslationOptions(), maps: LoadBalancerMaps, logger: Logger) throws {
        self.nodeName = nodeName
        self.options = options
        self.maps = maps
        self.logger = logger
        self.reconciler = Reconciler(adopting: try maps.readState(), slotCapacity: maps.slotCapacity)
    }

    /// The node as the translation sees it: from a Node object of that name if the source
    /// has one, otherwise just its name.
    public func proxyNode(from nodes: [ServiceModel.Node]) -> ProxyNode {
        guard let node = nodes.first(where: { $0.metadata.name == nodeName }) else {
            return ProxyNode(name: nodeName, labels: [:], addresses: [], podCIDRs: [])
        }
        return ProxyNode(node: node)
    }

    /// Brings the maps to what `objects` call for. `prune` is false until every source has
    /// delivered its initial state: until then nothing is removed.
    @discardableResult
    public func sync(_ objects: ManifestObjects, prune: Bool = true, observedAt: ContinuousClock.Instant? = nil) -> Report {
        let clock = ContinuousClock()
        let start = clock.now
        rejectedThisSync = objects.rejected
        let node = proxyNode(from: objects.nodes)
        let full = translatedFor.map { $0.node != node || $0.options != options || (prune && !$0.pruned) } ?? true
        if full {
            translated = [:]
            healthChecks = [:]
        }

        var changed = Set<ServiceKey>()
        let affectedInPlace = full ? nil : changedByPosition(objects)
        let changedInPlace = affectedInPlace != nil
        var work: [(service: ServiceKey, input: ServiceInputs)] = []
        var grouped: [ServiceKey: ServiceInputs]?
        if let affected = affectedInPlace {
            for service in affected {
                let input = ServiceInputs(service: serviceIndex[service].map { objects.services[$0] })
                for index in sliceIndexes[service] ?? [] { input.addSlice(objects.endpointSlices[index]) }
                if translated[service]?.inputs != input { work.append((service, input)) }
            }
        } else {
            let inputs = groupByService(objects)
            for (service, input) in inputs where translated[service]?.inputs != input { work.append((service, input)) }
            grouped = inputs
        }
        for (index, result) in translateAll(work, node: node).enumerated() {
            let service = work[index].service
            translated[service] = result.translated
            healthChecks[service] = result.translated.healthCheck
            rejectedThisSync += result.rejected
            changed.insert(service)
        }
        if let inputs = grouped {
            for service in translated.keys where inputs[service] == nil {
                translated[service] = nil
                healthChecks[service] = nil
                changed.insert(service)
            }
        }
        if !changedInPlace { seen = Self.identities(of: objects) }
        translatedFor = (node, options, prune)
        let healthChecks = Dictionary(self.healthChecks.values.map { ($0.port, $0.entry) }, uniquingKeysWith: { first, _ in first })

        let report: Reconciler.ApplyReport
        if full {
            owners = [:]
            keysByService = [:]
            shadowed = [:]
            var desired: [DesiredFrontend] = []
            for service in translated.keys.sorted() {
                desired += claim(translated[service]!.frontends, for: service)
            }
            report = reconciler.reconcile(.everything(desired, prune: prune), healthChecks: healthChecks, maps: maps)
        } else {
            var upserting: [DesiredFrontend] = []
            var removing: [FrontendKey] = []
            var pending = changed.union(retryServices).sorted()
            var next = 0  // a cursor, not removeFirst(): that moved the whole queue each time
            var done = Set<ServiceKey>()
            while next < pending.count {
                let service = pending[next]
                next += 1
                guard done.insert(service).inserted else { continue }
                let previous = keysByService[service] ?? []
                for key in previous where owners[key] == service { owners[key] = nil }
                let claimed = claim(translated[service]?.frontends ?? [], for: service)
                let kept = Set(claimed.map(\.key))
                upserting += claimed
                for key in previous where !kept.contains(key) && owners[key] == nil {
                    removing.append(key)
                    // A Service that lost this key to us earlier can have it now.
                    for waiting in shadowed.removeValue(forKey: key) ?? [] where translated[waiting] != nil {
                        done.remove(waiting)
                        pending.append(waiting)
                    }
                }
                if claimed.isEmpty { keysByService[service] = nil }
            }
            let upsertedKeys = Set(upserting.map(\.key))
            removing.removeAll { upsertedKeys.contains($0) }
            report = reconciler.reconcile(.only(upserting: upserting, removing: removing), healthChecks: healthChecks, maps: maps)
        }
        retryServices = Set(report.failed.compactMap { $0.change.key.flatMap { owners[$0] } })
        for (change, _) in report.failed { failuresByService[change.service, default: 0] += 1 }
        let removedUDP = Set(report.removedBackends.filter { $0.proto == .udp })
        if !removedUDP.isEmpty, let terminateUDPSockets { terminateUDPSockets(removedUDP) }

        for (change, error) in report.failed {
            logger.error("frontend left on its previous state", metadata: [
                "service": "\(change.service)", "frontend": "\(change.key.map { "\($0)" } ?? "-")", "error": "\(error)",
            ].merging(ReconcileFailure(error).metadata) { current, _ in current })
        }
        let end = clock.now
        var metadata: Logger.Metadata = [
            "frontends": "\(owners.count)", "servicesChanged": "\(changed.count)", "changes": "\(report.applied.count)",
            "ops": "\(report.opCount)", "failed": "\(report.failed.count)", "took": "\(end - start)",
        ]
        if let observedAt { metadata["networkProgrammingLatency"] = "\(end - observedAt)" }
        logger.info("synced", metadata: metadata)
        for change in report.applied { logger.debug("\(change)") }
        var result = Report(frontends: owners.count, servicesChanged: changed.count, changes: report.applied.count, ops: report.opCount,
                            failures: report.failed.map { "\($0.change.service): \($0.error)" }, duration: end - start,
                            networkProgrammingLatency: observedAt.map { end - $0 })
        for (change, error) in report.failed where result.failedServices[change.service] == nil {
            result.failedServices[change.service] = "\(error)"
        }
        result.rejected = rejectedThisSync
        rejectedThisSync = []
        observer?.proxySyncer(self, didSync: result, objects: objects, prune: prune)
        return result
    }

    /// Takes ownership of the frontend keys no other Service holds; returns those.
    private func claim(_ frontends: [DesiredFrontend], for service: ServiceKey) -> [DesiredFrontend] {
        var claimed: [DesiredFrontend] = []
        for frontend in frontends {
            if let owner = owners[frontend.key], owner != service {
                logger.warning("duplicate frontend ignored", metadata: [
                    "service": "\(service)", "frontend": "\(frontend.key)", "servedFor": "\(owner)",
                ])
                rejectedThisSync.append(Rejection(
                    kind: "Service", object: "\(service)", field: "spec", reason: "duplicate-frontend",
                    message: "frontend \(frontend.key) is already served for \(owner)"))
                shadowed[frontend.key, default: []].insert(service)
                continue
            }
            owners[frontend.key] = service
            claimed.append(frontend)
        }
        keysByService[service] = claimed.map(\.key)
        return claimed
    }

    /// Services translated on one thread: fewer are not worth spreading out.
    static let translationChunk = 256

    /// The Services of `work` translated, in order. Each Service's translation reads its
    /// own inputs and nothing else, so many (a sync from empty, a relist) are spread over
    /// every core: at 10,000 Services translation was most of the sync.
    private func translateAll(_ work: [(service: ServiceKey, input: ServiceInputs)], node: ProxyNode)
        -> [(translated: Translated, rejected: [Rejection])]
    {
        let chunks = (work.count + Self.translationChunk - 1) / Self.translationChunk
        guard chunks > 1, ProcessInfo.processInfo.activeProcessorCount > 1 else {
            return work.map { translate($0.service, $0.input, node: node) }
        }
        var results = [(translated: Translated, rejected: [Rejection])?](repeating: nil, count: work.count)
        results.withUnsafeMutableBufferPointer { results in
            // Each index is written by exactly one iteration.
            nonisolated(unsafe) let output = results
            DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                let start = chunk * Self.translationChunk
                for index in start..<min(start + Self.translationChunk, work.count) {
                    output[index] = translate(work[index].service, work[index].input, node: node)
                }
            }
        }
        return results.map { $0! }
    }

    /// One Service's frontends and health check, with kube-proxy's rules, and what it
    /// refused (logged here). Touches nothing of the syncer's: see `translateAll`.
    private func translate(_ service: ServiceKey, _ input: ServiceInputs, node: ProxyNode)
        -> (translated: Translated, rejected: [Rejection])
    {
        let result = Translator.plan(services: input.services, endpointSlices: input.slices,
                                     node: node, options: options)
        var rejected: [Rejection] = []
        for diagnostic in result.diagnostics {
            logger.warning("\(diagnostic.object): \(diagnostic.field): \(diagnostic.message)")
            rejected.append(Rejection(diagnostic))
        }
        let (frontends, conflicts) = DesiredFrontend.frontends(from: result.plan)
        for conflict in conflicts {
            logger.warning("duplicate frontend ignored", metadata: ["conflict": "\(conflict)"])
            rejected.append(Rejection(
                kind: "Service", object: "\(service)", field: "spec", reason: "duplicate-frontend", message: "\(conflict)"))
        }
        let check = DesiredFrontend.healthChecks(from: result.plan).first.map { (port: $0.key, entry: $0.value) }
        return (Translated(inputs: input, frontends: frontends, healthCheck: check), rejected)
    }

    /// Objects grouped by the Service they belong to ("namespace/name"); slices by their
    /// `kubernetes.io/service-name` label. Slices without it are kube-proxy's "ignored,
    /// error logged" (the translator reports them when seen without a Service).
    /// Groups every object by Service and records where each one sits, for the next
    /// sync's `changedByPosition`.
    private func groupByService(_ objects: ManifestObjects) -> [ServiceKey: ServiceInputs] {
        var result: [ServiceKey: ServiceInputs] = [:]
        result.reserveCapacity(objects.services.count)
        serviceIndex = [:]
        sliceIndexes = [:]
        for (index, service) in objects.services.enumerated() {
            let key = ServiceKey(namespace: service.metadata.namespace, name: service.metadata.name)
            serviceIndex[key] = index
            if let inputs = result[key] { inputs.setService(service) } else { result[key] = ServiceInputs(service: service) }
        }
        for (index, slice) in objects.endpointSlices.enumerated() {
            let owner = ServiceKey(namespace: slice.metadata.namespace, name: slice.serviceName ?? "")
            sliceIndexes[owner, default: []].append(index)
            if let inputs = result[owner] { inputs.addSlice(slice) } else {
                let inputs = ServiceInputs()
                inputs.addSlice(slice)
                result[owner] = inputs
            }
        }
        for inputs in result.values { inputs.sortSlices() }
        for key in sliceIndexes.keys where sliceIndexes[key]!.count > 1 {
            sliceIndexes[key]!.sort { objects.endpointSlices[$0].metadata.name < objects.endpointSlices[$1].metadata.name }
        }
        return result
    }

    /// The Services whose objects changed since the previous sync, found position by
    /// position (and recorded as seen); nil when that cannot be known that way (objects
    /// added, removed or moved, a slice that changed Service, objects without
    /// resourceVersion): then everything is regrouped. An unchanged version means an
    /// unchanged object (its labels too), so a slice's Service is only looked at when its
    /// version moved. The objects are read in place: copying each struct out of the array
    /// (a retain per field) was most of a no-op sync at 10,000 Services.
    private func changedByPosition(_ objects: ManifestObjects) -> Set<ServiceKey>? {
        guard var seen, seen.services.count == objects.services.count,
              seen.slices.count == objects.endpointSlices.count else { return nil }
        self.seen = nil  // left nil if this returns nil part way: the caller regroups
        var affected = Set<ServiceKey>()
        guard Self.findChanges(in: objects.services, seen: &seen.services, into: &affected, owner: { $0.metadata.name }),
              Self.findChanges(in: objects.endpointSlices, seen: &seen.slices, into: &affected, owner: { $0.serviceName })
        else { return nil }
        self.seen = seen
        return affected
    }

    /// One kind's part of `changedByPosition`: false when an object moved, lost its
    /// version or changed Service (`owner`: the name of the Service it belongs to).
    private static func findChanges<Object: ObjectWithMetadata>(
        in objects: [Object], seen: inout [SeenObject], into affected: inout Set<ServiceKey>, owner: (Object) -> String?
    ) -> Bool {
        objects.withUnsafeBufferPointer { objects in
            for index in objects.indices {
                guard objects[index].metadata.name == seen[index].name,
                      objects[index].metadata.namespace == seen[index].namespace,
                      let version = objects[index].metadata.resourceVersion,
                      let oldVersion = seen[index].resourceVersion else { return false }
                if version != oldVersion {
                    let service = owner(objects[index])
                    guard service == seen[index].serviceName else { return false }
                    affected.insert(ServiceKey(namespace: objects[index].metadata.namespace, name: service ?? ""))
                    seen[index].resourceVersion = version
                }
            }
            return true
        }
    }

    /// Every object's identity and version, for the next sync's `changedByPosition`.
    private static func identities(of objects: ManifestObjects) -> (services: [SeenObject], slices: [SeenObject]) {
        let services = objects.services.map {
            SeenObject(namespace: $0.metadata.namespace, name: $0.metadata.name, resourceVersion: $0.metadata.resourceVersion,
                       serviceName: $0.metadata.name)
        }
        let slices = objects.endpointSlices.map {
            SeenObject(namespace: $0.metadata.namespace, name: $0.metadata.name, resourceVersion: $0.metadata.resourceVersion,
                       serviceName: $0.serviceName)
        }
        return (services, slices)
    }
}

import Datapath

extension ProxySyncer {
    /// Terminates, after each sync, the connected UDP sockets pinned to backends that sync
    /// removed. A failure is logged, never fatal: the maps are already right, only old
    /// sockets linger.
    public func terminateUDPSockets(with terminator: UDPSocketTerminator, logger: Logger) {
        terminateUDPSockets = { backends in
            do {
                let count = try terminator.terminateConnected(to: backends)
                if count > 0 {
                    logger.info("terminated connected UDP sockets of removed backends", metadata: [
                        "sockets": "\(count)", "backends": "\(backends.sorted().map(\.description).joined(separator: " "))",
                    ])
                }
            } catch {
                logger.warning("cannot terminate UDP sockets of removed backends", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// A Kubernetes object the syncer finds changes of by its metadata.
private protocol ObjectWithMetadata {
    var metadata: ObjectMeta { get }
}

extension ServiceModel.Service: ObjectWithMetadata {}
extension EndpointSlice: ObjectWithMetadata {}
