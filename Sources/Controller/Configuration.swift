import Datapath
import Foundation
import struct KubeAPI.ServerURL
import Logging
import struct ServiceModel.CIDR
import struct ServiceModel.TranslationOptions
import Yams

/// Swiftlane's configuration file (mounted from a ConfigMap in a cluster). Keys and
/// defaults are documented in docs/configuration.md; this type is their source of truth.
public struct SwiftlaneConfiguration: Equatable, Sendable {
    /// The node this proxy runs on (endpoint locality, topology). `NODE_NAME` overrides.
    public var nodeName: String = ProcessInfo.processInfo.hostName
    /// Where Services and EndpointSlices come from: the Kubernetes API unless configured.
    public var source: Source = .kubernetes(Kubernetes())
    /// When set, only Services and EndpointSlices labelled
    /// `service.kubernetes.io/service-proxy-name: <this>` are proxied (objects of the
    /// default proxy are left to it); unset: kube-proxy's selector, which skips every
    /// object carrying that label.
    public var serviceProxyName: String?
    /// cgroup v2 directory the socket programs attach to; nil = autodetected root.
    public var cgroupPath: String?
    /// bpffs directory for pinned maps and links.
    public var bpfPinPath: String = "/sys/fs/bpf/swiftlane"
    /// trace, debug, info, notice, warning, error, critical.
    public var logLevel: Logger.Level = .info
    /// kube-proxy's translation settings: `nodePortAddresses`, `clusterCIDR`,
    /// `masqueradeAll`, `featureGates.PreferSameTrafficDistribution`.
    public var translation = TranslationOptions()
    /// Bursts of changes are coalesced: at most one sync per this many milliseconds
    /// (kube-proxy's minSyncPeriod; the first change after a quiet period syncs at once).
    public var minSyncPeriodMilliseconds: Int = 100
    /// The largest object either source accepts (a manifest document, a watch event), in
    /// bytes: a larger one is rejected, logged and counted, and the object keeps its last
    /// good state. etcd stores at most 1.5 MiB per object (protobuf); its JSON is larger.
    public var maxObjectBytes: Int = 3 << 20
    /// Entries per BPF map, by `DatapathOptions.sizableMaps` key; unset maps keep their
    /// built-in size. Changing a size of a running installation needs `swiftlane cleanup`.
    public var mapSizes: [String: UInt32] = [:]
    /// `metricsBindAddress` and `healthzBindAddress` (see ConfigurationOperations.swift).
    public var operations = OperationsSettings()
    /// The external-traffic datapath (`nodePort.*`, see ConfigurationNodePort.swift).
    public var nodePort = NodePortSettings()

    public enum Source: Equatable, Sendable {
        case directory(Directory)
        case kubernetes(Kubernetes)
    }

    /// The Kubernetes API source (`source.kubernetes`).
    public struct Kubernetes: Equatable, Sendable {
        /// A kubeconfig file; nil: the pod's service account when in a cluster, else
        /// `$KUBECONFIG` or `~/.kube/config`.
        public var kubeconfig: String?
        /// The API server's URL, overriding the kubeconfig's and in-cluster address: the
        /// `kubernetes` Service VIP cannot be used before this proxy has programmed it.
        public var apiServer: String?
        /// Client-side rate limit of API requests (kube-proxy's defaults: 5 per second,
        /// bursts of 10).
        public var qps: Double = 5
        public var burst: Int = 10
        /// A connection to the API server that stops answering (a crashed or partitioned
        /// control plane) is given up after this long, and every watch on it restarts
        /// (TCP keepalive probes plus TCP_USER_TIMEOUT).
        public var deadConnectionTimeoutSeconds: Int = 45

        public init(kubeconfig: String? = nil, apiServer: String? = nil, qps: Double = 5, burst: Int = 10) {
            self.kubeconfig = kubeconfig
            self.apiServer = apiServer
            self.qps = qps
            self.burst = burst
        }
    }

    public struct Directory: Equatable, Sendable {
        public var path: String
        /// How often the directory is re-read for changes, in milliseconds.
        public var pollIntervalMilliseconds: Int = 250

        public init(path: String, pollIntervalMilliseconds: Int = 250) {
            self.path = path
            self.pollIntervalMilliseconds = pollIntervalMilliseconds
        }
    }

    public init() {}

    /// Where and how the datapath is installed, from bpfPinPath, cgroupPath and mapSizes.
    public var datapathOptions: DatapathOptions {
        DatapathOptions(pinPath: bpfPinPath, cgroupPath: cgroupPath,
                        mapSizes: Dictionary(uniqueKeysWithValues: mapSizes.compactMap { key, entries in
                            DatapathOptions.sizableMaps[key].map { ($0, entries) }
                        }))
    }

    /// A configuration error naming the key and the bad value.
    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public var key: String
        public var message: String
        public var description: String { "config key \(key): \(message)" }
    }

    /// Parses YAML text. Unknown keys are errors (a typo must not silently fall back to
    /// a default); `environment["NODE_NAME"]` overrides `nodeName`.
    public static func parse(yaml text: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                             relativeTo baseDirectory: String? = nil) throws -> SwiftlaneConfiguration {
        var config = SwiftlaneConfiguration()
        let root: Node
        do {
            root = try Yams.compose(yaml: text) ?? Node.mapping([:])
        } catch {
            throw Invalid(key: "(file)", message: "not valid YAML: \(error)")
        }
        guard let mapping = root.mapping else { throw Invalid(key: "(file)", message: "the top level must be a mapping") }
        var reader = KeyReader(mapping: mapping, prefix: "")
        if let name = try reader.string("nodeName") {
            guard !name.isEmpty else { throw Invalid(key: "nodeName", message: "must not be empty") }
            config.nodeName = name
        }
        if let path = try reader.string("cgroupPath") { config.cgroupPath = resolve(path, baseDirectory) }
        if let path = try reader.string("bpfPinPath") {
            guard path.hasPrefix("/") else { throw Invalid(key: "bpfPinPath", message: "must be an absolute path, got \"\(path)\"") }
            config.bpfPinPath = path
        }
        if let level = try reader.string("logLevel") {
            guard let parsed = Logger.Level(rawValue: level) else {
                throw Invalid(key: "logLevel", message: "\"\(level)\" is not one of trace, debug, info, notice, warning, error, critical")
            }
            config.logLevel = parsed
        }
        if let list = try reader.stringList("nodePortAddresses") {
            for entry in list where entry != "primary" && CIDR(sloppy: entry) == nil {
                throw Invalid(key: "nodePortAddresses", message: "\"\(entry)\" is neither a CIDR nor \"primary\"")
            }
            config.translation.nodePortAddresses = list
        }
        if let list = try reader.stringList("clusterCIDR", splittingOnCommas: true) {
            config.translation.clusterCIDRs = try list.map { entry in
                guard let cidr = CIDR(sloppy: entry) else { throw Invalid(key: "clusterCIDR", message: "\"\(entry)\" is not a CIDR") }
                return cidr
            }
        }
        if let value = try reader.bool("masqueradeAll") { config.translation.masqueradeAll = value }
        if let gates = try reader.mapping("featureGates") {
            var gateReader = KeyReader(mapping: gates, prefix: "featureGates.")
            if let value = try gateReader.bool("PreferSameTrafficDistribution") {
                config.translation.preferSameTrafficDistribution = value
            }
            try gateReader.rejectUnknown()
        }
        if let period = try reader.int("minSyncPeriodMilliseconds") {
            guard (0...60_000).contains(period) else {
                throw Invalid(key: "minSyncPeriodMilliseconds", message: "\(period) is outside 0...60000")
            }
            config.minSyncPeriodMilliseconds = period
        }
        if let bytes = try reader.int("maxObjectBytes") {
            guard (1024...(64 << 20)).contains(bytes) else {
                throw Invalid(key: "maxObjectBytes", message: "\(bytes) is outside 1024...67108864")
            }
            config.maxObjectBytes = bytes
        }
        if let sizes = try reader.mapping("mapSizes") {
            var sizeReader = KeyReader(mapping: sizes, prefix: "mapSizes.")
            for name in DatapathOptions.sizableMaps.keys.sorted() {
                guard let entries = try sizeReader.int(name) else { continue }
                guard (16...16_777_216).contains(entries) else {
                    throw Invalid(key: "mapSizes.\(name)", message: "\(entries) is outside 16...16777216")
                }
                config.mapSizes[name] = UInt32(entries)
            }
            try sizeReader.rejectUnknown()
        }
        if let name = try reader.string("serviceProxyName") {
            guard isLabelValue(name), !name.isEmpty else {
                throw Invalid(key: "serviceProxyName", message: "\"\(name)\" is not a valid label value (1-63 of [A-Za-z0-9-_.], alphanumeric at both ends)")
            }
            config.serviceProxyName = name
        }
        if let sourceNode = try reader.mapping("source") {
            var sourceReader = KeyReader(mapping: sourceNode, prefix: "source.")
            let named = Set(sourceNode.keys.compactMap(\.string))
            if named.isSuperset(of: ["directory", "kubernetes"]) {
                throw Invalid(key: "source", message: "names both `directory` and `kubernetes`; choose one")
            }
            if named.contains("kubernetes") {
                config.source = .kubernetes(try parseKubernetes(try sourceReader.node("kubernetes"), baseDirectory))
            } else if let directoryNode = try sourceReader.node("directory") {
                var directory: Directory
                if let path = directoryNode.scalar?.string {
                    directory = Directory(path: resolve(path, baseDirectory))
                } else if let nested = directoryNode.mapping {
                    var directoryReader = KeyReader(mapping: nested, prefix: "source.directory.")
                    guard let path = try directoryReader.string("path") else {
                        throw Invalid(key: "source.directory.path", message: "is required")
                    }
                    directory = Directory(path: resolve(path, baseDirectory))
                    if let interval = try directoryReader.int("pollIntervalMilliseconds") {
                        guard (10...60_000).contains(interval) else {
                            throw Invalid(key: "source.directory.pollIntervalMilliseconds", message: "\(interval) is outside 10...60000")
                        }
                        directory.pollIntervalMilliseconds = interval
                    }
                    try directoryReader.rejectUnknown()
                } else {
                    throw Invalid(key: "source.directory", message: "must be a path or a mapping with `path`")
                }
                config.source = .directory(directory)
            } else {
                throw Invalid(key: "source", message: "must name a source: `kubernetes` or `directory`")
            }
            try sourceReader.rejectUnknown()
        }
        try config.operations.parse(&reader)
        try config.nodePort.parse(&reader)
        try reader.rejectUnknown()
        if let override = environment["NODE_NAME"], !override.isEmpty { config.nodeName = override }
        return config
    }

    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> SwiftlaneConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw Invalid(key: "(file)", message: "cannot read \(path): \(error.localizedDescription)")
        }
        return try parse(yaml: text, environment: environment, relativeTo: (path as NSString).deletingLastPathComponent)
    }

    /// `source.kubernetes`: a mapping (possibly empty or null: in-cluster defaults).
    private static func parseKubernetes(_ node: Node?, _ baseDirectory: String?) throws -> Kubernetes {
        var kubernetes = Kubernetes()
        guard let node else { return kubernetes }
        if let scalar = node.scalar, scalar.string.isEmpty { return kubernetes }
        guard let mapping = node.mapping else {
            throw Invalid(key: "source.kubernetes", message: "must be a mapping with kubeconfig, apiServer, qps, burst, deadConnectionTimeoutSeconds")
        }
        var reader = KeyReader(mapping: mapping, prefix: "source.kubernetes.")
        if let path = try reader.string("kubeconfig") {
            guard !path.isEmpty else { throw Invalid(key: "source.kubernetes.kubeconfig", message: "must not be empty") }
            kubernetes.kubeconfig = resolve(path, baseDirectory)
        }
        if let url = try reader.string("apiServer") {
            do {
                _ = try ServerURL(parsing: url)
            } catch {
                throw Invalid(key: "source.kubernetes.apiServer", message: "\(error)")
            }
            kubernetes.apiServer = url
        }
        if let text = try reader.string("qps") {
            guard let qps = Double(text), qps > 0, qps <= 10_000 else {
                throw Invalid(key: "source.kubernetes.qps", message: "\"\(text)\" is not a number in (0, 10000]")
            }
            kubernetes.qps = qps
        }
        if let burst = try reader.int("burst") {
            guard (1...100_000).contains(burst) else {
                throw Invalid(key: "source.kubernetes.burst", message: "\(burst) is outside 1...100000")
            }
            kubernetes.burst = burst
        }
        if let seconds = try reader.int("deadConnectionTimeoutSeconds") {
            guard (5...600).contains(seconds) else {
                throw Invalid(key: "source.kubernetes.deadConnectionTimeoutSeconds", message: "\(seconds) is outside 5...600")
            }
            kubernetes.deadConnectionTimeoutSeconds = seconds
        }
        try reader.rejectUnknown()
        return kubernetes
    }

    /// A Kubernetes label value: at most 63 characters of [A-Za-z0-9-_.], alphanumeric at both ends.
    private static func isLabelValue(_ text: String) -> Bool {
        guard text.count <= 63 else { return false }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        guard text.allSatisfy(allowed.contains) else { return false }
        guard let first = text.first, let last = text.last else { return true }
        return first.isLetter || first.isNumber ? (last.isLetter || last.isNumber) : false
    }

    private static func resolve(_ path: String, _ base: String?) -> String {
        guard !path.hasPrefix("/"), let base, !base.isEmpty else { return path }
        return (base as NSString).appendingPathComponent(path)
    }
}

/// Reads keys out of a YAML mapping, remembering which were used so the rest can be
/// reported as unknown.
struct KeyReader {
    let mapping: Node.Mapping
    let prefix: String
    var used = Set<String>()

    init(mapping: Node.Mapping, prefix: String) {
        self.mapping = mapping
        self.prefix = prefix
    }

    mutating func node(_ key: String) throws -> Node? {
        used.insert(key)
        guard let value = mapping[key] else { return nil }
        if case .scalar(let scalar) = value, scalar.string == "null" || scalar.string == "~" { return nil }
        return value
    }

    mutating func string(_ key: String) throws -> String? {
        guard let value = try node(key) else { return nil }
        guard let scalar = value.scalar else {
            throw SwiftlaneConfiguration.Invalid(key: prefix + key, message: "must be a string")
        }
        return scalar.string
    }

    mutating func int(_ key: String) throws -> Int? {
        guard let text = try string(key) else { return nil }
        guard let value = Int(text) else {
            throw SwiftlaneConfiguration.Invalid(key: prefix + key, message: "\"\(text)\" is not an integer")
        }
        return value
    }

    /// An integer that must lie in `range`.
    mutating func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let value = try int(key) else { return nil }
        guard range.contains(value) else {
            throw SwiftlaneConfiguration.Invalid(key: prefix + key, message: "\(value) is outside \(range)")
        }
        return value
    }

    mutating func bool(_ key: String) throws -> Bool? {
        guard let text = try string(key) else { return nil }
        switch text {
        case "true": return true
        case "false": return false
        default: throw SwiftlaneConfiguration.Invalid(key: prefix + key, message: "\"\(text)\" is not true or false")
        }
    }

    /// A list of strings; with `splittingOnCommas`, a single comma-separated string too
    /// (kube-proxy's `clusterCIDR: "10.0.0.0/8,fd00::/48"`).
    mutating func stringList(_ key: String, splittingOnCommas: Bool = false) throws -> [String]? {
        guard let value = try node(key) else { return nil }
        if let scalar = value.scalar, splittingOnCommas {
            return scalar.string.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        guard let sequence = value.sequence else {
            throw SwiftlaneConfiguration.Invalid(key: prefix + key, message: "must be a list")
        }
        return try sequence.map { item in
            guard let scalar = item.scalar else {
                throw SwiftlaneConfiguration.Invalid(key: prefix + key, message: "must be a list of strings")
            }
            return scalar.string
        }
    }

    mutating func mapping(_ key: String) throws -> Node.Mapping? {
        guard let value = try node(key) else { return nil }
        guard let nested = value.mapping else {
            throw SwiftlaneConfiguration.Invalid(key: prefix + key, message: "must be a mapping")
        }
        return nested
    }

    func rejectUnknown() throws {
        for key in mapping.keys.compactMap({ $0.string }) where !used.contains(key) {
            throw SwiftlaneConfiguration.Invalid(key: prefix + key, message: "unknown key")
        }
    }
}
