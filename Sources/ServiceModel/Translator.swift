// Service + EndpointSlice → LoadBalancerPlan, following kube-proxy's semantics rule by rule
// (kube-proxy-semantics.md §A). Pure and deterministic: the same inputs in any order give the
// same plan. Section references such as `A.4(3)` point into that document.

/// Turns Services and EndpointSlices into the load-balancer plan of one node.
public enum Translator {
    /// Builds the plan for `node`. Each family in `options.ipFamilies` is translated
    /// independently, as kube-proxy runs one proxier per family (A.1(4)).
    public static func plan(
        services: [Service], endpointSlices: [EndpointSlice], node: ProxyNode, options: TranslationOptions
    ) -> TranslationResult {
        var diagnostics = Diagnostics()
        checkOptions(options, diagnostics: &diagnostics)

        let services = latestServices(services, diagnostics: &diagnostics)
        let slices = latestSlices(endpointSlices)

        var frontends: [Frontend] = []
        var healthChecks: [String: HealthCheck] = [:]
        for family in options.ipFamilies.sorted() {
            let endpointsMap = buildEndpointsMap(
                slices, family: family, node: node, options: options, diagnostics: &diagnostics)
            let localReady = localReadyIPs(endpointsMap)
            for service in services {
                guard let info = ServiceInfo(service, family: family, diagnostics: &diagnostics) else { continue }
                for port in info.ports {
                    let endpoints =
                        endpointsMap[PortKey(service: info.key, portName: port.name, protocol: port.protocol)] ?? []
                    frontends += makeFrontends(info, port, endpoints: endpoints, node: node, options: options)
                }
                // A.10: one listener per Service; N = distinct local ready IPs over all of the
                // Service's endpoint ports. Families are counted separately, as kube-proxy's
                // per-family proxiers do; with two families the larger count is reported.
                if let hcPort = info.healthCheckNodePort {
                    let count = localReady[info.key]?.count ?? 0
                    let previous = healthChecks[info.key]?.localEndpoints ?? 0
                    healthChecks[info.key] = HealthCheck(
                        service: info.key, port: hcPort, localEndpoints: max(previous, count))
                }
            }
        }
        reportConflicts(frontends, diagnostics: &diagnostics)
        return TranslationResult(
            plan: LoadBalancerPlan(frontends: frontends, healthChecks: Array(healthChecks.values)),
            diagnostics: diagnostics.sorted)
    }

    // MARK: - A.1 Which Services are proxied

    /// Drops Services owned by another proxy (A.1(1)); when the same namespace/name appears
    /// twice, the later one replaces the earlier (like a watch update). Sorted by key.
    static func latestServices(_ services: [Service], diagnostics: inout Diagnostics) -> [Service] {
        // One Service (the controller translates them one at a time): nothing to replace.
        if services.count == 1 {
            return services[0].metadata.labels[WellKnown.serviceProxyNameLabel] != nil ? [] : services
        }
        var byKey: [String: Service] = [:]
        for service in services {
            let key = objectKey(service.metadata)
            if byKey[key] != nil {
                diagnostics.add("Service \(key)", "metadata.name", "duplicate Service; the later one is used")
            }
            byKey[key] = service
        }
        return byKey.keys.sorted().compactMap { key in
            let service = byKey[key]!
            // A.1(1): kube-proxy's label selector never lets it see these.
            return service.metadata.labels[WellKnown.serviceProxyNameLabel] != nil ? nil : service
        }
    }

    /// Slices visible to kube-proxy (A.1(1): not headless, not another proxy's), one per
    /// namespace/name (the later replaces the earlier, A.3(3)), sorted by namespace/name so
    /// that "last processed wins" (A.3(8)) is deterministic.
    static func latestSlices(_ slices: [EndpointSlice]) -> [EndpointSlice] {
        func visible(_ slice: EndpointSlice) -> Bool {
            let labels = slice.metadata.labels
            return labels[WellKnown.headlessLabel] == nil && labels[WellKnown.serviceProxyNameLabel] == nil
        }
        // One slice (the usual Service): nothing to replace or order.
        if slices.count == 1 { return visible(slices[0]) ? slices : [] }
        var byKey: [String: EndpointSlice] = [:]
        var unnamed: [EndpointSlice] = []
        for slice in slices where visible(slice) {
            if slice.metadata.name.isEmpty { unnamed.append(slice) } else { byKey[objectKey(slice.metadata)] = slice }
        }
        return byKey.keys.sorted().map { byKey[$0]! } + unnamed
    }

    static func objectKey(_ meta: ObjectMeta) -> String {
        "\(meta.namespace.isEmpty ? "default" : meta.namespace)/\(meta.name)"
    }

    // MARK: - A.2 Per-ServicePort attributes

    /// One `spec.ports` entry, validated.
    struct PortInfo {
        var name: String
        var `protocol`: TransportProtocol
        var port: UInt16
        var nodePort: UInt16  // 0 = none
    }

    /// A Service as seen by the proxier of one family (A.1(4), A.2).
    struct ServiceInfo {
        var key: String
        var clusterIP: IPAddress
        var ports: [PortInfo]
        var externalIPs: [IPAddress]
        var loadBalancerVIPs: [IPAddress]
        var sourceRanges: [CIDR]
        var affinitySeconds: UInt32
        var externalPolicyLocal: Bool
        var internalPolicyLocal: Bool
        var healthCheckNodePort: UInt16?

        /// `nil` when the Service is skipped for this family (A.1(2)–(4)).
        init?(_ service: Service, family: IPFamily, diagnostics: inout Diagnostics) {
            let spec = service.spec
            // Built only for a diagnostic: most Services never need it.
            var object: String { "Service \(Translator.objectKey(service.metadata))" }

            // A.1(2): headless. A.1(3): ExternalName, even with a clusterIP.
            guard let primaryIP = spec.clusterIP, !primaryIP.isEmpty, primaryIP != "None" else { return nil }
            let type = spec.type ?? "ClusterIP"
            if type == "ExternalName" { return nil }

            // A.1(4): the family's ClusterIP.
            let field: String
            let text: String
            if !spec.ipFamilies.isEmpty {
                guard let index = spec.ipFamilies.firstIndex(of: family.rawValue) else { return nil }
                guard index < spec.clusterIPs.count else {
                    diagnostics.add(
                        object, "spec.clusterIPs", "no clusterIPs[\(index)] for ipFamilies[\(index)] \(family)")
                    return nil
                }
                field = "spec.clusterIPs[\(index)]"
                text = spec.clusterIPs[index]
            } else {
                // Version skew: only spec.clusterIP, used if it is of this family.
                guard let ip = IPAddress(sloppy: primaryIP) else {
                    diagnostics.add(object, "spec.clusterIP", "unparsable clusterIP \"\(primaryIP)\"")
                    return nil
                }
                guard ip.family == family else { return nil }
                field = "spec.clusterIP"
                text = primaryIP
            }
            key = Translator.objectKey(service.metadata)
            guard let ip = IPAddress(sloppy: text) else {
                diagnostics.add(object, field, "unparsable clusterIP \"\(text)\"; Service not proxied for \(family)")
                return nil
            }
            guard ip.family == family else {
                diagnostics.add(object, field, "clusterIP \(ip) is not \(family); Service not proxied for \(family)")
                return nil
            }
            clusterIP = ip

            // A.2 externalIPs: unparsable/empty strings silently dropped, then family-filtered.
            externalIPs = Translator.unique(
                spec.externalIPs.compactMap { IPAddress(sloppy: $0) }.filter { $0.family == family })

            // A.2 loadBalancerVIPs: ip set, family F, ipMode unset or VIP. Proxy and hostname-only
            // entries are not programmed (A.7).
            var vips: [IPAddress] = []
            for (index, ingress) in service.status.loadBalancer.ingress.enumerated() {
                guard let text = ingress.ip, !text.isEmpty else { continue }
                guard ingress.ipMode == nil || ingress.ipMode == "VIP" else { continue }
                guard let vip = IPAddress(sloppy: text) else {
                    diagnostics.add(object, "status.loadBalancer.ingress[\(index)].ip", "unparsable IP \"\(text)\"")
                    continue
                }
                if vip.family == family { vips.append(vip) }
            }
            loadBalancerVIPs = Translator.unique(vips)

            // A.2 loadBalancerSourceRanges: trimmed, unparsable dropped, family-filtered.
            var ranges: [CIDR] = []
            for (index, text) in spec.loadBalancerSourceRanges.enumerated() {
                guard let cidr = CIDR(sloppy: text) else {
                    diagnostics.add(
                        object, "spec.loadBalancerSourceRanges[\(index)]", "unparsable CIDR \"\(text)\"; ignored")
                    continue
                }
                if cidr.family == family { ranges.append(cidr) }
            }
            sourceRanges = Translator.unique(ranges)

            // A.2/A.8 session affinity; API default timeout 10800 s, valid range 1...86400.
            if spec.sessionAffinity == "ClientIP" {
                let timeout = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10800
                if (1...86400).contains(timeout) {
                    affinitySeconds = UInt32(timeout)
                } else {
                    diagnostics.add(
                        object, "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        "timeout \(timeout) outside 1...86400; using 10800")
                    affinitySeconds = 10800
                }
            } else {
                affinitySeconds = 0
            }

            // A.2 ports. kube-proxy keys by (name, protocol): a repeated key replaces the earlier.
            var ports: [PortInfo] = []
            for (index, port) in spec.ports.enumerated() {
                let field = "spec.ports[\(index)]"
                guard let proto = port.transportProtocol else {
                    diagnostics.add(object, field + ".protocol", "unknown protocol \"\(port.protocol)\"; port ignored")
                    continue
                }
                guard (1...65535).contains(port.port) else {
                    diagnostics.add(object, field + ".port", "port \(port.port) outside 1...65535; port ignored")
                    continue
                }
                var nodePort: UInt16 = 0
                if let value = port.nodePort, value != 0 {
                    if (1...65535).contains(value) {
                        nodePort = UInt16(value)
                    } else {
                        diagnostics.add(object, field + ".nodePort", "nodePort \(value) outside 1...65535; ignored")
                    }
                }
                let info = PortInfo(name: port.name, protocol: proto, port: UInt16(port.port), nodePort: nodePort)
                if let existing = ports.firstIndex(where: { $0.name == info.name && $0.protocol == info.protocol }) {
                    diagnostics.add(
                        object, field + ".name", "duplicate port \"\(info.name)\"/\(proto); the later one is used")
                    ports.remove(at: existing)
                }
                ports.append(info)
            }
            self.ports = ports

            // A.2 traffic policies. eTP only counts when the type makes the Service externally
            // accessible (LoadBalancer, NodePort, or ClusterIP with spec.externalIPs).
            let externallyAccessibleByType =
                type == "LoadBalancer" || type == "NodePort" || (type == "ClusterIP" && !spec.externalIPs.isEmpty)
            externalPolicyLocal = spec.externalTrafficPolicy == "Local" && externallyAccessibleByType
            internalPolicyLocal = spec.internalTrafficPolicy == "Local"

            // A.2 healthCheckNodePort: only LoadBalancer with eTP=Local; 0 ⇒ error, none served.
            healthCheckNodePort = nil
            if type == "LoadBalancer" && externalPolicyLocal {
                let value = spec.healthCheckNodePort ?? 0
                if (1...65535).contains(value) {
                    healthCheckNodePort = UInt16(value)
                } else {
                    diagnostics.add(
                        object, "spec.healthCheckNodePort",
                        "eTP=Local LoadBalancer without a valid healthCheckNodePort (\(value)); no health check served")
                }
            }
        }

        /// A.2 `externallyAccessible`, per family on the filtered lists.
        func externallyAccessible(_ port: PortInfo) -> Bool {
            port.nodePort != 0 || !loadBalancerVIPs.isEmpty || !externalIPs.isEmpty
        }
    }

    // MARK: - A.3 Endpoints per ServicePort

    /// kube-proxy's ServicePort key: (namespace/name, port name, protocol).
    struct PortKey: Hashable {
        var service: String
        var portName: String
        var `protocol`: TransportProtocol
    }

    /// One endpoint of one ServicePort, with the conditions resolved (A.3(6)).
    struct EndpointInfo {
        var backend: Backend
        var ready: Bool
        var serving: Bool
        var terminating: Bool
        var zoneHints: Set<String>
        var nodeHints: Set<String>

        var isServingTerminating: Bool { serving && terminating }
        var isLocal: Bool { backend.isLocal }
    }

    /// Endpoints of every ServicePort for one family, de-duplicated and sorted (A.3).
    static func buildEndpointsMap(
        _ slices: [EndpointSlice], family: IPFamily, node: ProxyNode, options: TranslationOptions,
        diagnostics: inout Diagnostics
    ) -> [PortKey: [EndpointInfo]] {
        // Keyed by address and port: the same identity as the IP:port text, without
        // formatting it for every endpoint.
        struct EndpointID: Hashable {
            var address: IPAddress
            var port: UInt16
        }
        var sets: [PortKey: [EndpointID: EndpointInfo]] = [:]
        for slice in slices {
            // Built only for a diagnostic: most slices never need it.
            var object: String { "EndpointSlice \(objectKey(slice.metadata))" }
            // A.3(1): only slices of this family; FQDN (and anything else) is ignored.
            guard slice.addressType == family.rawValue else {
                switch slice.addressType {
                case "IPv4", "IPv6", "FQDN": break
                default:
                    diagnostics.add(
                        object, "addressType", "unknown addressType \"\(slice.addressType)\"; slice ignored")
                }
                continue
            }
            // A.3(2): association by label only.
            guard let serviceName = slice.serviceName else {
                diagnostics.add(object, "metadata.labels", "no \(WellKnown.serviceNameLabel) label; slice ignored")
                continue
            }
            let serviceKey = "\(slice.metadata.namespace.isEmpty ? "default" : slice.metadata.namespace)/\(serviceName)"

            // A.3(5): addresses[0] of each endpoint, canonicalised.
            var endpoints: [(index: Int, ip: IPAddress, endpoint: Endpoint)] = []
            for (index, endpoint) in slice.endpoints.enumerated() {
                guard let text = endpoint.addresses.first else {
                    diagnostics.add(object, "endpoints[\(index)].addresses", "endpoint without addresses; ignored")
                    continue
                }
                guard let ip = IPAddress(sloppy: text) else {
                    diagnostics.add(
                        object, "endpoints[\(index)].addresses[0]", "unparsable IP \"\(text)\"; endpoint ignored")
                    continue
                }
                guard ip.family == family else {
                    diagnostics.add(
                        object, "endpoints[\(index)].addresses[0]", "\(ip) is not \(family); endpoint ignored")
                    continue
                }
                endpoints.append((index, ip, endpoint))
            }

            // A.3(4): each slice port binds to the ServicePort (service, name, protocol).
            for (index, port) in slice.ports.enumerated() {
                guard let name = port.name else {
                    diagnostics.add(object, "ports[\(index)].name", "port with nil name; ignored")
                    continue
                }
                guard let number = port.port, number != 0 else {
                    diagnostics.add(object, "ports[\(index)].port", "port is nil or 0; ignored")
                    continue
                }
                guard (1...65535).contains(number) else {
                    diagnostics.add(object, "ports[\(index)].port", "port \(number) outside 1...65535; ignored")
                    continue
                }
                guard let proto = port.transportProtocol else {
                    diagnostics.add(
                        object, "ports[\(index)].protocol", "unknown protocol \"\(port.protocol)\"; ignored")
                    continue
                }
                let key = PortKey(service: serviceKey, portName: name, protocol: proto)
                var set = sets[key] ?? [:]
                for (_, ip, endpoint) in endpoints {
                    let conditions = endpoint.conditions
                    // A.3(10): locality by nodeName string equality only.
                    let isLocal = !node.name.isEmpty && endpoint.nodeName == node.name
                    let info = EndpointInfo(
                        backend: Backend(address: ip, port: UInt16(number), isLocal: isLocal),
                        ready: conditions.ready ?? true,  // A.3(6) defaults
                        serving: conditions.serving ?? true,
                        terminating: conditions.terminating ?? false,
                        // A.3(7): empty list ⇒ no hint; node hints only with the gate.
                        zoneHints: Set((endpoint.hints?.forZones ?? []).map(\.name)),
                        nodeHints: options.preferSameTrafficDistribution
                            ? Set((endpoint.hints?.forNodes ?? []).map(\.name)) : [])
                    // A.3(8): de-duplicate by IP:port; a non-terminating occurrence replaces
                    // whatever was there, a terminating one only fills a gap.
                    let id = EndpointID(address: ip, port: info.backend.port)
                    if set[id] == nil || !info.terminating { set[id] = info }
                }
                sets[key] = set
            }
        }
        // A.3(9): sorted by the IP:port string (`Backend`'s order; the IP:ports are unique).
        return sets.mapValues { set in Backend.sortedByText(set.values, \.backend) }
    }

    /// A.10: per Service, the distinct IPs of local, ready endpoints over every endpoint port
    /// (serving-terminating endpoints never count).
    static func localReadyIPs(_ map: [PortKey: [EndpointInfo]]) -> [String: Set<IPAddress>] {
        var ips: [String: Set<IPAddress>] = [:]
        for (key, endpoints) in map {
            for endpoint in endpoints where endpoint.ready && endpoint.isLocal {
                ips[key.service, default: []].insert(endpoint.backend.address)
            }
        }
        return ips
    }

    // MARK: - A.4 Categorising endpoints

    /// Output of kube-proxy's `CategorizeEndpoints`.
    struct Categories {
        /// `nil` if the ServicePort never uses Cluster policy.
        var cluster: [Backend]?
        /// `nil` if the ServicePort never uses Local policy.
        var local: [Backend]?
        var hasAnyEndpoints: Bool
    }

    enum TopologyMode { case none, preferSameNode, preferSameZone }

    static func categorize(
        _ endpoints: [EndpointInfo], usesCluster: Bool, usesLocal: Bool, node: ProxyNode, options: TranslationOptions
    ) -> Categories {
        // A.4(1)
        guard !endpoints.isEmpty else { return Categories(cluster: nil, local: nil, hasAnyEndpoints: false) }
        var result = Categories(cluster: nil, local: nil, hasAnyEndpoints: false)

        if usesCluster {
            let ready = endpoints.filter(\.ready)
            // A.4(2.1): topology mode from ready endpoints only.
            var mode = TopologyMode.none
            if !ready.isEmpty {
                if options.preferSameTrafficDistribution && ready.allSatisfy({ !$0.nodeHints.isEmpty })
                    && !node.name.isEmpty && ready.contains(where: { $0.nodeHints.contains(node.name) })
                {
                    mode = .preferSameNode
                } else if let zone = node.zone, ready.allSatisfy({ !$0.zoneHints.isEmpty }),
                    ready.contains(where: { $0.zoneHints.contains(zone) })
                {
                    mode = .preferSameZone
                }
            }
            // A.4(2.2)
            var cluster: [EndpointInfo]
            switch mode {
            case .none: cluster = ready
            case .preferSameNode: cluster = ready.filter { $0.nodeHints.contains(node.name) }
            case .preferSameZone: cluster = ready.filter { $0.zoneHints.contains(node.zone ?? "") }
            }
            // A.4(2.3): fall back to every serving-terminating endpoint, topology not applied.
            if cluster.isEmpty { cluster = endpoints.filter(\.isServingTerminating) }
            // A.4(2.4)
            result.hasAnyEndpoints = !cluster.isEmpty
            result.cluster = cluster.map(\.backend)
        }

        // A.4(3)
        guard usesLocal else { return result }

        // A.4(4): Local set, no topology; ready first, else serving-terminating (independent of
        // the Cluster fallback). Any usable endpoint anywhere makes hasAnyEndpoints true,
        // which turns "no local endpoint" into DROP rather than REJECT.
        var hasLocalReady = false
        var hasLocalServingTerminating = false
        for endpoint in endpoints {
            if endpoint.ready {
                result.hasAnyEndpoints = true
                if endpoint.isLocal { hasLocalReady = true }
            } else if endpoint.isServingTerminating {
                result.hasAnyEndpoints = true
                if endpoint.isLocal { hasLocalServingTerminating = true }
            }
        }
        if hasLocalReady {
            result.local = endpoints.filter { $0.isLocal && $0.ready }.map(\.backend)
        } else if hasLocalServingTerminating {
            result.local = endpoints.filter { $0.isLocal && $0.isServingTerminating }.map(\.backend)
        } else {
            result.local = []
        }
        return result
    }

    // MARK: - A.5/A.6 Frontends and verdicts

    static func makeFrontends(
        _ info: ServiceInfo, _ port: PortInfo, endpoints: [EndpointInfo], node: ProxyNode, options: TranslationOptions
    ) -> [Frontend] {
        let family = info.clusterIP.family
        let externallyAccessible = info.externallyAccessible(port)
        // A.2 usesClusterEndpoints / usesLocalEndpoints.
        let usesCluster = !info.internalPolicyLocal || externallyAccessible
        let usesLocal = info.internalPolicyLocal || (info.externalPolicyLocal && externallyAccessible)
        let categories = categorize(
            endpoints, usesCluster: usesCluster, usesLocal: usesLocal, node: node, options: options)
        // Both already in A.3(9) order: categorize only filters the sorted endpoints, so
        // they are not sorted again below.
        let cluster = categories.cluster ?? []
        let local = categories.local ?? []
        let hasAny = categories.hasAnyEndpoints

        func frontend(_ kind: FrontendKind, _ address: IPAddress?, _ number: UInt16) -> Frontend {
            Frontend(
                service: info.key, portName: port.name, protocol: port.protocol, kind: kind, address: address,
                family: family, port: number, action: .reject, affinitySeconds: info.affinitySeconds)
        }

        var result: [Frontend] = []

        // ClusterIP: always programmed; internal policy, all sources alike (A.5, A.6).
        var clusterIP = frontend(.clusterIP, info.clusterIP, port.port)
        let internalSet = info.internalPolicyLocal ? local : cluster
        let hasInternal = hasAny && !(info.internalPolicyLocal && local.isEmpty)
        if hasInternal {
            clusterIP.action = .forward
            clusterIP.backends = internalSet
        } else {
            // A.6: no usable endpoint anywhere ⇒ REJECT; iTP=Local with usable endpoints only
            // elsewhere ⇒ DROP.
            clusterIP.action = hasAny ? .drop : .reject
        }
        result.append(clusterIP)

        // External frontends. A.5 programs them only when hasAnyEndpoints; without endpoints
        // A.6 still REJECTs traffic to them from any source. We read that as "the frontend
        // exists with action reject" rather than "not captured", so the datapath answers with
        // a reject instead of letting the packet route on (same outcome as kube-proxy's filter
        // rule).
        var external: [Frontend] = []
        if port.nodePort != 0 { external.append(frontend(.nodePort, nil, port.nodePort)) }
        external += info.externalIPs.map { frontend(.externalIP, $0, port.port) }

        // A.9: source ranges on LB VIPs only; if the node's own (primary) IP is inside one of
        // them, the VIPs themselves are allowed too (node traffic SNATed to a local VIP).
        var ranges = info.sourceRanges
        if !ranges.isEmpty, let nodeIP = node.primaryAddress(family), ranges.contains(where: { $0.contains(nodeIP) }) {
            ranges = unique(ranges + info.loadBalancerVIPs.map { CIDR(host: $0) })
        }
        external += info.loadBalancerVIPs.map { vip in
            var lb = frontend(.loadBalancer, vip, port.port)
            lb.sourceRanges = ranges.sorted()
            return lb
        }

        // A.5 external chain: eTP=Cluster ⇒ Cluster set. eTP=Local ⇒ outside traffic to the
        // Local set (DROP when empty, A.6), pod/host traffic short-circuited to the Cluster set
        // (`nodeBackends`).
        for var frontend in external {
            if hasAny {
                if info.externalPolicyLocal {
                    frontend.action = local.isEmpty ? .drop : .forward
                    frontend.backends = local
                    frontend.nodeBackends = cluster
                } else {
                    frontend.action = .forward
                    frontend.backends = cluster
                }
            }
            result.append(frontend)
        }
        return result
    }

    // MARK: - Checks

    /// A.12 configuration problems (the plan keeps `*`; see `LoadBalancerPlan.nodePortAddresses`).
    static func checkOptions(_ options: TranslationOptions, diagnostics: inout Diagnostics) {
        for (index, entry) in options.nodePortAddresses.enumerated() {
            if entry.trimmingWhitespace() == "primary" { continue }
            guard let cidr = CIDR(sloppy: entry) else {
                diagnostics.add(
                    "TranslationOptions", "nodePortAddresses[\(index)]", "unparsable CIDR \"\(entry)\"; ignored")
                continue
            }
            if cidr.prefixLength == cidr.family.bitWidth && cidr.address.isLoopback {
                diagnostics.add(
                    "TranslationOptions", "nodePortAddresses[\(index)]",
                    "loopback address \(cidr); NodePorts are never served on loopback")
            }
        }
    }

    /// Two Services claiming the same destination would fight over one datapath entry.
    static func reportConflicts(_ frontends: [Frontend], diagnostics: inout Diagnostics) {
        // One Service's frontends never conflict among themselves (the controller
        // translates Services one at a time).
        guard let first = frontends.first?.service, frontends.contains(where: { $0.service != first }) else { return }
        struct Destination: Hashable {
            /// nil for the NodePort `*` (the same identity as `addressString`).
            var address: IPAddress?
            var family: IPFamily
            var port: UInt16
            var `protocol`: TransportProtocol
        }
        var owners: [Destination: String] = [:]
        for frontend in frontends.sorted() {
            let destination = Destination(
                address: frontend.address, family: frontend.family, port: frontend.port,
                protocol: frontend.protocol)
            if let owner = owners[destination], owner != frontend.service {
                diagnostics.add(
                    "Service \(frontend.service)", "spec.ports",
                    "\(frontend.kind) \(frontend.addressString):\(frontend.port)/\(frontend.protocol) also used by \(owner)"
                )
            } else {
                owners[destination] = frontend.service
            }
        }
    }

    static func unique<T: Hashable>(_ values: [T]) -> [T] {
        var seen: Set<T> = []
        return values.filter { seen.insert($0).inserted }
    }
}

/// Collects diagnostics once each.
struct Diagnostics {
    private var entries: Set<Diagnostic> = []

    mutating func add(_ object: String, _ field: String, _ message: String) {
        entries.insert(Diagnostic(object: object, field: field, message: message))
    }

    var sorted: [Diagnostic] { entries.sorted() }
}
