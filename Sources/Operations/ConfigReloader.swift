import Controller
import Foundation
import Logging
import ServiceLifecycle

/// Watches the configuration file and applies what a running controller can apply.
///
/// The file is re-read every `pollInterval` and compared by content: a ConfigMap volume
/// is updated by swapping a symlink, which file-change notifications on the file itself
/// miss, while a read always follows the link. A changed file is parsed and validated as
/// at start-up; an invalid one is logged (naming the key and the bad value) and the
/// running configuration kept. Of a valid one, the keys in
/// `SwiftlaneConfiguration.ReloadDifferences.applied` are applied at once
/// (`apply` receives the new effective configuration); for the others a notice says that
/// they take effect after a restart.
public final class ConfigReloader: Service, @unchecked Sendable {
    public let path: String
    public let pollInterval: Duration
    private let environment: [String: String]
    private let logger: Logger
    private let metrics: SwiftlaneMetrics?
    private let apply: @Sendable (SwiftlaneConfiguration) -> Void
    /// What the controller started with: keys that need a restart are compared with it.
    private let started: SwiftlaneConfiguration

    public init(
        path: String, running: SwiftlaneConfiguration, pollInterval: Duration = .seconds(1),
        environment: [String: String] = ProcessInfo.processInfo.environment, metrics: SwiftlaneMetrics?, logger: Logger,
        apply: @escaping @Sendable (SwiftlaneConfiguration) -> Void
    ) {
        self.path = path
        self.started = running
        self.pollInterval = pollInterval
        self.environment = environment
        self.metrics = metrics
        self.logger = logger
        self.apply = apply
    }

    public func run() async throws {
        var lastText = try? String(contentsOfFile: path, encoding: .utf8)
        var effective = started
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await Task.sleep(for: pollInterval)
            } catch {
                break
            }
            guard let text = try? String(contentsOfFile: path, encoding: .utf8), text != lastText else { continue }
            lastText = text
            if let next = reload(text, effective: effective) { effective = next }
        }
    }

    /// Handles one new content of the file; returns the new effective configuration, or nil
    /// when nothing was applied.
    public func reload(_ text: String, effective: SwiftlaneConfiguration) -> SwiftlaneConfiguration? {
        let parsed: SwiftlaneConfiguration
        do {
            parsed = try SwiftlaneConfiguration.parse(
                yaml: text, environment: environment,
                relativeTo: (path as NSString).deletingLastPathComponent)
        } catch {
            var metadata: Logger.Metadata = ["file": "\(path)", "error": "\(error)"]
            if let invalid = error as? SwiftlaneConfiguration.Invalid { metadata["key"] = "\(invalid.key)" }
            logger.error("configuration change rejected; keeping the running configuration", metadata: metadata)
            metrics?.recordConfigReload(applied: false, restartRequired: false)
            return nil
        }
        let live = effective.reloadDifferences(to: parsed).applied
        let restart = started.reloadDifferences(to: parsed).needRestart
        metrics?.recordConfigReload(applied: true, restartRequired: !restart.isEmpty)
        if !restart.isEmpty {
            logger.notice(
                "configuration keys changed that take effect only after a restart",
                metadata: [
                    "keys": "\(restart.joined(separator: ", "))", "file": "\(path)",
                ])
        }
        guard !live.isEmpty else { return nil }
        let next = effective.applyingLiveKeys(of: parsed)
        logger.notice(
            "configuration reloaded", metadata: ["keys": "\(live.joined(separator: ", "))", "file": "\(path)"])
        apply(next)
        return next
    }
}
