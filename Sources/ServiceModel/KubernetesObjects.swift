import Foundation

// The subset of core/v1 Service, discovery.k8s.io/v1 EndpointSlice and core/v1 Node that
// kube-proxy reads, as plain values. Decoding is lenient in the ways the API server's JSON
// requires (spec C.7): unknown fields are ignored, every list and map may be `null` or absent,
// and strings stay raw. Judging values (sloppy IP parsing, port ranges, enum spellings) is
// the translator's job, so a bad value in one object never makes decoding fail.
// Integers are decoded as `Int`, so out-of-range ports (0, 65536) survive to be judged.

// MARK: - Common

/// The protocol of a Service or EndpointSlice port.
public enum TransportProtocol: String, Codable, Hashable, Comparable, CaseIterable, Sendable, CustomStringConvertible {
    case tcp = "TCP"
    case udp = "UDP"
    case sctp = "SCTP"

    /// IANA protocol number: 6, 17 or 132.
    public var ipProtocolNumber: UInt8 {
        switch self {
        case .tcp: return 6
        case .udp: return 17
        case .sctp: return 132
        }
    }

    public var description: String { rawValue }

    public static func < (lhs: TransportProtocol, rhs: TransportProtocol) -> Bool {
        lhs.rawValue < rhs.rawValue
    }
}

/// A Kubernetes `IntOrString` (e.g. `targetPort`): JSON number or string.
public enum IntOrString: Codable, Hashable, Sendable, CustomStringConvertible {
    case int(Int)
    case string(String)

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else {
            throw DecodingError.typeMismatch(
                IntOrString.self,
                .init(codingPath: decoder.codingPath, debugDescription: "Expected to decode Int or String"))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .int(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        }
    }

    public var description: String {
        switch self {
        case .int(let value): return String(value)
        case .string(let value): return value
        }
    }
}

/// `metadata` of any object. Absent strings decode as `""`, absent maps as empty.
public struct ObjectMeta: Codable, Hashable, Sendable {
    public var name: String
    /// `""` when absent; `ManifestDecoder` defaults it to `"default"` for namespaced kinds.
    public var namespace: String
    public var uid: String?
    public var resourceVersion: String?
    public var labels: [String: String]
    public var annotations: [String: String]
    /// RFC 3339 text, kept raw.
    public var deletionTimestamp: String?

    public init(
        name: String = "", namespace: String = "", uid: String? = nil, resourceVersion: String? = nil,
        labels: [String: String] = [:], annotations: [String: String] = [:], deletionTimestamp: String? = nil
    ) {
        self.name = name
        self.namespace = namespace
        self.uid = uid
        self.resourceVersion = resourceVersion
        self.labels = labels
        self.annotations = annotations
        self.deletionTimestamp = deletionTimestamp
    }

    enum CodingKeys: String, CodingKey {
        case name, namespace, uid, resourceVersion, labels, annotations, deletionTimestamp
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        namespace = try c.decodeIfPresent(String.self, forKey: .namespace) ?? ""
        uid = try c.decodeIfPresent(String.self, forKey: .uid)
        resourceVersion = try c.decodeIfPresent(String.self, forKey: .resourceVersion)
        labels = try c.decodeIfPresent([String: String].self, forKey: .labels) ?? [:]
        annotations = try c.decodeIfPresent([String: String].self, forKey: .annotations) ?? [:]
        deletionTimestamp = try c.decodeIfPresent(String.self, forKey: .deletionTimestamp)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeUnlessEmpty(name, forKey: .name)
        try c.encodeUnlessEmpty(namespace, forKey: .namespace)
        try c.encodeIfPresent(uid, forKey: .uid)
        try c.encodeIfPresent(resourceVersion, forKey: .resourceVersion)
        try c.encodeUnlessEmpty(labels, forKey: .labels)
        try c.encodeUnlessEmpty(annotations, forKey: .annotations)
        try c.encodeIfPresent(deletionTimestamp, forKey: .deletionTimestamp)
    }
}

/// Well-known label, annotation and value spellings kube-proxy reacts to.
public enum WellKnown {
    /// Slice → Service association (A.3(2)).
    public static let serviceNameLabel = "kubernetes.io/service-name"
    /// Objects owned by another proxy are invisible to kube-proxy (A.1(1)).
    public static let serviceProxyNameLabel = "service.kubernetes.io/service-proxy-name"
    /// Slices of headless Services are invisible to kube-proxy (A.1(1)).
    public static let headlessLabel = "service.kubernetes.io/headless"
    /// Node label holding the node's zone (A.4(2.1)).
    public static let zoneLabel = "topology.kubernetes.io/zone"
    /// Cluster autoscaler taint that makes `/healthz` fail (A.10).
    public static let toBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"
}

// MARK: - Service

/// A core/v1 Service.
public struct Service: Codable, Hashable, Sendable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    public var spec: ServiceSpec
    public var status: ServiceStatus

    public init(
        metadata: ObjectMeta, spec: ServiceSpec = ServiceSpec(), status: ServiceStatus = ServiceStatus(),
        apiVersion: String? = "v1", kind: String? = "Service"
    ) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    enum CodingKeys: String, CodingKey { case apiVersion, kind, metadata, spec, status }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        apiVersion = try c.decodeIfPresent(String.self, forKey: .apiVersion)
        kind = try c.decodeIfPresent(String.self, forKey: .kind)
        metadata = try c.decodeIfPresent(ObjectMeta.self, forKey: .metadata) ?? ObjectMeta()
        spec = try c.decodeIfPresent(ServiceSpec.self, forKey: .spec) ?? ServiceSpec()
        status = try c.decodeIfPresent(ServiceStatus.self, forKey: .status) ?? ServiceStatus()
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(apiVersion, forKey: .apiVersion)
        try c.encodeIfPresent(kind, forKey: .kind)
        try c.encode(metadata, forKey: .metadata)
        try c.encode(spec, forKey: .spec)
        try c.encode(status, forKey: .status)
    }
}

/// `Service.spec`, the fields kube-proxy reads (A.2). Enum-like fields stay raw strings.
public struct ServiceSpec: Codable, Hashable, Sendable {
    /// `ClusterIP` (also when absent), `NodePort`, `LoadBalancer` or `ExternalName`.
    public var type: String?
    public var clusterIP: String?
    public var clusterIPs: [String]
    /// `IPv4` / `IPv6`, parallel to `clusterIPs`.
    public var ipFamilies: [String]
    public var ports: [ServicePort]
    public var externalIPs: [String]
    /// `None` or `ClientIP`.
    public var sessionAffinity: String?
    public var sessionAffinityConfig: SessionAffinityConfig?
    /// `Cluster` or `Local`.
    public var externalTrafficPolicy: String?
    /// `Cluster` or `Local`; `nil` means Cluster.
    public var internalTrafficPolicy: String?
    public var healthCheckNodePort: Int?
    public var loadBalancerSourceRanges: [String]
    public var allocateLoadBalancerNodePorts: Bool?

    public init(
        type: String? = nil, clusterIP: String? = nil, clusterIPs: [String] = [], ipFamilies: [String] = [],
        ports: [ServicePort] = [], externalIPs: [String] = [], sessionAffinity: String? = nil,
        sessionAffinityConfig: SessionAffinityConfig? = nil, externalTrafficPolicy: String? = nil,
        internalTrafficPolicy: String? = nil, healthCheckNodePort: Int? = nil,
        loadBalancerSourceRanges: [String] = [], allocateLoadBalancerNodePorts: Bool? = nil
    ) {
        self.type = type
        self.clusterIP = clusterIP
        self.clusterIPs = clusterIPs
        self.ipFamilies = ipFamilies
        self.ports = ports
        self.externalIPs = externalIPs
        self.sessionAffinity = sessionAffinity
        self.sessionAffinityConfig = sessionAffinityConfig
        self.externalTrafficPolicy = externalTrafficPolicy
        self.internalTrafficPolicy = internalTrafficPolicy
        self.healthCheckNodePort = healthCheckNodePort
        self.loadBalancerSourceRanges = loadBalancerSourceRanges
        self.allocateLoadBalancerNodePorts = allocateLoadBalancerNodePorts
    }

    enum CodingKeys: String, CodingKey {
        case type, clusterIP, clusterIPs, ipFamilies, ports, externalIPs, sessionAffinity, sessionAffinityConfig
        case externalTrafficPolicy, internalTrafficPolicy, healthCheckNodePort, loadBalancerSourceRanges
        case allocateLoadBalancerNodePorts
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decodeIfPresent(String.self, forKey: .type)
        clusterIP = try c.decodeIfPresent(String.self, forKey: .clusterIP)
        clusterIPs = try c.decodeList(forKey: .clusterIPs)
        ipFamilies = try c.decodeList(forKey: .ipFamilies)
        ports = try c.decodeList(forKey: .ports)
        externalIPs = try c.decodeList(forKey: .externalIPs)
        sessionAffinity = try c.decodeIfPresent(String.self, forKey: .sessionAffinity)
        sessionAffinityConfig = try c.decodeIfPresent(SessionAffinityConfig.self, forKey: .sessionAffinityConfig)
        externalTrafficPolicy = try c.decodeIfPresent(String.self, forKey: .externalTrafficPolicy)
        internalTrafficPolicy = try c.decodeIfPresent(String.self, forKey: .internalTrafficPolicy)
        healthCheckNodePort = try c.decodeIfPresent(Int.self, forKey: .healthCheckNodePort)
        loadBalancerSourceRanges = try c.decodeList(forKey: .loadBalancerSourceRanges)
        allocateLoadBalancerNodePorts = try c.decodeIfPresent(Bool.self, forKey: .allocateLoadBalancerNodePorts)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(type, forKey: .type)
        try c.encodeIfPresent(clusterIP, forKey: .clusterIP)
        try c.encodeUnlessEmpty(clusterIPs, forKey: .clusterIPs)
        try c.encodeUnlessEmpty(ipFamilies, forKey: .ipFamilies)
        try c.encodeUnlessEmpty(ports, forKey: .ports)
        try c.encodeUnlessEmpty(externalIPs, forKey: .externalIPs)
        try c.encodeIfPresent(sessionAffinity, forKey: .sessionAffinity)
        try c.encodeIfPresent(sessionAffinityConfig, forKey: .sessionAffinityConfig)
        try c.encodeIfPresent(externalTrafficPolicy, forKey: .externalTrafficPolicy)
        try c.encodeIfPresent(internalTrafficPolicy, forKey: .internalTrafficPolicy)
        try c.encodeIfPresent(healthCheckNodePort, forKey: .healthCheckNodePort)
        try c.encodeUnlessEmpty(loadBalancerSourceRanges, forKey: .loadBalancerSourceRanges)
        try c.encodeIfPresent(allocateLoadBalancerNodePorts, forKey: .allocateLoadBalancerNodePorts)
    }
}

/// One element of `Service.spec.ports`.
public struct ServicePort: Codable, Hashable, Sendable {
    /// `""` when absent (the legitimate unnamed port).
    public var name: String
    /// Raw protocol; `"TCP"` when absent (API default).
    public var `protocol`: String
    /// `0` when absent; range is judged by the translator.
    public var port: Int
    /// Ignored by kube-proxy (A.2); kept for completeness.
    public var targetPort: IntOrString?
    /// `nil` or `0` means no NodePort.
    public var nodePort: Int?

    public init(
        name: String = "", protocol: String = "TCP", port: Int, targetPort: IntOrString? = nil, nodePort: Int? = nil
    ) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
        self.targetPort = targetPort
        self.nodePort = nodePort
    }

    /// The protocol if it is one kube-proxy knows.
    public var transportProtocol: TransportProtocol? { TransportProtocol(rawValue: self.protocol) }

    enum CodingKeys: String, CodingKey { case name, `protocol`, port, targetPort, nodePort }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        self.protocol = try c.decodeIfPresent(String.self, forKey: .protocol) ?? TransportProtocol.tcp.rawValue
        port = try c.decodeIfPresent(Int.self, forKey: .port) ?? 0
        targetPort = try c.decodeIfPresent(IntOrString.self, forKey: .targetPort)
        nodePort = try c.decodeIfPresent(Int.self, forKey: .nodePort)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeUnlessEmpty(name, forKey: .name)
        try c.encode(self.protocol, forKey: .protocol)
        try c.encode(port, forKey: .port)
        try c.encodeIfPresent(targetPort, forKey: .targetPort)
        try c.encodeIfPresent(nodePort, forKey: .nodePort)
    }
}

/// `spec.sessionAffinityConfig`.
public struct SessionAffinityConfig: Codable, Hashable, Sendable {
    public var clientIP: ClientIPConfig?

    public init(clientIP: ClientIPConfig? = nil) {
        self.clientIP = clientIP
    }
}

/// `spec.sessionAffinityConfig.clientIP`.
public struct ClientIPConfig: Codable, Hashable, Sendable {
    public var timeoutSeconds: Int?

    public init(timeoutSeconds: Int? = nil) {
        self.timeoutSeconds = timeoutSeconds
    }
}

/// `Service.status`.
public struct ServiceStatus: Codable, Hashable, Sendable {
    public var loadBalancer: LoadBalancerStatus

    public init(loadBalancer: LoadBalancerStatus = LoadBalancerStatus()) {
        self.loadBalancer = loadBalancer
    }

    enum CodingKeys: String, CodingKey { case loadBalancer }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        loadBalancer = try c.decodeIfPresent(LoadBalancerStatus.self, forKey: .loadBalancer) ?? LoadBalancerStatus()
    }
}

/// `status.loadBalancer`.
public struct LoadBalancerStatus: Codable, Hashable, Sendable {
    public var ingress: [LoadBalancerIngress]

    public init(ingress: [LoadBalancerIngress] = []) {
        self.ingress = ingress
    }

    enum CodingKeys: String, CodingKey { case ingress }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ingress = try c.decodeList(forKey: .ingress)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeUnlessEmpty(ingress, forKey: .ingress)
    }
}

/// One `status.loadBalancer.ingress` entry.
public struct LoadBalancerIngress: Codable, Hashable, Sendable {
    public var ip: String?
    public var hostname: String?
    /// `VIP` (or absent) is programmed; `Proxy` is not (A.2, A.7).
    public var ipMode: String?

    public init(ip: String? = nil, hostname: String? = nil, ipMode: String? = nil) {
        self.ip = ip
        self.hostname = hostname
        self.ipMode = ipMode
    }
}

// MARK: - EndpointSlice

/// A discovery.k8s.io/v1 EndpointSlice.
public struct EndpointSlice: Codable, Hashable, Sendable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    /// `IPv4`, `IPv6` or `FQDN`; `""` when absent (e.g. in a BOOKMARK).
    public var addressType: String
    public var endpoints: [Endpoint]
    public var ports: [EndpointPort]

    public init(
        metadata: ObjectMeta, addressType: String, endpoints: [Endpoint] = [], ports: [EndpointPort] = [],
        apiVersion: String? = "discovery.k8s.io/v1", kind: String? = "EndpointSlice"
    ) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.metadata = metadata
        self.addressType = addressType
        self.endpoints = endpoints
        self.ports = ports
    }

    /// The owning Service's name from the `kubernetes.io/service-name` label (A.3(2)).
    public var serviceName: String? {
        guard let name = metadata.labels[WellKnown.serviceNameLabel], !name.isEmpty else { return nil }
        return name
    }

    enum CodingKeys: String, CodingKey { case apiVersion, kind, metadata, addressType, endpoints, ports }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        apiVersion = try c.decodeIfPresent(String.self, forKey: .apiVersion)
        kind = try c.decodeIfPresent(String.self, forKey: .kind)
        metadata = try c.decodeIfPresent(ObjectMeta.self, forKey: .metadata) ?? ObjectMeta()
        addressType = try c.decodeIfPresent(String.self, forKey: .addressType) ?? ""
        endpoints = try c.decodeList(forKey: .endpoints)
        ports = try c.decodeList(forKey: .ports)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(apiVersion, forKey: .apiVersion)
        try c.encodeIfPresent(kind, forKey: .kind)
        try c.encode(metadata, forKey: .metadata)
        try c.encode(addressType, forKey: .addressType)
        // Not omitempty in the API: an empty slice says `null`.
        if endpoints.isEmpty {
            try c.encodeNil(forKey: .endpoints)
        } else {
            try c.encode(endpoints, forKey: .endpoints)
        }
        if ports.isEmpty { try c.encodeNil(forKey: .ports) } else { try c.encode(ports, forKey: .ports) }
    }
}

/// One endpoint of a slice.
public struct Endpoint: Codable, Hashable, Sendable {
    /// Only `addresses[0]` is used (A.3(5)).
    public var addresses: [String]
    public var conditions: EndpointConditions
    public var nodeName: String?
    /// Unused by the proxy (A.3(5)); kept for display.
    public var zone: String?
    public var hints: EndpointHints?

    public init(
        addresses: [String], conditions: EndpointConditions = EndpointConditions(), nodeName: String? = nil,
        zone: String? = nil, hints: EndpointHints? = nil
    ) {
        self.addresses = addresses
        self.conditions = conditions
        self.nodeName = nodeName
        self.zone = zone
        self.hints = hints
    }

    enum CodingKeys: String, CodingKey { case addresses, conditions, nodeName, zone, hints }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        addresses = try c.decodeList(forKey: .addresses)
        conditions = try c.decodeIfPresent(EndpointConditions.self, forKey: .conditions) ?? EndpointConditions()
        nodeName = try c.decodeIfPresent(String.self, forKey: .nodeName)
        zone = try c.decodeIfPresent(String.self, forKey: .zone)
        hints = try c.decodeIfPresent(EndpointHints.self, forKey: .hints)
    }
}

/// Endpoint conditions; `nil` means the API default (A.3(6)): ready and serving true,
/// terminating false.
public struct EndpointConditions: Codable, Hashable, Sendable {
    public var ready: Bool?
    public var serving: Bool?
    public var terminating: Bool?

    public init(ready: Bool? = nil, serving: Bool? = nil, terminating: Bool? = nil) {
        self.ready = ready
        self.serving = serving
        self.terminating = terminating
    }
}

/// Topology hints of an endpoint.
public struct EndpointHints: Codable, Hashable, Sendable {
    public var forZones: [ForZone]
    public var forNodes: [ForNode]

    public init(forZones: [ForZone] = [], forNodes: [ForNode] = []) {
        self.forZones = forZones
        self.forNodes = forNodes
    }

    enum CodingKeys: String, CodingKey { case forZones, forNodes }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        forZones = try c.decodeList(forKey: .forZones)
        forNodes = try c.decodeList(forKey: .forNodes)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeUnlessEmpty(forZones, forKey: .forZones)
        try c.encodeUnlessEmpty(forNodes, forKey: .forNodes)
    }
}

/// `hints.forZones[]`.
public struct ForZone: Codable, Hashable, Sendable {
    public var name: String

    public init(name: String) {
        self.name = name
    }

    enum CodingKeys: String, CodingKey { case name }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
    }
}

/// `hints.forNodes[]`.
public struct ForNode: Codable, Hashable, Sendable {
    public var name: String

    public init(name: String) {
        self.name = name
    }

    enum CodingKeys: String, CodingKey { case name }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
    }
}

/// One port of a slice. `name: nil` and `name: ""` differ (A.3(4)).
public struct EndpointPort: Codable, Hashable, Sendable {
    public var name: String?
    public var port: Int?
    /// Raw protocol; `"TCP"` when absent (API default).
    public var `protocol`: String

    public init(name: String?, port: Int?, protocol: String = "TCP") {
        self.name = name
        self.port = port
        self.protocol = `protocol`
    }

    /// The protocol if it is one kube-proxy knows.
    public var transportProtocol: TransportProtocol? { TransportProtocol(rawValue: self.protocol) }

    enum CodingKeys: String, CodingKey { case name, port, `protocol` }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        port = try c.decodeIfPresent(Int.self, forKey: .port)
        self.protocol = try c.decodeIfPresent(String.self, forKey: .protocol) ?? TransportProtocol.tcp.rawValue
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        // `name` is a pointer in the API: keep nil and "" apart.
        if let name { try c.encode(name, forKey: .name) }
        try c.encodeIfPresent(port, forKey: .port)
        try c.encode(self.protocol, forKey: .protocol)
    }
}

// MARK: - Node

/// A core/v1 Node (this proxy's own node: labels for topology, addresses, podCIDRs).
public struct Node: Codable, Hashable, Sendable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta
    public var spec: NodeSpec
    public var status: NodeStatus

    public init(
        metadata: ObjectMeta, spec: NodeSpec = NodeSpec(), status: NodeStatus = NodeStatus(),
        apiVersion: String? = "v1", kind: String? = "Node"
    ) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    enum CodingKeys: String, CodingKey { case apiVersion, kind, metadata, spec, status }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        apiVersion = try c.decodeIfPresent(String.self, forKey: .apiVersion)
        kind = try c.decodeIfPresent(String.self, forKey: .kind)
        metadata = try c.decodeIfPresent(ObjectMeta.self, forKey: .metadata) ?? ObjectMeta()
        spec = try c.decodeIfPresent(NodeSpec.self, forKey: .spec) ?? NodeSpec()
        status = try c.decodeIfPresent(NodeStatus.self, forKey: .status) ?? NodeStatus()
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(apiVersion, forKey: .apiVersion)
        try c.encodeIfPresent(kind, forKey: .kind)
        try c.encode(metadata, forKey: .metadata)
        try c.encode(spec, forKey: .spec)
        try c.encode(status, forKey: .status)
    }
}

/// `Node.spec`.
public struct NodeSpec: Codable, Hashable, Sendable {
    public var podCIDR: String?
    public var podCIDRs: [String]
    public var taints: [Taint]

    public init(podCIDR: String? = nil, podCIDRs: [String] = [], taints: [Taint] = []) {
        self.podCIDR = podCIDR
        self.podCIDRs = podCIDRs
        self.taints = taints
    }

    enum CodingKeys: String, CodingKey { case podCIDR, podCIDRs, taints }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        podCIDR = try c.decodeIfPresent(String.self, forKey: .podCIDR)
        podCIDRs = try c.decodeList(forKey: .podCIDRs)
        taints = try c.decodeList(forKey: .taints)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(podCIDR, forKey: .podCIDR)
        try c.encodeUnlessEmpty(podCIDRs, forKey: .podCIDRs)
        try c.encodeUnlessEmpty(taints, forKey: .taints)
    }
}

/// `Node.spec.taints[]`.
public struct Taint: Codable, Hashable, Sendable {
    public var key: String
    public var value: String?
    public var effect: String

    public init(key: String, value: String? = nil, effect: String) {
        self.key = key
        self.value = value
        self.effect = effect
    }

    enum CodingKeys: String, CodingKey { case key, value, effect }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        key = try c.decodeIfPresent(String.self, forKey: .key) ?? ""
        value = try c.decodeIfPresent(String.self, forKey: .value)
        effect = try c.decodeIfPresent(String.self, forKey: .effect) ?? ""
    }
}

/// `Node.status`.
public struct NodeStatus: Codable, Hashable, Sendable {
    public var addresses: [NodeAddress]

    public init(addresses: [NodeAddress] = []) {
        self.addresses = addresses
    }

    enum CodingKeys: String, CodingKey { case addresses }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        addresses = try c.decodeList(forKey: .addresses)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeUnlessEmpty(addresses, forKey: .addresses)
    }
}

/// `Node.status.addresses[]`: type `InternalIP`, `ExternalIP`, `Hostname`, ….
public struct NodeAddress: Codable, Hashable, Sendable {
    public var type: String
    public var address: String

    public init(type: String, address: String) {
        self.type = type
        self.address = address
    }

    enum CodingKeys: String, CodingKey { case type, address }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decodeIfPresent(String.self, forKey: .type) ?? ""
        address = try c.decodeIfPresent(String.self, forKey: .address) ?? ""
    }
}

// MARK: - Lenient coding helpers

extension KeyedDecodingContainer {
    /// A list that may be absent or `null` (both mean empty).
    func decodeList<T: Decodable>(forKey key: Key) throws -> [T] {
        try decodeIfPresent([T].self, forKey: key) ?? []
    }
}

extension KeyedEncodingContainer {
    mutating func encodeUnlessEmpty<T: Encodable & Collection>(_ value: T, forKey key: Key) throws {
        if !value.isEmpty { try encode(value, forKey: key) }
    }
}
