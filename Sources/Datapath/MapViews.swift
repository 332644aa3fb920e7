import CLibBPF
import Foundation
import Glibc
import Reconciler
import ServiceModel

// MARK: - What `swiftlane dump` shows besides the served plan

/// A backend as the backend map holds it, with the frontends whose active set names it.
public struct BackendView: Codable, Equatable, Sendable {
    public var id: UInt32
    /// `10.0.0.1:8080` / `[fd00::1]:8080`.
    public var address: String
    public var `protocol`: String
    /// Frontends serving it now, as `namespace/name:port frontend-address/protocol`;
    /// empty for a backend kept only by a set in quarantine.
    public var frontends: [String]
}

/// One ClientIP affinity record: which backend a client (a network namespace: a pod or
/// the host) was last sent to for a frontend.
public struct AffinityView: Codable, Equatable, Sendable {
    /// `bpf_get_netns_cookie()` of the client's network namespace.
    public var clientNetnsCookie: UInt64
    /// The frontend address:port, from the rev-NAT id; nil when that id is gone.
    public var frontend: String?
    public var `protocol`: String
    public var backendID: UInt32
    public var backend: String?
    /// Seconds since the latest new connection stamped the record.
    public var lastUsedSecondsAgo: Double
    /// The frontend's timeout; nil when no frontend with affinity uses the id any more.
    public var timeoutSeconds: UInt32?
    /// Past its timeout: the next connection chooses afresh (the LRU drops it eventually).
    public var expired: Bool
}

/// One entry of the socket reverse-NAT LRU: an unconnected UDP socket that sent to a
/// frontend with sendmsg() and was given a backend; replies from that backend are shown
/// as coming from the frontend.
public struct SocketReverseNATView: Codable, Equatable, Sendable {
    public var socketCookie: UInt64
    public var backend: String
    public var frontend: String
    public var revNatID: UInt32
}

/// One DSR flow whose backend lives on this node (`sl_dsr_v1`): the frontend its replies
/// leave with, learnt from the receiving node's option.
public struct DSRFlowView: Codable, Equatable, Sendable {
    public var backend: String
    public var client: String
    public var frontend: String
    public var `protocol`: String
    /// Seconds since the latest carrier or reply.
    public var lastSeenSecondsAgo: Double
    /// The backend sent a FIN or RST: the short timeout applies.
    public var closing: Bool
}

extension KernelLoadBalancerMaps {
    /// Every DSR flow recorded under `pinPath` (empty when the external-traffic datapath
    /// never ran there and the map does not exist).
    public static func dsrFlowViews(pinPath: String, nowNanoseconds: UInt64 = monotonicNanoseconds()) throws -> [DSRFlowView] {
        let path = pinPath + "/" + SL_MAP_NAME_DSR
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        let map = try BPFMap<sl_dsr_key, sl_dsr_entry>(pinnedAt: path, name: SL_MAP_NAME_DSR)
        return map.entries().compactMap { key, value -> DSRFlowView? in
            guard let backend = IPAddress(abiWords: key.backend_addr), let client = IPAddress(abiWords: key.client_addr),
                  let frontend = IPAddress(abiWords: value.frontend_addr) else { return nil }
            let age = nowNanoseconds >= value.last_seen_ns ? nowNanoseconds - value.last_seen_ns : 0
            return DSRFlowView(
                backend: hostPort(backend, UInt16(bigEndian: key.backend_port)),
                client: hostPort(client, UInt16(bigEndian: key.client_port)),
                frontend: hostPort(frontend, UInt16(bigEndian: value.frontend_port)),
                protocol: TransportProtocol(ipProtocolNumber: key.proto)?.rawValue ?? "\(key.proto)",
                lastSeenSecondsAgo: Double(age) / 1e9, closing: value.flags & UInt16(SL_NAT_F_CLOSING.rawValue) != 0)
        }.sorted { ($0.backend, $0.client) < ($1.backend, $1.client) }
    }

    /// Every backend entry, with the frontends whose active set uses it.
    public func backendViews() throws -> [BackendView] {
        let state = try readState()
        var users: [UInt32: [String]] = [:]
        for (key, master) in state.masters {
            let meta = state.meta[key]
            let name =
                "\(meta?.service ?? "(unknown)")\(meta.map { $0.portName.isEmpty ? "" : ":" + $0.portName } ?? "")"
            let scope = key.scope == .node ? " (node scope)" : ""
            for index in master.slots {
                guard let slot = state.slots[index] else { continue }
                users[slot.backendID, default: []].append("\(name) \(key)\(scope)")
            }
        }
        return state.backends.keys.sorted().map { id in
            let backend = state.backends[id]!
            return BackendView(
                id: id, address: backend.description, protocol: backend.proto.rawValue,
                frontends: Array(Set(users[id] ?? [])).sorted())
        }
    }

    /// Every ClientIP affinity record, read against `now` (CLOCK_MONOTONIC, the clock of
    /// `bpf_ktime_get_ns`).
    public func affinityViews(nowNanoseconds: UInt64 = KernelLoadBalancerMaps.monotonicNanoseconds()) throws
        -> [AffinityView]
    {
        let state = try readState()
        var timeoutByRevNat: [UInt32: UInt32] = [:]
        for master in state.masters.values where master.affinitySeconds > 0 {
            timeoutByRevNat[master.revNatID] = master.affinitySeconds
        }
        return affinity.entries().map { key, value in
            let frontend = state.revNats[key.rev_nat_id].map { hostPort($0.address, $0.port) }
            let age = nowNanoseconds >= value.last_used_ns ? nowNanoseconds - value.last_used_ns : 0
            let timeout = timeoutByRevNat[key.rev_nat_id]
            return AffinityView(
                clientNetnsCookie: key.client, frontend: frontend,
                protocol: TransportProtocol(ipProtocolNumber: key.proto)?.rawValue ?? "\(key.proto)",
                backendID: value.backend_id, backend: state.backends[value.backend_id]?.description,
                lastUsedSecondsAgo: Double(age) / 1e9, timeoutSeconds: timeout,
                expired: timeout.map { age >= UInt64($0) * 1_000_000_000 } ?? true)
        }.sorted {
            ($0.clientNetnsCookie, $0.frontend ?? "", $0.protocol) < (
                $1.clientNetnsCookie, $1.frontend ?? "", $1.protocol
            )
        }
    }

    /// Every entry of the socket reverse-NAT LRU.
    public func socketReverseNATViews() -> [SocketReverseNATView] {
        sockRevNats.entries().compactMap { key, value -> SocketReverseNATView? in
            guard let backend = IPAddress(abiWords: key.addr), let frontend = IPAddress(abiWords: value.addr) else {
                return nil
            }
            return SocketReverseNATView(
                socketCookie: key.cookie, backend: hostPort(backend, UInt16(bigEndian: key.port)),
                frontend: hostPort(frontend, UInt16(bigEndian: value.port)), revNatID: value.rev_nat_id)
        }.sorted { ($0.socketCookie, $0.backend) < ($1.socketCookie, $1.backend) }
    }

    /// CLOCK_MONOTONIC in nanoseconds, the clock BPF's `bpf_ktime_get_ns` reads.
    public static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}

/// `10.0.0.1:80` / `[fd00::1]:80`.
private func hostPort(_ address: IPAddress, _ port: UInt16) -> String {
    address.family == .v6 ? "[\(address)]:\(port)" : "\(address):\(port)"
}
