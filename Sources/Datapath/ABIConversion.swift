import CLibBPF
import Reconciler
import ServiceModel

// MARK: - The one place where Swift values become ABI structs and back
//
// Addresses: 16 bytes in network order, IPv4 v4-mapped. Ports: network order.

extension IPAddress {
    /// The address as the ABI's `__be32 addr[4]`, byte for byte in network order.
    var abiWords: (UInt32, UInt32, UInt32, UInt32) {
        var words: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
        let bytes = mapped16
        withUnsafeMutableBytes(of: &words) { raw in
            for index in 0..<16 { raw[index] = bytes[index] }
        }
        return words
    }

    init?(abiWords words: (UInt32, UInt32, UInt32, UInt32)) {
        let bytes = withUnsafeBytes(of: words) { Array($0) }
        self.init(mapped16: bytes)
    }
}

extension TransportProtocol {
    init?(ipProtocolNumber number: UInt8) {
        switch number {
        case 6: self = .tcp
        case 17: self = .udp
        case 132: self = .sctp
        default: return nil
        }
    }
}

extension FrontendKind {
    var abiValue: UInt8 {
        switch self {
        case .clusterIP: return UInt8(SL_KIND_CLUSTER_IP.rawValue)
        case .nodePort: return UInt8(SL_KIND_NODE_PORT.rawValue)
        case .externalIP: return UInt8(SL_KIND_EXTERNAL_IP.rawValue)
        case .loadBalancer: return UInt8(SL_KIND_LOAD_BALANCER.rawValue)
        }
    }

    init?(abiValue: UInt8) {
        switch UInt32(abiValue) {
        case SL_KIND_CLUSTER_IP.rawValue: self = .clusterIP
        case SL_KIND_NODE_PORT.rawValue: self = .nodePort
        case SL_KIND_EXTERNAL_IP.rawValue: self = .externalIP
        case SL_KIND_LOAD_BALANCER.rawValue: self = .loadBalancer
        default: return nil
        }
    }
}

extension sl_service_key {
    init(_ frontend: FrontendKey, revision: UInt16 = 0, slot: UInt16 = 0) {
        self.init()
        addr = frontend.address.abiWords
        port = frontend.port.bigEndian
        proto = UInt8(frontend.proto.ipProtocolNumber)
        scope = frontend.scope.rawValue
        self.revision = revision
        self.slot = slot
    }

    var frontendKey: FrontendKey? {
        guard let address = IPAddress(abiWords: addr), let proto = TransportProtocol(ipProtocolNumber: proto),
              let scope = FrontendScope(rawValue: scope) else { return nil }
        return FrontendKey(address: address, port: UInt16(bigEndian: port), proto: proto, scope: scope)
    }
}

extension sl_service_value {
    init(_ master: MasterEntry) {
        self.init()
        rev_nat_id = master.revNatID
        count = master.count
        revision = master.revision
        flags = master.flags.rawValue
        kind = master.kind.abiValue
        affinity_timeout = master.affinitySeconds
    }

    init(_ slot: SlotEntry) {
        self.init()
        backend_addr = slot.backend.address.abiWords
        backend_port = slot.backend.port.bigEndian
        backend_id = slot.backendID
        rev_nat_id = slot.revNatID
    }

    /// The slot entry this value holds, for a slot of a frontend with protocol `proto`.
    func slotEntry(proto: TransportProtocol) -> SlotEntry? {
        guard let address = IPAddress(abiWords: backend_addr) else { return nil }
        return SlotEntry(backendID: backend_id, revNatID: rev_nat_id,
                         backend: BackendAddress(address: address, port: UInt16(bigEndian: backend_port), proto: proto))
    }

    var masterEntry: MasterEntry? {
        guard let kind = FrontendKind(abiValue: kind) else { return nil }
        return MasterEntry(revision: revision, count: count, revNatID: rev_nat_id,
                           flags: ServiceFlags(rawValue: flags), kind: kind, affinitySeconds: affinity_timeout)
    }
}

extension sl_backend {
    init(_ backend: BackendAddress) {
        self.init()
        addr = backend.address.abiWords
        port = backend.port.bigEndian
        proto = UInt8(backend.proto.ipProtocolNumber)
    }

    var backendAddress: BackendAddress? {
        guard let address = IPAddress(abiWords: addr), let proto = TransportProtocol(ipProtocolNumber: proto) else { return nil }
        return BackendAddress(address: address, port: UInt16(bigEndian: port), proto: proto)
    }
}

extension sl_revnat {
    init(_ entry: RevNatEntry) {
        self.init()
        addr = entry.address.abiWords
        port = entry.port.bigEndian
    }

    var revNatEntry: RevNatEntry? {
        IPAddress(abiWords: addr).map { RevNatEntry(address: $0, port: UInt16(bigEndian: port)) }
    }
}
