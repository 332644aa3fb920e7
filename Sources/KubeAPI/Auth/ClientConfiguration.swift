import Foundation

/// How requests prove who they come from (besides a client certificate in `TLSOptions`).
public enum Credentials: Sendable, Equatable {
    case none
    /// A bearer token given inline (kubeconfig `token`).
    case token(String)
    /// A bearer token read from a file that may be rewritten at any time (projected
    /// service-account tokens rotate): re-read at least every minute and after a 401.
    case tokenFile(String)
}

/// Everything needed to talk to one API server.
public struct ClientConfiguration: Sendable, Equatable {
    public var server: ServerURL
    public var tls: TLSOptions
    public var credentials: Credentials
    /// The context's namespace, when it has one (informational: the informers are cluster-wide).
    public var namespace: String?
    /// Where this came from, for the log: `in-cluster`, `kubeconfig PATH context NAME`.
    public var origin: String

    public init(server: ServerURL, tls: TLSOptions = TLSOptions(), credentials: Credentials = .none,
                namespace: String? = nil, origin: String = "explicit") {
        self.server = server
        self.tls = tls
        self.credentials = credentials
        self.namespace = namespace
        self.origin = origin
    }

    /// Why no configuration could be found or used.
    public struct Unavailable: Error, CustomStringConvertible, Equatable {
        public var message: String
        public var description: String { message }
    }

    /// The service-account mount of a pod.
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// client-go's `InClusterConfig`: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
    /// the service-account token file (re-read as it rotates) and CA.
    public static func inCluster(
        environment: [String: String], serviceAccountDirectory: String = serviceAccountDirectory
    ) throws -> ClientConfiguration {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
            let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty
        else {
            throw Unavailable(message: "not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set")
        }
        let bracketed = host.contains(":") ? "[\(host)]" : host
        let server = try ServerURL(parsing: "https://\(bracketed):\(port)")
        return try serviceAccount(server: server, directory: serviceAccountDirectory)
    }

    /// The service-account token and CA of this pod, for `server`.
    static func serviceAccount(server: ServerURL, directory: String) throws -> ClientConfiguration {
        let tokenPath = directory + "/token"
        let caPath = directory + "/ca.crt"
        guard FileManager.default.isReadableFile(atPath: tokenPath) else {
            throw Unavailable(message: "no service-account token at \(tokenPath)")
        }
        let namespace = (try? String(contentsOfFile: directory + "/namespace", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let ca: TLSMaterial? = FileManager.default.isReadableFile(atPath: caPath) ? .file(caPath) : nil
        return ClientConfiguration(
            server: server, tls: TLSOptions(certificateAuthority: ca), credentials: .tokenFile(tokenPath),
            namespace: namespace, origin: "in-cluster service account")
    }

    /// The configuration Swiftlane uses, in this order:
    ///
    /// 1. `kubeconfig` when given;
    /// 2. the pod's service account when running in a cluster (`KUBERNETES_SERVICE_HOST`
    ///    set) or when `apiServer` is given and the service-account token exists;
    /// 3. `$KUBECONFIG` (several files separated by `:`), else `~/.kube/config`.
    ///
    /// `apiServer`, when given, replaces the server address whatever the source: a
    /// kube-proxy replacement cannot reach the API through the `kubernetes` Service VIP
    /// that it has yet to program itself.
    public static func resolve(
        kubeconfig: String?, apiServer: String?, environment: [String: String],
        serviceAccountDirectory: String = serviceAccountDirectory, homeDirectory: String? = nil
    ) throws -> ClientConfiguration {
        let explicitServer = try apiServer.map { try ServerURL(parsing: $0) }
        var configuration: ClientConfiguration
        if let kubeconfig {
            configuration = try KubeConfig.load(paths: [kubeconfig]).clientConfiguration()
        } else if environment["KUBERNETES_SERVICE_HOST"].map({ !$0.isEmpty }) ?? false {
            configuration = try inCluster(environment: environment, serviceAccountDirectory: serviceAccountDirectory)
        } else if let explicitServer,
            FileManager.default.isReadableFile(atPath: serviceAccountDirectory + "/token")
        {
            configuration = try serviceAccount(server: explicitServer, directory: serviceAccountDirectory)
        } else if let list = environment["KUBECONFIG"], !list.isEmpty {
            configuration = try KubeConfig.load(paths: list.split(separator: ":").map(String.init)).clientConfiguration()
        } else if let home = homeDirectory ?? environment["HOME"],
            FileManager.default.fileExists(atPath: home + "/.kube/config")
        {
            configuration = try KubeConfig.load(paths: [home + "/.kube/config"]).clientConfiguration()
        } else if let explicitServer {
            // No credentials anywhere: e.g. `kubectl proxy` on loopback, which adds its own.
            configuration = ClientConfiguration(server: explicitServer, origin: "apiServer without credentials")
        } else {
            throw Unavailable(message: """
                no Kubernetes API configuration: set source.kubernetes.kubeconfig or apiServer, run in a \
                cluster (KUBERNETES_SERVICE_HOST), or provide $KUBECONFIG or ~/.kube/config
                """)
        }
        if let explicitServer {
            configuration.server = explicitServer
            configuration.origin += ", server from apiServer"
        }
        return configuration
    }
}
