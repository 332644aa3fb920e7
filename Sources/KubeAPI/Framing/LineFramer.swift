import Foundation

/// Splits a byte stream into `\n`-terminated lines, holding at most `maximumLineLength`
/// bytes of an unfinished line.
///
/// Watch responses are one JSON document per line, but the bytes arrive in arbitrary
/// pieces (TCP segments, HTTP/2 DATA frames, one byte at a time from a slow proxy): a
/// chunk without a newline is only part of a line, never the end of the stream. A line
/// longer than the limit is an error (a misbehaving server must not make the client
/// buffer without bound); after an error the stream must be abandoned.
public struct LineFramer: Sendable {
    public let maximumLineLength: Int
    private var buffer: [UInt8] = []
    /// Bytes before this index were handed out already.
    private var start = 0
    /// Bytes before this index are known to hold no newline.
    private var scanned = 0

    /// A line (or an unfinished line) longer than the limit.
    public struct LineTooLong: Error, CustomStringConvertible, Equatable {
        public var limit: Int
        public var description: String { "a line of the response exceeds \(limit) bytes" }
    }

    public init(maximumLineLength: Int) {
        precondition(maximumLineLength > 0)
        self.maximumLineLength = maximumLineLength
    }

    /// Bytes of an unfinished line held back.
    public var pendingByteCount: Int { buffer.count - start }

    /// Adds the next piece of the stream. Take the lines it completed with `nextLine()`
    /// before appending more: that keeps the buffer within the limit.
    public mutating func append<Bytes: Collection<UInt8>>(_ chunk: Bytes) {
        compact()
        buffer.append(contentsOf: chunk)
    }

    /// The next complete line without its `\n` (and without a `\r` before it), or nil
    /// when the buffered bytes end in an unfinished line. Empty lines are skipped: they
    /// carry no document. Lines before an over-long one are always returned first, so
    /// how the stream was cut into chunks never changes what is delivered.
    public mutating func nextLine() throws -> Data? {
        while let newline = nextNewline() {
            var end = newline
            if end > start && buffer[end - 1] == 0x0D { end -= 1 }
            let length = end - start
            guard length <= maximumLineLength else { throw LineTooLong(limit: maximumLineLength) }
            let lineStart = start
            start = newline + 1
            scanned = start
            if length > 0 { return Data(buffer[lineStart..<end]) }
        }
        scanned = buffer.count
        // A trailing `\r` may still be followed by `\n`, so it does not count yet.
        let pending = buffer.count - start
        let trailingCR = pending > 0 && buffer[buffer.count - 1] == 0x0D ? 1 : 0
        guard pending - trailingCR <= maximumLineLength else { throw LineTooLong(limit: maximumLineLength) }
        return nil
    }

    /// The end of the stream: the last line if it had no newline.
    public mutating func finish() throws -> Data? {
        defer {
            buffer.removeAll()
            start = 0
            scanned = 0
        }
        var end = buffer.count
        if end > start && buffer[end - 1] == 0x0D { end -= 1 }
        guard end - start <= maximumLineLength else { throw LineTooLong(limit: maximumLineLength) }
        return end > start ? Data(buffer[start..<end]) : nil
    }

    private func nextNewline() -> Int? {
        guard scanned < buffer.count else { return nil }
        return buffer.withUnsafeBufferPointer { bytes -> Int? in
            guard let base = bytes.baseAddress,
                let found = memchr(base + scanned, 0x0A, bytes.count - scanned)
            else { return nil }
            return UnsafeRawPointer(found).assumingMemoryBound(to: UInt8.self) - base
        }
    }

    /// Drops handed-out bytes once they are the larger part of the buffer, so appends stay
    /// amortised O(1) without copying on every line.
    private mutating func compact() {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
            start = 0
            scanned = 0
        } else if start > 0 && start >= buffer.count / 2 {
            buffer.removeSubrange(0..<start)
            scanned -= start
            start = 0
        }
    }
}
