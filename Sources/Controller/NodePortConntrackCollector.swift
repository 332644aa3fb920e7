import Datapath
import Logging
import ServiceLifecycle

/// Collects idle flows of the external-traffic datapath's conntrack table every
/// `intervalSeconds` (see `NodePortDatapath.collectGarbage`), until graceful shutdown.
public struct NodePortConntrackCollector: Service {
    let datapath: NodePortDatapath
    let timeouts: NodePortDatapath.ConntrackTimeouts
    let intervalSeconds: Int
    let logger: Logger

    public init(datapath: NodePortDatapath, timeouts: NodePortDatapath.ConntrackTimeouts, intervalSeconds: Int, logger: Logger) {
        self.datapath = datapath
        self.timeouts = timeouts
        self.intervalSeconds = max(1, intervalSeconds)
        self.logger = logger
    }

    public func run() async throws {
        let (datapath, timeouts, interval, logger) = (datapath, timeouts, intervalSeconds, logger)
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do { try await Task.sleep(for: .seconds(interval)) } catch { return }
                let report = datapath.collectGarbage(timeouts: timeouts)
                logger.debug("external-traffic conntrack collected", metadata: [
                    "scanned": "\(report.scanned)", "removed": "\(report.removed)",
                    "remaining": "\(report.remaining)", "capacity": "\(report.capacity)",
                    "dsrRemoved": "\(report.dsrRemoved)", "dsrRemaining": "\(report.dsrRemaining)",
                ])
            }
        }
    }
}
