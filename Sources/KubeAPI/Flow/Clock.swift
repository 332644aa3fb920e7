import Foundation

/// A point on a monotonic clock, as time since the clock's origin.
public struct MonotonicInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var sinceOrigin: Duration

    public init(sinceOrigin: Duration) {
        self.sinceOrigin = sinceOrigin
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.sinceOrigin < rhs.sinceOrigin }
    public static func + (lhs: Self, rhs: Duration) -> Self { Self(sinceOrigin: lhs.sinceOrigin + rhs) }
    public static func - (lhs: Self, rhs: Self) -> Duration { lhs.sinceOrigin - rhs.sinceOrigin }

    public var description: String { "t+\(sinceOrigin)" }
}

/// The time source of every timing decision in KubeAPI (backoff, rate limit, token
/// refresh, watch deadlines). Production uses `SystemClock`; tests inject a manual clock
/// so that timing is checked exactly, without sleeping.
public protocol MonotonicClock: Sendable {
    var now: MonotonicInstant { get }
    /// Sleeps for `duration` (throws `CancellationError` when the task is cancelled).
    func sleep(for duration: Duration) async throws
}

/// `ContinuousClock` as a `MonotonicClock` (origin: when the value was made).
public struct SystemClock: MonotonicClock {
    private let origin = ContinuousClock.now

    public init() {}

    public var now: MonotonicInstant { MonotonicInstant(sinceOrigin: ContinuousClock.now - origin) }

    public func sleep(for duration: Duration) async throws {
        guard duration > .zero else {
            try Task.checkCancellation()
            return
        }
        try await Task.sleep(for: duration)
    }
}
