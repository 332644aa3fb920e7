import CLibCurl
import Foundation
import Logging

/// Connection-level settings shared by every request of one transport.
public struct TransportOptions: Sendable, Equatable {
    public enum HTTPVersion: Sendable, Equatable {
        /// HTTP/2 when TLS ALPN offers it, else HTTP/1.1 (plain http:// is always 1.1).
        case http2OverTLS
        /// HTTP/1.1 only (for servers or proxies that mishandle HTTP/2).
        case http1
    }

    public var httpVersion: HTTPVersion = .http2OverTLS
    public var connectTimeout: Duration = .seconds(10)
    /// Silence on a connection after which TCP keepalive probes start.
    public var keepaliveIdle: Duration = .seconds(30)
    public var keepaliveInterval: Duration = .seconds(5)
    /// A connection whose peer stops acknowledging (keepalive probes or data) is closed
    /// after this long, failing every request on it. Mirrors client-go's HTTP/2 health
    /// check (PING after 30 s idle, dead 15 s later).
    public var deadConnectionTimeout: Duration = .seconds(45)
    /// Response bytes held for a slow consumer before the transfer is paused (HTTP/2
    /// flow control or TCP then holds the server back).
    public var bufferHighWater = 4 << 20
    public var userAgent = "swiftlane-kubeapi/1"

    public init() {}
}

/// HTTP client on one libcurl multi handle driven by a dedicated thread
/// (`curl_multi_poll`). All requests share its connections: over HTTP/2 every list and
/// watch is a stream of one connection, as with client-go.
///
/// libcurl handles are only touched on that thread; other threads hand it work through a
/// locked queue and `curl_multi_wakeup`.
public final class CurlTransport: @unchecked Sendable {
    public let options: TransportOptions
    private let logger: Logger
    private let multi: UnsafeMutableRawPointer
    private let lock = NSLock()
    private var queue: [Command] = []
    private var stopping = false
    private let stopped = DispatchSemaphore(value: 0)
    /// Live transfers by easy handle; only the transport thread reads or writes it.
    private var active: [UnsafeMutableRawPointer: Transfer] = [:]

    fileprivate enum Command {
        case add(Transfer)
        case cancel(Transfer)
        case resume(Transfer)
    }

    private static let globalInit: CURLcode = curl_global_init(clc_global_default)

    public init(options: TransportOptions = TransportOptions(), logger: Logger) throws {
        try CurlError.check(Self.globalInit, "curl_global_init")
        guard let multi = curl_multi_init() else {
            throw CurlError(code: -1, operation: "curl_multi_init", message: "out of memory")
        }
        self.multi = multi
        self.options = options
        self.logger = logger
        do {
            // Streams wait for an existing HTTP/2 connection rather than opening more.
            try CurlError.checkMulti(
                clc_multi_setopt_long(multi, CURLMOPT_PIPELINING, Int(CURLPIPE_MULTIPLEX)),
                "curl_multi_setopt CURLMOPT_PIPELINING")
        } catch {
            curl_multi_cleanup(multi)
            throw error
        }
        let thread = Thread { [self] in self.loop() }
        thread.name = "kubeapi-curl"
        thread.start()
    }

    /// Fails every open request, stops the thread and frees libcurl's state. Idempotent.
    public func shutdown() {
        lock.lock()
        let first = !stopping
        stopping = true
        lock.unlock()
        guard first else { return }
        curl_multi_wakeup(multi)
        stopped.wait()
    }

    /// Starts `request` and waits for the response head. The body is read from the
    /// returned response; dropping it or cancelling the task ends the transfer.
    public func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        let transfer = try Transfer(request: request, transport: self)
        let refused = lock.withLock {
            if !stopping { queue.append(.add(transfer)) }
            return stopping
        }
        if refused {
            transfer.release()
            throw CurlError(code: -1, operation: request.summary, message: "transport is shut down")
        }
        curl_multi_wakeup(multi)
        return try await HTTPResponse(transfer: transfer)
    }

    fileprivate func enqueue(_ command: Command) {
        lock.lock()
        let accepted = !stopping
        if accepted { queue.append(command) }
        lock.unlock()
        if accepted { curl_multi_wakeup(multi) }
    }

    // MARK: - Transport thread

    private func loop() {
        var running: Int32 = 0
        while true {
            lock.lock()
            let commands = queue
            queue.removeAll(keepingCapacity: true)
            let stop = stopping
            lock.unlock()
            if stop { break }
            for command in commands { apply(command) }

            let code = curl_multi_perform(multi, &running)
            if code != CURLM_OK {
                logger.error("curl_multi_perform failed", metadata: ["error": "\(code.rawValue)"])
            }
            collectFinished()
            // Wakes for socket activity, libcurl's own timers, or curl_multi_wakeup.
            _ = curl_multi_poll(multi, nil, 0, 1000, nil)
        }
        for transfer in Array(active.values) {
            finish(transfer, error: CurlError(code: -1, operation: transfer.summary, message: "transport shut down"))
        }
        lock.lock()
        let leftover = queue
        queue.removeAll()
        lock.unlock()
        for case .add(let transfer) in leftover {
            transfer.fail(CurlError(code: -1, operation: transfer.summary, message: "transport shut down"))
            transfer.release()
        }
        curl_multi_cleanup(multi)
        stopped.signal()
    }

    private func apply(_ command: Command) {
        switch command {
        case .add(let transfer):
            let code = curl_multi_add_handle(multi, transfer.handle)
            if code == CURLM_OK {
                active[transfer.handle] = transfer
            } else {
                do {
                    try CurlError.checkMulti(code, "curl_multi_add_handle for \(transfer.summary)")
                } catch {
                    transfer.fail(error)
                }
                transfer.release()
            }
        case .cancel(let transfer):
            guard active[transfer.handle] === transfer else { return }
            finish(transfer, error: CancellationError())
        case .resume(let transfer):
            guard active[transfer.handle] === transfer else { return }
            // May call the write callback right away with the data it held back.
            _ = curl_easy_pause(transfer.handle, clc_pause_continue)
        }
    }

    private func collectFinished() {
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(multi, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle,
                let transfer = active[handle]
            else { continue }
            let result = message.pointee.data.result
            if result == CURLE_OK {
                finish(transfer, error: nil)
            } else {
                finish(transfer, error: CurlError(easy: result, operation: transfer.summary, detail: transfer.errorText))
            }
        }
    }

    private func finish(_ transfer: Transfer, error: Error?) {
        active[transfer.handle] = nil
        curl_multi_remove_handle(multi, transfer.handle)
        if let error {
            transfer.fail(error)
        } else {
            transfer.complete()
        }
        transfer.release()
    }
}

/// A response whose head has arrived. The body is read chunk by chunk (`nextChunk`) or
/// whole (`collect`). Not thread-safe: one task reads it.
public final class HTTPResponse {
    public let head: HTTPResponseHead
    private let transfer: Transfer
    private var iterator: AsyncThrowingStream<Transfer.Part, Error>.AsyncIterator

    fileprivate init(transfer: Transfer) async throws {
        self.transfer = transfer
        var iterator = transfer.parts.makeAsyncIterator()
        do {
            guard case .head(let head)? = try await iterator.next() else {
                try Task.checkCancellation()
                throw CurlError(code: -1, operation: transfer.summary, message: "response ended before its head")
            }
            self.head = head
        } catch {
            transfer.cancel()
            throw error
        }
        self.iterator = iterator
    }

    deinit {
        transfer.cancel()
    }

    /// The next piece of the body, or nil at its end. Throws the transfer's error (reset,
    /// timeout, cancellation).
    public func nextChunk() async throws -> Data? {
        while let part = try await iterator.next() {
            if case .body(let data) = part {
                transfer.consumed(data.count)
                return data
            }
        }
        return nil
    }

    /// The whole body; throws `BodyTooLarge` past `limit` bytes.
    public func collect(limit: Int) async throws -> Data {
        var body = Data()
        while let chunk = try await nextChunk() {
            guard body.count + chunk.count <= limit else {
                cancel()
                throw BodyTooLarge(limit: limit)
            }
            body.append(chunk)
        }
        return body
    }

    /// Ends the transfer now; further reads end with `CancellationError`.
    public func cancel() {
        transfer.cancel()
    }

    /// Ends the transfer from another task (e.g. a deadline).
    public var canceller: ResponseCanceller { ResponseCanceller(transfer: transfer) }

    public struct BodyTooLarge: Error, CustomStringConvertible {
        public var limit: Int
        public var description: String { "response body exceeds \(limit) bytes" }
    }
}

/// Ends one transfer; safe to use from any task.
public struct ResponseCanceller: Sendable {
    let transfer: Transfer

    public func cancel() {
        transfer.cancel()
    }
}

/// One easy handle and what its callbacks need. Created on the caller's thread, then
/// owned by the transport thread until `release()`.
final class Transfer: @unchecked Sendable {
    enum Part {
        case head(HTTPResponseHead)
        case body(Data)
    }

    let handle: UnsafeMutableRawPointer
    let summary: String
    let parts: AsyncThrowingStream<Part, Error>
    private let continuation: AsyncThrowingStream<Part, Error>.Continuation
    private weak var transport: CurlTransport?
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private var connectTo: UnsafeMutablePointer<curl_slist>?
    private let errorBuffer: UnsafeMutablePointer<CChar>
    private var retained: Unmanaged<Transfer>?
    private let highWater: Int

    // Transport thread only.
    private var status = 0
    private var headers: [String: String] = [:]
    private var headSent = false

    // Shared with the reading task.
    private let lock = NSLock()
    private var buffered = 0
    private var paused = false
    private var done = false

    init(request: HTTPRequest, transport: CurlTransport) throws {
        guard let handle = curl_easy_init() else {
            throw CurlError(code: -1, operation: "curl_easy_init", message: "out of memory")
        }
        self.handle = handle
        self.summary = request.summary
        self.transport = transport
        self.highWater = transport.options.bufferHighWater
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        (parts, continuation) = AsyncThrowingStream.makeStream(of: Part.self)
        do {
            try configure(request, options: transport.options)
        } catch {
            release()
            throw error
        }
        retained = Unmanaged.passRetained(self)
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.cancel() }
        }
    }

    var errorText: String? {
        let text = String(cString: errorBuffer)
        return text.isEmpty ? nil : text
    }

    private func set(_ option: CURLoption, _ value: Int, _ name: String) throws {
        try CurlError.check(clc_easy_setopt_long(handle, option, value), "setopt \(name) for \(summary)")
    }

    private func set(_ option: CURLoption, _ value: String?, _ name: String) throws {
        try CurlError.check(clc_easy_setopt_string(handle, option, value), "setopt \(name) for \(summary)")
    }

    /// A client certificate or key: from a file or inline (`-data`), PEM either way.
    private func setPEM(_ material: TLSMaterial?, file: (CURLoption, String), blob: (CURLoption, String),
                        type: (CURLoption, String)) throws {
        switch material {
        case .file(let path)?: try set(file.0, path, file.1)
        case .data(let data)?: try set(blob.0, blob: data, blob.1)
        case nil: return
        }
        try set(type.0, "PEM", type.1)
    }

    private func set(_ option: CURLoption, blob: Data, _ name: String) throws {
        // CURL_BLOB_COPY: libcurl keeps its own copy.
        let code = blob.withUnsafeBytes { clc_easy_setopt_blob(handle, option, $0.baseAddress, $0.count) }
        try CurlError.check(code, "setopt \(name) for \(summary)")
    }

    private func configure(_ request: HTTPRequest, options: TransportOptions) throws {
        let server = request.server
        var urlServer = server
        if let name = request.tls.serverName, server.isTLS, name != server.host {
            // libcurl has no SNI override: address the name and route it to the real host,
            // so SNI and certificate checks use the name while the socket goes to the host.
            urlServer.host = name
            connectTo = curl_slist_append(
                nil, "\(urlServer.urlHost):\(server.port):\(server.urlHost):\(server.port)")
            try CurlError.check(
                clc_easy_setopt_pointer(handle, CURLOPT_CONNECT_TO, connectTo), "setopt CURLOPT_CONNECT_TO for \(summary)")
        }
        try set(CURLOPT_URL, urlServer.url(for: request.pathAndQuery), "CURLOPT_URL")
        try CurlError.check(
            clc_easy_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer), "setopt CURLOPT_ERRORBUFFER")
        try set(CURLOPT_NOSIGNAL, 1, "CURLOPT_NOSIGNAL")
        try set(CURLOPT_USERAGENT, options.userAgent, "CURLOPT_USERAGENT")
        let version = options.httpVersion == .http1 ? CURL_HTTP_VERSION_1_1 : CURL_HTTP_VERSION_2TLS
        try set(CURLOPT_HTTP_VERSION, version, "CURLOPT_HTTP_VERSION")
        try set(CURLOPT_PIPEWAIT, 1, "CURLOPT_PIPEWAIT")
        try set(CURLOPT_CONNECTTIMEOUT_MS, options.connectTimeout.wholeMilliseconds, "CURLOPT_CONNECTTIMEOUT_MS")
        try set(CURLOPT_TCP_KEEPALIVE, 1, "CURLOPT_TCP_KEEPALIVE")
        try set(CURLOPT_TCP_KEEPIDLE, max(1, options.keepaliveIdle.wholeSecondsRoundedUp), "CURLOPT_TCP_KEEPIDLE")
        try set(CURLOPT_TCP_KEEPINTVL, max(1, options.keepaliveInterval.wholeSecondsRoundedUp), "CURLOPT_TCP_KEEPINTVL")
        let probeWindow = options.deadConnectionTimeout - options.keepaliveIdle
        let probes = max(1, probeWindow.wholeMilliseconds / max(1, options.keepaliveInterval.wholeMilliseconds))
        try CurlError.check(
            clc_easy_set_tcp_user_timeout(
                handle, UInt32(clamping: options.deadConnectionTimeout.wholeMilliseconds), UInt32(clamping: probes)),
            "setopt CURLOPT_SOCKOPTFUNCTION for \(summary)")
        if let total = request.totalTimeout {
            try set(CURLOPT_TIMEOUT_MS, total.wholeMilliseconds, "CURLOPT_TIMEOUT_MS")
        }
        if let stall = request.stallTimeout {
            try set(CURLOPT_LOW_SPEED_LIMIT, 1, "CURLOPT_LOW_SPEED_LIMIT")
            try set(CURLOPT_LOW_SPEED_TIME, max(1, stall.wholeSecondsRoundedUp), "CURLOPT_LOW_SPEED_TIME")
        }
        if request.acceptCompressed { try set(CURLOPT_ACCEPT_ENCODING, "gzip", "CURLOPT_ACCEPT_ENCODING") }
        if request.method != "GET" { try set(CURLOPT_CUSTOMREQUEST, request.method, "CURLOPT_CUSTOMREQUEST") }
        if let body = request.body {
            try set(CURLOPT_POSTFIELDSIZE_LARGE, body.count, "CURLOPT_POSTFIELDSIZE_LARGE")
            // COPYPOSTFIELDS: libcurl keeps its own copy, the Data may go away.
            let code = body.isEmpty
                ? clc_easy_setopt_string(handle, CURLOPT_POSTFIELDS, "")
                : body.withUnsafeBytes { bytes in
                    clc_easy_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress))
                }
            try CurlError.check(code, "setopt CURLOPT_COPYPOSTFIELDS for \(summary)")
            // No `Expect: 100-continue` round trip before small bodies.
            headerList = curl_slist_append(headerList, "Expect:")
        }

        if server.isTLS { try configureTLS(request.tls) }

        for header in request.headers {
            headerList = curl_slist_append(headerList, "\(header.name): \(header.value)")
        }
        if connectTo != nil {
            // The Host header names the real server, as client-go sends it.
            headerList = curl_slist_append(headerList, "Host: \(server.urlHost):\(server.port)")
        }
        try CurlError.check(
            clc_easy_setopt_pointer(handle, CURLOPT_HTTPHEADER, headerList), "setopt CURLOPT_HTTPHEADER for \(summary)")

        let context = Unmanaged.passUnretained(self).toOpaque()
        try CurlError.check(clc_easy_setopt_pointer(handle, CURLOPT_PRIVATE, context), "setopt CURLOPT_PRIVATE")
        try CurlError.check(clc_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, context), "setopt CURLOPT_WRITEDATA")
        try CurlError.check(clc_easy_setopt_pointer(handle, CURLOPT_HEADERDATA, context), "setopt CURLOPT_HEADERDATA")
        try CurlError.check(clc_easy_setopt_write_function(handle, transferWriteCallback), "setopt CURLOPT_WRITEFUNCTION")
        try CurlError.check(
            clc_easy_setopt_header_function(handle, transferHeaderCallback), "setopt CURLOPT_HEADERFUNCTION")
    }

    private func configureTLS(_ tls: TLSOptions) throws {
        if tls.insecureSkipVerify {
            try set(CURLOPT_SSL_VERIFYPEER, 0, "CURLOPT_SSL_VERIFYPEER")
            try set(CURLOPT_SSL_VERIFYHOST, 0, "CURLOPT_SSL_VERIFYHOST")
        } else {
            try set(CURLOPT_SSL_VERIFYPEER, 1, "CURLOPT_SSL_VERIFYPEER")
            try set(CURLOPT_SSL_VERIFYHOST, 2, "CURLOPT_SSL_VERIFYHOST")
        }
        switch tls.certificateAuthority {
        case .file(let path)?:
            try set(CURLOPT_CAINFO, path, "CURLOPT_CAINFO")
            // The distribution's CA directory would otherwise be trusted as well.
            try set(CURLOPT_CAPATH, nil, "CURLOPT_CAPATH")
            // libcurl caches a parsed CA file for a day; the service-account CA can rotate.
            try set(CURLOPT_CA_CACHE_TIMEOUT, 60, "CURLOPT_CA_CACHE_TIMEOUT")
        case .data(let data)?:
            try set(CURLOPT_CAINFO_BLOB, blob: data, "CURLOPT_CAINFO_BLOB")
            try set(CURLOPT_CAINFO, nil, "CURLOPT_CAINFO")
            try set(CURLOPT_CAPATH, nil, "CURLOPT_CAPATH")
        case nil:
            break
        }
        try setPEM(tls.clientCertificate, file: (CURLOPT_SSLCERT, "CURLOPT_SSLCERT"),
                   blob: (CURLOPT_SSLCERT_BLOB, "CURLOPT_SSLCERT_BLOB"), type: (CURLOPT_SSLCERTTYPE, "CURLOPT_SSLCERTTYPE"))
        try setPEM(tls.clientKey, file: (CURLOPT_SSLKEY, "CURLOPT_SSLKEY"),
                   blob: (CURLOPT_SSLKEY_BLOB, "CURLOPT_SSLKEY_BLOB"), type: (CURLOPT_SSLKEYTYPE, "CURLOPT_SSLKEYTYPE"))
    }

    /// Frees the libcurl side. Called exactly once, on the transport thread (or on the
    /// caller's thread when the transfer never reached the transport).
    func release() {
        curl_easy_cleanup(handle)
        if let headerList { curl_slist_free_all(headerList) }
        if let connectTo { curl_slist_free_all(connectTo) }
        headerList = nil
        connectTo = nil
        errorBuffer.deallocate()
        retained?.release()
        retained = nil
    }

    // MARK: Reader side

    func cancel() {
        lock.lock()
        let finished = done
        lock.unlock()
        guard !finished else { return }
        transport?.enqueue(.cancel(self))
    }

    /// The reader took `count` bytes; resume a paused transfer once the backlog halved.
    func consumed(_ count: Int) {
        lock.lock()
        buffered -= count
        let resume = paused && buffered <= highWater / 2
        if resume { paused = false }
        lock.unlock()
        if resume { transport?.enqueue(.resume(self)) }
    }

    // MARK: Transport-thread side

    func fail(_ error: Error) {
        lock.lock()
        done = true
        lock.unlock()
        continuation.finish(throwing: error)
    }

    func complete() {
        lock.lock()
        done = true
        lock.unlock()
        if !headSent {
            var code = 0
            _ = clc_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &code)
            sendHead(status: code)
        }
        continuation.finish()
    }

    fileprivate func header(_ line: String) {
        if line.hasPrefix("HTTP/") {
            // A new status line (after 1xx, or a retried request) starts a new head.
            status = Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
            headers = [:]
            return
        }
        let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty {
            if status >= 200 && !headSent { sendHead(status: status) }
            return
        }
        guard let colon = trimmed.firstIndex(of: ":") else { return }
        let name = trimmed[..<colon].lowercased()
        headers[name] = trimmed[trimmed.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }

    private func sendHead(status: Int) {
        headSent = true
        var version = 0
        _ = clc_easy_getinfo_long(handle, CURLINFO_HTTP_VERSION, &version)
        let text: String
        switch version {
        case CURL_HTTP_VERSION_2_0: text = "HTTP/2"
        case CURL_HTTP_VERSION_1_0: text = "HTTP/1.0"
        default: text = "HTTP/1.1"
        }
        continuation.yield(.head(HTTPResponseHead(status: status, headers: headers, httpVersion: text)))
    }

    /// Returns false when the transfer must pause (the reader is behind).
    fileprivate func body(_ bytes: UnsafeRawBufferPointer) -> Bool {
        lock.lock()
        if buffered >= highWater {
            paused = true
            lock.unlock()
            return false
        }
        buffered += bytes.count
        lock.unlock()
        if !headSent {
            var code = 0
            _ = clc_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &code)
            sendHead(status: code)
        }
        continuation.yield(.body(Data(bytes)))
        return true
    }
}

private func transferWriteCallback(
    _ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?
) -> Int {
    guard let context else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    guard length > 0, let data else { return length }
    return transfer.body(UnsafeRawBufferPointer(start: data, count: length)) ? length : clc_writefunc_pause
}

private func transferHeaderCallback(
    _ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?
) -> Int {
    guard let context else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    guard length > 0, let data else { return length }
    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    transfer.header(line)
    return length
}

extension Duration {
    /// Whole milliseconds, rounded down.
    var wholeMilliseconds: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }

    /// Whole seconds, rounded up (a timeout must never be shorter than asked).
    var wholeSecondsRoundedUp: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) + (attoseconds > 0 ? 1 : 0)
    }
}
