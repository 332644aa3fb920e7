import Foundation

// MARK: - Plan values

/// Which kind of destination a frontend captures (A.5).
public enum FrontendKind: String, Codable, Hashable, Comparable, CaseIterable, Sendable, CustomStringConvertible {
    case clusterIP = "ClusterIP"
    case nodePort = "NodePort"
    case externalIP = "ExternalIP"
    case loadBalancer = "LoadBalancer"

    public var description: String { rawValue }

    /// Declaration order: ClusterIP, NodePort, ExternalIP, LoadBalancer.
    public static func < (lhs: FrontendKind, rhs: FrontendKind) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// What a frontend does with a new connection (A.6).
public enum FrontendAction: String, Codable, Hashable, Sendable, CustomStringConvertible {
    /// Load-balance uniformly over `backends`.
    case forward
    /// ICMP unreachable / TCP RST: the ServicePort has no usable endpoint at all.
    case reject
    /// Silently discard: usable endpoints exist, but none this frontend's policy may use.
    case drop

    public var description: String { rawValue }
}

/// One endpoint a frontend may forward to. Ordered and printed as `10.0.0.1:80` /
/// `[fd00::1]:80` (the order kube-proxy uses, A.3(9)).
public struct Backend: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    /// The endpoint's `nodeName` is this proxy's node (A.3(10)). Not part of the JSON form.
    public var isLocal: Bool

    public init(address: IPAddress, port: UInt16, isLocal: Bool = false) {
        self.address = address
        self.port = port
        self.isLocal = isLocal
    }

    public var description: String {
        address.family == .v6 ? "[\(address)]:\(port)" : "\(address):\(port)"
    }

    public static func < (lhs: Backend, rhs: Backend) -> Bool {
        // Two IPv4 backends (nearly every comparison) compare by their text without
        // building it: the sort runs several times per frontend per translation.
        if let l = lhs.v4TextOrder, let r = rhs.v4TextOrder {
            return l != r ? l < r : (!lhs.isLocal && rhs.isLocal)
        }
        let (l, r) = (lhs.description, rhs.description)
        return l != r ? l < r : (!lhs.isLocal && rhs.isLocal)
    }

    /// `items` in their backends' `<` order, each backend's text order computed once
    /// rather than at every comparison (the same result as sorting with `<`).
    static func sortedByText<Item>(_ items: some Collection<Item>, _ backend: (Item) -> Backend) -> [Item] {
        let items = Array(items)
        guard items.count > 1 else { return items }
        // Indices are sorted, not the items: moving an endpoint (its hint sets) costs
        // retains at every swap.
        var keyed: [(order: (UInt64, UInt64, UInt64), local: Bool, index: Int)] = []
        keyed.reserveCapacity(items.count)
        for index in items.indices {
            let item = backend(items[index])
            guard let order = item.v4TextOrder else {
                return items.sorted { backend($0) < backend($1) }  // IPv6: by the texts
            }
            keyed.append((order, item.isLocal, index))
        }
        keyed.sort { $0.order != $1.order ? $0.order < $1.order : (!$0.local && $1.local) }
        return keyed.map { items[$0.index] }
    }

    /// `description`'s bytes (at most 21 for IPv4) packed big-endian into three words,
    /// zero-padded: comparing the words compares the texts (no text byte is zero, so a
    /// prefix sorts first, as in `String`). nil for IPv6.
    var v4TextOrder: (UInt64, UInt64, UInt64)? {
        guard let value = address.v4Value else { return nil }
        var text = PackedText()
        for shift in stride(from: 24, through: 0, by: -8) {
            if shift != 24 { text.append(UInt8(ascii: ".")) }
            text.appendDecimal(UInt32(value >> UInt32(shift) & 0xff))
        }
        text.append(UInt8(ascii: ":"))
        text.appendDecimal(UInt32(port))
        return text.words
    }

    /// Parses `ip:port` / `[ip]:port` (the JSON form); `isLocal` is false.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
            return nil
        }
        var host = text[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard let address = IPAddress(sloppy: String(host)) else { return nil }
        self.init(address: address, port: port)
    }
}

/// Up to 24 ASCII bytes packed into three big-endian words (see `Backend.v4TextOrder`).
struct PackedText {
    private(set) var words: (UInt64, UInt64, UInt64) = (0, 0, 0)
    private var count = 0

    mutating func append(_ byte: UInt8) {
        let shifted = UInt64(byte) << UInt64(56 - 8 * (count % 8))
        switch count / 8 {
        case 0: words.0 |= shifted
        case 1: words.1 |= shifted
        default: words.2 |= shifted
        }
        count += 1
    }

    mutating func appendDecimal(_ value: UInt32) {
        var divisor: UInt32 = 1
        while divisor <= value / 10 { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            append(UInt8(ascii: "0") + UInt8(rest / divisor))
            rest %= divisor
            divisor /= 10
        }
    }
}

/// One (destination, protocol, port) the datapath captures, with its verdict.
///
/// `action`/`backends` describe pod traffic for `.clusterIP` frontends and traffic from outside
/// the node for the other kinds. `nodeBackends` is present exactly when the Service has
/// `externalTrafficPolicy: Local` (and usable endpoints): it is the Cluster set that pod- and
/// host-originated traffic is short-circuited to (A.5 "external chain"), and its presence
/// also tells the datapath not to masquerade outside traffic (A.11(2)).
public struct Frontend: Hashable, Comparable, Sendable {
    /// `namespace/name`.
    public var service: String
    public var portName: String
    public var `protocol`: TransportProtocol
    public var kind: FrontendKind
    /// `nil` only for `.nodePort`: every accepted node address of `family` (A.12).
    public var address: IPAddress?
    public var family: IPFamily
    /// The Service port, or the nodePort for `.nodePort`.
    public var port: UInt16
    public var action: FrontendAction
    /// Sorted; empty unless `action == .forward`.
    public var backends: [Backend]
    public var nodeBackends: [Backend]?
    /// ClientIP affinity timeout; 0 = no affinity (A.8).
    public var affinitySeconds: UInt32
    /// Allowed client networks (A.9); only on `.loadBalancer`, empty = unrestricted.
    public var sourceRanges: [CIDR]

    public init(
        service: String, portName: String, protocol: TransportProtocol, kind: FrontendKind, address: IPAddress?,
        family: IPFamily? = nil, port: UInt16, action: FrontendAction, backends: [Backend] = [],
        nodeBackends: [Backend]? = nil, affinitySeconds: UInt32 = 0, sourceRanges: [CIDR] = []
    ) {
        self.service = service
        self.portName = portName
        self.protocol = `protocol`
        self.kind = kind
        self.address = address
        self.family = family ?? address?.family ?? .v4
        self.port = port
        self.action = action
        self.backends = backends.sorted()
        self.nodeBackends = nodeBackends?.sorted()
        self.affinitySeconds = affinitySeconds
        self.sourceRanges = sourceRanges.sorted()
    }

    /// `address` as text, `*` for the NodePort wildcard.
    public var addressString: String { address?.description ?? "*" }

    /// Sort order: service, portName, protocol, kind, family, address text, port.
    public static func < (lhs: Frontend, rhs: Frontend) -> Bool {
        if lhs.service != rhs.service { return lhs.service < rhs.service }
        if lhs.portName != rhs.portName { return lhs.portName < rhs.portName }
        if lhs.protocol != rhs.protocol { return lhs.protocol < rhs.protocol }
        if lhs.kind != rhs.kind { return lhs.kind < rhs.kind }
        if lhs.family != rhs.family { return lhs.family < rhs.family }
        if lhs.addressString != rhs.addressString { return lhs.addressString < rhs.addressString }
        return lhs.port < rhs.port
    }
}

/// A healthCheckNodePort listener (A.10).
public struct HealthCheck: Hashable, Comparable, Codable, Sendable {
    /// `namespace/name`.
    public var service: String
    public var port: UInt16
    /// Distinct local, ready endpoint IPs; the HTTP status is 200 iff > 0.
    public var localEndpoints: Int

    public init(service: String, port: UInt16, localEndpoints: Int) {
        self.service = service
        self.port = port
        self.localEndpoints = localEndpoints
    }

    public static func < (lhs: HealthCheck, rhs: HealthCheck) -> Bool {
        lhs.service != rhs.service ? lhs.service < rhs.service : lhs.port < rhs.port
    }
}

/// The desired load-balancer state of one node: every frontend with its verdict, and the
/// health-check listeners. Built by `Translator.plan`; lists are kept sorted.
public struct LoadBalancerPlan: Equatable, Sendable {
    public var frontends: [Frontend]
    public var healthChecks: [HealthCheck]

    public init(frontends: [Frontend] = [], healthChecks: [HealthCheck] = []) {
        self.frontends = frontends.sorted()
        self.healthChecks = healthChecks.sorted()
    }
}

// MARK: - JSON form

extension Frontend: Codable {
    enum CodingKeys: String, CodingKey {
        case service, portName, `protocol`, kind, address, family, port, action, backends, nodeBackends
        case affinitySeconds, sourceRanges
    }

    /// Empty lists and nil fields are omitted. `family` is written only for the `*` NodePort
    /// address, where it cannot be read from the address itself.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(service, forKey: .service)
        try c.encode(portName, forKey: .portName)
        try c.encode(self.protocol, forKey: .protocol)
        try c.encode(kind, forKey: .kind)
        try c.encode(addressString, forKey: .address)
        if address == nil { try c.encode(family, forKey: .family) }
        try c.encode(port, forKey: .port)
        try c.encode(action, forKey: .action)
        try c.encodeUnlessEmpty(backends.sorted().map(\.description), forKey: .backends)
        if let nodeBackends { try c.encodeUnlessEmpty(nodeBackends.sorted().map(\.description), forKey: .nodeBackends) }
        try c.encode(affinitySeconds, forKey: .affinitySeconds)
        try c.encodeUnlessEmpty(sourceRanges.sorted().map(\.description), forKey: .sourceRanges)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func backendList(_ key: CodingKeys) throws -> [Backend]? {
            guard let texts = try c.decodeIfPresent([String].self, forKey: key) else { return nil }
            return try texts.map { text in
                guard let backend = Backend(text) else {
                    throw DecodingError.dataCorruptedError(
                        forKey: key, in: c, debugDescription: "invalid backend \"\(text)\"")
                }
                return backend
            }
        }
        let addressText = try c.decode(String.self, forKey: .address)
        let address: IPAddress?
        if addressText == "*" {
            address = nil
        } else if let parsed = IPAddress(sloppy: addressText) {
            address = parsed
        } else {
            throw DecodingError.dataCorruptedError(
                forKey: .address, in: c, debugDescription: "invalid address \"\(addressText)\"")
        }
        self.init(
            service: try c.decode(String.self, forKey: .service),
            portName: try c.decodeIfPresent(String.self, forKey: .portName) ?? "",
            protocol: try c.decode(TransportProtocol.self, forKey: .protocol),
            kind: try c.decode(FrontendKind.self, forKey: .kind),
            address: address,
            family: try c.decodeIfPresent(IPFamily.self, forKey: .family),
            port: try c.decode(UInt16.self, forKey: .port),
            action: try c.decode(FrontendAction.self, forKey: .action),
            backends: try backendList(.backends) ?? [],
            nodeBackends: try backendList(.nodeBackends),
            affinitySeconds: try c.decodeIfPresent(UInt32.self, forKey: .affinitySeconds) ?? 0,
            sourceRanges: try c.decodeIfPresent([CIDR].self, forKey: .sourceRanges) ?? [])
    }
}

extension LoadBalancerPlan: Codable {
    enum CodingKeys: String, CodingKey { case frontends, healthChecks }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeUnlessEmpty(frontends.sorted(), forKey: .frontends)
        try c.encodeUnlessEmpty(healthChecks.sorted(), forKey: .healthChecks)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            frontends: try c.decodeList(forKey: .frontends), healthChecks: try c.decodeList(forKey: .healthChecks))
    }
}

// MARK: - Rendering

extension LoadBalancerPlan {
    /// The JSON form with sorted keys; `pretty` adds indentation and newlines.
    public func jsonString(pretty: Bool) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting =
            pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self), let text = String(data: data, encoding: .utf8) else {
            return "{}"  // unreachable: every field encodes
        }
        return text
    }

    /// A human-readable table, one row per frontend:
    /// `SERVICE PORT PROTO KIND ADDRESS ACTION BACKENDS`. PORT is `name:number` (just the
    /// number for an unnamed port); BACKENDS lists the backends, then `from-node=` (the
    /// short-circuit set), `affinity=` and `allow=` (source ranges) when present.
    public func tableString() -> String {
        var rows: [[String]] = [["SERVICE", "PORT", "PROTO", "KIND", "ADDRESS", "ACTION", "BACKENDS"]]
        for frontend in frontends.sorted() {
            var details: [String] = [
                frontend.backends.isEmpty ? "-" : frontend.backends.map(\.description).joined(separator: ",")
            ]
            if let nodeBackends = frontend.nodeBackends {
                details.append(
                    "from-node=" + (nodeBackends.isEmpty ? "-" : nodeBackends.map(\.description).joined(separator: ","))
                )
            }
            if frontend.affinitySeconds > 0 { details.append("affinity=\(frontend.affinitySeconds)s") }
            if !frontend.sourceRanges.isEmpty {
                details.append("allow=" + frontend.sourceRanges.map(\.description).joined(separator: ","))
            }
            rows.append([
                frontend.service,
                frontend.portName.isEmpty ? "\(frontend.port)" : "\(frontend.portName):\(frontend.port)",
                frontend.protocol.rawValue,
                frontend.kind.rawValue,
                frontend.address?.description ?? "*(\(frontend.family))",
                frontend.action.rawValue,
                details.joined(separator: " "),
            ])
        }
        var lines = Self.align(rows)
        if !healthChecks.isEmpty {
            lines.append("")
            lines += Self.align(
                [["HEALTHCHECK", "PORT", "LOCAL-ENDPOINTS"]]
                    + healthChecks.sorted().map { [$0.service, "\($0.port)", "\($0.localEndpoints)"] })
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func align(_ rows: [[String]]) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
    }
}

// MARK: - nodePortAddresses (A.12)

extension LoadBalancerPlan {
    /// The node addresses on which NodePorts (and healthCheckNodePorts) are accepted (A.12),
    /// sorted. `options.nodePortAddresses` holds CIDRs and/or `primary` (the node's first
    /// address of each family as /32 or /128); per family only CIDRs of that family count, and
    /// none, or a zero CIDR, means all the node's addresses of the family. Loopback addresses
    /// are never returned: localhost NodePorts are an iptables/IPv4-only feature (A.11(4)) that
    /// this datapath does not offer. Families outside `options.ipFamilies` are not served.
    /// Unparsable entries are ignored (`Translator.plan` reports them as diagnostics).
    public static func nodePortAddresses(for node: ProxyNode, options: TranslationOptions) -> [IPAddress] {
        var result: Set<IPAddress> = []
        for family in options.ipFamilies {
            let candidates = node.addresses.filter { $0.family == family && !$0.isLoopback }
            let cidrs = nodePortCIDRs(family: family, node: node, options: options)
            if cidrs.isEmpty || cidrs.contains(where: \.isMatchAll) {
                result.formUnion(candidates)
            } else {
                result.formUnion(candidates.filter { ip in cidrs.contains { $0.contains(ip) } })
            }
        }
        return result.sorted()
    }

    /// The configured CIDRs of one family, with `primary` resolved.
    public static func nodePortCIDRs(family: IPFamily, node: ProxyNode, options: TranslationOptions) -> [CIDR] {
        var cidrs: [CIDR] = []
        for entry in options.nodePortAddresses {
            if entry.trimmingWhitespace() == "primary" {
                if let primary = node.primaryAddress(family) { cidrs.append(CIDR(host: primary)) }
            } else if let cidr = CIDR(sloppy: entry), cidr.family == family {
                cidrs.append(cidr)
            }
        }
        return cidrs
    }
}
