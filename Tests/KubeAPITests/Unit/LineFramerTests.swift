import Foundation
import KubeAPI
import XCTest

final class LineFramerTests: XCTestCase {
    /// Feeds `input` in pieces of `size` bytes, taking lines after each piece as a watch
    /// reader does; returns the lines and the error that ended the stream, if any.
    private func frame(_ input: [UInt8], chunkSize size: Int, limit: Int) -> (lines: [String], error: Error?) {
        var framer = LineFramer(maximumLineLength: limit)
        var lines: [String] = []
        do {
            var offset = 0
            while offset < input.count {
                let end = min(offset + size, input.count)
                framer.append(input[offset..<end])
                offset = end
                while let line = try framer.nextLine() { lines.append(String(decoding: line, as: UTF8.self)) }
            }
            if let last = try framer.finish() { lines.append(String(decoding: last, as: UTF8.self)) }
            return (lines, nil)
        } catch {
            return (lines, error)
        }
    }

    func testEveryChunkSizeYieldsTheSameLines() throws {
        let stream = try fixture("watch-services-stream.jsonl") + fixture("watchlist-endpointslices-stream.jsonl")
        let expected = String(decoding: stream, as: UTF8.self).split(separator: "\n").map(String.init)
        XCTAssertEqual(expected.count, 9)
        let bytes = [UInt8](stream)
        for size in 1...bytes.count {
            let result = frame(bytes, chunkSize: size, limit: 4096)
            XCTAssertNil(result.error, "chunk size \(size)")
            XCTAssertEqual(result.lines, expected, "chunk size \(size)")
        }
    }

    func testAChunkWithoutANewlineIsOnlyPartOfALine() throws {
        var framer = LineFramer(maximumLineLength: 100)
        framer.append(Array(#"{"type":"ADD"#.utf8))
        XCTAssertNil(try framer.nextLine(), "no newline yet: nothing to deliver, and not the end")
        XCTAssertEqual(framer.pendingByteCount, 12)
        framer.append(Array("ED\"}\n{\"ty".utf8))
        XCTAssertEqual(try framer.nextLine().map { String(decoding: $0, as: UTF8.self) }, #"{"type":"ADDED"}"#)
        XCTAssertNil(try framer.nextLine())
        XCTAssertEqual(framer.pendingByteCount, 4)
    }

    func testCarriageReturnsAndEmptyLinesAreDropped() throws {
        for size in 1...12 {
            let result = frame(Array("a\r\n\n\r\nbc\r\n\nd".utf8), chunkSize: size, limit: 10)
            XCTAssertNil(result.error)
            XCTAssertEqual(result.lines, ["a", "bc", "d"], "chunk size \(size)")
        }
    }

    func testAnOverLongLineIsAnErrorAfterTheLinesBeforeItAtEveryChunkSize() {
        let input = Array("short\nexactly-16-bytes\n".utf8) + Array(repeating: UInt8(ascii: "x"), count: 40) + Array("\nnever\n".utf8)
        for size in 1...input.count {
            let result = frame(input, chunkSize: size, limit: 16)
            XCTAssertEqual(result.lines, ["short", "exactly-16-bytes"], "chunk size \(size)")
            XCTAssertEqual((result.error as? LineFramer.LineTooLong)?.limit, 16, "chunk size \(size)")
        }
    }

    func testAnUnfinishedLineBeyondTheLimitFailsBeforeItsNewlineArrives() {
        var framer = LineFramer(maximumLineLength: 8)
        framer.append(Array(repeating: UInt8(ascii: "y"), count: 9))
        XCTAssertThrowsError(try framer.nextLine()) { XCTAssertTrue($0 is LineFramer.LineTooLong) }
    }

    func testALineOfExactlyTheLimitWithCRLFPassesInAnySplit() {
        let input = Array("12345678\r\n".utf8)
        for size in 1...input.count {
            let result = frame(input, chunkSize: size, limit: 8)
            XCTAssertNil(result.error, "chunk size \(size)")
            XCTAssertEqual(result.lines, ["12345678"])
        }
    }

    func testTheLastLineWithoutANewlineIsDeliveredAtTheEnd() throws {
        var framer = LineFramer(maximumLineLength: 100)
        framer.append(Array("one\ntwo".utf8))
        XCTAssertEqual(try framer.nextLine().map { String(decoding: $0, as: UTF8.self) }, "one")
        XCTAssertNil(try framer.nextLine())
        XCTAssertEqual(try framer.finish().map { String(decoding: $0, as: UTF8.self) }, "two")
        XCTAssertNil(try framer.finish())
    }

    func testALongStreamKeepsTheBufferSmall() throws {
        var framer = LineFramer(maximumLineLength: 64)
        let line = Array("{\"type\":\"BOOKMARK\"}\n".utf8)
        for _ in 0..<10_000 {
            framer.append(line)
            while try framer.nextLine() != nil {}
            XCTAssertEqual(framer.pendingByteCount, 0)
        }
    }
}
