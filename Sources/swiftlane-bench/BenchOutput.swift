import Foundation

/// Where every benchmark writes its figures besides the console: pretty, sorted JSON,
/// so runs diff cleanly.
enum BenchOutput {
    static func writeJSON<T: Encodable>(_ figures: T, to path: String?) throws {
        guard let path else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(figures).write(to: URL(fileURLWithPath: path))
    }
}
