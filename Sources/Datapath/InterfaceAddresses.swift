import Foundation
import Glibc
import ServiceModel

/// The addresses configured on this network namespace's interfaces, by interface name.
public enum InterfaceAddresses {
    /// IPv4 and IPv6 addresses (IPv6 link-local ones left out: they are not node addresses),
    /// loopback interfaces left out unless asked for.
    public static func current(includingLoopback: Bool = false) -> [String: [IPAddress]] {
        var result: [String: [IPAddress]] = [:]
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [:] }
        defer { freeifaddrs(list) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr,
                  includingLoopback || entry.pointee.ifa_flags & UInt32(IFF_LOOPBACK) == 0 else { continue }
            let parsed: IPAddress?
            switch Int32(address.pointee.sa_family) {
            case AF_INET:
                parsed = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    IPAddress(v4: UInt32(bigEndian: sin.pointee.sin_addr.s_addr))
                }
            case AF_INET6:
                parsed = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    withUnsafeBytes(of: sin6.pointee.sin6_addr) { IPAddress(v6: Array($0)) }
                }
            default:
                parsed = nil
            }
            // fe80::/10 addresses exist on every link; they are no node address.
            guard let parsed, !(parsed.family == .v6 && parsed.bytes[0] == 0xfe && parsed.bytes[1] & 0xc0 == 0x80) else { continue }
            result[String(cString: entry.pointee.ifa_name), default: []].append(parsed)
        }
        return result
    }
}
