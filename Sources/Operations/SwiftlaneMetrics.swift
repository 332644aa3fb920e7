import Controller
import Datapath
import Foundation
import Prometheus
import Reconciler
import ServiceModel

/// Every metric Swiftlane exports, in one Prometheus registry (swift-prometheus).
///
/// kube-proxy's metrics keep their names and meanings, so dashboards and alerts built for
/// kube-proxy keep working. Swiftlane's own metrics describe the BPF datapath; those are
/// read from the kernel when scraped (`render()`), never from a copy the controller keeps:
/// map occupancy from the pinned maps, outcome counters from the per-CPU counter array,
/// attachment state from the pinned links.
public final class SwiftlaneMetrics: @unchecked Sendable {
    public let registry: PrometheusCollectorRegistry
    private let pinPath: String
    private let outcomeCounters: @Sendable () -> [String: UInt64]
    private let kubernetesStatus: KubernetesSourceStatus?
    /// Changes whose trigger happened before this are not counted in the network
    /// programming latency (kube-proxy's `trackerStartTime`): their latency includes the
    /// time the proxy was not running.
    private let startedAt: Date
    /// Serializes scrapes: reading the kernel and emitting happen together, so no scrape
    /// sees a counter between its reset and its new value.
    private let scrapeLock = NSLock()
    /// Guards the change-tracking state below (written by syncs).
    private let syncLock = NSLock()
    private var serviceVersions: [String: String] = [:]
    private var sliceVersions: [String: String] = [:]
    /// Series of the scrape-time families, so that series whose subject disappeared (a
    /// map or link removed) are dropped instead of frozen at their last value.
    private var scrapedGauges: [String: Gauge] = [:]

    // MARK: kube-proxy's metrics

    let syncDuration: DurationHistogram
    let networkProgrammingDuration: DurationHistogram
    let lastSyncTimestamp: Gauge
    let lastQueuedTimestamp: Gauge
    let endpointChanges: Counter
    let serviceChanges: Counter
    let noLocalEndpointsInternal: Gauge
    let noLocalEndpointsExternal: Gauge

    // MARK: Swiftlane's

    let frontends: Gauge
    let mapOperations: Counter

    /// kube-proxy's buckets: `ExponentialBuckets(0.001, 2, 15)`, 1 ms to 16 s.
    static let syncDurationBuckets: [Duration] = (0..<15).map { .microseconds(1000 << $0) }
    /// kube-proxy's buckets: 0.25 s, 0.5 s, 1–59 s by 1, 60–115 s by 5, 120–300 s by 30.
    static let networkProgrammingBuckets: [Duration] =
        [.milliseconds(250), .milliseconds(500)] + (1...59).map { .seconds($0) }
        + stride(from: 60, through: 115, by: 5).map { .seconds($0) }
        + stride(from: 120, through: 300, by: 30).map { .seconds($0) }

    /// `outcomeCounters` reads the datapath's per-CPU counters (summed over CPUs) by reason.
    public init(
        registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), pinPath: String,
        outcomeCounters: @escaping @Sendable () -> [String: UInt64], kubernetesStatus: KubernetesSourceStatus? = nil,
        version: String, startedAt: Date = Date()
    ) {
        self.registry = registry
        self.pinPath = pinPath
        self.outcomeCounters = outcomeCounters
        self.kubernetesStatus = kubernetesStatus
        self.startedAt = startedAt
        syncDuration = registry.durationHistogram(
            "kubeproxy_sync_proxy_rules_duration_seconds", labels: [], buckets: Self.syncDurationBuckets,
            help: "SyncProxyRules latency in seconds: translating the changed Services and writing the BPF maps")
        networkProgrammingDuration = registry.durationHistogram(
            "kubeproxy_network_programming_duration_seconds", labels: [], buckets: Self.networkProgrammingBuckets,
            help: "In Cluster Network Programming Latency in seconds: from an EndpointSlice change "
                + "(endpoints.kubernetes.io/last-change-trigger-time) to the maps serving it")
        lastSyncTimestamp = registry.gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            help: "The last time proxy rules were successfully synced (every frontend programmed), in Unix seconds")
        lastQueuedTimestamp = registry.gauge(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            help:
                "The last time a sync of proxy rules was queued (a change arrived from the API server), in Unix seconds"
        )
        endpointChanges = registry.counter(
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            help: "Cumulative proxy rules EndpointSlice changes (added, changed or removed slices seen by syncs)")
        serviceChanges = registry.counter(
            "kubeproxy_sync_proxy_rules_service_changes_total",
            help: "Cumulative proxy rules Service changes (added, changed or removed Services seen by syncs)")
        let noLocalHelp = "Number of services with a Local traffic policy and no endpoints"
        noLocalEndpointsInternal = registry.gauge(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total", labels: [("traffic_policy", "internal")],
            help: noLocalHelp)
        noLocalEndpointsExternal = registry.gauge(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total", labels: [("traffic_policy", "external")],
            help: noLocalHelp)
        frontends = registry.gauge(
            "swiftlane_frontends", help: "Frontends (address, port, protocol) the maps serve after the last sync")
        mapOperations = registry.counter(
            "swiftlane_sync_map_operations_total", help: "BPF map writes and deletes made by syncs")
        registry.gauge(
            "swiftlane_build_info",
            labels: [("version", version), ("abi_version", "\(DatapathInspection.abiVersion)")],
            help: "Always 1; the labels say which Swiftlane build is running"
        ).set(to: 1)
    }

    // MARK: - Recording

    /// Records one sync (see `ProxySyncObserver`): duration, changes, latency, failures,
    /// and kube-proxy's no-local-endpoints gauges from `state` (what the maps hold).
    public func recordSync(_ report: ProxySyncer.Report, objects: ManifestObjects, state: MapState, now: Date = Date())
    {
        syncDuration.record(report.duration)
        mapOperations.increment(by: Int64(report.ops))
        frontends.set(to: Double(report.frontends))

        let (serviceChangeCount, sliceChangeCount, triggerTimes) = syncLock.withLock { trackChanges(objects) }
        serviceChanges.increment(by: Int64(serviceChangeCount))
        endpointChanges.increment(by: Int64(sliceChangeCount))
        for trigger in triggerTimes where trigger >= startedAt && now >= trigger {
            networkProgrammingDuration.record(.nanoseconds(Int64(now.timeIntervalSince(trigger) * 1e9)))
        }
        if triggerTimes.isEmpty, sliceChangeCount > 0, let latency = report.networkProgrammingLatency {
            // EndpointSlices without trigger times (manifest files): from the change being
            // seen. Service-only changes are not observed, as in kube-proxy.
            networkProgrammingDuration.record(latency)
        }

        if report.failures.isEmpty {
            lastSyncTimestamp.set(to: now.timeIntervalSince1970)
        }
        for failure in report.failures {
            registry.counter(
                "swiftlane_reconcile_errors_total", labels: [("reason", ReconcileFailure(failure).reason)],
                help: "Frontend changes left on their previous state, by errno (E2BIG: a map is full)"
            ).increment()
            // Failures are reported as "namespace/name: error"; which Service is the first
            // thing an operator asks.
            if let service = failure.split(separator: ":", maxSplits: 1).first, service.contains("/") {
                registry.counter(
                    "swiftlane_reconcile_service_errors_total", labels: [("service", String(service))],
                    help: "Frontend changes left on their previous state, by Service (namespace/name)"
                ).increment()
            }
        }

        for rejection in report.rejected {
            registry.counter(
                "swiftlane_rejected_objects_total", labels: [("kind", rejection.kind), ("reason", rejection.reason)],
                help: "Objects and fields refused (reason: size, parse, duplicate-frontend, or the field path "
                    + "without indices); each is logged naming the object and field"
            ).increment()
        }

        let (internalCount, externalCount) = Self.servicePortsWithoutLocalEndpoints(state)
        noLocalEndpointsInternal.set(to: Double(internalCount))
        noLocalEndpointsExternal.set(to: Double(externalCount))
    }

    /// A change arrived that no sync has programmed yet.
    public func recordQueued(now: Date = Date()) {
        lastQueuedTimestamp.set(to: now.timeIntervalSince1970)
    }

    /// kube-proxy's `kubeproxy_proxy_healthz_total` / `kubeproxy_proxy_livez_total`.
    public func recordHealthCheck(endpoint: String, code: Int) {
        registry.counter(
            "kubeproxy_proxy_\(endpoint)_total", labels: [("code", "\(code)")],
            help: "Cumulative proxy \(endpoint) HTTP status"
        ).increment()
    }

    /// What became of one Kubernetes Event (`EventRecorder.Outcome`), by its reason.
    public func recordEvent(reason: String, outcome: String) {
        registry.counter(
            "swiftlane_events_total", labels: [("reason", reason), ("result", outcome)],
            help: "Kubernetes Events by reason and result (posted, suppressed as a repeat, dropped from a full queue, failed, unsent without an API server)"
        ).increment()
    }

    /// A configuration file change was applied or rejected.
    public func recordConfigReload(applied: Bool, restartRequired: Bool) {
        registry.counter(
            "swiftlane_config_reloads_total", labels: [("result", applied ? "applied" : "rejected")],
            help: "Configuration file changes seen, by whether they were applied or rejected as invalid"
        ).increment()
        if applied {
            registry.gauge(
                "swiftlane_config_restart_required",
                help: "1 when the configuration file changes keys that only a restart applies"
            ).set(to: restartRequired ? 1 : 0)
        }
    }

    /// kube-proxy counts ServicePorts (namespace/name:port/protocol) whose policy is Local
    /// but that have no local endpoint while others exist: their frontends DROP. Only that
    /// situation DROPs (no endpoints at all REJECTs), so the dropping ClusterIP frontends
    /// give the internal count and the dropping external ones the external count.
    static func servicePortsWithoutLocalEndpoints(_ state: MapState) -> (internal: Int, external: Int) {
        var internalPorts = Set<String>()
        var externalPorts = Set<String>()
        for (key, master) in state.masters where key.scope == .default && master.flags.contains(.drop) {
            let meta = state.meta[key]
            let port = "\(meta?.service ?? "\(key)")|\(meta?.portName ?? "")|\(key.proto)"
            if master.kind == .clusterIP { internalPorts.insert(port) } else { externalPorts.insert(port) }
        }
        return (internalPorts.count, externalPorts.count)
    }

    /// Compares the objects of this sync with the previous one's. Objects from the API
    /// server compare by resourceVersion, others by content.
    private func trackChanges(_ objects: ManifestObjects) -> (services: Int, slices: Int, triggers: [Date]) {
        func version(_ meta: ObjectMeta, _ hash: Int) -> String {
            meta.resourceVersion.flatMap { $0.isEmpty ? nil : "v" + $0 } ?? "h\(hash)"
        }
        var services: [String: String] = [:]
        for service in objects.services {
            services[service.metadata.namespace + "/" + service.metadata.name] = version(
                service.metadata, service.hashValue)
        }
        var slices: [String: String] = [:]
        var triggers: [Date] = []
        for slice in objects.endpointSlices {
            let key = slice.metadata.namespace + "/" + slice.metadata.name
            let current = version(slice.metadata, slice.hashValue)
            slices[key] = current
            if sliceVersions[key] != current,
                let text = slice.metadata.annotations["endpoints.kubernetes.io/last-change-trigger-time"],
                let trigger = Self.parseTimestamp(text)
            {
                triggers.append(trigger)
            }
        }
        func changes(_ old: [String: String], _ new: [String: String]) -> Int {
            new.reduce(0) { $0 + (old[$1.key] == $1.value ? 0 : 1) }
                + old.keys.reduce(0) { $0 + (new[$1] == nil ? 1 : 0) }
        }
        defer {
            serviceVersions = services
            sliceVersions = slices
        }
        return (changes(serviceVersions, services), changes(sliceVersions, slices), triggers)
    }

    /// RFC 3339, with or without fractional seconds (the API server writes both).
    static func parseTimestamp(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }

    // MARK: - Scraping

    /// The Prometheus text exposition, with the datapath's values read now.
    public func render() -> String {
        scrapeLock.withLock {
            refreshFromKernel()
            refreshFromSource()
            return registry.emitToString()
        }
    }

    private func refreshFromKernel() {
        var seen = Set<String>()
        for usage in DatapathInspection.mapUsage(pinPath: pinPath) {
            let labels = [("map", usage.name)]
            scrapedGauge(
                "swiftlane_bpf_map_entries", labels,
                "Entries in each pinned BPF map (slot array: slots of active backend sets)",
                &seen
            ).set(to: Double(usage.entries))
            scrapedGauge("swiftlane_bpf_map_capacity", labels, "max_entries of each pinned BPF map", &seen).set(
                to: Double(usage.capacity))
            scrapedGauge(
                "swiftlane_bpf_map_pressure", labels,
                "Fill level of each pinned BPF map, entries / max_entries (0 to 1); a full map refuses new frontends",
                &seen
            ).set(to: usage.pressure)
        }
        for link in DatapathInspection.linkAttachments(pinPath: pinPath) {
            scrapedGauge(
                "swiftlane_bpf_program_attached", [("link", link.pin), ("program", link.programName)],
                "1 for each pinned link whose program is attached (0: attached to nothing, e.g. its cgroup is gone)",
                &seen
            ).set(to: link.attached ? 1 : 0)
        }
        dropStaleGauges(keeping: seen)
        for (reason, value) in outcomeCounters() {
            setCounter(
                "swiftlane_datapath_outcomes_total", [("reason", reason)],
                "What the BPF programs did, by reason (per-CPU counters summed over CPUs)", value)
        }
    }

    private func refreshFromSource() {
        guard let kubernetesStatus else { return }
        for resource in kubernetesStatus.resources {
            let labels = [("resource", resource.name)]
            registry.gauge(
                "swiftlane_informer_synced", labels: labels,
                help: "1 once the informer delivered its initial list"
            ).set(to: resource.synced ? 1 : 0)
            setCounter(
                "swiftlane_informer_watch_restarts_total", labels,
                "Watches opened again after the first one ended (server timeouts included)",
                UInt64(resource.statistics.watchRestarts))
            setCounter(
                "swiftlane_informer_relists_total", labels,
                "Complete lists after the initial one (410 Gone, expired continue tokens)",
                UInt64(resource.statistics.relists))
        }
    }

    /// Counters whose truth is an absolute count kept elsewhere (the kernel, an informer).
    private func setCounter(_ name: String, _ labels: [(String, String)], _ help: String, _ value: UInt64) {
        let counter = registry.counter(name, labels: labels, help: help)
        counter.reset()
        counter.increment(by: Int64(clamping: value))
    }

    private func scrapedGauge(_ name: String, _ labels: [(String, String)], _ help: String, _ seen: inout Set<String>)
        -> Gauge
    {
        let key = name + "|" + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        seen.insert(key)
        if let gauge = scrapedGauges[key] { return gauge }
        let gauge = registry.gauge(name, labels: labels, help: help)
        scrapedGauges[key] = gauge
        return gauge
    }

    private func dropStaleGauges(keeping seen: Set<String>) {
        for (key, gauge) in scrapedGauges where !seen.contains(key) {
            registry.unregisterGauge(gauge)
            scrapedGauges[key] = nil
        }
    }
}

extension SwiftlaneMetrics {
    /// Routes the metrics server's requests: `/metrics` in Prometheus text format 0.0.4.
    public func respond(to request: EndpointRequest) -> EndpointResponse {
        guard request.path == "/metrics" else { return .notFound(request.path) }
        return EndpointResponse(
            status: .ok, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
            body: render())
    }
}

extension PrometheusCollectorRegistry {
    /// Families by their full name (kube-proxy's names do not split into namespace and unit).
    func counter(_ name: String, labels: [(String, String)] = [], help: String) -> Counter {
        makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    func gauge(_ name: String, labels: [(String, String)] = [], help: String) -> Gauge {
        makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    func durationHistogram(_ name: String, labels: [(String, String)] = [], buckets: [Duration], help: String)
        -> DurationHistogram
    {
        makeDurationHistogram(
            descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels,
            buckets: buckets)
    }
}
