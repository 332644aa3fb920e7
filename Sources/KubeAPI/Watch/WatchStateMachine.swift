import Foundation

/// The list/watch lifecycle of one resource as a pure state machine (client-go's
/// reflector): it is told what happened (`Input`) and answers what to do next
/// (`Action`); a driver performs the requests and feeds the outcomes back. It does no
/// I/O and reads time only from the injected clock, so every path, including backoff
/// timing, is tested with a manual clock.
///
/// Rules it implements (kube-proxy-semantics C.2–C.5):
/// * Start with a streaming list (`sendInitialEvents=true`) when enabled; fall back to
///   LIST+WATCH for good when the server refuses it, ignores it, or does not end the
///   initial events within the deadline.
/// * LIST pages with `limit`/`continue`; an expired continue (410) restarts the list
///   without paging; a 410 on the first page (resource version too old) relists at once
///   with a consistent read (`resourceVersion=""`).
/// * WATCH from the last resource version with bookmarks and a random timeout; a clean
///   end resumes at once, an ERROR 410 (Expired or Gone alike) relists, anything else
///   backs off and resumes.
/// * 401 refreshes the credentials; 429/5xx wait for `Retry-After` when given; every
///   other failure waits for an exponential backoff with jitter.
/// * Resource versions are opaque: only stored, sent back and compared for equality.
public struct WatchStateMachine: Sendable {
    public struct Configuration: Sendable {
        /// `limit` of paginated lists; nil lists in one response.
        public var pageSize: Int? = 500
        /// Try a streaming list first.
        public var streamingList = true
        /// How long the initial events of a streaming list may take before falling back.
        public var initialEventsDeadline: Duration = .seconds(60)
        /// Watch `timeoutSeconds` is drawn from this range (client-go: 5–10 min) so that
        /// many clients do not reconnect in step.
        public var watchTimeoutSeconds: Range<Int> = 300..<600
        public var backoff = Backoff.Policy()
        /// The longest `Retry-After` honoured as given.
        public var maximumRetryAfter: Duration = .seconds(600)

        public init() {}
    }

    public enum Input: Sendable, Equatable {
        /// Begin (only in the initial state).
        case start
        /// A watch request was answered 200: events follow.
        case connected
        /// A 200 LIST page was decoded.
        case pageReceived(resourceVersion: String, continueToken: String?)
        /// One watch event (its object stays with the driver).
        case received(WatchEventKind, resourceVersion: String?)
        /// The watch stream ended: cleanly (`failure == nil`), or with a transport or
        /// framing/decoding error.
        case streamEnded(failure: String?)
        /// A request got no HTTP answer (connection refused, TLS failure, timeout) or an
        /// unreadable one.
        case requestFailed(String)
        /// A request was answered with a non-200 status.
        case http(status: Int, retryAfter: Duration?)
        /// The timer of the last `reconnect(after:)` ran out, or the initial events of a
        /// streaming list missed their deadline.
        case timerFired
    }

    public enum Action: Sendable, Equatable {
        /// Start a LIST from its first page; pages gathered so far are discarded.
        case relist(resourceVersion: String, limit: Int?)
        /// Fetch the next page of the current LIST.
        case fetchPage(continueToken: String, limit: Int?)
        /// Open a streaming list (WATCH with `sendInitialEvents=true`); objects staged so
        /// far are discarded. Feed `.timerFired` if its initial events have not ended
        /// after `deadline`.
        case streamList(resourceVersion: String, timeoutSeconds: Int, deadline: Duration)
        /// Open a WATCH from `resourceVersion`.
        case resume(from: String, timeoutSeconds: Int)
        /// Wait, then feed `.timerFired`.
        case reconnect(after: Duration)
        /// The gathered list (or streamed initial state) is complete: replace the cache
        /// with it, delivering deletions for objects it lacks.
        case replaceCache(resourceVersion: String)
        /// Apply the event just received to the cache.
        case apply
        /// Add the object of the event just received to the initial state being gathered.
        case stage
        /// Re-read the credentials before the next request (the server answered 401).
        case refreshCredentials
    }

    /// Where the lifecycle is; public for tests and diagnostics.
    public enum State: Sendable, Equatable {
        case idle
        case listing(resourceVersion: String, limit: Int?, continueToken: String?)
        case streamingInitialEvents(connectedAt: MonotonicInstant?)
        case watching(connectedAt: MonotonicInstant?, events: Int)
        case waiting(then: Action)
    }

    public let configuration: Configuration
    public private(set) var state: State = .idle
    /// The resource version to resume from: of the last list, event or bookmark.
    public private(set) var lastResourceVersion = ""
    /// The initial state was delivered once (later relists keep the cache meanwhile).
    public private(set) var hasSynced = false
    /// False once the server showed it does not do streaming lists.
    public private(set) var usesStreamingList: Bool
    /// Set when a LIST at `lastResourceVersion` got 410: the next list is a consistent read.
    public private(set) var resourceVersionUnavailable = false
    /// The `resourceVersion` of the LIST in progress (its later pages send only `continue`).
    private var listResourceVersion = ""
    private let clock: any MonotonicClock
    private var backoff: Backoff
    private var random: RandomSource

    public init(configuration: Configuration = Configuration(), clock: any MonotonicClock,
                random: RandomSource = RandomSource()) {
        self.configuration = configuration
        self.clock = clock
        var random = random
        self.backoff = Backoff(policy: configuration.backoff, random: random.split())
        self.random = random
        self.usesStreamingList = configuration.streamingList
    }

    /// Feeds one input and returns what to do, in order.
    public mutating func handle(_ input: Input) -> [Action] {
        switch (state, input) {
        case (.idle, .start):
            return usesStreamingList ? beginStreamingList() : beginList()

        // MARK: Listing
        case (.listing(_, let limit, _), .pageReceived(let snapshot, let next)):
            if let next {
                return begin(.fetchPage(continueToken: next, limit: limit))
            }
            lastResourceVersion = snapshot
            resourceVersionUnavailable = false
            hasSynced = true
            return [.replaceCache(resourceVersion: snapshot)] + begin(.resume(from: snapshot, timeoutSeconds: watchTimeout()))
        case (.listing(let version, _, let continueToken), .http(410, _)):
            if continueToken != nil {
                // The continue token expired: a consistent list again, in one piece so that
                // it cannot expire half-way a second time.
                return begin(.relist(resourceVersion: version, limit: nil))
            }
            // The resource version is compacted away: a consistent read from etcd.
            resourceVersionUnavailable = true
            return beginList()
        case (.listing(let version, let limit, let continueToken), .http(let status, let retryAfter)):
            let retry: Action = continueToken.map { .fetchPage(continueToken: $0, limit: limit) }
                ?? .relist(resourceVersion: version, limit: limit)
            return failed(status: status, retryAfter: retryAfter, retry: retry)
        case (.listing(let version, let limit, let continueToken), .requestFailed):
            let retry: Action = continueToken.map { .fetchPage(continueToken: $0, limit: limit) }
                ?? .relist(resourceVersion: version, limit: limit)
            return retryLater(retry, after: backoff.nextDelay(now: clock.now))

        // MARK: Streaming list, before its initial events ended
        case (.streamingInitialEvents, .connected):
            state = .streamingInitialEvents(connectedAt: clock.now)
            return []
        case (.streamingInitialEvents, .received(let kind, let version)):
            switch kind {
            case .added:
                return [.stage]
            case .bookmark(initialEventsEnd: true):
                lastResourceVersion = version ?? lastResourceVersion
                resourceVersionUnavailable = false
                hasSynced = true
                state = .watching(connectedAt: clock.now, events: 1)
                return [.replaceCache(resourceVersion: lastResourceVersion)]
            case .error(let status) where status.code == 410:
                resourceVersionUnavailable = true
                return beginStreamingList()
            case .modified, .deleted, .bookmark(initialEventsEnd: false), .error:
                // Changes (or a plain bookmark) before the end marker: the server treated
                // the request as an ordinary watch and will never mark the end.
                return fallBackToList(delay: nil)
            }
        case (.streamingInitialEvents, .streamEnded(let failure)):
            return fallBackToList(delay: failure == nil ? nil : backoff.nextDelay(now: clock.now))
        case (.streamingInitialEvents, .timerFired):
            return fallBackToList(delay: nil)
        case (.streamingInitialEvents, .http(let status, let retryAfter)):
            if status == 401 || status == 429 || status >= 500 {
                return failed(status: status, retryAfter: retryAfter, retry: streamListAction())
            }
            // 400/403/422…: the parameters are refused (no WatchList support).
            return fallBackToList(delay: nil)
        case (.streamingInitialEvents, .requestFailed):
            return retryLater(streamListAction(), after: backoff.nextDelay(now: clock.now))

        // MARK: Watching
        case (.watching, .connected):
            state = .watching(connectedAt: clock.now, events: 0)
            return []
        case (.watching(let connectedAt, let events), .received(let kind, let version)):
            switch kind {
            case .added, .modified, .deleted:
                if let version, !version.isEmpty { lastResourceVersion = version }
                state = .watching(connectedAt: connectedAt, events: events + 1)
                return [.apply]
            case .bookmark:
                if let version, !version.isEmpty { lastResourceVersion = version }
                state = .watching(connectedAt: connectedAt, events: events + 1)
                return []
            case .error(let status) where status.code == 410:
                return beginList()
            case .error(let status):
                return failed(status: status.code, retryAfter: nil, retry: resumeAction())
            }
        case (.watching(let connectedAt, let events), .streamEnded(let failure)):
            // client-go's "very short watch": closed within a second without a single
            // event is a failure, or a server that closes at once would be hammered.
            let short = events == 0 && connectedAt.map { clock.now - $0 < .seconds(1) } ?? true
            if failure == nil && !short { return begin(resumeAction()) }
            return retryLater(resumeAction(), after: backoff.nextDelay(now: clock.now))
        case (.watching, .http(410, _)):
            return beginList()
        case (.watching, .http(let status, let retryAfter)):
            return failed(status: status, retryAfter: retryAfter, retry: resumeAction())
        case (.watching, .requestFailed):
            return retryLater(resumeAction(), after: backoff.nextDelay(now: clock.now))

        // MARK: Waiting
        case (.waiting(let action), .timerFired):
            return begin(action)

        default:
            // An input that does not belong to the current state (e.g. a late timer) changes nothing.
            return []
        }
    }

    // MARK: - Helpers

    /// Enters the state in which `action`'s request is outstanding and returns it.
    private mutating func begin(_ action: Action) -> [Action] {
        switch action {
        case .relist(let version, let limit):
            listResourceVersion = version
            state = .listing(resourceVersion: version, limit: limit, continueToken: nil)
        case .fetchPage(let token, let limit):
            state = .listing(resourceVersion: listResourceVersion, limit: limit, continueToken: token)
        case .streamList:
            state = .streamingInitialEvents(connectedAt: nil)
        case .resume:
            state = .watching(connectedAt: nil, events: 0)
        default:
            break
        }
        return [action]
    }

    private mutating func retryLater(_ action: Action, after delay: Duration) -> [Action] {
        if delay <= .zero { return begin(action) }
        state = .waiting(then: action)
        return [.reconnect(after: delay)]
    }

    /// A non-200 answer other than 410.
    private mutating func failed(status: Int, retryAfter: Duration?, retry: Action) -> [Action] {
        let delay: Duration
        if let retryAfter, status == 429 || status >= 500 {
            _ = backoff.nextDelay(now: clock.now)
            delay = min(retryAfter, configuration.maximumRetryAfter)
        } else {
            delay = backoff.nextDelay(now: clock.now)
        }
        let refresh: [Action] = status == 401 ? [.refreshCredentials] : []
        return refresh + retryLater(retry, after: delay)
    }

    private mutating func beginList() -> [Action] {
        let version = resourceVersionUnavailable ? "" : (lastResourceVersion.isEmpty ? "0" : lastResourceVersion)
        // Paging only for "any" and consistent reads; a list "not older than" a known
        // version is served whole from the watch cache (client-go does the same).
        let limit = version == "0" || version == "" ? configuration.pageSize : nil
        return begin(.relist(resourceVersion: version, limit: limit))
    }

    private mutating func beginStreamingList() -> [Action] {
        begin(streamListAction())
    }

    private mutating func fallBackToList(delay: Duration?) -> [Action] {
        usesStreamingList = false
        let actions = beginList()
        guard let delay, delay > .zero, let first = actions.first else { return actions }
        return retryLater(first, after: delay)
    }

    private mutating func streamListAction() -> Action {
        .streamList(
            resourceVersion: resourceVersionUnavailable ? "" : lastResourceVersion, timeoutSeconds: watchTimeout(),
            deadline: configuration.initialEventsDeadline)
    }

    private mutating func resumeAction() -> Action {
        .resume(from: lastResourceVersion, timeoutSeconds: watchTimeout())
    }

    private mutating func watchTimeout() -> Int {
        random.int(in: configuration.watchTimeoutSeconds)
    }
}
