import Foundation
import KubeAPI
import ServiceModel
import XCTest

final class WireDecodingTests: XCTestCase {
    private func events<Object: KubeObject>(_ name: String, as type: Object.Type) throws -> [WatchEvent<Object>] {
        let text = String(decoding: try fixture(name), as: UTF8.self)
        return try text.split(separator: "\n").map { try JSONDecoder().decode(WatchEvent<Object>.self, from: Data($0.utf8)) }
    }

    func testAWatchStreamDecodesAndItsBookmarkCarriesNoObject() throws {
        let stream = try events("watch-services-stream.jsonl", as: Service.self)
        XCTAssertEqual(stream.map(\.kind), [.added, .modified, .bookmark(initialEventsEnd: false), .deleted])
        XCTAssertEqual(stream.map(\.resourceVersion), ["48213", "48377", "48390", "48402"])
        XCTAssertEqual(stream[0].object?.cacheKey, "shop/web")
        XCTAssertEqual(stream[0].object?.spec.ports.first?.targetPort, .string("http"), "targetPort as a string")
        XCTAssertEqual(stream[1].object?.spec.sessionAffinity, "ClientIP")
        XCTAssertNil(stream[2].object, "a bookmark is never an object")
        XCTAssertEqual(stream[3].object?.metadata.name, "web", "DELETED carries the last state")
    }

    func testExpiredAndGoneErrorsDecodeAsStatus410() throws {
        for (name, reason) in [("watch-services-expired-410.jsonl", "Expired"), ("watch-services-gone-410-legacy.jsonl", "Gone")] {
            let event = try XCTUnwrap(try events(name, as: Service.self).first)
            guard case .error(let status) = event.kind else { return XCTFail("\(event.kind)") }
            XCTAssertEqual(status.code, 410)
            XCTAssertEqual(status.reason, reason)
            XCTAssertEqual(status.message, "too old resource version: 48213 (48391)")
            XCTAssertNil(event.object)
        }
    }

    func testAStreamingListMarksTheEndOfItsInitialEvents() throws {
        let stream = try events("watchlist-endpointslices-stream.jsonl", as: EndpointSlice.self)
        XCTAssertEqual(stream.map(\.kind), [.added, .added, .bookmark(initialEventsEnd: true), .modified, .bookmark(initialEventsEnd: false)])
        XCTAssertEqual(stream[2].resourceVersion, "70600")
        XCTAssertEqual(stream[1].object?.endpoints, [], "endpoints: null is an empty list")
        XCTAssertEqual(stream[1].object?.ports, [])
    }

    func testAListPageKeepsItsSnapshotVersionContinueTokenAndKindlessItems() throws {
        let page = try JSONDecoder().decode(ObjectList<Service>.self, from: try fixture("servicelist-page1.json"))
        XCTAssertEqual(page.resourceVersion, "48213")
        XCTAssertEqual(page.continueToken, "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDgyMTMsInN0YXJ0Ijoic2hvcC93ZWJcdTAwMDAifQ")
        XCTAssertFalse(page.items.isEmpty)
        XCTAssertNil(page.items[0].kind, "LIST items carry no kind")
        XCTAssertEqual(page.items[0].cacheKey, "default/kubernetes")

        let slices = try JSONDecoder().decode(ObjectList<EndpointSlice>.self, from: try fixture("endpointslice-empty-and-fqdn.json"))
        XCTAssertEqual(slices.items.map(\.metadata.name), ["orders-2bq7d", "legacy-fqdn"])
        XCTAssertEqual(slices.items[0].endpoints, [])
        XCTAssertNil(slices.continueToken)
    }

    func testAnExpiredContinueStatusDecodes() throws {
        let status = try JSONDecoder().decode(Status.self, from: try fixture("status-410-continue-expired.json"))
        XCTAssertEqual(status.code, 410)
        XCTAssertEqual(status.reason, "Expired")
        XCTAssertNotNil(status.continueToken)
    }

    func testUnknownEventTypesAndBrokenLinesAreErrors() {
        for line in [#"{"type":"SNAPSHOT","object":{}}"#, #"{"type":"ADDED","object":{"metadata":{"name":"x""#, "garbage", #"{"object":{}}"#] {
            XCTAssertThrowsError(try JSONDecoder().decode(WatchEvent<Service>.self, from: Data(line.utf8)), line)
        }
    }
}
