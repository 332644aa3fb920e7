import Foundation
import Logging
import ServiceLifecycle

/// Keeps the datapath in step with a manifest directory until shutdown. On SIGTERM it
/// simply stops: the pinned programs and maps keep serving traffic while the next
/// version of the controller starts.
///
/// Changes are coalesced (at most one sync per `minSyncPeriod`, kube-proxy's setting of
/// the same name), and a sync that left frontends on their previous state (a full map,
/// ENOMEM) is retried with exponential backoff even when nothing else changes.
public struct DirectorySyncService: Service {
    public let source: DirectorySource
    public let syncer: ProxySyncer
    public let pollInterval: Duration
    public let minSyncPeriod: Duration
    public let logger: Logger

    public init(source: DirectorySource, syncer: ProxySyncer, pollInterval: Duration, minSyncPeriod: Duration = .milliseconds(100),
                logger: Logger) {
        self.source = source
        self.syncer = syncer
        self.pollInterval = pollInterval
        self.minSyncPeriod = minSyncPeriod
        self.logger = logger
    }

    public func run() async throws {
        let clock = ContinuousClock()
        var pending = true                   // the first pass always syncs
        var observedAt = clock.now           // when the oldest unsynced change was seen
        var lastSync: ContinuousClock.Instant?
        var retry = RetryBackoff()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                if try source.refresh() {
                    if !pending { observedAt = clock.now }
                    pending = true
                }
            } catch {
                logger.error("cannot read the manifest directory", metadata: ["directory": "\(source.path)", "error": "\(error)"])
            }
            let now = clock.now
            let due = pending && (lastSync.map { now - $0 >= minSyncPeriod } ?? true)
            if due || retry.isDue(now) {
                let report = syncer.sync(source.objects(), observedAt: observedAt)
                lastSync = clock.now
                pending = false
                if report.failures.isEmpty {
                    retry.reset()
                } else {
                    let delay = retry.scheduleNext(from: clock.now)
                    logger.warning("retrying frontends left on their previous state", metadata: [
                        "failures": "\(report.failures.count)", "retryIn": "\(delay)",
                    ])
                }
            }
            try? await Task.sleep(for: pollInterval)
        }
        logger.info("stopping; the datapath stays programmed")
    }
}

/// Exponential backoff for retrying failed syncs: 1 s doubling to 30 s, reset on success.
struct RetryBackoff {
    private var nextAt: ContinuousClock.Instant?
    private var delay: Duration = .seconds(1)

    func isDue(_ now: ContinuousClock.Instant) -> Bool { nextAt.map { now >= $0 } ?? false }

    mutating func reset() {
        nextAt = nil
        delay = .seconds(1)
    }

    mutating func scheduleNext(from now: ContinuousClock.Instant) -> Duration {
        let current = delay
        nextAt = now + current
        delay = min(delay * 2, .seconds(30))
        return current
    }
}
