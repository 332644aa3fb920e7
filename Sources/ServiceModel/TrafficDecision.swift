// The per-connection reading of a Frontend: which set a new connection from a given source
// uses, and whether it is SNATed (A.5 external chain, A.9 firewall, A.11 masquerade). The
// datapath implements the same rules in BPF; this is the reference it is tested against.

/// What happens to one new connection arriving at a frontend.
public struct TrafficDecision: Equatable, Sendable {
    public var action: FrontendAction
    /// The set to pick a backend from uniformly (empty unless `.forward`).
    public var backends: [Backend]
    /// SNAT to the node, before the hairpin rule (see `masquerades(source:to:)`).
    public var masquerade: Bool

    public init(action: FrontendAction, backends: [Backend] = [], masquerade: Bool = false) {
        self.action = action
        self.backends = backends
        self.masquerade = masquerade
    }

    /// Whether a connection from `source` forwarded to `backend` is SNATed: the decision's
    /// own rule, or hairpin (source is the chosen endpoint, A.11(3)).
    public func masquerades(source: IPAddress, to backend: Backend) -> Bool {
        masquerade || source == backend.address
    }
}

extension Frontend {
    /// The decision for a new connection from `source` (A.5, A.9, A.11).
    ///
    /// - Parameters:
    ///   - source: the client address.
    ///   - sourceIsNodeAddress: the connection originates on this host (a local address of the
    ///     node, including loopback), as opposed to a pod or a remote client.
    ///   - node: this node (its podCIDRs feed the `NodeCIDR` detector).
    ///   - options: detector choice, cluster CIDRs and `masqueradeAll`.
    public func decision(
        source: IPAddress, sourceIsNodeAddress: Bool, node: ProxyNode, options: TranslationOptions
    ) -> TrafficDecision {
        let isLocalPod = Frontend.detectLocalPod(source, family: family, node: node, options: options)

        if kind == .clusterIP {
            // A.5: iTP applies to every source alike. A.11(1): masqueradeAll, else SNAT traffic
            // the detector does not recognise as pod traffic; no detector ⇒ no SNAT.
            guard action == .forward else { return TrafficDecision(action: action) }
            let masquerade = options.masqueradeAll || isLocalPod == false
            return TrafficDecision(action: .forward, backends: backends, masquerade: masquerade)
        }

        // A.9: LB firewall first; pods are not special.
        if kind == .loadBalancer && !sourceRanges.isEmpty && !sourceRanges.contains(where: { $0.contains(source) }) {
            return TrafficDecision(action: .drop)
        }

        guard let nodeBackends else {
            // eTP=Cluster (or no endpoints: reject): A.11(2) always SNAT.
            guard action == .forward else { return TrafficDecision(action: action) }
            return TrafficDecision(action: .forward, backends: backends, masquerade: true)
        }

        // eTP=Local, A.5 external chain steps 1–3.
        if isLocalPod == true {
            return TrafficDecision(action: .forward, backends: nodeBackends, masquerade: false)
        }
        if sourceIsNodeAddress {
            return TrafficDecision(action: .forward, backends: nodeBackends, masquerade: true)
        }
        return TrafficDecision(action: action, backends: action == .forward ? backends : [], masquerade: false)
    }

    /// The local-traffic detector (A.11(1)): `nil` when none is configured for the family.
    static func detectLocalPod(
        _ source: IPAddress, family: IPFamily, node: ProxyNode, options: TranslationOptions
    ) -> Bool? {
        let cidrs: [CIDR]
        switch options.localTrafficDetection {
        case .clusterCIDR: cidrs = options.clusterCIDRs.filter { $0.family == family }
        case .nodeCIDR: cidrs = node.podCIDRs.filter { $0.family == family }
        }
        guard !cidrs.isEmpty else { return nil }
        return cidrs.contains { $0.contains(source) }
    }
}
