import ArgumentParser
import Controller
import Datapath
import Foundation
import KubeAPI
import Logging
import Metrics
import Operations
import Prometheus
import ServiceLifecycle
import struct ServiceModel.ProxyNode

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the controller: install the datapath and keep it in step with the source.",
        discussion: """
            Loads the BPF programs (reusing the pinned maps of a previous run), attaches them \
            to the configured cgroup, then watches the configured source and programs every \
            change. Serves Prometheus metrics on metricsBindAddress (/metrics, default \
            0.0.0.0:10249) and /healthz, /livez and /readyz on healthzBindAddress (default \
            0.0.0.0:10256). Re-reads the configuration file every second: log level, source \
            and translation keys are applied at once, other changed keys are logged as \
            needing a restart, and an invalid file is logged and ignored. SIGTERM/SIGINT \
            stop the controller and leave the datapath serving; only `swiftlane cleanup` \
            removes it.
            """
    )

    @Option(name: .long, help: "Path of the YAML configuration file (see docs/configuration.md).")
    var config: String

    func run() async throws {
        let configuration: SwiftlaneConfiguration
        do {
            configuration = try SwiftlaneConfiguration.load(path: config)
        } catch {
            throw ValidationError("\(error)")
        }
        let logLevel = LogLevelControl(configuration.logLevel)
        LoggingSystem.bootstrap { label in logLevel.makeHandler(label: label) }
        let logger = Logger(label: "swiftlane")
        let registry = PrometheusCollectorRegistry()
        // Libraries that report through swift-metrics land in the same exposition.
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        let datapath = try SocketLoadBalancer.install(configuration.datapathOptions, logger: logger)
        // The external-traffic datapath shares the maps pinned above; off unless configured.
        let nodePort =
            configuration.nodePort.enabled
            ? try NodePortDatapath.install(
                configuration.nodePort.options(
                    pinPath: configuration.bpfPinPath,
                    nodePortAddresses: configuration.translation.nodePortAddresses,
                    flowEntries: configuration.mapSizes["nodePortFlows"]),
                logger: logger)
            : nil
        let syncer = try ProxySyncer(
            nodeName: configuration.nodeName, options: configuration.translation, maps: datapath.maps, logger: logger)
        do {
            syncer.terminateUDPSockets(
                with: try UDPSocketTerminator.install(pinPath: configuration.bpfPinPath, logger: logger),
                logger: logger)
        } catch {
            logger.warning("UDP sockets of removed backends will not be terminated", metadata: ["error": "\(error)"])
        }

        // Health and metrics see every sync through the syncer's observer, and every change
        // arriving from the API server through the source status.
        let health = ProxyHealth()
        let telemetryBox = TelemetryBox()
        let kubernetesStatus = KubernetesSourceStatus { telemetryBox.telemetry?.changeArrived() }
        let maps = datapath.maps
        let metrics = SwiftlaneMetrics(
            registry: registry, pinPath: configuration.bpfPinPath, outcomeCounters: { maps.outcomeCounters() },
            kubernetesStatus: kubernetesStatus, version: SwiftlaneVersion.current)
        // Events about Services and this Node (`kubectl describe`); posted while the source
        // is the API server, logged always.
        let events = EventRecorder(reportingInstance: "swiftlane-" + configuration.nodeName, logger: logger)
        events.onOutcome = { reason, outcome in metrics.recordEvent(reason: reason, outcome: outcome.rawValue) }
        let telemetry = SyncTelemetry(metrics: metrics, health: health, events: events)
        telemetryBox.telemetry = telemetry
        syncer.observer =
            nodePort.map { ProxySyncObservers([telemetry, NodePortAddressFollower(datapath: $0, logger: logger)]) } ?? telemetry
        health.answered = { endpoint, code in metrics.recordHealthCheck(endpoint: endpoint, code: code) }
        health.liveNode = { kubernetesStatus.node }
        let expectedLinks = datapath.attachments.filter { $0.outcome != .skipped }
            .map { SocketLoadBalancer.linkDirectory(pinPath: configuration.bpfPinPath) + "/" + $0.hook.linkName }
        health.datapathAttached = { Self.linksAttached(expectedLinks, pinPath: configuration.bpfPinPath) }
        let supervisor = try SourceSupervisor(configuration: configuration, syncer: syncer, logger: logger) { current in
            let source = try Self.makeSource(current, syncer: syncer, status: kubernetesStatus, events: events, logger: logger)
            health.sourceReady = Self.sourceReadiness(current, kubernetesStatus)
            return source
        }
        let reloader = ConfigReloader(path: config, running: configuration, metrics: metrics, logger: logger) { next in
            logLevel.level = next.logLevel
            supervisor.reload(next)
        }

        // Shut down in reverse order: the source first, the endpoints last.
        var services: [any Service] = []
        if let address = configuration.operations.healthzBindAddress {
            services.append(
                HTTPEndpointServer(
                    name: "health", address: address, configKey: "healthzBindAddress",
                    logger: logger
                ) { health.respond(to: $0) })
        }
        if let address = configuration.operations.metricsBindAddress {
            services.append(
                HTTPEndpointServer(
                    name: "metrics", address: address, configKey: "metricsBindAddress",
                    logger: logger
                ) { metrics.respond(to: $0) })
        }
        if let nodePort {
            services.append(
                NodePortConntrackCollector(
                    datapath: nodePort, timeouts: configuration.nodePort.conntrack,
                    intervalSeconds: configuration.nodePort.conntrackGCIntervalSeconds, logger: logger))
        }
        // healthCheckNodePort listeners (A.10) for the ports the controller programs, on the
        // node addresses nodePortAddresses selects (A.12), read at every poll.
        let nodeName = configuration.nodeName
        let nodePortAddresses = configuration.translation.nodePortAddresses
        let healthChecks = HealthCheckNodePorts(
            addresses: {
                HealthCheckNodePorts.listenAddresses(
                    nodePortAddresses: nodePortAddresses,
                    localAddresses: InterfaceAddresses.current().values.flatMap { $0 },
                    primary: kubernetesStatus.node.map { ProxyNode(node: $0).addresses } ?? [])
            }, logger: logger, proxyHealthy: { health.isHealthy().healthy }
        ) { maps.healthCheckTable() }
        healthChecks.onBindFailure = { service, port, host, error in
            events.record(HealthCheckNodePorts.bindFailureEvent(service: service, port: port, host: host, error: error, node: nodeName))
        }
        services.append(healthChecks)
        services += [EventReporting(recorder: events), reloader, supervisor]
        let group = ServiceGroup(
            configuration: .init(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// The sync service for the configured source.
    static func makeSource(
        _ configuration: SwiftlaneConfiguration, syncer: ProxySyncer, status: KubernetesSourceStatus,
        events: EventRecorder, logger: Logger
    ) throws -> any Service {
        switch configuration.source {
        case .directory(let directory):
            events.client = nil
            return DirectorySyncService(
                source: DirectorySource(path: directory.path, maximumObjectBytes: configuration.maxObjectBytes, logger: logger),
                syncer: syncer,
                pollInterval: .milliseconds(directory.pollIntervalMilliseconds),
                minSyncPeriod: .milliseconds(configuration.minSyncPeriodMilliseconds), logger: logger)
        case .kubernetes(let kubernetes):
            let clientConfiguration: ClientConfiguration
            do {
                clientConfiguration = try ClientConfiguration.resolve(
                    kubeconfig: kubernetes.kubeconfig, apiServer: kubernetes.apiServer,
                    environment: ProcessInfo.processInfo.environment)
            } catch {
                throw ValidationError("source.kubernetes: \(error)")
            }
            var transport = TransportOptions()
            transport.deadConnectionTimeout = .seconds(kubernetes.deadConnectionTimeoutSeconds)
            transport.keepaliveIdle = min(
                transport.keepaliveIdle, .seconds(kubernetes.deadConnectionTimeoutSeconds / 2))
            let client = try KubeClient(
                configuration: clientConfiguration, limits: .init(qps: kubernetes.qps, burst: kubernetes.burst),
                transportOptions: transport, logger: logger)
            let first = events.client == nil
            events.client = client
            if first {
                // kube-proxy's start-up event on its Node.
                events.record(ClusterEvent(
                    regarding: .node(configuration.nodeName), type: .normal, reason: "Starting", action: "StartSwiftlane",
                    note: "Starting Swiftlane \(SwiftlaneVersion.current)."))
            }
            var informerOptions = InformerOptions()
            informerOptions.maximumObjectBytes = configuration.maxObjectBytes
            // A line the framer refuses fails the whole stream: keep it above the object cap,
            // so that an oversized object is skipped instead.
            informerOptions.maximumEventBytes = max(informerOptions.maximumEventBytes, 2 * configuration.maxObjectBytes)
            return KubernetesSyncService(
                client: client, syncer: syncer, serviceProxyName: configuration.serviceProxyName,
                minimumSyncInterval: .milliseconds(configuration.minSyncPeriodMilliseconds),
                informerOptions: informerOptions, status: status, logger: logger)
        }
    }

    /// /readyz's source check: every informer synced, or the manifest folder readable.
    static func sourceReadiness(_ configuration: SwiftlaneConfiguration, _ status: KubernetesSourceStatus)
        -> @Sendable () -> (Bool, String)
    {
        switch configuration.source {
        case .kubernetes:
            return {
                let resources = status.resources
                let waiting =
                    resources.isEmpty
                    ? ["services", "endpointslices", "node"] : resources.filter { !$0.synced }.map(\.name)
                return (waiting.isEmpty, "waiting for the initial list of " + waiting.joined(separator: ", "))
            }
        case .directory(let directory):
            return {
                var isDirectory: ObjCBool = false
                let exists =
                    FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory)
                    && isDirectory.boolValue
                return (exists, "\(directory.path) is not a directory")
            }
        }
    }

    /// /readyz's datapath check: every link `install` attached is still pinned and attached.
    static func linksAttached(_ expected: [String], pinPath: String) -> (Bool, String) {
        let links = Dictionary(
            DatapathInspection.linkAttachments(pinPath: pinPath).map { (pinPath + "/" + $0.pin, $0.attached) },
            uniquingKeysWith: { first, _ in first })
        let missing = expected.filter { links[$0] != true }
        return (missing.isEmpty, "not attached: " + missing.joined(separator: ", "))
    }
}

/// Breaks the cycle between the source status (created first, calls the telemetry) and
/// the telemetry (needs the metrics, which read the status).
private final class TelemetryBox: @unchecked Sendable {
    var telemetry: SyncTelemetry?
}
