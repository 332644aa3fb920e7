import Foundation
import Yams

/// A kubeconfig (clientcmd v1 `Config`), possibly merged from several files, with every
/// relative path already resolved against the folder of the file that held it.
///
/// Supported: clusters (`server`, `certificate-authority(-data)`,
/// `insecure-skip-tls-verify`, `tls-server-name`), users (`client-certificate(-data)`,
/// `client-key(-data)`, `token`, `tokenFile`), contexts (`cluster`, `user`, `namespace`),
/// `current-context`. Exec and auth-provider plugins, basic auth and impersonation are
/// reported as unsupported when the chosen user needs them.
public struct KubeConfig: Sendable, Equatable {
    public struct Cluster: Sendable, Equatable {
        public var server: String?
        public var certificateAuthority: String?
        public var certificateAuthorityData: Data?
        public var insecureSkipTLSVerify: Bool
        public var tlsServerName: String?
        /// The file that defined it (for error messages).
        public var source: String
    }

    public struct User: Sendable, Equatable {
        public var clientCertificate: String?
        public var clientCertificateData: Data?
        public var clientKey: String?
        public var clientKeyData: Data?
        public var token: String?
        public var tokenFile: String?
        /// Names of set fields that need something this client does not implement.
        public var unsupported: [String]
        public var source: String
    }

    public struct Context: Sendable, Equatable {
        public var cluster: String
        public var user: String
        public var namespace: String?
    }

    public var clusters: [String: Cluster] = [:]
    public var users: [String: User] = [:]
    public var contexts: [String: Context] = [:]
    public var currentContext: String?
    /// The files it was read from, in merge order.
    public var files: [String] = []

    public init() {}

    /// A kubeconfig that cannot be used, naming the file and the field.
    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public var file: String
        public var message: String
        public var description: String { "kubeconfig \(file): \(message)" }
    }

    /// Loads and merges `paths` in order: the first file to define a cluster, user or
    /// context name, or `current-context`, wins (clientcmd's merge rule). Missing files
    /// in a list of several are skipped, as kubectl does; a single missing file is an error.
    public static func load(paths: [String]) throws -> KubeConfig {
        var merged = KubeConfig()
        var loaded = 0
        for path in paths where !path.isEmpty {
            guard FileManager.default.fileExists(atPath: path) else {
                if paths.count == 1 { throw Invalid(file: path, message: "no such file") }
                continue
            }
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw Invalid(file: path, message: "cannot read: \(error.localizedDescription)")
            }
            let file = try parse(yaml: text, path: path)
            merged.merge(file)
            loaded += 1
        }
        guard loaded > 0 else { throw Invalid(file: paths.joined(separator: ":"), message: "none of the files exists") }
        return merged
    }

    /// Parses one file. Relative paths resolve against `path`'s folder.
    public static func parse(yaml text: String, path: String) throws -> KubeConfig {
        let document: KubeConfigDocument
        do {
            document = try YAMLDecoder().decode(KubeConfigDocument.self, from: text)
        } catch let error as DecodingError {
            throw Invalid(file: path, message: describe(error))
        } catch {
            throw Invalid(file: path, message: "not valid YAML: \(error)")
        }
        let folder = (path as NSString).deletingLastPathComponent
        func resolve(_ value: String?) -> String? {
            guard let value, !value.isEmpty else { return nil }
            guard !value.hasPrefix("/"), !folder.isEmpty else { return value }
            return (folder as NSString).appendingPathComponent(value)
        }
        func decodeData(_ text: String?, field: String, owner: String) throws -> Data? {
            guard let text, !text.isEmpty else { return nil }
            let compact = text.filter { !$0.isWhitespace }
            guard let data = Data(base64Encoded: compact) else {
                throw Invalid(file: path, message: "\(owner): \(field) is not valid base64")
            }
            return data
        }

        var config = KubeConfig()
        config.files = [path]
        config.currentContext = document.currentContext.flatMap { $0.isEmpty ? nil : $0 }
        for entry in document.clusters ?? [] {
            guard let name = entry.name, config.clusters[name] == nil else { continue }
            let cluster = entry.cluster ?? .init()
            config.clusters[name] = Cluster(
                server: cluster.server,
                certificateAuthority: resolve(cluster.certificateAuthority),
                certificateAuthorityData: try decodeData(
                    cluster.certificateAuthorityData, field: "certificate-authority-data", owner: "cluster \(name)"),
                insecureSkipTLSVerify: cluster.insecureSkipTLSVerify ?? false,
                tlsServerName: cluster.tlsServerName.flatMap { $0.isEmpty ? nil : $0 },
                source: path)
        }
        for entry in document.users ?? [] {
            guard let name = entry.name, config.users[name] == nil else { continue }
            let user = entry.user ?? .init()
            var unsupported: [String] = []
            if user.exec != nil { unsupported.append("exec") }
            if user.authProvider != nil { unsupported.append("auth-provider") }
            if user.username != nil || user.password != nil { unsupported.append("username/password") }
            if user.impersonate != nil { unsupported.append("as") }
            config.users[name] = User(
                clientCertificate: resolve(user.clientCertificate),
                clientCertificateData: try decodeData(
                    user.clientCertificateData, field: "client-certificate-data", owner: "user \(name)"),
                clientKey: resolve(user.clientKey),
                clientKeyData: try decodeData(user.clientKeyData, field: "client-key-data", owner: "user \(name)"),
                token: user.token.flatMap { $0.isEmpty ? nil : $0 },
                tokenFile: resolve(user.tokenFile),
                unsupported: unsupported,
                source: path)
        }
        for entry in document.contexts ?? [] {
            guard let name = entry.name, config.contexts[name] == nil else { continue }
            let context = entry.context ?? .init()
            config.contexts[name] = Context(
                cluster: context.cluster ?? "", user: context.user ?? "",
                namespace: context.namespace.flatMap { $0.isEmpty ? nil : $0 })
        }
        return config
    }

    mutating func merge(_ other: KubeConfig) {
        clusters.merge(other.clusters) { first, _ in first }
        users.merge(other.users) { first, _ in first }
        contexts.merge(other.contexts) { first, _ in first }
        if currentContext == nil { currentContext = other.currentContext }
        files += other.files
    }

    /// The connection settings of `context` (default: `current-context`).
    public func clientConfiguration(context name: String? = nil) throws -> ClientConfiguration {
        let files = self.files.joined(separator: ":")
        guard let contextName = name ?? currentContext else {
            throw Invalid(file: files, message: "no current-context and no context chosen")
        }
        guard let context = contexts[contextName] else {
            throw Invalid(file: files, message: "context \"\(contextName)\" is not defined")
        }
        guard let cluster = clusters[context.cluster] else {
            throw Invalid(file: files, message: "context \"\(contextName)\" names cluster \"\(context.cluster)\", which is not defined")
        }
        guard let serverText = cluster.server, !serverText.isEmpty else {
            throw Invalid(file: cluster.source, message: "cluster \"\(context.cluster)\" has no server")
        }
        let server: ServerURL
        do {
            server = try ServerURL(parsing: serverText)
        } catch {
            throw Invalid(file: cluster.source, message: "cluster \"\(context.cluster)\": \(error)")
        }
        let ca: TLSMaterial? = cluster.certificateAuthorityData.map { .data($0) }
            ?? cluster.certificateAuthority.map { .file($0) }
        if cluster.insecureSkipTLSVerify && ca != nil {
            throw Invalid(
                file: cluster.source,
                message: "cluster \"\(context.cluster)\": insecure-skip-tls-verify cannot be combined with a certificate authority")
        }
        var tls = TLSOptions(
            certificateAuthority: ca, insecureSkipVerify: cluster.insecureSkipTLSVerify, serverName: cluster.tlsServerName)
        var credentials = Credentials.none
        if !context.user.isEmpty {
            guard let user = users[context.user] else {
                throw Invalid(file: files, message: "context \"\(contextName)\" names user \"\(context.user)\", which is not defined")
            }
            tls.clientCertificate = user.clientCertificateData.map { .data($0) } ?? user.clientCertificate.map { .file($0) }
            tls.clientKey = user.clientKeyData.map { .data($0) } ?? user.clientKey.map { .file($0) }
            if (tls.clientCertificate == nil) != (tls.clientKey == nil) {
                throw Invalid(file: user.source, message: "user \"\(context.user)\" has a client certificate or key without the other")
            }
            if let token = user.token {
                credentials = .token(token)
            } else if let file = user.tokenFile {
                credentials = .tokenFile(file)
            } else if tls.clientCertificate == nil, !user.unsupported.isEmpty {
                throw Invalid(
                    file: user.source,
                    message: "user \"\(context.user)\" authenticates with \(user.unsupported.joined(separator: ", ")), which is not supported; use a token, tokenFile or client certificate")
            }
        }
        return ClientConfiguration(
            server: server, tls: tls, credentials: credentials, namespace: context.namespace,
            origin: "kubeconfig \(files) context \(contextName)")
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            return "\(fieldPath(context.codingPath)): expected \(type)"
        case .keyNotFound(let key, let context):
            return "\(fieldPath(context.codingPath + [key])): missing"
        case .dataCorrupted(let context):
            return "\(fieldPath(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    private static func fieldPath(_ path: [CodingKey]) -> String {
        let text = path.map { $0.intValue.map { "[\($0)]" } ?? "." + $0.stringValue }.joined()
        return text.hasPrefix(".") ? String(text.dropFirst()) : (text.isEmpty ? "(top level)" : text)
    }
}

// MARK: - File shape (clientcmd v1)

private struct KubeConfigDocument: Decodable {
    var clusters: [NamedCluster]?
    var users: [NamedUser]?
    var contexts: [NamedContext]?
    var currentContext: String?

    enum CodingKeys: String, CodingKey {
        case clusters, users, contexts
        case currentContext = "current-context"
    }

    struct NamedCluster: Decodable {
        var name: String?
        var cluster: ClusterFields?
    }

    struct ClusterFields: Decodable {
        var server: String?
        var certificateAuthority: String?
        var certificateAuthorityData: String?
        var insecureSkipTLSVerify: Bool?
        var tlsServerName: String?

        init() {}

        enum CodingKeys: String, CodingKey {
            case server
            case certificateAuthority = "certificate-authority"
            case certificateAuthorityData = "certificate-authority-data"
            case insecureSkipTLSVerify = "insecure-skip-tls-verify"
            case tlsServerName = "tls-server-name"
        }
    }

    struct NamedUser: Decodable {
        var name: String?
        var user: UserFields?
    }

    struct UserFields: Decodable {
        var clientCertificate: String?
        var clientCertificateData: String?
        var clientKey: String?
        var clientKeyData: String?
        var token: String?
        var tokenFile: String?
        var username: String?
        var password: String?
        var exec: Ignored?
        var authProvider: Ignored?
        var impersonate: String?

        init() {}

        enum CodingKeys: String, CodingKey {
            case clientCertificate = "client-certificate"
            case clientCertificateData = "client-certificate-data"
            case clientKey = "client-key"
            case clientKeyData = "client-key-data"
            case token, tokenFile, username, password, exec
            case authProvider = "auth-provider"
            case impersonate = "as"
        }
    }

    struct NamedContext: Decodable {
        var name: String?
        var context: ContextFields?
    }

    struct ContextFields: Decodable {
        var cluster: String?
        var user: String?
        var namespace: String?

        init() {}
    }

    /// Any value: only its presence matters.
    struct Ignored: Decodable {
        init(from decoder: Decoder) throws {}
    }
}
