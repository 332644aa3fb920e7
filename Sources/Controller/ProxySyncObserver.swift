import Datapath
import Foundation
import Logging
import ServiceModel

/// Told about every sync of a `ProxySyncer` (metrics, health). Called at the end of
/// `sync`, on the task that synced, so it may read the syncer's state (`reconciler.state`
/// is then exactly what the maps hold); it must return quickly.
public protocol ProxySyncObserver: AnyObject, Sendable {
    /// `objects` are the inputs of the sync; `prune` whether they were complete.
    func proxySyncer(_ syncer: ProxySyncer, didSync report: ProxySyncer.Report, objects: ManifestObjects, prune: Bool)
}

/// Several observers of one syncer, told in order.
public final class ProxySyncObservers: ProxySyncObserver, @unchecked Sendable {
    public let observers: [any ProxySyncObserver]

    public init(_ observers: [any ProxySyncObserver]) {
        self.observers = observers
    }

    public func proxySyncer(_ syncer: ProxySyncer, didSync report: ProxySyncer.Report, objects: ManifestObjects, prune: Bool) {
        for observer in observers { observer.proxySyncer(syncer, didSync: report, objects: objects, prune: prune) }
    }
}

/// A frontend change the reconciler could not apply, taken apart for logs and metrics.
/// The reconciler reports failures as text (`BPFError.description`, or its own planning
/// error for a full slot array); both name the errno as `E…`, and map writes name the map.
public struct ReconcileFailure: Equatable, Sendable {
    /// The errno name (`E2BIG`, `ENOMEM`…), or `other` when the text names none.
    public var reason: String
    /// The BPF map written, when the text names one.
    public var map: String?

    public init(reason: String, map: String?) {
        self.reason = reason
        self.map = map
    }

    public init(_ message: String) {
        reason = Self.firstMatch(of: #"\bE[A-Z0-9]{2,}\b"#, in: message) ?? "other"
        if message.contains("slot array full") {
            map = DatapathOptions.sizableMaps["backendSlots"]
        } else {
            map = Self.firstMatch(of: #"\bsl_[a-z0-9_]+_v[0-9]+\b"#, in: message)
        }
    }

    /// `errno` and `map` metadata for the log line of a failed frontend.
    public var metadata: Logger.Metadata {
        var result: Logger.Metadata = ["errno": "\(reason)"]
        if let map { result["map"] = "\(map)" }
        return result
    }

    private static func firstMatch(of pattern: String, in text: String) -> String? {
        guard let expression = try? NSRegularExpression(pattern: pattern),
            let match = expression.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
            let range = Range(match.range, in: text)
        else { return nil }
        return String(text[range])
    }
}
