import CLibBPF
import Foundation
import Logging

/// Routes libbpf's own output to swift-log, and lets a loader capture it while it loads
/// an object, so that a verifier rejection surfaces inside the thrown error.
enum LibbpfLog {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var logger = Logger(label: "swiftlane.libbpf")
    nonisolated(unsafe) private static var capture: [String]?
    nonisolated(unsafe) private static var installed = false

    /// Routes libbpf's output to `logger` from now on.
    static func install(logger: Logger) {
        lock.withLock { Self.logger = logger }
        installSink()
    }

    private static func installSink() {
        guard !lock.withLock({ let was = installed; installed = true; return was }) else { return }
        clb_set_print_sink { level, message in
            guard let message else { return }
            LibbpfLog.receive(level: level, message: String(cString: message))
        }
    }

    private static func receive(level: Int32, message: String) {
        let text = message.hasSuffix("\n") ? String(message.dropLast()) : message
        lock.withLock {
            capture?.append(text)
            switch UInt32(level) {
            case LIBBPF_WARN.rawValue: logger.warning("\(text)")
            case LIBBPF_INFO.rawValue: logger.info("\(text)")
            default: logger.debug("\(text)")
            }
        }
    }

    /// Runs `body` while collecting everything libbpf prints; on failure returns the error
    /// and the captured lines (a verifier rejection's log among them).
    static func capturingFailure(_ body: () throws -> Void) -> (Error?, [String]) {
        installSink()
        lock.withLock { capture = [] }
        defer { lock.withLock { capture = nil } }
        do {
            try body()
            return (nil, [])
        } catch {
            return (error, lock.withLock { capture ?? [] })
        }
    }
}
