import ServiceModel

/// What the datapath should serve for one frontend key: the unit the reconciler flips.
public struct DesiredFrontend: Hashable, Sendable {
    public var key: FrontendKey
    /// "namespace/name", for logs and metrics.
    public var service: String
    public var portName: String
    public var kind: FrontendKind
    public var flags: ServiceFlags
    public var affinitySeconds: UInt32
    /// Sorted and free of duplicates; the slot order.
    public var backends: [BackendAddress]

    public init(key: FrontendKey, service: String, portName: String = "", kind: FrontendKind, flags: ServiceFlags = [],
                affinitySeconds: UInt32 = 0, backends: [BackendAddress]) {
        self.key = key
        self.service = service
        self.portName = portName
        self.kind = kind
        self.flags = flags
        self.affinitySeconds = affinitySeconds
        self.backends = Array(Set(backends)).sorted()
    }

    /// The frontends that socket-level load balancing serves for traffic from this node:
    /// every frontend with a concrete address (ClusterIP, externalIPs, LoadBalancer VIPs).
    /// External kinds use the node's own set (`nodeBackends`, the eTP=Local short-circuit)
    /// when the plan has one. NodePort wildcards are served by the tc/XDP datapath.
    public static func socketLoadBalancing(from plan: LoadBalancerPlan) -> [DesiredFrontend] {
        var result: [FrontendKey: DesiredFrontend] = [:]
        for frontend in plan.frontends {
            guard let address = frontend.address, frontend.port != 0 else { continue }
            let key = FrontendKey(address: address, port: frontend.port, proto: frontend.protocol)
            let chosen: [Backend]
            var action = frontend.action
            if frontend.kind != .clusterIP, let nodeBackends = frontend.nodeBackends {
                chosen = nodeBackends
                action = nodeBackends.isEmpty ? .reject : .forward
            } else {
                chosen = frontend.backends
            }
            var flags: ServiceFlags = []
            switch action {
            case .forward: if chosen.isEmpty { flags.insert(.reject) }
            case .reject: flags.insert(.reject)
            case .drop: flags.insert(.drop)
            }
            if frontend.affinitySeconds > 0 { flags.insert(.affinity) }
            let backends = action == .forward
                ? chosen.map { BackendAddress(address: $0.address, port: $0.port, proto: frontend.protocol) }
                : []
            // Two Services claiming one frontend: kube-proxy would program both and the
            // first rule wins; keep the first in plan order (sorted by service name) so the
            // choice is deterministic.
            if result[key] == nil {
                result[key] = DesiredFrontend(
                    key: key, service: frontend.service, portName: frontend.portName, kind: frontend.kind,
                    flags: flags, affinitySeconds: frontend.affinitySeconds, backends: backends)
            }
        }
        return result.values.sorted { $0.key < $1.key }
    }
}
