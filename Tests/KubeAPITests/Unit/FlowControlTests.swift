import Foundation
import KubeAPI
import XCTest

final class BackoffTests: XCTestCase {
    private func at(_ seconds: Double) -> MonotonicInstant { MonotonicInstant(sinceOrigin: .seconds(seconds)) }

    func testDelaysDoubleFrom800msUpTo30sWithUpToOneBaseOfJitter() {
        var backoff = Backoff(random: RandomSource(seed: 7))
        let bases: [Double] = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30, 30]
        for (index, base) in bases.enumerated() {
            let delay = backoff.nextDelay(now: at(Double(index))).inSecondsForTest
            XCTAssertGreaterThanOrEqual(delay, base, "failure \(index + 1)")
            XCTAssertLessThan(delay, 2 * base, "failure \(index + 1)")
        }
    }

    func testJitterSpreadsClientsApart() {
        var delays = Set<Double>()
        for seed in 0..<20 {
            var backoff = Backoff(random: RandomSource(seed: UInt64(seed)))
            delays.insert(backoff.nextDelay(now: at(0)).inSecondsForTest)
        }
        XCTAssertGreaterThan(delays.count, 15, "twenty clients failing together should not retry together")
    }

    func testTwoMinutesWithoutAFailureStartOver() {
        var backoff = Backoff(policy: .init(initial: .seconds(1), maximum: .seconds(60), jitter: 0))
        XCTAssertEqual(backoff.nextDelay(now: at(0)), .seconds(1))
        XCTAssertEqual(backoff.nextDelay(now: at(1)), .seconds(2))
        XCTAssertEqual(backoff.nextDelay(now: at(100)), .seconds(4), "99 s after the last failure: still backing off")
        XCTAssertEqual(backoff.nextDelay(now: at(220)), .seconds(1), "120 s quiet: reset")
    }

    func testSeededRandomnessRepeatsAndStaysInRange() {
        var a = RandomSource(seed: 42)
        var b = RandomSource(seed: 42)
        for _ in 0..<1000 {
            let value = a.unitInterval()
            XCTAssertEqual(value, b.unitInterval())
            XCTAssertTrue((0..<1).contains(value))
            XCTAssertTrue((300..<600).contains(a.int(in: 300..<600)))
            _ = b.int(in: 300..<600)
        }
    }
}

final class TokenBucketTests: XCTestCase {
    private func at(_ seconds: Double) -> MonotonicInstant { MonotonicInstant(sinceOrigin: .seconds(seconds)) }

    func testABurstPassesThenRequestsAreSpacedByTheRate() {
        var bucket = TokenBucket(qps: 5, burst: 10)
        for index in 0..<10 { XCTAssertEqual(bucket.reserve(now: at(0)), .zero, "request \(index) is within the burst") }
        XCTAssertEqual(bucket.reserve(now: at(0)).inSecondsForTest, 0.2, accuracy: 1e-9)
        XCTAssertEqual(bucket.reserve(now: at(0)).inSecondsForTest, 0.4, accuracy: 1e-9, "reservations queue up")
    }

    func testTokensRefillOverTimeUpToTheBurst() {
        var bucket = TokenBucket(qps: 2, burst: 3)
        for _ in 0..<3 { _ = bucket.reserve(now: at(0)) }
        XCTAssertEqual(bucket.reserve(now: at(1)), .zero, "two tokens came back in one second")
        XCTAssertEqual(bucket.reserve(now: at(1)), .zero)
        XCTAssertEqual(bucket.reserve(now: at(1)).inSecondsForTest, 0.5, accuracy: 1e-9)
        for _ in 0..<3 { XCTAssertEqual(bucket.reserve(now: at(100)), .zero) }
        XCTAssertGreaterThan(bucket.reserve(now: at(100)), .zero, "a long pause refills only up to the burst")
    }

    func testTheSharedLimiterSleepsOnItsClock() async throws {
        let clock = ManualClock()
        let limiter = RateLimiter(qps: 1, burst: 1, clock: clock)
        try await limiter.acquire()
        let second = Task { try await limiter.acquire() }
        let wait = try await clock.nextSleep()
        XCTAssertEqual(wait, .seconds(1))
        clock.advance(by: wait)
        try await second.value
    }
}

extension Duration {
    var inSecondsForTest: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
