import Foundation
import Logging

/// One API server connection: transport, credentials and the client-side rate limit,
/// shared by every informer.
public final class KubeClient: @unchecked Sendable {
    public let configuration: ClientConfiguration
    public let transport: CurlTransport
    public let tokens: TokenSource
    public let rateLimiter: RateLimiter
    public let clock: any MonotonicClock
    public let logger: Logger

    /// Client-side rate limit: kube-proxy's defaults.
    public struct Limits: Sendable, Equatable {
        public var qps: Double = 5
        public var burst: Int = 10
        public init(qps: Double = 5, burst: Int = 10) {
            self.qps = qps
            self.burst = burst
        }
    }

    public init(configuration: ClientConfiguration, limits: Limits = Limits(),
                transportOptions: TransportOptions = TransportOptions(),
                clock: any MonotonicClock = SystemClock(), logger: Logger) throws {
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        self.transport = try CurlTransport(options: transportOptions, logger: logger)
        self.tokens = TokenSource(credentials: configuration.credentials, clock: clock, logger: logger)
        self.rateLimiter = RateLimiter(qps: limits.qps, burst: limits.burst, clock: clock)
        if !configuration.server.isTLS {
            logger.warning("the API server is reached over plain http: no TLS, credentials travel in clear text", metadata: [
                "server": "\(configuration.server)",
            ])
        }
    }

    /// Fails open requests and stops the transport thread.
    public func shutdown() {
        transport.shutdown()
    }

    /// A rate-limited GET with the credentials and `Accept: application/json`.
    public func get(_ pathAndQuery: String, totalTimeout: Duration? = nil, stallTimeout: Duration? = nil,
                    acceptCompressed: Bool = false) async throws -> HTTPResponse {
        try await rateLimiter.acquire()
        let request = HTTPRequest(
            server: configuration.server, pathAndQuery: pathAndQuery, headers: headers(), tls: configuration.tls,
            totalTimeout: totalTimeout, stallTimeout: stallTimeout, acceptCompressed: acceptCompressed)
        return try await transport.send(request)
    }

    /// A write (`POST`, `PATCH`…) of a JSON body, answered in full. It does not take from
    /// the informers' rate limit: writers (the event recorder) bring their own, so that
    /// a burst of them never delays a relist.
    public func send(_ method: String, _ pathAndQuery: String, json body: Data, contentType: String = "application/json",
                     timeout: Duration = .seconds(10), responseLimit: Int = 1 << 20) async throws -> (status: Int, body: Data) {
        let request = HTTPRequest(
            server: configuration.server, pathAndQuery: pathAndQuery,
            headers: headers() + [("Content-Type", contentType)], tls: configuration.tls,
            totalTimeout: timeout, method: method, body: body)
        let response = try await transport.send(request)
        if response.head.status == 401 { tokens.invalidate() }
        return (response.head.status, try await response.collect(limit: responseLimit))
    }

    private func headers() -> [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = [("Accept", "application/json")]
        if let token = tokens.token() { headers.append(("Authorization", "Bearer " + token)) }
        return headers
    }
}
