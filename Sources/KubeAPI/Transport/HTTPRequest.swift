import Foundation

/// Where TLS material comes from: a file, or bytes given inline (kubeconfig `*-data`).
public enum TLSMaterial: Sendable, Equatable, CustomStringConvertible {
    case file(String)
    case data(Data)

    public var description: String {
        switch self {
        case .file(let path): return path
        case .data(let data): return "<\(data.count) inline bytes>"
        }
    }
}

/// How the server is verified and how the client proves who it is.
///
/// The server is always verified: against `certificateAuthority` when one is given (and
/// then only against it, never the system roots), otherwise against the system roots;
/// `insecureSkipVerify` is the only way to turn verification off.
public struct TLSOptions: Sendable, Equatable {
    public var certificateAuthority: TLSMaterial?
    public var clientCertificate: TLSMaterial?
    public var clientKey: TLSMaterial?
    public var insecureSkipVerify: Bool
    /// The name sent in SNI and checked against the server's certificate instead of the
    /// URL's host (kubeconfig `tls-server-name`).
    public var serverName: String?

    public init(
        certificateAuthority: TLSMaterial? = nil, clientCertificate: TLSMaterial? = nil,
        clientKey: TLSMaterial? = nil, insecureSkipVerify: Bool = false, serverName: String? = nil
    ) {
        self.certificateAuthority = certificateAuthority
        self.clientCertificate = clientCertificate
        self.clientKey = clientKey
        self.insecureSkipVerify = insecureSkipVerify
        self.serverName = serverName
    }
}

/// One request: a GET (lists, watches) or a write with a body (Events). The response
/// body is streamed (see `HTTPResponse`).
public struct HTTPRequest: Sendable {
    public var method: String
    /// Sent as is, with `Content-Type` from `headers`.
    public var body: Data?
    public var server: ServerURL
    /// Path and query, starting with `/`, already percent-encoded; appended to the
    /// server's base path.
    public var pathAndQuery: String
    public var headers: [(name: String, value: String)]
    public var tls: TLSOptions
    /// The whole transfer is abandoned after this long (watches: the server's timeout
    /// plus a grace period, so a server that never ends its stream is noticed).
    public var totalTimeout: Duration?
    /// The transfer is abandoned when fewer than one byte per second arrives for this
    /// long (lists: a response that stops flowing is dead).
    public var stallTimeout: Duration?
    /// Ask for gzip (lists; watches are never compressed by the API server).
    public var acceptCompressed: Bool

    public init(
        server: ServerURL, pathAndQuery: String, headers: [(name: String, value: String)] = [],
        tls: TLSOptions = TLSOptions(), totalTimeout: Duration? = nil, stallTimeout: Duration? = nil,
        acceptCompressed: Bool = false, method: String = "GET", body: Data? = nil
    ) {
        self.method = method
        self.body = body
        self.server = server
        self.pathAndQuery = pathAndQuery
        self.headers = headers
        self.tls = tls
        self.totalTimeout = totalTimeout
        self.stallTimeout = stallTimeout
        self.acceptCompressed = acceptCompressed
    }

    /// `GET https://host:port/base/path?query`, for logs and errors (never the headers:
    /// they carry the token).
    public var summary: String { method + " " + server.url(for: pathAndQuery) }
}

/// The status line and headers of a response.
public struct HTTPResponseHead: Sendable, Equatable {
    public var status: Int
    /// Header names lower-cased; a repeated header keeps its last value.
    public var headers: [String: String]
    /// `"HTTP/2"` or `"HTTP/1.1"` as negotiated.
    public var httpVersion: String

    public init(status: Int, headers: [String: String] = [:], httpVersion: String = "HTTP/1.1") {
        self.status = status
        self.headers = headers
        self.httpVersion = httpVersion
    }

    /// `Retry-After` in seconds (the API server only sends the seconds form).
    public var retryAfter: Duration? {
        guard let text = headers["retry-after"]?.trimmingCharacters(in: .whitespaces),
            let seconds = Int(text), seconds >= 0
        else { return nil }
        return .seconds(seconds)
    }
}

/// An API server address: `https://host:port/base` (host may be a bracketed IPv6
/// literal; base is kept for servers behind a path-routing proxy).
public struct ServerURL: Sendable, Equatable, CustomStringConvertible {
    public var scheme: String
    /// Without brackets, e.g. `2001:db8::10`.
    public var host: String
    public var port: Int
    /// `""` or a path starting with `/`, without a trailing `/`.
    public var basePath: String

    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public var url: String
        public var reason: String
        public var description: String { "invalid API server URL \"\(url)\": \(reason)" }
    }

    /// Parses `https://host[:port][/base]` or `http://…`. A bare `host:port` is taken as
    /// https, as kubectl does.
    public init(parsing text: String) throws {
        var rest = text.trimmingCharacters(in: .whitespaces)
        guard !rest.isEmpty else { throw Invalid(url: text, reason: "empty") }
        if let range = rest.range(of: "://") {
            scheme = rest[..<range.lowerBound].lowercased()
            rest = String(rest[range.upperBound...])
        } else {
            scheme = "https"
        }
        guard scheme == "https" || scheme == "http" else {
            throw Invalid(url: text, reason: "scheme must be https or http, got \(scheme)")
        }
        let authority: Substring
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            var path = String(rest[slash...])
            while path.hasSuffix("/") { path.removeLast() }
            basePath = path
        } else {
            authority = Substring(rest)
            basePath = ""
        }
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw Invalid(url: text, reason: "unclosed [") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw Invalid(url: text, reason: "unexpected text after ]") }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { throw Invalid(url: text, reason: "no host") }
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw Invalid(url: text, reason: "port \"\(portText)\" is not 1-65535")
            }
            port = value
        } else {
            port = scheme == "https" ? 443 : 80
        }
    }

    public init(scheme: String = "https", host: String, port: Int, basePath: String = "") {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.basePath = basePath
    }

    public var isTLS: Bool { scheme == "https" }

    /// The host as it appears in a URL: IPv6 literals in brackets.
    public var urlHost: String { host.contains(":") ? "[\(host)]" : host }

    public var description: String { "\(scheme)://\(urlHost):\(port)\(basePath)" }

    /// The full URL of `pathAndQuery` on this server.
    public func url(for pathAndQuery: String) -> String { description + pathAndQuery }
}
