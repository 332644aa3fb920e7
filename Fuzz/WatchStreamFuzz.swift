// libFuzzer target: the watch-stream line framer (KubeAPI.LineFramer) and the watch event
// decoder. The input's first bytes choose how the rest is cut into chunks; the lines the
// framer delivers must be the same for every cutting (compared with a one-chunk run and
// with a plain split), and each line is decoded as a Service, EndpointSlice and Node
// event. Built by scripts/fuzz.sh with the KubeAPI framing/wire sources and ServiceModel.
import Foundation
import ServiceModel

private func frame(_ payload: [UInt8], cuts: [Int], limit: Int) -> (lines: [Data], failed: Bool) {
    var framer = LineFramer(maximumLineLength: limit)
    var lines: [Data] = []
    var offset = 0
    var cut = 0
    do {
        while offset < payload.count {
            let size = max(1, cuts.isEmpty ? payload.count : cuts[cut % cuts.count])
            cut += 1
            let end = min(payload.count, offset + size)
            framer.append(payload[offset..<end])
            offset = end
            while let line = try framer.nextLine() { lines.append(line) }
        }
        if let last = try framer.finish() { lines.append(last) }
        return (lines, false)
    } catch {
        return (lines, true)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func watchStreamFuzz(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: bytes, count: count))
    guard input.count >= 2 else { return 0 }
    let cutCount = Int(input[0] % 8)
    let limit = 16 + Int(input[1]) * 4
    let cuts = input.dropFirst(2).prefix(cutCount).map { Int($0 % 32) + 1 }
    let payload = Array(input.dropFirst(2 + cuts.count))

    let whole = frame(payload, cuts: [], limit: limit)
    let chunked = frame(payload, cuts: cuts, limit: limit)
    let bytewise = frame(payload, cuts: [1], limit: limit)
    // Lines before an over-long one are delivered first, whatever the chunking.
    precondition(whole.failed == chunked.failed && whole.failed == bytewise.failed, "chunking changed the outcome")
    if !whole.failed {
        precondition(whole.lines == chunked.lines && whole.lines == bytewise.lines, "chunking changed the lines")
        // Reference: split on \n, drop one trailing \r, skip empty lines.
        var expected: [Data] = []
        for piece in payload.split(separator: 0x0A, omittingEmptySubsequences: false) {
            var line = Array(piece)
            if line.last == 0x0D { line.removeLast() }
            if !line.isEmpty { expected.append(Data(line)) }
        }
        precondition(whole.lines == expected, "the framer's lines differ from a plain split")
    }
    let decoder = JSONDecoder()
    for line in whole.lines {
        _ = try? decoder.decode(WatchEvent<Service>.self, from: line)
        _ = try? decoder.decode(WatchEvent<EndpointSlice>.self, from: line)
        _ = try? decoder.decode(WatchEvent<Node>.self, from: line)
    }
    return 0
}
