import Foundation
import KubeAPI
import ServiceModel
import XCTest

/// Property-based tests of the watch-stream framer and event decoder with a fixed seed:
/// random streams of real watch events (the fixtures), garbage, `\r` and empty lines, cut
/// into random chunks, must frame into exactly the lines a plain split gives; mutated
/// events must decode or throw, never trap. `SWIFTLANE_FUZZ_ITERATIONS` raises the count;
/// the libFuzzer target is Fuzz/WatchStreamFuzz.swift (scripts/fuzz.sh).
final class WatchStreamPropertyTests: XCTestCase {
    static let iterations = ProcessInfo.processInfo.environment["SWIFTLANE_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 2_000

    private func fixtureEvents() throws -> [[UInt8]] {
        let streams = ["watch-services-stream.jsonl", "watchlist-endpointslices-stream.jsonl",
                       "watch-services-expired-410.jsonl", "watch-services-gone-410-legacy.jsonl"]
        let lines = try streams.flatMap { try fixture($0).split(separator: 0x0A).map(Array.init) }
        XCTAssertGreaterThan(lines.count, 8)
        return lines
    }

    func testRandomlyChunkedStreamsFrameIntoThePlainSplit() throws {
        var random = Generator(seed: 0xF4A3)
        let events = try fixtureEvents()
        let limit = 4096
        var linesChecked = 0
        for _ in 0..<Self.iterations {
            var stream: [UInt8] = []
            var expected: [[UInt8]] = []
            for _ in 0..<(1 + random.below(6)) {
                var line = random.below(4) == 0 ? (0..<random.below(40)).map { _ in UInt8(random.below(256)) }
                    : events[random.below(events.count)]
                line.removeAll { $0 == 0x0A }
                while line.last == 0x0D { line.removeLast() }
                stream += line
                if !line.isEmpty { expected.append(line) }
                stream += random.below(3) == 0 ? [0x0D, 0x0A] : [0x0A]
                if random.below(4) == 0 { stream += [0x0A] }  // an empty line
            }
            var framer = LineFramer(maximumLineLength: limit)
            var lines: [[UInt8]] = []
            var offset = 0
            while offset < stream.count {
                let end = min(stream.count, offset + 1 + random.below(random.below(2) == 0 ? 8 : 700))
                framer.append(stream[offset..<end])
                offset = end
                while let line = try framer.nextLine() { lines.append(Array(line)) }
            }
            if let last = try framer.finish() { lines.append(Array(last)) }
            XCTAssertEqual(lines, expected)
            linesChecked += lines.count
        }
        print("watch framing property test: \(Self.iterations) streams, \(linesChecked) lines, 0 mismatches")
    }

    func testMutatedEventsDecodeOrThrowAndNeverTrap() throws {
        var random = Generator(seed: 99)
        let events = try fixtureEvents()
        let decoder = JSONDecoder()
        let structural = Array("{}[]\":,0-9en".utf8)
        var decoded = 0
        for _ in 0..<Self.iterations {
            var bytes = events[random.below(events.count)]
            for _ in 0..<(1 + random.below(3)) where !bytes.isEmpty {
                let at = random.below(bytes.count)
                switch random.below(4) {
                case 0: bytes[at] = structural[random.below(structural.count)]
                case 1: bytes.remove(at: at)
                case 2: bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + 12)], at: at)
                default: bytes[at] ^= 0x20
                }
            }
            let data = Data(bytes)
            if (try? decoder.decode(WatchEvent<ServiceModel.Service>.self, from: data)) != nil { decoded += 1 }
            _ = try? decoder.decode(WatchEvent<EndpointSlice>.self, from: data)
            _ = try? decoder.decode(WatchEvent<ServiceModel.Node>.self, from: data)
        }
        XCTAssertGreaterThan(decoded, 0, "some mutants still decode: the decoder's accepting paths ran too")
    }

    private struct Generator {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func below(_ bound: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(max(bound, 1)))
        }
    }
}
