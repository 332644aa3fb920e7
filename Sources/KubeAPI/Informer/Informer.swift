import Foundation
import Logging
import ServiceModel

/// A change an informer delivers. Delivered in order, on the informer's task.
public enum InformerEvent<Object: KubeObject>: Sendable {
    case added(Object)
    case updated(old: Object, new: Object)
    /// The object's last known state.
    case deleted(Object)
    /// The initial state is complete (sent once, after the first list or streamed initial
    /// events; later relists only deliver their differences).
    case synced
    /// An object the informer refused (over `maximumObjectBytes`); the cache keeps its
    /// previous state of that object.
    case rejected(Rejection)
}

/// Tunables of one informer.
public struct InformerOptions: Sendable {
    public var lifecycle = WatchStateMachine.Configuration()
    /// The longest watch event accepted (a longer line fails the stream, which is then
    /// resumed): etcd's 1.5 MiB object limit with room for JSON overhead.
    public var maximumEventBytes = 8 << 20
    /// The largest added or modified object accepted from a watch (`maxObjectBytes`): a
    /// larger event is skipped and reported as `.rejected`, and the cache keeps the
    /// object's previous state (deletions are always applied). LIST pages are not
    /// checked item by item.
    public var maximumObjectBytes = 3 << 20
    /// The largest LIST page accepted.
    public var maximumPageBytes = 1 << 30
    /// A LIST response that delivers nothing for this long is abandoned.
    public var listStallTimeout: Duration = .seconds(60)
    /// How long past its `timeoutSeconds` a watch may stay open before it is taken for
    /// dead (a server that never ends the stream, or a silent network failure).
    public var watchGrace: Duration = .seconds(30)
    /// Jitter and watch-timeout randomness (seeded in tests).
    public var random = RandomSource()

    public init() {}
}

/// Keeps a local copy of one collection (keyed by namespace/name) in step with the API
/// server, and reports every change to `handler`. The lifecycle decisions are
/// `WatchStateMachine`'s; this class performs its actions.
///
/// A relist never empties the cache: the new list is gathered aside and swapped in
/// whole, so objects that still exist are never reported deleted, and objects that
/// vanished meanwhile are.
public final class Informer<Object: KubeObject>: @unchecked Sendable {
    public let query: ResourceQuery
    public let options: InformerOptions
    private let client: KubeClient
    private let handler: @Sendable (InformerEvent<Object>) -> Void
    private let logger: Logger
    private let lock = NSLock()
    private var items: [String: Object] = [:]
    private var synced = false
    private var lastVersion = ""
    private var stateDescription = "idle"
    private var counts = InformerStatistics()

    public init(client: KubeClient, query: ResourceQuery, options: InformerOptions = InformerOptions(),
                handler: @escaping @Sendable (InformerEvent<Object>) -> Void) {
        self.client = client
        self.query = query
        self.options = options
        self.handler = handler
        var logger = client.logger
        logger[metadataKey: "resource"] = "\(query.path)"
        self.logger = logger
    }

    /// True once the initial state was delivered.
    public var hasSynced: Bool {
        lock.lock()
        defer { lock.unlock() }
        return synced
    }

    /// The resource version the informer would resume from.
    public var lastResourceVersion: String {
        lock.lock()
        defer { lock.unlock() }
        return lastVersion
    }

    /// How often the informer had to start over (for metrics).
    public var statistics: InformerStatistics {
        lock.lock()
        defer { lock.unlock() }
        return counts
    }

    /// The cached objects, sorted by namespace/name.
    public func objects() -> [Object] {
        lock.lock()
        let snapshot = items
        lock.unlock()
        return snapshot.keys.sorted().map { snapshot[$0]! }
    }

    /// The cached object with this namespace/name key.
    public func object(forKey key: String) -> Object? {
        lock.lock()
        defer { lock.unlock() }
        return items[key]
    }

    /// Lists and watches until the task is cancelled.
    public func run() async {
        var machine = WatchStateMachine(
            configuration: options.lifecycle, clock: client.clock, random: options.random)
        var staged: [String: Object] = [:]
        var actions = machine.handle(.start)
        while !Task.isCancelled {
            if actions.isEmpty {
                // Every input the driver feeds leads to a next request; should a bug leave
                // none, start over rather than stop watching.
                logger.error("watch lifecycle produced no next step; restarting it", metadata: ["state": "\(machine.state)"])
                machine = WatchStateMachine(configuration: options.lifecycle, clock: client.clock, random: options.random)
                actions = machine.handle(.start)
            }
            let action = actions.removeFirst()
            switch action {
            case .relist(let version, let limit):
                staged.removeAll()
                var parameters = [("resourceVersion", version)]
                if let limit { parameters.append(("limit", String(limit))) }
                actions += await listPage(parameters, machine: &machine, staged: &staged)
            case .fetchPage(let token, let limit):
                var parameters = [("continue", token)]
                if let limit { parameters.append(("limit", String(limit))) }
                actions += await listPage(parameters, machine: &machine, staged: &staged)
            case .streamList(let version, let timeout, let deadline):
                staged.removeAll()
                let parameters = [
                    ("watch", "true"), ("sendInitialEvents", "true"), ("allowWatchBookmarks", "true"),
                    ("resourceVersionMatch", "NotOlderThan"), ("resourceVersion", version),
                    ("timeoutSeconds", String(timeout)),
                ]
                actions += await watch(parameters, timeout: timeout, initialEventsDeadline: deadline,
                                       machine: &machine, staged: &staged)
            case .resume(let version, let timeout):
                let parameters = [
                    ("watch", "true"), ("allowWatchBookmarks", "true"), ("resourceVersion", version),
                    ("timeoutSeconds", String(timeout)),
                ]
                actions += await watch(parameters, timeout: timeout, initialEventsDeadline: nil,
                                       machine: &machine, staged: &staged)
            case .reconnect(let delay):
                logger.debug("retrying later", metadata: ["after": "\(delay)"])
                do {
                    try await client.clock.sleep(for: delay)
                } catch {
                    return
                }
                actions += machine.handle(.timerFired)
            case .replaceCache(let version):
                replace(with: staged, resourceVersion: version)
                staged.removeAll()
            case .refreshCredentials:
                client.tokens.invalidate()
            case .apply, .stage:
                // Only ever returned for an event being read, and handled there.
                break
            }
            record(machine)
        }
    }

    private func record(_ machine: WatchStateMachine) {
        lock.lock()
        lastVersion = machine.lastResourceVersion
        lock.unlock()
    }

    // MARK: - LIST

    private func listPage(_ parameters: [(String, String)], machine: inout WatchStateMachine,
                          staged: inout [String: Object]) async -> [WatchStateMachine.Action] {
        let pathAndQuery = query.pathAndQuery(parameters)
        do {
            let response = try await client.get(
                pathAndQuery, stallTimeout: options.listStallTimeout, acceptCompressed: true)
            guard response.head.status == 200 else {
                return await refused(response, request: pathAndQuery, machine: &machine)
            }
            let body = try await response.collect(limit: options.maximumPageBytes)
            let page = try JSONDecoder().decode(ObjectList<Object>.self, from: body)
            for item in page.items { staged[item.cacheKey] = item }
            logger.debug("list page", metadata: [
                "items": "\(page.items.count)", "gathered": "\(staged.count)", "more": "\(page.continueToken != nil)",
            ])
            return machine.handle(.pageReceived(resourceVersion: page.resourceVersion, continueToken: page.continueToken))
        } catch {
            if Task.isCancelled { return [] }
            logger.warning("list failed", metadata: ["request": "\(pathAndQuery)", "error": "\(error)"])
            return machine.handle(.requestFailed("\(error)"))
        }
    }

    /// A non-200 answer: log the server's Status and tell the machine.
    private func refused(_ response: HTTPResponse, request: String,
                         machine: inout WatchStateMachine) async -> [WatchStateMachine.Action] {
        let head = response.head
        let body = try? await response.collect(limit: 1 << 20)
        let status = body.flatMap { try? JSONDecoder().decode(Status.self, from: $0) }
        let level: Logger.Level = head.status == 410 ? .info : .warning
        logger.log(level: level, "request refused", metadata: [
            "request": "\(request)", "status": "\(head.status)",
            "reason": "\(status?.reason ?? "-")", "message": "\(status?.message ?? "-")",
            "retryAfter": "\(head.retryAfter.map { "\($0)" } ?? "-")",
        ])
        return machine.handle(.http(status: head.status, retryAfter: head.retryAfter))
    }

    // MARK: - WATCH

    private func watch(_ parameters: [(String, String)], timeout: Int, initialEventsDeadline: Duration?,
                       machine: inout WatchStateMachine,
                       staged: inout [String: Object]) async -> [WatchStateMachine.Action] {
        let pathAndQuery = query.pathAndQuery(parameters)
        let response: HTTPResponse
        do {
            response = try await client.get(pathAndQuery, totalTimeout: .seconds(timeout) + options.watchGrace)
        } catch {
            if Task.isCancelled { return [] }
            logger.warning("watch failed", metadata: ["request": "\(pathAndQuery)", "error": "\(error)"])
            return machine.handle(.requestFailed("\(error)"))
        }
        guard response.head.status == 200 else {
            return await refused(response, request: pathAndQuery, machine: &machine)
        }
        logger.debug("watching", metadata: ["request": "\(pathAndQuery)", "http": "\(response.head.httpVersion)"])
        lock.withLock { counts.watchesOpened += 1 }
        var actions = machine.handle(.connected)

        // The initial events of a streaming list must end by the deadline; the watchdog
        // ends the transfer when they do not, and the read loop below then reports it.
        let watchdog = Watchdog()
        var watchdogTask: Task<Void, Never>?
        if let initialEventsDeadline {
            let canceller = response.canceller
            let clock = client.clock
            watchdogTask = Task {
                guard (try? await clock.sleep(for: initialEventsDeadline)) != nil else { return }
                watchdog.fire()
                canceller.cancel()
            }
        }
        defer { watchdogTask?.cancel() }

        var framer = LineFramer(maximumLineLength: options.maximumEventBytes)
        let decoder = JSONDecoder()
        // Objects refused during this stream: a relist it completes keeps their old state.
        var refusedKeys = Set<String>()
        do {
            while true {
                let chunk = try await response.nextChunk()
                if let chunk { framer.append(chunk) }
                var lines: [Data] = []
                while let line = try framer.nextLine() { lines.append(line) }
                if chunk == nil, let last = try framer.finish() { lines.append(last) }
                for line in lines {
                    if line.count > options.maximumObjectBytes, let key = refuseOversized(line, decoder: decoder) {
                        refusedKeys.insert(key)
                        continue
                    }
                    let event = try decoder.decode(WatchEvent<Object>.self, from: line)
                    if case .error(let status) = event.kind {
                        logger.info("watch ended by the server", metadata: ["status": "\(status)"])
                    }
                    for action in machine.handle(.received(event.kind, resourceVersion: event.resourceVersion)) {
                        switch action {
                        case .apply:
                            apply(event)
                        case .stage:
                            if let object = event.object { staged[object.cacheKey] = object }
                        case .replaceCache(let version):
                            watchdogTask?.cancel()
                            for key in refusedKeys where staged[key] == nil {
                                if let kept = object(forKey: key) { staged[key] = kept }
                            }
                            replace(with: staged, resourceVersion: version)
                            staged.removeAll()
                        default:
                            actions.append(action)
                        }
                    }
                    record(machine)
                    if !actions.isEmpty {
                        // The machine moved on (relist, backoff…): this stream is done.
                        response.cancel()
                        return actions
                    }
                }
                if chunk == nil {
                    logger.debug("watch ended", metadata: ["request": "\(pathAndQuery)"])
                    return machine.handle(.streamEnded(failure: nil))
                }
            }
        } catch {
            if Task.isCancelled { return [] }
            response.cancel()
            if watchdog.fired, case .streamingInitialEvents = machine.state {
                logger.warning("the streaming list did not finish its initial events in time; listing instead", metadata: [
                    "deadline": "\(initialEventsDeadline.map { "\($0)" } ?? "-")",
                ])
                return machine.handle(.timerFired)
            }
            logger.warning("watch stream broken", metadata: ["request": "\(pathAndQuery)", "error": "\(error)"])
            return machine.handle(.streamEnded(failure: "\(error)"))
        }
    }

    /// An added or modified object over the size cap: logged and reported, not applied.
    /// Returns its cache key, or nil when the event is to be decoded as usual.
    private func refuseOversized(_ line: Data, decoder: JSONDecoder) -> String? {
        guard let peek = try? decoder.decode(OversizedEventPeek.self, from: line), peek.type == "ADDED" || peek.type == "MODIFIED"
        else { return nil }
        let meta = peek.object?.metadata
        let key = (meta?.namespace.isEmpty ?? true) ? meta?.name ?? "" : meta!.namespace + "/" + meta!.name
        let kind = String(describing: Object.self)
        let rejection = Rejection(
            kind: kind, object: key, field: "", reason: "size",
            message: "\(line.count) bytes, over the object size cap of \(options.maximumObjectBytes) bytes (maxObjectBytes)")
        logger.error("object rejected; keeping its previous state", metadata: [
            "object": "\(kind) \(key)", "bytes": "\(line.count)", "limit": "\(options.maximumObjectBytes)",
        ])
        handler(.rejected(rejection))
        return key
    }

    // MARK: - Cache

    private func apply(_ event: WatchEvent<Object>) {
        guard let object = event.object else { return }
        let key = object.cacheKey
        switch event.kind {
        case .added, .modified:
            lock.lock()
            let old = items.updateValue(object, forKey: key)
            lock.unlock()
            if let old {
                if !Self.same(old, object) { handler(.updated(old: old, new: object)) }
            } else {
                handler(.added(object))
            }
        case .deleted:
            lock.lock()
            let old = items.removeValue(forKey: key)
            lock.unlock()
            if old != nil { handler(.deleted(object)) }
        case .bookmark, .error:
            break
        }
    }

    /// Swaps in a complete list: deletions for what it lacks, then additions and updates.
    private func replace(with list: [String: Object], resourceVersion: String) {
        lock.lock()
        let previous = items
        items = list
        let first = !synced
        synced = true
        if !first { counts.relists += 1 }
        lock.unlock()
        var deleted = 0
        var changed = 0
        for (key, old) in previous where list[key] == nil {
            handler(.deleted(old))
            deleted += 1
        }
        for key in list.keys.sorted() {
            let new = list[key]!
            if let old = previous[key] {
                if !Self.same(old, new) {
                    handler(.updated(old: old, new: new))
                    changed += 1
                }
            } else {
                handler(.added(new))
                changed += 1
            }
        }
        logger.log(level: first ? .info : .notice, first ? "synced" : "relisted", metadata: [
            "objects": "\(list.count)", "deleted": "\(deleted)", "addedOrChanged": "\(changed)",
            "resourceVersion": "\(resourceVersion)",
        ])
        if first { handler(.synced) }
    }

    /// The same resource version means the same object (versions compare for equality only).
    private static func same(_ a: Object, _ b: Object) -> Bool {
        if let x = a.metadata.resourceVersion, let y = b.metadata.resourceVersion, !x.isEmpty { return x == y }
        return a == b
    }
}

/// What an over-cap watch event is read for: its type and whose object it carries.
private struct OversizedEventPeek: Decodable {
    struct Object: Decodable { var metadata: ObjectMeta? }
    var type: String
    var object: Object?
}

/// Counts of an informer's restarts since it was created.
public struct InformerStatistics: Equatable, Sendable {
    /// Watch requests the server accepted (a streaming list counts as the first).
    public var watchesOpened = 0
    /// Complete lists after the first one (410 Gone, expired continue tokens…).
    public var relists = 0

    /// Watches opened after the first: each time a watch ended (server timeout, broken
    /// stream, 410) and had to be started again.
    public var watchRestarts: Int { max(0, watchesOpened - 1) }

    public init(watchesOpened: Int = 0, relists: Int = 0) {
        self.watchesOpened = watchesOpened
        self.relists = relists
    }
}

/// Set by the streaming-list watchdog when it ended a transfer.
private final class Watchdog: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false

    var fired: Bool {
        lock.lock()
        defer { lock.unlock() }
        return value
    }

    func fire() {
        lock.lock()
        value = true
        lock.unlock()
    }
}
