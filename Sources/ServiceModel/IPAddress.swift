import Foundation

// MARK: - IPFamily

/// An IP address family. The raw values are the Kubernetes API spellings
/// (`spec.ipFamilies`, `EndpointSlice.addressType`).
public enum IPFamily: String, Codable, Hashable, Comparable, CaseIterable, Sendable, CustomStringConvertible {
    case v4 = "IPv4"
    case v6 = "IPv6"

    /// Host prefix length of this family: 32 or 128.
    public var bitWidth: Int { self == .v4 ? 32 : 128 }

    public var description: String { rawValue }

    public static func < (lhs: IPFamily, rhs: IPFamily) -> Bool {
        lhs == .v4 && rhs == .v6
    }
}

// MARK: - IPAddress

/// An IPv4 or IPv6 address, parsed the way kube-proxy parses API strings.
///
/// kube-proxy uses `netutils.ParseIPSloppy` (Go 1.16's `net.ParseIP`): IPv4 octets may carry
/// leading zeros (`"172.30.0.041"` is `172.30.0.41`, not octal) and are re-emitted canonically
/// (spec A.1(6)). IPv6 follows the usual text forms, including an embedded dotted quad; the
/// canonical output is RFC 5952 (lower case, longest zero run compressed, `::ffff:a.b.c.d`
/// for IPv4-mapped addresses, which keep the IPv6 family).
///
/// Ordering: all IPv4 addresses sort before all IPv6 addresses, numerically within a family.
public struct IPAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    private enum Storage: Hashable, Sendable {
        case v4(UInt32)
        case v6(UInt64, UInt64)  // high and low 64 bits, host order
    }

    private let storage: Storage

    /// An IPv4 address from its value in host byte order (`0x0A000001` is `10.0.0.1`).
    public init(v4 value: UInt32) {
        storage = .v4(value)
    }

    /// An IPv6 address from 16 bytes in network order; `nil` unless exactly 16 bytes.
    /// IPv4-mapped addresses stay IPv6 here (compare `init(mapped16:)`).
    public init?(v6 bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for i in 0..<8 { high = high << 8 | UInt64(bytes[i]) }
        for i in 8..<16 { low = low << 8 | UInt64(bytes[i]) }
        storage = .v6(high, low)
    }

    /// Inverse of `mapped16`: 16 bytes in network order, where `::ffff:a.b.c.d` becomes the
    /// IPv4 address `a.b.c.d` and anything else an IPv6 address.
    public init?(mapped16 bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
            self.init(
                v4: UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15]))
        } else {
            self.init(v6: bytes)
        }
    }

    /// Parses an address the way kube-proxy does (`ParseIPSloppy`): a string containing `:` is
    /// IPv6, otherwise one containing `.` is IPv4. IPv4 octets may have leading zeros. No
    /// surrounding whitespace, no zone (`%eth0`), no prefix length.
    public init?(sloppy text: String) {
        // Byte scans: `String.contains(String)` is Foundation's, a locale-aware search
        // that cost more than the rest of the parse (one per endpoint per sync).
        if text.utf8.contains(UInt8(ascii: ":")) {
            guard let bytes = IPAddress.parseIPv6(text) else { return nil }
            self.init(v6: bytes)
        } else if text.utf8.contains(UInt8(ascii: ".")) {
            guard let value = IPAddress.parseIPv4Sloppy(Substring(text)) else { return nil }
            self.init(v4: value)
        } else {
            return nil
        }
    }

    /// The address family.
    public var family: IPFamily {
        switch storage {
        case .v4: return .v4
        case .v6: return .v6
        }
    }

    /// The IPv4 value in host byte order, `nil` for IPv6 (including IPv4-mapped IPv6).
    public var v4Value: UInt32? {
        if case .v4(let value) = storage { return value }
        return nil
    }

    /// The address bytes in network order: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        switch storage {
        case .v4(let value):
            return [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
        case .v6(let high, let low):
            var out = [UInt8]()
            out.reserveCapacity(16)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(high >> UInt64(shift) & 0xff)) }
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(low >> UInt64(shift) & 0xff)) }
            return out
        }
    }

    /// 16 bytes in network order; IPv4 is written as the v4-mapped `::ffff:a.b.c.d`. This is
    /// the single place the datapath's 16-byte address form is produced.
    public var mapped16: [UInt8] {
        switch storage {
        case .v4:
            return [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] + bytes
        case .v6:
            return bytes
        }
    }

    /// `mapped16` as two integers, high 64 bits first, host order: the same form without
    /// allocating (the controller converts every backend it writes).
    public var mapped128: (high: UInt64, low: UInt64) {
        switch storage {
        case .v4(let value): return (0, 0xffff_0000_0000 | UInt64(value))
        case .v6(let high, let low): return (high, low)
        }
    }

    /// Inverse of `mapped128` (as `init(mapped16:)` is of `mapped16`).
    public init(mapped128 high: UInt64, _ low: UInt64) {
        if high == 0, low >> 32 == 0xffff {
            storage = .v4(UInt32(truncatingIfNeeded: low))
        } else {
            storage = .v6(high, low)
        }
    }

    /// `true` for 127.0.0.0/8 and ::1.
    public var isLoopback: Bool {
        switch storage {
        case .v4(let value): return value >> 24 == 127
        case .v6(let high, let low): return high == 0 && low == 1
        }
    }

    /// `true` for 0.0.0.0 and ::.
    public var isUnspecified: Bool {
        switch storage {
        case .v4(let value): return value == 0
        case .v6(let high, let low): return high == 0 && low == 0
        }
    }

    /// Canonical text: dotted quad without leading zeros, or RFC 5952 for IPv6.
    public var description: String {
        switch storage {
        case .v4(let value):
            return IPAddress.formatIPv4(value)
        case .v6:
            return IPAddress.formatIPv6(bytes)
        }
    }

    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs.storage, rhs.storage) {
        case (.v4(let a), .v4(let b)): return a < b
        case (.v4, .v6): return true
        case (.v6, .v4): return false
        case (.v6(let ah, let al), .v6(let bh, let bl)): return ah != bh ? ah < bh : al < bl
        }
    }

    // MARK: Parsing helpers

    /// Go 1.16 `parseIPv4`: exactly four dot-separated decimal fields, each at least one digit,
    /// any number of leading zeros, value at most 255.
    static func parseIPv4Sloppy(_ text: Substring) -> UInt32? {
        var value: UInt32 = 0
        var fields = 0
        var octet: UInt32 = 0
        var digits = 0
        // One pass over the bytes, no substrings: every endpoint address goes through here.
        for unit in text.utf8 {
            if unit == UInt8(ascii: ".") {
                guard digits > 0, fields < 3 else { return nil }
                value = value << 8 | octet
                fields += 1
                octet = 0
                digits = 0
                continue
            }
            guard unit >= 0x30 && unit <= 0x39 else { return nil }
            octet = octet * 10 + UInt32(unit - 0x30)
            guard octet <= 255 else { return nil }
            digits += 1
        }
        guard digits > 0, fields == 3 else { return nil }
        return value << 8 | octet
    }

    /// Go 1.16 `parseIPv6`: hex groups of value at most 0xffff, one optional `::` that stands for
    /// at least one zero group, an optional trailing (sloppy) dotted quad in place of the last
    /// two groups. Returns 16 bytes in network order.
    static func parseIPv6(_ text: String) -> [UInt8]? {
        var hexPart = Substring(text)
        var tail: [UInt16] = []
        if text.utf8.contains(UInt8(ascii: ".")) {
            // The dotted quad must be the last field.
            guard let lastColon = text.lastIndex(of: ":"),
                let v4 = parseIPv4Sloppy(text[text.index(after: lastColon)...])
            else { return nil }
            tail = [UInt16(v4 >> 16), UInt16(v4 & 0xffff)]
            hexPart = text[...lastColon]
            // "1::" + v4 keeps its "::"; "1:2:3:4:5:6:" + v4 must lose the separator colon.
            if !hexPart.hasSuffix("::") { hexPart = hexPart.dropLast() }
        }

        func groups(_ part: Substring) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            for field in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard !field.isEmpty else { return nil }
                var value: UInt32 = 0
                for unit in field.utf8 {
                    let digit: UInt32
                    switch unit {
                    case 0x30...0x39: digit = UInt32(unit - 0x30)
                    case 0x61...0x66: digit = UInt32(unit - 0x61 + 10)
                    case 0x41...0x46: digit = UInt32(unit - 0x41 + 10)
                    default: return nil
                    }
                    value = value * 16 + digit
                    guard value <= 0xffff else { return nil }
                }
                out.append(UInt16(value))
            }
            return out
        }

        var words: [UInt16]
        if let range = hexPart.range(of: "::") {
            let left = hexPart[..<range.lowerBound]
            let right = hexPart[range.upperBound...]
            guard !right.contains("::"), let leftGroups = groups(left), var rightGroups = groups(right) else {
                return nil
            }
            rightGroups += tail
            let missing = 8 - leftGroups.count - rightGroups.count
            guard missing >= 1 else { return nil }  // "::" stands for at least one group
            words = leftGroups + [UInt16](repeating: 0, count: missing) + rightGroups
        } else {
            guard let all = groups(hexPart) else { return nil }
            words = all + tail
            guard words.count == 8 else { return nil }
        }
        return words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
    }

    // MARK: Formatting helpers

    static func formatIPv4(_ value: UInt32) -> String {
        // At most 15 bytes: written straight into a small string, no interpolation.
        String(unsafeUninitializedCapacity: 15) { buffer in
            var count = 0
            for shift in stride(from: 24, through: 0, by: -8) {
                if shift != 24 {
                    buffer[count] = UInt8(ascii: ".")
                    count += 1
                }
                count += writeDecimal(UInt32(value >> UInt32(shift) & 0xff), into: buffer, at: count)
            }
            return count
        }
    }

    /// Writes `value` in decimal at `offset`; returns the number of bytes written.
    static func writeDecimal(_ value: UInt32, into buffer: UnsafeMutableBufferPointer<UInt8>, at offset: Int) -> Int {
        var digits = 1
        var rest = value / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        var remaining = value
        for position in stride(from: offset + digits - 1, through: offset, by: -1) {
            buffer[position] = UInt8(ascii: "0") + UInt8(remaining % 10)
            remaining /= 10
        }
        return digits
    }

    /// RFC 5952 §4: lower-case hex without leading zeros; the longest run (≥ 2) of zero groups,
    /// the first one on a tie, becomes `::`; §5: IPv4-mapped addresses end in a dotted quad.
    static func formatIPv6(_ bytes: [UInt8]) -> String {
        let words = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
        if words[0..<5].allSatisfy({ $0 == 0 }) && words[5] == 0xffff {
            let v4 = UInt32(words[6]) << 16 | UInt32(words[7])
            return "::ffff:" + formatIPv4(v4)
        }
        var bestStart = -1
        var bestLength = 0
        var index = 0
        while index < 8 {
            guard words[index] == 0 else {
                index += 1
                continue
            }
            var end = index
            while end < 8 && words[end] == 0 { end += 1 }
            if end - index > bestLength {
                bestStart = index
                bestLength = end - index
            }
            index = end
        }
        if bestLength < 2 { bestStart = -1 }

        func hex(_ range: Range<Int>) -> String {
            range.map { String(words[$0], radix: 16) }.joined(separator: ":")
        }
        guard bestStart >= 0 else { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }
}

extension IPAddress: Codable {
    /// Decodes from a string, sloppily (A.1(6)).
    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let address = IPAddress(sloppy: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "invalid IP address \"\(text)\"")
        }
        self = address
    }

    /// Encodes as the canonical string.
    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

// MARK: - CIDR

/// An IP network in canonical form: host bits are zeroed on construction, so
/// `203.0.113.7/25` and `203.0.113.000/025` both become `203.0.113.0/25` (A.1(6)).
/// Ordered by network address, then prefix length.
public struct CIDR: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The network address (host bits zero).
    public let address: IPAddress
    /// Prefix length, 0...32 or 0...128.
    public let prefixLength: Int

    /// A network from any address inside it; `nil` if the prefix length is out of range.
    public init?(address: IPAddress, prefixLength: Int) {
        guard prefixLength >= 0 && prefixLength <= address.family.bitWidth else { return nil }
        self.address = CIDR.mask(address, prefixLength)
        self.prefixLength = prefixLength
    }

    /// The single-address network `/32` or `/128` (used for the A.9 VIP allowance).
    public init(host: IPAddress) {
        address = host
        prefixLength = host.family.bitWidth
    }

    /// Parses `address/length` like kube-proxy's `ParseCIDRSloppy` after trimming surrounding
    /// whitespace (A.2: `loadBalancerSourceRanges` entries may be padded): the address is
    /// parsed sloppily and the length is decimal, leading zeros allowed.
    public init?(sloppy text: String) {
        let trimmed = text.trimmingWhitespace()
        let parts = trimmed.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[1].isEmpty, let address = IPAddress(sloppy: String(parts[0])) else {
            return nil
        }
        var length = 0
        for unit in parts[1].utf8 {
            guard unit >= 0x30 && unit <= 0x39 else { return nil }
            length = length * 10 + Int(unit - 0x30)
            guard length <= 128 else { return nil }
        }
        self.init(address: address, prefixLength: length)
    }

    public var family: IPFamily { address.family }

    /// `true` for `0.0.0.0/0` and `::/0`.
    public var isMatchAll: Bool { prefixLength == 0 }

    /// Whether `ip` lies inside this network. Addresses of the other family never do.
    public func contains(_ ip: IPAddress) -> Bool {
        ip.family == family && CIDR.mask(ip, prefixLength) == address
    }

    public var description: String { "\(address)/\(prefixLength)" }

    public static func < (lhs: CIDR, rhs: CIDR) -> Bool {
        lhs.address != rhs.address ? lhs.address < rhs.address : lhs.prefixLength < rhs.prefixLength
    }

    private static func mask(_ ip: IPAddress, _ length: Int) -> IPAddress {
        if let value = ip.v4Value {
            let mask: UInt32 = length == 0 ? 0 : ~UInt32(0) << UInt32(32 - length)
            return IPAddress(v4: value & mask)
        }
        var bytes = ip.bytes
        for i in 0..<16 {
            let bitsHere = max(0, min(8, length - 8 * i))
            let mask: UInt8 = bitsHere == 0 ? 0 : ~UInt8(0) << UInt8(8 - bitsHere)
            bytes[i] &= mask
        }
        return IPAddress(v6: bytes)!
    }
}

extension CIDR: Codable {
    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let cidr = CIDR(sloppy: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "invalid CIDR \"\(text)\"")
        }
        self = cidr
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

extension String {
    /// Trims ASCII/Unicode whitespace and newlines at both ends (Go `strings.TrimSpace`).
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
