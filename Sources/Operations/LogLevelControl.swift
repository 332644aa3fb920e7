import Foundation
import Logging

/// The process-wide log level, changeable while running (a configuration reload).
public final class LogLevelControl: @unchecked Sendable {
    private let lock = NSLock()
    private var current: Logger.Level

    public init(_ level: Logger.Level) {
        current = level
    }

    public var level: Logger.Level {
        get { lock.withLock { current } }
        set { lock.withLock { current = newValue } }
    }

    /// A `LoggingSystem` factory: stderr lines whose level follows this control.
    public func makeHandler(label: String) -> some LogHandler {
        ControlledLevelLogHandler(base: StreamLogHandler.standardError(label: label), control: self)
    }
}

/// Wraps a handler so that its level is read from a `LogLevelControl` at every message,
/// unless a logger set its own.
struct ControlledLevelLogHandler<Base: LogHandler>: LogHandler {
    var base: Base
    let control: LogLevelControl
    private var override: Logger.Level?

    init(base: Base, control: LogLevelControl) {
        self.base = base
        self.base.logLevel = .trace  // the wrapper decides; the base only writes
        self.control = control
    }

    var logLevel: Logger.Level {
        get { override ?? control.level }
        set { override = newValue }
    }

    var metadata: Logger.Metadata {
        get { base.metadata }
        set { base.metadata = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { base[metadataKey: key] }
        set { base[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        base.log(event: event)
    }
}
