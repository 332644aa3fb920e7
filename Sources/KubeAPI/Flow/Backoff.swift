import Foundation

/// Exponential backoff with jitter, as client-go's reflector does it: the base delay
/// starts at `initial`, doubles after each failure up to `maximum`, and each wait is the
/// base plus up to `jitter` × base at random. After `resetAfter` without a failure the
/// base starts again from `initial`. With the defaults (800 ms, ×2, 30 s, jitter 1, reset
/// after 2 min) a dead API server sees about one request every 4.5 s per watcher.
public struct Backoff: Sendable {
    public struct Policy: Sendable, Equatable {
        public var initial: Duration = .milliseconds(800)
        public var maximum: Duration = .seconds(30)
        public var factor: Double = 2
        public var jitter: Double = 1
        public var resetAfter: Duration = .seconds(120)

        public init() {}

        public init(initial: Duration, maximum: Duration, factor: Double = 2, jitter: Double = 1,
                    resetAfter: Duration = .seconds(120)) {
            self.initial = initial
            self.maximum = maximum
            self.factor = factor
            self.jitter = jitter
            self.resetAfter = resetAfter
        }
    }

    public let policy: Policy
    private var base: Duration?
    private var lastFailure: MonotonicInstant?
    private var random: RandomSource

    public init(policy: Policy = Policy(), random: RandomSource = RandomSource()) {
        self.policy = policy
        self.random = random
    }

    /// The wait after a failure at `now`.
    public mutating func nextDelay(now: MonotonicInstant) -> Duration {
        if let lastFailure, now - lastFailure >= policy.resetAfter { base = nil }
        let next: Duration
        if let base {
            next = min(base * policy.factor, policy.maximum)
        } else {
            next = policy.initial
        }
        base = next
        lastFailure = now
        let extra = next * (policy.jitter * random.unitInterval())
        return next + extra
    }

    /// Forgets past failures (e.g. after a watch delivered events).
    public mutating func reset() {
        base = nil
        lastFailure = nil
    }
}

/// Random numbers for jitter and watch timeouts. Seeded in tests so that every run
/// makes the same choices; system-random otherwise.
public struct RandomSource: Sendable {
    private var state: UInt64
    private let seeded: Bool

    /// System randomness.
    public init() {
        state = 0
        seeded = false
    }

    /// A deterministic sequence (SplitMix64) for tests.
    public init(seed: UInt64) {
        state = seed
        seeded = true
    }

    /// A value in [0, 1).
    public mutating func unitInterval() -> Double {
        Double(next() >> 11) / Double(UInt64(1) << 53)
    }

    /// A value in `range`.
    public mutating func int(in range: Range<Int>) -> Int {
        precondition(!range.isEmpty)
        return range.lowerBound + Int(next() % UInt64(range.count))
    }

    /// An independent source: seeded from this one when seeded, system-random otherwise.
    public mutating func split() -> RandomSource {
        seeded ? RandomSource(seed: next()) : RandomSource()
    }

    private mutating func next() -> UInt64 {
        guard seeded else { return UInt64.random(in: .min ... .max) }
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
