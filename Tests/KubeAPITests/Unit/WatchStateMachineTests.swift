import Foundation
import KubeAPI
import XCTest

final class WatchStateMachineTests: XCTestCase {
    typealias Machine = WatchStateMachine
    private var clock: ManualClock!

    override func setUp() {
        clock = ManualClock()
    }

    private func machine(streaming: Bool = false, pageSize: Int? = 500) -> Machine {
        var configuration = Machine.Configuration()
        configuration.streamingList = streaming
        configuration.pageSize = pageSize
        return Machine(configuration: configuration, clock: clock, random: RandomSource(seed: 1))
    }

    /// Lists to completion at `version` and opens the watch; returns the watch timeout.
    private func synced(_ m: inout Machine, at version: String = "100") {
        _ = m.handle(.start)
        _ = m.handle(.pageReceived(resourceVersion: version, continueToken: nil))
        _ = m.handle(.connected)
    }

    private func watchTimeout(_ actions: [Machine.Action]) -> Int? {
        for case .resume(_, let timeout) in actions { return timeout }
        return nil
    }

    private func delay(_ actions: [Machine.Action]) -> Duration? {
        for case .reconnect(let after) in actions { return after }
        return nil
    }

    // MARK: - LIST

    func testTheFirstListIsPagedFromAnyVersionThenTheWatchStartsAtTheListVersion() {
        var m = machine()
        XCTAssertEqual(m.handle(.start), [.relist(resourceVersion: "0", limit: 500)])
        XCTAssertEqual(m.handle(.pageReceived(resourceVersion: "77", continueToken: "c1")), [.fetchPage(continueToken: "c1", limit: 500)])
        XCTAssertFalse(m.hasSynced)
        let done = m.handle(.pageReceived(resourceVersion: "77", continueToken: nil))
        XCTAssertEqual(done.first, .replaceCache(resourceVersion: "77"))
        guard case .resume(from: "77", let timeout)? = done.last, done.count == 2 else {
            return XCTFail("expected replaceCache then resume from 77, got \(done)")
        }
        XCTAssertTrue((300..<600).contains(timeout))
        XCTAssertTrue(m.hasSynced)
    }

    func testAnExpiredContinueRestartsTheListInOnePiece() {
        var m = machine()
        _ = m.handle(.start)
        _ = m.handle(.pageReceived(resourceVersion: "77", continueToken: "c1"))
        XCTAssertEqual(m.handle(.http(status: 410, retryAfter: nil)), [.relist(resourceVersion: "0", limit: nil)])
        XCTAssertFalse(m.resourceVersionUnavailable, "the list's own version is still fine")
    }

    func testA410OnTheFirstPageOfARelistFallsBackToAConsistentRead() {
        var m = machine()
        synced(&m, at: "100")
        XCTAssertEqual(m.handle(.received(.error(Status(code: 410, reason: "Expired")), resourceVersion: nil)),
                       [.relist(resourceVersion: "100", limit: nil)], "relist not older than what was seen, unpaged")
        XCTAssertEqual(m.handle(.http(status: 410, retryAfter: nil)), [.relist(resourceVersion: "", limit: 500)])
        XCTAssertTrue(m.resourceVersionUnavailable)
        let done = m.handle(.pageReceived(resourceVersion: "250", continueToken: nil))
        XCTAssertEqual(done.first, .replaceCache(resourceVersion: "250"))
        XCTAssertFalse(m.resourceVersionUnavailable)
    }

    func testAFailedPageIsRetriedWithTheSameContinueTokenAfterABackoff() {
        var m = machine()
        _ = m.handle(.start)
        _ = m.handle(.pageReceived(resourceVersion: "77", continueToken: "c1"))
        let actions = m.handle(.requestFailed("connection reset"))
        XCTAssertEqual(actions.count, 1)
        XCTAssertNotNil(delay(actions))
        XCTAssertEqual(m.state, .waiting(then: .fetchPage(continueToken: "c1", limit: 500)))
        XCTAssertEqual(m.handle(.timerFired), [.fetchPage(continueToken: "c1", limit: 500)])
        XCTAssertEqual(m.handle(.http(status: 410, retryAfter: nil)), [.relist(resourceVersion: "0", limit: nil)],
                       "a retried page that expired still restarts the list at the list's own version")
    }

    // MARK: - WATCH

    func testObjectEventsAreAppliedAndMoveTheResumePointBookmarksOnlyMoveIt() {
        var m = machine()
        synced(&m)
        XCTAssertEqual(m.handle(.received(.added, resourceVersion: "101")), [.apply])
        XCTAssertEqual(m.handle(.received(.modified, resourceVersion: "102")), [.apply])
        XCTAssertEqual(m.handle(.received(.deleted, resourceVersion: "103")), [.apply])
        XCTAssertEqual(m.handle(.received(.bookmark(initialEventsEnd: false), resourceVersion: "150")), [],
                       "a bookmark is never applied as an object")
        XCTAssertEqual(m.lastResourceVersion, "150")
        clock.advance(by: .seconds(400))
        let next = m.handle(.streamEnded(failure: nil))
        XCTAssertEqual(next.count, 1)
        guard case .resume(from: "150", _)? = next.first else { return XCTFail("\(next)") }
    }

    func testResourceVersionsAreOpaque() {
        var m = machine()
        synced(&m, at: "zz-9")
        _ = m.handle(.received(.modified, resourceVersion: "a"))
        _ = m.handle(.received(.bookmark(initialEventsEnd: false), resourceVersion: "Q"))
        clock.advance(by: .seconds(5))
        guard case .resume(from: "Q", _)? = m.handle(.streamEnded(failure: nil)).first else {
            return XCTFail("resumes from the last version seen, whatever it looks like")
        }
    }

    func testExpiredAndGoneAreBothRelists() {
        for reason in ["Expired", "Gone"] {
            var m = machine()
            synced(&m, at: "100")
            _ = m.handle(.received(.modified, resourceVersion: "120"))
            XCTAssertEqual(m.handle(.received(.error(Status(code: 410, reason: reason)), resourceVersion: nil)),
                           [.relist(resourceVersion: "120", limit: nil)], reason)
        }
        var m = machine()
        synced(&m)
        XCTAssertEqual(m.handle(.http(status: 410, retryAfter: nil)), [.relist(resourceVersion: "100", limit: nil)],
                       "a watch refused with HTTP 410 relists as well")
    }

    func testAWatchThatEndsAtOnceWithoutEventsBacksOff() {
        var m = machine()
        synced(&m)
        let actions = m.handle(.streamEnded(failure: nil))
        guard let wait = delay(actions) else { return XCTFail("a very short watch is a failure: \(actions)") }
        XCTAssertGreaterThanOrEqual(wait, .milliseconds(800))
        guard case .resume(from: "100", _)? = m.handle(.timerFired).first else { return XCTFail() }
    }

    func testABrokenStreamBacksOffThenResumes() {
        var m = machine()
        synced(&m)
        _ = m.handle(.received(.added, resourceVersion: "101"))
        let wait = delay(m.handle(.streamEnded(failure: "connection reset")))
        XCTAssertNotNil(wait)
        XCTAssertEqual(m.handle(.received(.added, resourceVersion: "999")), [], "nothing is read while waiting")
        guard case .resume(from: "101", _)? = m.handle(.timerFired).first else { return XCTFail() }
    }

    func testAnErrorEventOtherThan410BacksOffAndResumes() {
        var m = machine()
        synced(&m)
        let actions = m.handle(.received(.error(Status(code: 500, reason: "InternalError")), resourceVersion: nil))
        XCTAssertNotNil(delay(actions), "\(actions)")
        guard case .resume(from: "100", _)? = m.handle(.timerFired).first else { return XCTFail() }
    }

    func testUnauthorizedRefreshesTheCredentialsBeforeRetrying() {
        var m = machine()
        synced(&m)
        _ = m.handle(.streamEnded(failure: "reset"))
        _ = m.handle(.timerFired)
        let actions = m.handle(.http(status: 401, retryAfter: nil))
        XCTAssertEqual(actions.first, .refreshCredentials)
        XCTAssertNotNil(delay(actions))
    }

    func testRetryAfterOn429And5xxIsHonouredExactly() {
        var m = machine()
        _ = m.handle(.start)
        _ = m.handle(.pageReceived(resourceVersion: "77", continueToken: "c1"))
        XCTAssertEqual(m.handle(.http(status: 429, retryAfter: .seconds(7))), [.reconnect(after: .seconds(7))])
        XCTAssertEqual(m.handle(.timerFired), [.fetchPage(continueToken: "c1", limit: 500)], "the same request again")
        XCTAssertEqual(m.handle(.http(status: 503, retryAfter: .seconds(2))), [.reconnect(after: .seconds(2))])
        let withoutHeader = delay(m.handle(.timerFired) + m.handle(.http(status: 403, retryAfter: .seconds(9))))
        XCTAssertNotEqual(withoutHeader, .seconds(9), "Retry-After only counts on 429 and 5xx")
    }

    func testRepeatedFailuresDoubleTheWaitUpTo30Seconds() {
        var m = machine()
        _ = m.handle(.start)
        var bases: [Double] = []
        var waits: [Double] = []
        var base = 0.8
        for _ in 0..<9 {
            guard let wait = delay(m.handle(.http(status: 500, retryAfter: nil))) else { return XCTFail() }
            clock.advance(by: wait)
            _ = m.handle(.timerFired)
            bases.append(base)
            waits.append(wait.inSecondsForTest)
            base = min(base * 2, 30)
        }
        for (wait, base) in zip(waits, bases) {
            XCTAssertGreaterThanOrEqual(wait, base)
            XCTAssertLessThan(wait, 2 * base)
        }
    }

    func testWatchTimeoutsAreSpreadOverFiveToTenMinutes() {
        var m = machine()
        synced(&m)
        var timeouts = Set<Int>()
        for index in 0..<50 {
            clock.advance(by: .seconds(2))
            _ = m.handle(.received(.bookmark(initialEventsEnd: false), resourceVersion: "\(200 + index)"))
            guard let timeout = watchTimeout(m.handle(.streamEnded(failure: nil))) else { return XCTFail() }
            _ = m.handle(.connected)
            XCTAssertTrue((300..<600).contains(timeout))
            timeouts.insert(timeout)
        }
        XCTAssertGreaterThan(timeouts.count, 30)
    }

    func testInputsThatDoNotBelongToTheStateChangeNothing() {
        var m = machine()
        synced(&m)
        let before = m.state
        XCTAssertEqual(m.handle(.timerFired), [])
        XCTAssertEqual(m.handle(.pageReceived(resourceVersion: "5", continueToken: nil)), [])
        XCTAssertEqual(m.handle(.start), [])
        XCTAssertEqual(m.state, before)
    }

    // MARK: - Streaming list

    func testAStreamingListStagesTheInitialEventsUntilTheEndMarker() {
        var m = machine(streaming: true)
        guard case .streamList(resourceVersion: "", let timeout, deadline: .seconds(60))? = m.handle(.start).first else {
            return XCTFail()
        }
        XCTAssertTrue((300..<600).contains(timeout))
        XCTAssertEqual(m.handle(.connected), [])
        XCTAssertEqual(m.handle(.received(.added, resourceVersion: "5")), [.stage])
        XCTAssertEqual(m.handle(.received(.added, resourceVersion: "9")), [.stage])
        XCTAssertFalse(m.hasSynced)
        XCTAssertEqual(m.handle(.received(.bookmark(initialEventsEnd: true), resourceVersion: "70600")),
                       [.replaceCache(resourceVersion: "70600")])
        XCTAssertTrue(m.hasSynced)
        XCTAssertEqual(m.handle(.received(.modified, resourceVersion: "70611")), [.apply], "the same stream goes on as a watch")
        clock.advance(by: .seconds(300))
        guard case .resume(from: "70611", _)? = m.handle(.streamEnded(failure: nil)).first else {
            return XCTFail("after the initial state, a plain watch resumes")
        }
        XCTAssertTrue(m.usesStreamingList)
    }

    func testARefusedStreamingListFallsBackToListAndWatch() {
        for status in [400, 403, 422] {
            var m = machine(streaming: true)
            _ = m.handle(.start)
            XCTAssertEqual(m.handle(.http(status: status, retryAfter: nil)), [.relist(resourceVersion: "0", limit: 500)])
            XCTAssertFalse(m.usesStreamingList)
        }
    }

    func testAServerThatIgnoresSendInitialEventsIsDetected() {
        for kind in [WatchEventKind.modified, .deleted, .bookmark(initialEventsEnd: false)] {
            var m = machine(streaming: true)
            _ = m.handle(.start)
            _ = m.handle(.connected)
            XCTAssertEqual(m.handle(.received(.added, resourceVersion: "1")), [.stage])
            XCTAssertEqual(m.handle(.received(kind, resourceVersion: "2")), [.relist(resourceVersion: "0", limit: 500)], "\(kind)")
            XCTAssertFalse(m.usesStreamingList)
        }
    }

    func testInitialEventsThatMissTheirDeadlineFallBackToAList() {
        var m = machine(streaming: true)
        _ = m.handle(.start)
        _ = m.handle(.connected)
        _ = m.handle(.received(.added, resourceVersion: "1"))
        XCTAssertEqual(m.handle(.timerFired), [.relist(resourceVersion: "0", limit: 500)])
        XCTAssertFalse(m.usesStreamingList)
    }

    func testAStreamThatEndsBeforeTheEndMarkerFallsBack() {
        var clean = machine(streaming: true)
        _ = clean.handle(.start)
        XCTAssertEqual(clean.handle(.streamEnded(failure: nil)), [.relist(resourceVersion: "0", limit: 500)])
        var broken = machine(streaming: true)
        _ = broken.handle(.start)
        XCTAssertNotNil(delay(broken.handle(.streamEnded(failure: "reset"))))
        XCTAssertEqual(broken.handle(.timerFired), [.relist(resourceVersion: "0", limit: 500)])
    }

    func testAStreamingListThatCannotConnectRetriesStreaming() {
        var m = machine(streaming: true)
        _ = m.handle(.start)
        XCTAssertNotNil(delay(m.handle(.requestFailed("connection refused"))))
        guard case .streamList? = m.handle(.timerFired).first else { return XCTFail() }
        XCTAssertNotNil(delay(m.handle(.http(status: 503, retryAfter: nil))))
        XCTAssertTrue(m.usesStreamingList, "an unreachable or overloaded server says nothing about WatchList support")
    }
}
