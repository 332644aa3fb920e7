import Foundation

/// One ClusterIP service port as kube-proxy would program it, for the peer datapaths.
struct PeerService {
    var namespace: String
    var name: String
    var portName: String
    var clusterIP: String
    var port: UInt16
    var proto: String            // "tcp" or "udp"
    var endpoints: [(ip: String, port: UInt16)]
}

/// kube-proxy's iptables layout (pkg/proxy/iptables/proxier.go): KUBE-SERVICES matches each
/// ClusterIP:port and jumps to KUBE-SVC-*, which marks off-cluster sources for masquerade
/// and picks an endpoint with `statistic --mode random --probability 1/(n-i)`; each
/// KUBE-SEP-* marks hairpin traffic and DNATs. Loaded with iptables-restore.
enum IptablesRules {
    static func chainSuffix(_ text: String) -> String {
        // kube-proxy: base32(sha256(...))[:16]; any stable 16-character name does here.
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        return String((0..<16).map { alphabet[Int((hash >> (UInt64($0) * 4 % 60)) & 31)] })
    }

    static func restoreInput(_ services: [PeerService], clusterCIDR: String) -> String {
        var chains = [":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]"]
        var rules = [
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
        ]
        rules.reserveCapacity(services.count * 12)
        for service in services {
            let portName = "\(service.namespace)/\(service.name):\(service.portName)"
            let svcChain = "KUBE-SVC-" + chainSuffix(portName + service.proto)
            chains.append(":\(svcChain) - [0:0]")
            rules.append("-A KUBE-SERVICES -d \(service.clusterIP)/32 -p \(service.proto) -m comment --comment \"\(portName) cluster IP\" -m \(service.proto) --dport \(service.port) -j \(svcChain)")
            rules.append("-A \(svcChain) ! -s \(clusterCIDR) -d \(service.clusterIP)/32 -p \(service.proto) -m comment --comment \"\(portName) cluster IP\" -m \(service.proto) --dport \(service.port) -j KUBE-MARK-MASQ")
            let count = service.endpoints.count
            for (index, endpoint) in service.endpoints.enumerated() {
                let sepChain = "KUBE-SEP-" + chainSuffix(portName + service.proto + "\(endpoint.ip):\(endpoint.port)")
                chains.append(":\(sepChain) - [0:0]")
                let remaining = count - index
                if remaining > 1 {
                    let probability = String(format: "%.10f", 1.0 / Double(remaining))
                    rules.append("-A \(svcChain) -m comment --comment \"\(portName) -> \(endpoint.ip):\(endpoint.port)\" -m statistic --mode random --probability \(probability) -j \(sepChain)")
                } else {
                    rules.append("-A \(svcChain) -m comment --comment \"\(portName) -> \(endpoint.ip):\(endpoint.port)\" -j \(sepChain)")
                }
                rules.append("-A \(sepChain) -m comment --comment \"\(portName)\" -s \(endpoint.ip)/32 -j KUBE-MARK-MASQ")
                rules.append("-A \(sepChain) -m comment --comment \"\(portName)\" -m \(service.proto) -p \(service.proto) -j DNAT --to-destination \(endpoint.ip):\(endpoint.port)")
            }
        }
        return (["*nat"] + chains + rules + ["COMMIT", ""]).joined(separator: "\n")
    }

    /// kube-proxy's partial sync (MinimizeIPTablesRestore): `iptables-restore --noflush`
    /// of the changed service's chains only (declared chains are flushed and rewritten).
    static func update(_ service: PeerService, clusterCIDR: String) -> String {
        let full = restoreInput([service], clusterCIDR: clusterCIDR).split(separator: "\n")
        let svcChain = "KUBE-SVC-" + chainSuffix("\(service.namespace)/\(service.name):\(service.portName)" + service.proto)
        let kept = full.filter { line in
            line == "*nat" || line == "COMMIT" || line.hasPrefix(":KUBE-SVC-") || line.hasPrefix(":KUBE-SEP-")
                || line.hasPrefix("-A \(svcChain) ") || line.hasPrefix("-A KUBE-SEP-")
        }
        return kept.joined(separator: "\n") + "\n"
    }
}

/// kube-proxy's nftables layout (pkg/proxy/nftables/proxier.go): a `service-ips` verdict
/// map keyed by (ClusterIP, protocol, port) jumps to a per-service chain that marks
/// off-cluster sources and picks an endpoint with `numgen random mod n vmap`; each
/// endpoint chain marks hairpin traffic and DNATs. Loaded with `nft -f`.
enum NftablesRules {
    /// Chains are written before the rules that jump to them (nft checks references
    /// while it reads the file).
    static func script(_ services: [PeerService], clusterCIDR: String) -> String {
        var lines = [
            "table ip kube-proxy {",
            "  chain mark-for-masquerade {",
            "    meta mark set meta mark or 0x4000",
            "  }",
            "  chain masquerading {",
            "    type nat hook postrouting priority 100; policy accept;",
            "    meta mark & 0x4000 == 0 return",
            "    meta mark set meta mark xor 0x4000",
            "    masquerade fully-random",
            "  }",
        ]
        var elements: [String] = []
        for service in services {
            lines += serviceChains(service, clusterCIDR: clusterCIDR)
            elements.append("\(service.clusterIP) . \(service.proto) . \(service.port) : goto \(serviceChain(service))")
        }
        lines.append("  map service-ips {")
        lines.append("    type ipv4_addr . inet_proto . inet_service : verdict")
        if !elements.isEmpty { lines.append("    elements = { " + elements.joined(separator: ",\n      ") + " }") }
        lines.append("  }")
        lines.append("  chain services {")
        lines.append("    ip daddr . meta l4proto . th dport vmap @service-ips")
        lines.append("  }")
        lines.append("  chain nat-output {")
        lines.append("    type nat hook output priority -100; policy accept;")
        lines.append("    jump services")
        lines.append("  }")
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    /// What kube-proxy rewrites when one service's endpoints change: that service's chains
    /// (created if new, flushed, written again), nothing else.
    static func update(_ service: PeerService, clusterCIDR: String) -> String {
        var lines: [String] = []
        for chain in endpointChains(service) + [serviceChain(service)] {
            lines.append("add chain ip kube-proxy \(chain)")
            lines.append("flush chain ip kube-proxy \(chain)")
        }
        lines.append("table ip kube-proxy {")
        lines += serviceChains(service, clusterCIDR: clusterCIDR)
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    private static func endpointChains(_ service: PeerService) -> [String] {
        let base = "\(service.namespace)/\(service.name)/\(service.proto)/\(service.portName)"
        return service.endpoints.map { "endpoint-" + IptablesRules.chainSuffix(base + "\($0.ip):\($0.port)") }
    }

    static func serviceChain(_ service: PeerService) -> String {
        let base = "\(service.namespace)/\(service.name)/\(service.proto)/\(service.portName)"
        return "service-" + IptablesRules.chainSuffix(base) + "-" + sanitize(base)
    }

    private static func serviceChains(_ service: PeerService, clusterCIDR: String) -> [String] {
        let base = "\(service.namespace)/\(service.name)/\(service.proto)/\(service.portName)"
        var lines: [String] = []
        let endpointChains = endpointChains(service)
        for (endpoint, chain) in zip(service.endpoints, endpointChains) {
            lines.append("  chain \(chain) {")
            lines.append("    ip saddr \(endpoint.ip) jump mark-for-masquerade")
            lines.append("    meta l4proto \(service.proto) dnat to \(endpoint.ip):\(endpoint.port)")
            lines.append("  }")
        }
        lines.append("  chain \(serviceChain(service)) {")
        lines.append("    ip daddr \(service.clusterIP) \(service.proto) dport \(service.port) ip saddr != \(clusterCIDR) jump mark-for-masquerade")
        let vmap = endpointChains.enumerated().map { "\($0.offset) : goto \($0.element)" }.joined(separator: ", ")
        lines.append("    numgen random mod \(endpointChains.count) vmap { \(vmap) }")
        lines.append("  }")
        return lines
    }

    private static func sanitize(_ text: String) -> String {
        String(text.map { $0.isLetter || $0.isNumber ? $0 : "-" }.prefix(40))
    }
}
