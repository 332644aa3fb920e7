import ArgumentParser
import Controller
import Datapath
import Foundation
import KubeAPI
import Logging
import ServiceLifecycle

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the controller: install the datapath and keep it in step with the source.",
        discussion: """
            Loads the BPF programs (reusing the pinned maps of a previous run), attaches them \
            to the configured cgroup, then watches the configured source and programs every \
            change. SIGTERM/SIGINT stop the controller and leave the datapath serving.
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
        let level = configuration.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "swiftlane")
        let datapath = try SocketLoadBalancer.install(
            configuration.datapathOptions, logger: logger)
        let syncer = try ProxySyncer(
            nodeName: configuration.nodeName, options: configuration.translation, maps: datapath.maps, logger: logger)
        do {
            syncer.terminateUDPSockets(with: try UDPSocketTerminator.install(pinPath: configuration.bpfPinPath, logger: logger),
                                       logger: logger)
        } catch {
            logger.warning("UDP sockets of removed backends will not be terminated", metadata: ["error": "\(error)"])
        }
        let service: any Service
        switch configuration.source {
        case .directory(let directory):
            service = DirectorySyncService(
                source: DirectorySource(path: directory.path, logger: logger), syncer: syncer,
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
            transport.keepaliveIdle = min(transport.keepaliveIdle, .seconds(kubernetes.deadConnectionTimeoutSeconds / 2))
            let client = try KubeClient(
                configuration: clientConfiguration, limits: .init(qps: kubernetes.qps, burst: kubernetes.burst),
                transportOptions: transport, logger: logger)
            service = KubernetesSyncService(
                client: client, syncer: syncer, serviceProxyName: configuration.serviceProxyName,
                minimumSyncInterval: .milliseconds(configuration.minSyncPeriodMilliseconds), logger: logger)
        }
        let group = ServiceGroup(configuration: .init(
            services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
