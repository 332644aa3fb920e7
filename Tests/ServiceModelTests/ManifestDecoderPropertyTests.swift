import Foundation
import XCTest

@testable import ServiceModel

/// Property-based tests of the manifest parser, with a fixed seed so that CI runs the same
/// inputs every time: the real fixtures (copies of shared/spec/fixtures, the demo
/// manifests) mutated byte by byte and field by field. Whatever the input, decoding either
/// yields objects that translate without trapping or throws a `ManifestError` naming the
/// source; decoding is deterministic; the size cap refuses exactly the documents over it.
/// `SWIFTLANE_FUZZ_ITERATIONS` raises the count (scripts/reliability.sh); the libFuzzer
/// target for the same code is Fuzz/ManifestDecoderFuzz.swift (scripts/fuzz.sh).
final class ManifestDecoderPropertyTests: XCTestCase {
    static let iterations = ProcessInfo.processInfo.environment["SWIFTLANE_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 2_000

    /// Fixture name → bytes: every JSON fixture of this target and the demo's YAML.
    private func seeds() throws -> [(name: String, data: Data)] {
        var result: [(String, Data)] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: Fixtures.directory.path).sorted()
        where name.hasSuffix(".json") {
            result.append((name, try Fixtures.data(name)))
        }
        let demo = Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("examples/demo")
        for name in try FileManager.default.contentsOfDirectory(atPath: demo.path).sorted() where name.hasSuffix(".yaml") {
            result.append((name, try Data(contentsOf: demo.appendingPathComponent(name))))
        }
        XCTAssertGreaterThan(result.count, 10)
        return result
    }

    /// One decode as the directory source does it, then the translation as the syncer does.
    /// Returns whether the input decoded.
    @discardableResult
    private func decodeAndTranslate(_ data: Data, source: String, cap: Int? = nil) -> Bool {
        do {
            let objects = try ManifestDecoder.decode(data, source: source, maximumObjectBytes: cap)
            let result = Translator.plan(
                services: objects.services, endpointSlices: objects.endpointSlices,
                node: ProxyNode(name: "node-a", labels: [:], addresses: [ip("10.0.0.1")], podCIDRs: []),
                options: TranslationOptions())
            for diagnostic in result.diagnostics {
                XCTAssertFalse(diagnostic.object.isEmpty || diagnostic.field.isEmpty, "\(diagnostic)")
            }
            return true
        } catch let error as ManifestError {
            XCTAssertEqual(error.source, source)
            XCTAssertTrue(error.description.hasPrefix(source), error.description)
            return false
        } catch {
            XCTFail("\(source): not a ManifestError: \(error)")
            return false
        }
    }

    func testMutatedFixturesDecodeOrFailWithANamedError() throws {
        var random = SeededRandom(seed: 0x5717_1a7e)
        let seeds = try seeds()
        var decoded = 0
        for iteration in 0..<Self.iterations {
            let (name, original) = seeds[iteration % seeds.count]
            let mutated = random.mutate(Array(original))
            // JSON fixtures also go through the YAML path (JSON is YAML).
            let asYAML = name.replacingOccurrences(of: ".json", with: ".yaml")
            if decodeAndTranslate(Data(mutated), source: name) { decoded += 1 }
            decodeAndTranslate(Data(mutated), source: asYAML)
        }
        // The mutations are small: many inputs must still decode, or the test only
        // exercised the first syntax check.
        XCTAssertGreaterThan(decoded, Self.iterations / 10, "mutants that decoded")
        print("manifest property test: \(Self.iterations) mutated inputs, \(decoded) decoded, 0 crashes")
    }

    /// Numbers, addresses and ports replaced by boundary values (0, 65536, -1, 2^31,
    /// garbage addresses): the parser still names the field it refuses, and what it accepts
    /// the translation handles.
    func testBoundaryValuesInRealObjectsAreHandled() throws {
        var random = SeededRandom(seed: 42)
        let boundaries = ["0", "-1", "65535", "65536", "2147483648", "99999999999999999999", "1e3", "null", "\"\"",
                          "\"10.0.0.256\"", "\"::ffff:1.2.3.4\"", "\"010.000.000.001\"", "\"1.2.3\"", "[]", "{}", "true"]
        let pattern = try NSRegularExpression(pattern: #"(?<=: )("[0-9a-f:.]+"|[0-9]+)"#)
        for (name, data) in try seeds() where name.hasSuffix(".json") {
            let text = String(decoding: data, as: UTF8.self)
            let matches = pattern.matches(in: text, range: NSRange(text.startIndex..., in: text))
            for _ in 0..<min(60, Self.iterations / 20) where !matches.isEmpty {
                let match = matches[Int(random.next() % UInt64(matches.count))]
                let replaced = (text as NSString).replacingCharacters(
                    in: match.range, with: boundaries[Int(random.next() % UInt64(boundaries.count))])
                decodeAndTranslate(Data(replaced.utf8), source: name)
            }
        }
    }

    func testDecodingIsDeterministicAndTheCapRefusesExactlyTheLargerDocuments() throws {
        var random = SeededRandom(seed: 7)
        for (name, data) in try seeds() {
            guard let objects = try? ManifestDecoder.decode(data, source: name) else { continue }
            XCTAssertEqual(try ManifestDecoder.decode(data, source: name), objects, name)
            guard name.hasSuffix(".json"), !String(decoding: data, as: UTF8.self).contains("List\"") else { continue }
            // One object per JSON file: refused below its size, accepted at it.
            XCTAssertNoThrow(try ManifestDecoder.decode(data, source: name, maximumObjectBytes: data.count), name)
            let below = max(1, data.count - 1 - Int(random.next() % 64))
            XCTAssertThrowsError(try ManifestDecoder.decode(data, source: name, maximumObjectBytes: below), name) { error in
                XCTAssertEqual((error as? ManifestError)?.overSizeCap, true, "\(error)")
                XCTAssertEqual((error as? ManifestError)?.rejection.reason, "size")
            }
        }
        // YAML: each document is measured on its own.
        let small = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}\n"
        let large = small.replacingOccurrences(of: "name: a", with: "name: b, annotations: {x: \"\(String(repeating: "y", count: 500))\"}")
        let both = small + "---\n" + large
        XCTAssertThrowsError(try ManifestDecoder.decode(Data(both.utf8), source: "two.yaml", maximumObjectBytes: 300)) { error in
            XCTAssertEqual((error as? ManifestError)?.document, 2)
            XCTAssertEqual((error as? ManifestError)?.object, "Service default/b")
        }
        XCTAssertEqual(try ManifestDecoder.decode(Data((small + "---\n" + small).utf8), source: "two.yaml",
                                                  maximumObjectBytes: 300).services.count, 2)
    }
}

/// SplitMix64: a small generator with a fixed seed, so property tests are reproducible.
struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// One to four edits of the kinds fuzzers make: flip a bit, replace, delete or duplicate
    /// a byte run, insert a structural character.
    mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var bytes = input
        let structural = Array("{}[]:,\"'\n-#&*!|> \t\\".utf8) + [0x00, 0xFF, 0xC3]
        for _ in 0..<(1 + Int(next() % 4)) {
            guard !bytes.isEmpty else { bytes = [structural[Int(next() % UInt64(structural.count))]]; continue }
            let at = Int(next() % UInt64(bytes.count))
            switch next() % 5 {
            case 0: bytes[at] ^= UInt8(1 << (next() % 8))
            case 1: bytes[at] = structural[Int(next() % UInt64(structural.count))]
            case 2: bytes.removeSubrange(at..<min(bytes.count, at + 1 + Int(next() % 16)))
            case 3:
                let run = bytes[at..<min(bytes.count, at + 1 + Int(next() % 32))]
                bytes.insert(contentsOf: run, at: at)
            default: bytes.insert(structural[Int(next() % UInt64(structural.count))], at: at)
            }
        }
        return bytes
    }
}
