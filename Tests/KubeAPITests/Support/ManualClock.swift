import Foundation
import KubeAPI

/// A clock that moves only when the test says so. Sleepers wait until `advance` passes
/// their deadline; `nextSleep()` lets a test see each requested sleep as it happens, so
/// backoff and Retry-After waits are checked exactly and nothing really sleeps.
final class ManualClock: MonotonicClock, @unchecked Sendable {
    private struct Sleeper {
        var id: Int
        var deadline: MonotonicInstant
        var continuation: CheckedContinuation<Void, Error>
    }

    private let lock = NSLock()
    private var current = MonotonicInstant(sinceOrigin: .zero)
    private var sleepers: [Sleeper] = []
    private var nextID = 0
    private var requested: [Duration] = []

    var now: MonotonicInstant { lock.withLock { current } }

    func sleep(for duration: Duration) async throws {
        guard duration > .zero else { return }
        let id = lock.withLock { () -> Int in
            nextID += 1
            return nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                lock.lock()
                if Task.isCancelled {
                    lock.unlock()
                    continuation.resume(throwing: CancellationError())
                    return
                }
                sleepers.append(Sleeper(id: id, deadline: current + duration, continuation: continuation))
                requested.append(duration)
                lock.unlock()
            }
        } onCancel: {
            lock.lock()
            let index = sleepers.firstIndex { $0.id == id }
            let sleeper = index.map { sleepers.remove(at: $0) }
            lock.unlock()
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline has come.
    func advance(by duration: Duration) {
        lock.lock()
        current = current + duration
        let due = sleepers.filter { $0.deadline <= current }
        sleepers.removeAll { $0.deadline <= current }
        lock.unlock()
        for sleeper in due { sleeper.continuation.resume() }
    }

    /// The duration of the next `sleep` call (one already made and not yet reported, or
    /// the next one to come). Fails the test after `limit` of real time without one.
    func nextSleep(limit: TimeInterval = 30) async throws -> Duration {
        let deadline = Date().addingTimeInterval(limit)
        while Date() < deadline {
            if let duration = lock.withLock({ requested.isEmpty ? nil : requested.removeFirst() }) {
                return duration
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        throw TestTimeout(what: "a sleep on the manual clock")
    }
}

/// A liveness limit ran out (the thing awaited never happened).
struct TestTimeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "gave up waiting for \(what)" }
}
