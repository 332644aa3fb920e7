import ServiceModel

/// What the maps should hold for one frontend key: the unit the reconciler flips.
public struct DesiredFrontend: Hashable, Sendable {
    public var key: FrontendKey
    /// "namespace/name", for introspection, logs and metrics.
    public var service: String
    public var portName: String
    public var kind: FrontendKind
    public var flags: ServiceFlags
    public var affinitySeconds: UInt32
    /// Sorted and free of duplicates; the slot order.
    public var backends: [BackendAddress]
    /// loadBalancerSourceRanges (LoadBalancer frontends only).
    public var sourceRanges: [CIDR]

    public init(key: FrontendKey, service: String, portName: String = "", kind: FrontendKind, flags: ServiceFlags = [],
                affinitySeconds: UInt32 = 0, backends: [BackendAddress], sourceRanges: [CIDR] = []) {
        self.key = key
        self.service = service
        self.portName = portName
        self.kind = kind
        self.flags = flags
        self.affinitySeconds = affinitySeconds
        self.backends = Self.sortedUnique(backends)
        self.sourceRanges = Self.sortedUnique(sourceRanges)
    }

    /// Sorted, duplicates dropped; without building a Set per frontend.
    static func sortedUnique<T: Comparable>(_ values: [T]) -> [T] {
        var result = values.sorted()
        var last = 0
        for index in result.indices.dropFirst() where result[index] != result[last] {
            last += 1
            result[last] = result[index]
        }
        result.removeLast(result.isEmpty ? 0 : result.count - last - 1)
        return result
    }

    var meta: FrontendMeta { FrontendMeta(service: service, portName: portName) }

    /// The address standing for "every accepted node address" of a family (the NodePort
    /// `*` of the plan): the unspecified address.
    public static func wildcard(_ family: IPFamily) -> IPAddress {
        family == .v4 ? IPAddress(v4: 0) : IPAddress(v6: [UInt8](repeating: 0, count: 16))!
    }

    /// Everything a plan asks the maps to hold, one entry per frontend key:
    /// - each frontend's verdict and set for its `action`/`backends` (traffic from pods on
    ///   ClusterIPs, from outside the node on the other kinds), under the default scope;
    /// - for frontends with `nodeBackends` (externalTrafficPolicy=Local), the set used by
    ///   traffic from this node, under the node scope, flagged on the default entry.
    /// NodePort `*` frontends use the family's unspecified address.
    /// Two Services claiming one frontend key: the first in plan order (sorted by service)
    /// keeps it and the others are returned as `conflicts`.
    public static func frontends(from plan: LoadBalancerPlan) -> (frontends: [DesiredFrontend], conflicts: [String]) {
        var result: [FrontendKey: DesiredFrontend] = [:]
        var conflicts: [String] = []
        for frontend in plan.frontends where frontend.port != 0 {
            let address = frontend.address ?? wildcard(frontend.family)
            let key = FrontendKey(address: address, port: frontend.port, proto: frontend.protocol)
            if let owner = result[key] {
                conflicts.append("\(frontend.service) port \(frontend.portName): \(key) is already served for \(owner.service)")
                continue
            }
            var flags = ServiceFlags(frontend.action)
            if frontend.affinitySeconds > 0 { flags.insert(.affinity) }
            if frontend.nodeBackends != nil { flags.insert(.nodeScope) }
            // A.9: only LB VIPs are filtered (the translation left ranges on those alone).
            if frontend.kind == .loadBalancer && !frontend.sourceRanges.isEmpty { flags.insert(.sourceRanges) }
            let backends = frontend.action == .forward ? frontend.backends : []
            result[key] = DesiredFrontend(
                key: key, service: frontend.service, portName: frontend.portName, kind: frontend.kind, flags: flags,
                affinitySeconds: frontend.affinitySeconds,
                backends: backends.map { BackendAddress(address: $0.address, port: $0.port, proto: frontend.protocol) },
                sourceRanges: frontend.sourceRanges)
            if let nodeBackends = frontend.nodeBackends {
                var nodeKey = key
                nodeKey.scope = .node
                var nodeFlags: ServiceFlags = nodeBackends.isEmpty ? [.reject] : []
                if frontend.affinitySeconds > 0 { nodeFlags.insert(.affinity) }
                result[nodeKey] = DesiredFrontend(
                    key: nodeKey, service: frontend.service, portName: frontend.portName, kind: frontend.kind,
                    flags: nodeFlags, affinitySeconds: frontend.affinitySeconds,
                    backends: nodeBackends.map { BackendAddress(address: $0.address, port: $0.port, proto: frontend.protocol) })
            }
        }
        return (result.values.sorted { $0.key < $1.key }, conflicts)
    }

    /// The health-check listeners of a plan, keyed by port.
    public static func healthChecks(from plan: LoadBalancerPlan) -> [UInt16: HealthCheckEntry] {
        var result: [UInt16: HealthCheckEntry] = [:]
        for check in plan.healthChecks where result[check.port] == nil {
            result[check.port] = HealthCheckEntry(service: check.service, localEndpoints: UInt32(clamping: check.localEndpoints))
        }
        return result
    }
}

extension ServiceFlags {
    /// The verdict flags of a plan action.
    init(_ action: FrontendAction) {
        switch action {
        case .forward: self = []
        case .reject: self = [.reject]
        case .drop: self = [.drop]
        }
    }
}

extension MapState {
    /// The plan the maps serve, read back from their contents: the inverse of
    /// `DesiredFrontend.frontends(from:)` and `healthChecks(from:)`. After a reconcile it
    /// equals the plan that was programmed (`swiftlane dump` vs `swiftlane plan`).
    public var servedPlan: LoadBalancerPlan {
        func backendList(_ key: FrontendKey) -> [Backend] {
            activeBackends(of: key).map { Backend(address: $0.address, port: $0.port) }
        }
        var frontends: [Frontend] = []
        for (key, master) in masters where key.scope == .default {
            let meta = self.meta[key]
            let action: FrontendAction = master.flags.contains(.drop)
                ? .drop : (master.flags.contains(.reject) || master.count == 0 ? .reject : .forward)
            var nodeBackends: [Backend]?
            if master.flags.contains(.nodeScope) {
                var nodeKey = key
                nodeKey.scope = .node
                nodeBackends = backendList(nodeKey)
            }
            let wildcard = master.kind == .nodePort && key.address == DesiredFrontend.wildcard(key.address.family)
            frontends.append(Frontend(
                service: meta?.service ?? "(unknown)", portName: meta?.portName ?? "", protocol: key.proto, kind: master.kind,
                address: wildcard ? nil : key.address, family: key.address.family, port: key.port, action: action,
                backends: backendList(key), nodeBackends: nodeBackends, affinitySeconds: master.affinitySeconds,
                sourceRanges: sourceRanges.filter { $0.revNatID == master.revNatID }.map(\.cidr)))
        }
        let checks = healthChecks.map { HealthCheck(service: $0.value.service, port: $0.key, localEndpoints: Int($0.value.localEndpoints)) }
        return LoadBalancerPlan(frontends: frontends, healthChecks: checks)
    }
}
