import Foundation
import Logging

/// The bearer token of every request. A token file is re-read when its copy is a minute
/// old and right after the server answered 401, so a rotated projected token is picked up
/// without a restart; a read that fails keeps the last good token (the kubelet rewrites
/// the file atomically, but a missing mount should not blank the header).
public final class TokenSource: @unchecked Sendable {
    public static let maximumAge: Duration = .seconds(60)

    public let credentials: Credentials
    private let clock: any MonotonicClock
    private let logger: Logger
    private let lock = NSLock()
    private var cached: String?
    private var readAt: MonotonicInstant?
    private var stale = true
    /// How many times the file was read (for tests and metrics).
    public private(set) var reads = 0

    public init(credentials: Credentials, clock: any MonotonicClock, logger: Logger) {
        self.credentials = credentials
        self.clock = clock
        self.logger = logger
    }

    /// The token to send now, or nil when there is none.
    public func token() -> String? {
        switch credentials {
        case .none:
            return nil
        case .token(let token):
            return token
        case .tokenFile(let path):
            lock.lock()
            defer { lock.unlock() }
            let now = clock.now
            if stale || readAt.map({ now - $0 >= Self.maximumAge }) ?? true {
                reads += 1
                do {
                    let text = try String(contentsOfFile: path, encoding: .utf8)
                        .trimmingCharacters(in: .whitespacesAndNewlines)
                    if text.isEmpty { throw CocoaError(.fileReadCorruptFile) }
                    cached = text
                } catch {
                    logger.warning("cannot read the token file; keeping the previous token", metadata: [
                        "file": "\(path)", "error": "\(error.localizedDescription)",
                    ])
                }
                readAt = now
                stale = false
            }
            return cached
        }
    }

    /// The server rejected the token: read the file again before the next request.
    public func invalidate() {
        lock.lock()
        stale = true
        lock.unlock()
    }
}
