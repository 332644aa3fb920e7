import Foundation
import Logging

/// The object an Event is about (`regarding`), as `kubectl describe` finds it.
public struct ObjectReference: Sendable, Hashable, Codable {
    public var apiVersion: String
    public var kind: String
    public var namespace: String?
    public var name: String
    public var uid: String?

    public init(apiVersion: String = "v1", kind: String, namespace: String? = nil, name: String, uid: String? = nil) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.uid = uid
    }

    /// A Service by namespace and name. kube-proxy puts "namespace/name" in the UID too
    /// (it does not track UIDs), so events about one Service group together.
    public static func service(namespace: String, name: String) -> ObjectReference {
        ObjectReference(kind: "Service", namespace: namespace, name: name, uid: namespace + "/" + name)
    }

    /// A Service named `namespace/name` as Swiftlane's tables name them (without a slash:
    /// in `default`).
    public static func service(qualifiedName: String) -> ObjectReference {
        let parts = qualifiedName.split(separator: "/", maxSplits: 1).map(String.init)
        return parts.count == 2 ? service(namespace: parts[0], name: parts[1]) : service(namespace: "default", name: qualifiedName)
    }

    /// This node, as kube-proxy names it in its "Starting" event (UID = node name).
    public static func node(_ name: String) -> ObjectReference {
        ObjectReference(kind: "Node", name: name, uid: name)
    }
}

/// One Event to report (events.k8s.io/v1 fields).
public struct ClusterEvent: Sendable, Hashable {
    public enum Kind: String, Sendable { case normal = "Normal", warning = "Warning" }

    public var regarding: ObjectReference
    public var type: Kind
    /// Why (CamelCase, e.g. `FailedToStartServiceHealthcheck`): what dashboards group by.
    public var reason: String
    /// What Swiftlane was doing (CamelCase, e.g. `Listen`).
    public var action: String
    public var note: String

    public init(regarding: ObjectReference, type: Kind, reason: String, action: String, note: String) {
        self.regarding = regarding
        self.type = type
        self.reason = reason
        self.action = action
        self.note = note
    }
}

/// Reports Events to the API server (`POST /apis/events.k8s.io/v1/namespaces/NS/events`)
/// without ever making the caller wait: `record` queues, `run` posts.
///
/// Every event is logged whether or not it can be posted. An identical event (same
/// object, reason and note) within `dedupeWindow` is suppressed, as client-go's event
/// correlator does, so a failure repeated every sync becomes one Event, not thousands.
/// Posting has its own rate limit (not the informers'), a bounded queue (overflow is
/// dropped and counted) and a few retries for 429, 5xx and transport errors. Without an
/// API server (the manifest-directory source) events are only logged.
public final class EventRecorder: @unchecked Sendable {
    public enum Outcome: String, Sendable, CaseIterable {
        case posted, suppressed, dropped, failed
        /// No API server to post to (directory source): logged only.
        case unsent
    }

    public let reportingController: String
    public let reportingInstance: String
    private let dedupeWindow: Duration
    private let retryDelays: [Duration]
    private let clock: any MonotonicClock
    private let limiter: RateLimiter
    private let logger: Logger
    private let lock = NSLock()
    private var currentClient: KubeClient?
    private var lastSeen: [ClusterEvent: MonotonicInstant] = [:]
    private let stream: AsyncStream<ClusterEvent>
    private let continuation: AsyncStream<ClusterEvent>.Continuation

    /// Told about every event's fate (metrics): the reason and the outcome.
    public var onOutcome: (@Sendable (String, Outcome) -> Void)?

    public init(
        reportingController: String = "swiftlane", reportingInstance: String,
        dedupeWindow: Duration = .seconds(600), queueLimit: Int = 256,
        rate: (qps: Double, burst: Int) = (1, 25), retryDelays: [Duration] = [.seconds(1), .seconds(3)],
        clock: any MonotonicClock = SystemClock(), logger: Logger
    ) {
        self.reportingController = reportingController
        self.reportingInstance = reportingInstance
        self.dedupeWindow = dedupeWindow
        self.retryDelays = retryDelays
        self.clock = clock
        self.limiter = RateLimiter(qps: rate.qps, burst: rate.burst, clock: clock)
        self.logger = logger
        (stream, continuation) = AsyncStream.makeStream(of: ClusterEvent.self, bufferingPolicy: .bufferingOldest(queueLimit))
    }

    /// The API server to post to; nil logs events only. Set whenever the source changes.
    public var client: KubeClient? {
        get { lock.withLock { currentClient } }
        set { lock.withLock { currentClient = newValue } }
    }

    /// Logs `event` and queues it for posting. Never blocks.
    public func record(_ event: ClusterEvent) {
        let metadata: Logger.Metadata = [
            "event": "\(event.reason)", "object": "\(event.regarding.kind)/\(Self.qualifiedName(event.regarding))",
            "note": "\(event.note)",
        ]
        let now = clock.now
        let duplicate = lock.withLock { () -> Bool in
            if let last = lastSeen[event], now - last < dedupeWindow { return true }
            lastSeen[event] = now
            if lastSeen.count > 4096 { lastSeen = lastSeen.filter { now - $0.value < dedupeWindow } }
            return false
        }
        if duplicate {
            logger.debug("event suppressed: reported within the dedupe window", metadata: metadata)
            onOutcome?(event.reason, .suppressed)
            return
        }
        switch event.type {
        case .warning: logger.warning("event", metadata: metadata)
        case .normal: logger.info("event", metadata: metadata)
        }
        if case .dropped = continuation.yield(event) {
            logger.warning("event dropped: the event queue is full", metadata: metadata)
            onOutcome?(event.reason, .dropped)
        }
    }

    /// Posts queued events until cancelled (or `finish()`).
    public func run() async {
        await withTaskCancellationHandler {
            for await event in stream {
                await post(event)
            }
        } onCancel: {
            continuation.finish()
        }
    }

    /// Ends `run` once the queue is drained.
    public func finish() {
        continuation.finish()
    }

    private func post(_ event: ClusterEvent) async {
        guard let client else {
            onOutcome?(event.reason, .unsent)
            return
        }
        let namespace = event.regarding.namespace ?? "default"
        let path = "/apis/events.k8s.io/v1/namespaces/\(Self.percentEncoded(namespace))/events"
        var failure = ""
        for attempt in 0...retryDelays.count {
            if attempt > 0 {
                do { try await clock.sleep(for: retryDelays[attempt - 1]) } catch { return }
            }
            do {
                try await limiter.acquire()
                let body = Self.body(
                    for: event, reportingController: reportingController, reportingInstance: reportingInstance,
                    at: Date())
                let (status, answer) = try await client.send("POST", path, json: body)
                if (200..<300).contains(status) {
                    onOutcome?(event.reason, .posted)
                    return
                }
                failure = "HTTP \(status): " + String(decoding: answer.prefix(300), as: UTF8.self)
                // Only overload and server errors are worth another try; 4xx will not change.
                if status != 429 && status < 500 { break }
            } catch is CancellationError {
                return
            } catch {
                failure = "\(error)"
            }
        }
        logger.warning("event not posted", metadata: [
            "event": "\(event.reason)", "object": "\(event.regarding.kind)/\(Self.qualifiedName(event.regarding))",
            "error": "\(failure)",
        ])
        onOutcome?(event.reason, .failed)
    }

    /// The events.k8s.io/v1 Event for `event`, named as client-go names them
    /// (`<object name>.<unix nanoseconds in hex>`).
    public static func body(for event: ClusterEvent, reportingController: String, reportingInstance: String,
                            at time: Date) -> Data {
        struct Metadata: Encodable { var name: String; var namespace: String }
        struct Wire: Encodable {
            var apiVersion = "events.k8s.io/v1"
            var kind = "Event"
            var metadata: Metadata
            var eventTime: String
            var reportingController: String
            var reportingInstance: String
            var action: String
            var reason: String
            var regarding: ObjectReference
            var note: String
            var type: String
        }
        let nanoseconds = UInt64(max(0, time.timeIntervalSince1970) * 1_000_000_000)
        let wire = Wire(
            metadata: Metadata(
                name: "\(event.regarding.name).\(String(nanoseconds, radix: 16))",
                namespace: event.regarding.namespace ?? "default"),
            eventTime: microTime(time), reportingController: reportingController,
            // The API server caps both at 128 bytes and a note at 1 KiB.
            reportingInstance: truncated(reportingInstance, bytes: 128),
            action: event.action, reason: event.reason, regarding: event.regarding,
            note: truncated(event.note, bytes: 1024), type: event.type.rawValue)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(wire)) ?? Data()
    }

    /// RFC 3339 with microseconds in UTC (Kubernetes' MicroTime).
    static func microTime(_ time: Date) -> String {
        var seconds = time_t(time.timeIntervalSince1970.rounded(.down))
        let micros = Int((time.timeIntervalSince1970 - Double(seconds)) * 1_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
            Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), min(micros, 999_999))
    }

    static func truncated(_ text: String, bytes limit: Int) -> String {
        guard text.utf8.count > limit else { return text }
        var result = ""
        for character in text {
            if result.utf8.count + character.utf8.count > limit - 3 { break }
            result.append(character)
        }
        return result + "..."
    }

    private static func qualifiedName(_ reference: ObjectReference) -> String {
        reference.namespace.map { $0 + "/" + reference.name } ?? reference.name
    }

    private static func percentEncoded(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? text
    }
}
