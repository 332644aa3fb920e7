import Foundation

// MARK: - Operations keys

/// The configuration keys of the operator-facing endpoints (`metricsBindAddress`,
/// `healthzBindAddress`). kube-proxy's names, defaults and "empty disables" rule.
public struct OperationsSettings: Equatable, Sendable {
    /// Prometheus metrics (`/metrics`); nil = disabled. kube-proxy's default port.
    public var metricsBindAddress: BindAddress? = BindAddress(host: "0.0.0.0", port: 10249)
    /// `/healthz`, `/livez` and `/readyz`; nil = disabled. kube-proxy's default port.
    public var healthzBindAddress: BindAddress? = BindAddress(host: "0.0.0.0", port: 10256)

    public init() {}

    /// Reads the keys this type owns out of the top-level mapping.
    mutating func parse(_ reader: inout KeyReader) throws {
        if let text = try reader.string("metricsBindAddress") {
            metricsBindAddress = try BindAddress.parse(text, key: "metricsBindAddress")
        }
        if let text = try reader.string("healthzBindAddress") {
            healthzBindAddress = try BindAddress.parse(text, key: "healthzBindAddress")
        }
    }
}

/// `host:port` for a listening socket: `0.0.0.0:10249`, `127.0.0.1:0` (any free port),
/// `[::]:10256`.
public struct BindAddress: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses the text of `key`; the empty string means "disabled" (nil), as in kube-proxy.
    public static func parse(_ text: String, key: String) throws -> BindAddress? {
        if text.isEmpty { return nil }
        let invalid = SwiftlaneConfiguration.Invalid(
            key: key, message: "\"\(text)\" is not host:port (e.g. 0.0.0.0:10249 or [::]:10249); empty disables it")
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65_535).contains(port)
        else { throw invalid }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
            guard host.contains(":") else { throw invalid }
        } else if host.contains(":") {
            throw invalid  // an IPv6 address must be bracketed
        }
        guard isIPAddress(host) else { throw invalid }
        return BindAddress(host: host, port: port)
    }

    private static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }
}

// MARK: - Reloading

extension SwiftlaneConfiguration {
    /// How a running controller takes a changed configuration file.
    public struct ReloadDifferences: Equatable, Sendable {
        /// Changed keys applied at once, without a restart: log level, translation
        /// settings, the source and how it is read.
        public var applied: [String] = []
        /// Changed keys that only a restart applies: they decide where the datapath lives,
        /// how big its maps are, which node this is, and which ports are bound.
        public var needRestart: [String] = []

        public var isEmpty: Bool { applied.isEmpty && needRestart.isEmpty }
    }

    /// The keys whose values differ between `self` (running) and `new` (the file now),
    /// split by whether a running controller can apply them.
    public func reloadDifferences(to new: SwiftlaneConfiguration) -> ReloadDifferences {
        var result = ReloadDifferences()
        func compare<T: Equatable>(_ key: String, _ old: T, _ next: T, live: Bool) {
            guard old != next else { return }
            if live { result.applied.append(key) } else { result.needRestart.append(key) }
        }
        compare("logLevel", logLevel, new.logLevel, live: true)
        compare("source", source, new.source, live: true)
        compare("serviceProxyName", serviceProxyName, new.serviceProxyName, live: true)
        compare("minSyncPeriodMilliseconds", minSyncPeriodMilliseconds, new.minSyncPeriodMilliseconds, live: true)
        compare("nodePortAddresses", translation.nodePortAddresses, new.translation.nodePortAddresses, live: true)
        compare("clusterCIDR", translation.clusterCIDRs, new.translation.clusterCIDRs, live: true)
        compare("masqueradeAll", translation.masqueradeAll, new.translation.masqueradeAll, live: true)
        compare(
            "featureGates.PreferSameTrafficDistribution", translation.preferSameTrafficDistribution,
            new.translation.preferSameTrafficDistribution, live: true)
        compare("maxObjectBytes", maxObjectBytes, new.maxObjectBytes, live: true)
        compare("nodeName", nodeName, new.nodeName, live: false)
        compare("cgroupPath", cgroupPath, new.cgroupPath, live: false)
        compare("bpfPinPath", bpfPinPath, new.bpfPinPath, live: false)
        for name in Set(mapSizes.keys).union(new.mapSizes.keys).sorted() {
            compare("mapSizes.\(name)", mapSizes[name], new.mapSizes[name], live: false)
        }
        compare("metricsBindAddress", operations.metricsBindAddress, new.operations.metricsBindAddress, live: false)
        compare("healthzBindAddress", operations.healthzBindAddress, new.operations.healthzBindAddress, live: false)
        compare("nodePort", nodePort, new.nodePort, live: false)
        return result
    }

    /// `self` with every key a running controller can apply taken from `new`; the others
    /// keep the values the controller started with.
    public func applyingLiveKeys(of new: SwiftlaneConfiguration) -> SwiftlaneConfiguration {
        var result = self
        result.logLevel = new.logLevel
        result.source = new.source
        result.serviceProxyName = new.serviceProxyName
        result.minSyncPeriodMilliseconds = new.minSyncPeriodMilliseconds
        result.maxObjectBytes = new.maxObjectBytes
        result.translation = new.translation
        return result
    }
}
