import Controller
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// A request as the endpoints see it: method and path (the query is split off).
public struct EndpointRequest: Sendable {
    public var method: HTTPMethod
    public var path: String
    public var query: String?
}

/// A complete response: small bodies only (metrics text, health JSON).
public struct EndpointResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: [(String, String)]
    public var body: String

    public init(status: HTTPResponseStatus, headers: [(String, String)] = [], body: String) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func notFound(_ path: String) -> EndpointResponse {
        EndpointResponse(
            status: .notFound, headers: [("Content-Type", "text/plain; charset=utf-8")],
            body: "404 page not found: \(path)\n")
    }
}

/// A plain HTTP/1.1 server (SwiftNIO) for the operator endpoints, as a lifecycle
/// `Service`: it binds when run, answers each request with `respond`, and on graceful
/// shutdown stops accepting and closes its connections.
///
/// `respond` runs on a Swift concurrency task, not on the event loop, so it may read BPF
/// maps (bpf() calls block for a moment).
public final class HTTPEndpointServer: Service, @unchecked Sendable {
    public let name: String
    public let address: BindAddress
    /// The configuration key that sets `address`, named in a bind failure.
    public let configKey: String
    private let respond: @Sendable (EndpointRequest) async -> EndpointResponse
    private let logger: Logger
    private let lock = NSLock()
    private var boundPort: Int?
    private let onBound: (@Sendable (Int) -> Void)?

    /// `name` (e.g. "metrics") appears in logs; `configKey` in bind errors.
    public init(
        name: String, address: BindAddress, configKey: String = "", logger: Logger,
        onBound: (@Sendable (Int) -> Void)? = nil,
        respond: @escaping @Sendable (EndpointRequest) async -> EndpointResponse
    ) {
        self.name = name
        self.address = address
        self.configKey = configKey
        self.logger = logger
        self.onBound = onBound
        self.respond = respond
    }

    /// The port actually bound (differs from `address.port` when that is 0); nil before.
    public var port: Int? { lock.withLock { boundPort } }

    /// A failure to bind names the server and the address, so the operator knows which
    /// configuration key to change.
    public struct BindFailed: Error, CustomStringConvertible {
        public var server: String
        public var configKey: String
        public var address: BindAddress
        public var underlying: any Error
        public var description: String {
            "cannot listen for \(server) on \(address)\(configKey.isEmpty ? "" : " (config key \(configKey))"): \(underlying)"
        }
    }

    public func run() async throws {
        let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                            wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw BindFailed(server: name, configKey: configKey, address: address, underlying: error)
        }
        let port = server.channel.localAddress?.port ?? address.port
        lock.withLock { boundPort = port }
        logger.info(
            "listening", metadata: ["server": "\(name)", "address": "\(BindAddress(host: address.host, port: port))"])
        onBound?(port)

        // Cancelling on graceful shutdown ends the accept loop and every connection task;
        // `executeThenClose` then closes the listening socket.
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                do {
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await self.serve(connection) }
                        }
                    }
                } catch {
                    if !Task.isCancelled {
                        self.logger.warning(
                            "server stopped accepting", metadata: ["server": "\(self.name)", "error": "\(error)"])
                    }
                }
                group.cancelAll()
            }
        }
        logger.info("stopped", metadata: ["server": "\(name)"])
    }

    /// Answers the requests of one connection in order, keeping it open while the client
    /// asks for keep-alive (Prometheus does).
    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                for try await part in inbound {
                    switch part {
                    case .head(let requestHead):
                        head = requestHead
                    case .body:
                        break  // the endpoints take no body
                    case .end:
                        guard let requestHead = head else { continue }
                        head = nil
                        let pathAndQuery = requestHead.uri.split(separator: "?", maxSplits: 1).map(String.init)
                        let request = EndpointRequest(
                            method: requestHead.method, path: pathAndQuery.first ?? "/",
                            query: pathAndQuery.count > 1 ? pathAndQuery[1] : nil)
                        let response = await respond(request)
                        var headers = HTTPHeaders(response.headers)
                        let body = ByteBuffer(string: requestHead.method == .HEAD ? "" : response.body)
                        headers.replaceOrAdd(name: "Content-Length", value: "\(response.body.utf8.count)")
                        let keepAlive = requestHead.isKeepAlive
                        headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
                        try await outbound.write(
                            .head(
                                HTTPResponseHead(
                                    version: requestHead.version, status: response.status,
                                    headers: headers)))
                        if body.readableBytes > 0 { try await outbound.write(.body(.byteBuffer(body))) }
                        try await outbound.write(.end(nil))
                        if !keepAlive { return }
                    }
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["server": "\(name)", "error": "\(error)"])
        }
    }
}
