import Foundation
import Logging
import ServiceLifecycle

/// Keeps the datapath in step with a manifest directory until shutdown. On SIGTERM it
/// simply stops: the pinned programs and maps keep serving traffic while the next
/// version of the controller starts.
public struct DirectorySyncService: Service {
    public let source: DirectorySource
    public let syncer: ProxySyncer
    public let pollInterval: Duration
    public let logger: Logger

    public init(source: DirectorySource, syncer: ProxySyncer, pollInterval: Duration, logger: Logger) {
        self.source = source
        self.syncer = syncer
        self.pollInterval = pollInterval
        self.logger = logger
    }

    public func run() async throws {
        var first = true
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                if try source.refresh() || first {
                    syncer.sync(source.objects())
                    first = false
                }
            } catch {
                logger.error("cannot read the manifest directory", metadata: ["directory": "\(source.path)", "error": "\(error)"])
            }
            try? await Task.sleep(for: pollInterval)
        }
        logger.info("stopping; the datapath stays programmed")
    }
}
