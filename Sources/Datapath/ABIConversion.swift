import CLibBPF
import Reconciler
import ServiceModel

// MARK: - The one place where Swift values become ABI structs and back
//
// Addresses: 16 bytes in network order, IPv4 v4-mapped. Ports: network order.

extension IPAddress {
    /// The address as the ABI's `__be32 addr[4]`, byte for byte in network order.
    var abiWords: (UInt32, UInt32, UInt32, UInt32) {
        let (high, low) = mapped128
        return (UInt32(truncatingIfNeeded: high >> 32).bigEndian, UInt32(truncatingIfNeeded: high).bigEndian,
                UInt32(truncatingIfNeeded: low >> 32).bigEndian, UInt32(truncatingIfNeeded: low).bigEndian)
    }

    init?(abiWords words: (UInt32, UInt32, UInt32, UInt32)) {
        self.init(mapped128: UInt64(UInt32(bigEndian: words.0)) << 32 | UInt64(UInt32(bigEndian: words.1)),
                  UInt64(UInt32(bigEndian: words.2)) << 32 | UInt64(UInt32(bigEndian: words.3)))
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
    init(_ frontend: FrontendKey) {
        self.init()
        addr = frontend.address.abiWords
        port = frontend.port.bigEndian
        proto = frontend.proto.ipProtocolNumber
        scope = frontend.scope.rawValue
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
        slot_base = master.slotBase
        count = master.count
        revision = master.revision
        rev_nat_id = master.revNatID
        flags = master.flags.rawValue
        kind = master.kind.abiValue
        affinity_timeout = master.affinitySeconds
    }

    var masterEntry: MasterEntry? {
        guard let kind = FrontendKind(abiValue: kind) else { return nil }
        return MasterEntry(slotBase: slot_base, count: count, revision: revision, revNatID: rev_nat_id,
                           flags: ServiceFlags(rawValue: flags), kind: kind, affinitySeconds: affinity_timeout)
    }
}

extension sl_backend_slot {
    init(_ slot: SlotEntry) {
        self.init()
        addr = slot.backend.address.abiWords
        port = slot.backend.port.bigEndian
        proto = slot.backend.proto.ipProtocolNumber
        backend_id = slot.backendID
    }

    var slotEntry: SlotEntry? {
        guard backend_id != 0, let address = IPAddress(abiWords: addr),
              let proto = TransportProtocol(ipProtocolNumber: proto) else { return nil }
        return SlotEntry(backendID: backend_id,
                         backend: BackendAddress(address: address, port: UInt16(bigEndian: port), proto: proto))
    }
}

extension sl_backend {
    init(_ backend: BackendAddress) {
        self.init()
        addr = backend.address.abiWords
        port = backend.port.bigEndian
        proto = backend.proto.ipProtocolNumber
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

// MARK: - Introspection entries

/// Copies `text` NUL-padded into a fixed C char array (truncating at a UTF-8 boundary).
func writeFixedString<T>(_ text: String, into field: inout T) {
    withUnsafeMutableBytes(of: &field) { raw in
        raw.initializeMemory(as: UInt8.self, repeating: 0)
        if text.utf8.count < raw.count {  // the usual case, copied without an array in between
            for (index, byte) in text.utf8.enumerated() { raw[index] = byte }
            return
        }
        var fitting = Substring(text)
        while fitting.utf8.count > raw.count - 1 { fitting = fitting.dropLast() }
        raw.copyBytes(from: Array(fitting.utf8))
    }
}

/// Reads a NUL-padded C char array.
func readFixedString<T>(_ field: T) -> String {
    withUnsafeBytes(of: field) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}

extension sl_frontend_meta {
    init(_ meta: FrontendMeta) {
        self.init()
        writeFixedString(meta.service, into: &service)
        writeFixedString(meta.portName, into: &port_name)
    }

    var frontendMeta: FrontendMeta { FrontendMeta(service: readFixedString(service), portName: readFixedString(port_name)) }
}

extension sl_source_range_key {
    init(_ range: SourceRange) {
        self.init()
        let mappedPrefix = range.cidr.family == .v4 ? 96 + range.cidr.prefixLength : range.cidr.prefixLength
        prefixlen = UInt32(32 + mappedPrefix)
        rev_nat_id = range.revNatID
        addr = range.cidr.address.abiWords
    }

    var sourceRange: SourceRange? {
        guard let address = IPAddress(abiWords: addr) else { return nil }
        let bits = Int(prefixlen) - 32 - (address.family == .v4 ? 96 : 0)
        return CIDR(address: address, prefixLength: bits).map { SourceRange(revNatID: rev_nat_id, cidr: $0) }
    }
}

extension sl_health_check {
    init(_ entry: HealthCheckEntry) {
        self.init()
        writeFixedString(entry.service, into: &service)
        local_endpoints = entry.localEndpoints
    }

    var healthCheckEntry: HealthCheckEntry {
        HealthCheckEntry(service: readFixedString(service), localEndpoints: local_endpoints)
    }
}
