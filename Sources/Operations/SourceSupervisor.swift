import Controller
import Foundation
import Logging
import ServiceLifecycle

/// Runs the configured source (manifest directory or Kubernetes API) and replaces it when a
/// configuration reload changes how objects are read or translated: the source, the
/// `serviceProxyName`, the sync period, or the translation settings.
///
/// Replacing stops the running source first (the datapath keeps serving meanwhile), then
/// sets the new translation settings on the syncer (no sync can run at that moment) and
/// starts the new source. Its first sync re-translates every Service with the new
/// settings. A Kubernetes source lists everything again: a reload costs what a restart
/// costs, without the restart. A new source that cannot be built (an unreadable
/// kubeconfig) is logged and the running one kept.
public final class SourceSupervisor: Service, @unchecked Sendable {
    public typealias SourceFactory = @Sendable (SwiftlaneConfiguration) throws -> any Service

    private let syncer: ProxySyncer
    private let makeSource: SourceFactory
    private let logger: Logger
    private let reloads = Mailbox<SwiftlaneConfiguration>()
    private var configuration: SwiftlaneConfiguration
    private var source: any Service

    /// Builds the first source now, so that a bad source fails start-up.
    public init(
        configuration: SwiftlaneConfiguration, syncer: ProxySyncer, logger: Logger,
        makeSource: @escaping SourceFactory
    ) throws {
        self.configuration = configuration
        self.syncer = syncer
        self.logger = logger
        self.makeSource = makeSource
        source = try makeSource(configuration)
    }

    /// Hands over a new configuration; the latest one wins if several arrive at once.
    public func reload(_ configuration: SwiftlaneConfiguration) {
        reloads.post(configuration)
    }

    public func run() async throws {
        while true {
            let current = source
            let next: SwiftlaneConfiguration? = try await withThrowingTaskGroup(of: SwiftlaneConfiguration?.self) {
                group in
                group.addTask {
                    try await current.run()
                    return nil
                }
                group.addTask { await self.reloads.next() }
                // The source ends by itself only at shutdown (or failing); a reload arrives
                // from the mailbox. Either way the other task is no longer wanted.
                let first = try await group.next() ?? nil
                group.cancelAll()
                while try await group.next() != nil {}
                return first
            }
            guard let next else { return }
            apply(next)
        }
    }

    /// Switches to `next` if anything the source depends on changed (the source is
    /// stopped at this point).
    private func apply(_ next: SwiftlaneConfiguration) {
        let sourceChanged =
            next.source != configuration.source || next.serviceProxyName != configuration.serviceProxyName
            || next.minSyncPeriodMilliseconds != configuration.minSyncPeriodMilliseconds
            || next.maxObjectBytes != configuration.maxObjectBytes
        let translationChanged = next.translation != configuration.translation
        if sourceChanged {
            do {
                source = try makeSource(next)
            } catch {
                logger.error(
                    "cannot build the reloaded source; keeping the running one", metadata: ["error": "\(error)"])
                return
            }
        }
        if translationChanged { syncer.options = next.translation }
        configuration = next
        logger.notice(
            "source restarted with the reloaded configuration",
            metadata: [
                "sourceChanged": "\(sourceChanged)", "translationChanged": "\(translationChanged)",
            ])
    }
}

/// A one-slot mailbox: `post` replaces what is waiting, `next` waits for a value (nil
/// when its task is cancelled).
final class Mailbox<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var waiting: Value?
    private var receiver: CheckedContinuation<Value?, Never>?

    func post(_ value: Value) {
        lock.lock()
        if let receiver {
            self.receiver = nil
            lock.unlock()
            receiver.resume(returning: value)
        } else {
            waiting = value
            lock.unlock()
        }
    }

    func next() async -> Value? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Value?, Never>) in
                lock.lock()
                if let value = waiting {
                    waiting = nil
                    lock.unlock()
                    continuation.resume(returning: value)
                } else if Task.isCancelled {
                    lock.unlock()
                    continuation.resume(returning: nil)
                } else {
                    receiver = continuation
                    lock.unlock()
                }
            }
        } onCancel: {
            lock.lock()
            let receiver = self.receiver
            self.receiver = nil
            lock.unlock()
            receiver?.resume(returning: nil)
        }
    }
}
