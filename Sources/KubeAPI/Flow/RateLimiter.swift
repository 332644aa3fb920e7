import Foundation

/// Token bucket: `burst` requests at once, then `qps` per second (client-go's
/// `flowcontrol.NewTokenBucketRateLimiter`; kube-proxy defaults QPS 5, burst 10). Each
/// list page and each watch (re)start takes one token.
public struct TokenBucket: Sendable, Equatable {
    public let qps: Double
    public let burst: Int
    private var tokens: Double
    private var updated: MonotonicInstant?

    public init(qps: Double, burst: Int) {
        precondition(qps > 0 && burst >= 1)
        self.qps = qps
        self.burst = burst
        self.tokens = Double(burst)
    }

    /// Takes a token at `now` and returns how long the caller must wait before using it
    /// (zero when one was available). Reservations queue up: the tenth caller in a row
    /// past the burst waits for the tenth token.
    public mutating func reserve(now: MonotonicInstant) -> Duration {
        if let updated {
            if now > updated {
                tokens = min(Double(burst), tokens + (now - updated).inSeconds * qps)
                self.updated = now
            }
        } else {
            updated = now
        }
        tokens -= 1
        guard tokens < 0 else { return .zero }
        return .seconds(-tokens / qps)
    }
}

/// A `TokenBucket` shared by every informer of one client.
public final class RateLimiter: @unchecked Sendable {
    private let lock = NSLock()
    private var bucket: TokenBucket
    private let clock: any MonotonicClock

    public init(qps: Double, burst: Int, clock: any MonotonicClock) {
        bucket = TokenBucket(qps: qps, burst: burst)
        self.clock = clock
    }

    /// Waits for a token.
    public func acquire() async throws {
        let wait = lock.withLock { bucket.reserve(now: clock.now) }
        if wait > .zero { try await clock.sleep(for: wait) }
    }
}

extension Duration {
    /// As a floating-point number of seconds.
    var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
