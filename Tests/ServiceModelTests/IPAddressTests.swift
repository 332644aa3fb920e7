import XCTest

@testable import ServiceModel

final class IPAddressTests: XCTestCase {
    func testSloppyParsingAcceptsLeadingZerosAndPrintsCanonically() {
        // A.1(6) examples plus the edges of Go 1.16's parseIPv4.
        let cases: [(String, String)] = [
            ("172.30.0.041", "172.30.0.41"),
            ("10.180.00.001", "10.180.0.1"),
            ("010.000.000.010", "10.0.0.10"),
            ("0.0.0.0", "0.0.0.0"),
            ("255.255.255.255", "255.255.255.255"),
            ("1.2.3.0000004", "1.2.3.4"),
        ]
        for (input, expected) in cases {
            let address = IPAddress(sloppy: input)
            XCTAssertEqual(address?.description, expected, input)
            XCTAssertEqual(address?.family, .v4, input)
        }
    }

    /// The byte-level formatter and parser against the obvious text, over addresses with
    /// one-, two- and three-digit octets.
    func testIPv4FormattingAndParsingMatchTheDottedQuad() {
        var generator = SeededRandom(seed: 7)
        for _ in 0..<5_000 {
            let value = UInt32(truncatingIfNeeded: generator.next()) >> UInt32(generator.next() % 24)
            let text = "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
            XCTAssertEqual(IPAddress(v4: value).description, text)
            XCTAssertEqual(IPAddress(sloppy: text), IPAddress(v4: value), text)
        }
    }

    /// Backends sort by their IP:port text (A.3(9)), local after non-local on a tie; the
    /// IPv4 fast path must give exactly that order, also mixed with IPv6.
    func testBackendOrderIsTheOrderOfTheirText() {
        var generator = SeededRandom(seed: 11)
        var backends: [Backend] = []
        for _ in 0..<3_000 {
            let random = generator.next()
            let address = random % 5 == 0
                ? IPAddress(v6: (0..<16).map { _ in UInt8(truncatingIfNeeded: generator.next() % 3) })!
                : IPAddress(v4: UInt32(truncatingIfNeeded: generator.next()) >> UInt32(random % 20))
            let port = UInt16(truncatingIfNeeded: generator.next() >> UInt64(random % 16))
            backends.append(Backend(address: address, port: port, isLocal: random % 3 == 0))
        }
        backends += backends.prefix(200).map { Backend(address: $0.address, port: $0.port, isLocal: !$0.isLocal) }
        let byText = backends.sorted { ($0.description, $0.isLocal ? 1 : 0) < ($1.description, $1.isLocal ? 1 : 0) }
        XCTAssertEqual(backends.sorted(), byText)
    }

    /// sortedByText (each text order computed once) gives `<`'s order: IPv4 sets of every
    /// size, with local/non-local twins, and sets with an IPv6 backend.
    func testSortingByPrecomputedTextOrderIsTheOrderOfTheirText() {
        var generator = SeededRandom(seed: 13)
        for round in 0..<400 {
            var backends: [Backend] = []
            for _ in 0..<(round % 9) {
                let random = generator.next()
                let address = round % 10 == 9 && random % 4 == 0
                    ? IPAddress(v6: (0..<16).map { _ in UInt8(truncatingIfNeeded: generator.next() % 3) })!
                    : IPAddress(v4: UInt32(truncatingIfNeeded: generator.next()) >> UInt32(random % 24))
                backends.append(Backend(address: address, port: UInt16(truncatingIfNeeded: random >> 20) % 300, isLocal: random % 3 == 0))
            }
            if let first = backends.first { backends.append(Backend(address: first.address, port: first.port, isLocal: !first.isLocal)) }
            XCTAssertEqual(Backend.sortedByText(backends, { $0 }), backends.sorted(), "round \(round)")
        }
    }

    /// The allocation-free 128-bit form is the 16-byte form, both ways, for both families
    /// (an IPv4-mapped IPv6 address comes back as IPv4, as from `init(mapped16:)`).
    func testTheMapped128FormIsTheMapped16Form() {
        var generator = SeededRandom(seed: 17)
        for round in 0..<2_000 {
            let address = round % 2 == 0
                ? IPAddress(v4: UInt32(truncatingIfNeeded: generator.next()))
                : IPAddress(v6: (0..<16).map { index in index < 10 && round % 4 == 1 ? 0 : UInt8(truncatingIfNeeded: generator.next()) })!
            let (high, low) = address.mapped128
            var bytes: [UInt8] = []
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: high >> UInt64(shift))) }
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: low >> UInt64(shift))) }
            XCTAssertEqual(bytes, address.mapped16, "\(address)")
            XCTAssertEqual(IPAddress(mapped128: high, low), IPAddress(mapped16: bytes), "\(address)")
        }
        XCTAssertEqual(IPAddress(mapped128: 0, 0xffff_0a00_0001), IPAddress(sloppy: "10.0.0.1"))
        XCTAssertEqual(IPAddress(mapped128: 0, 0xfffe_0a00_0001).family, .v6)
    }

    func testSloppyParsingRejectsMalformedIPv4() {
        for input in [
            "", "1.2.3", "1.2.3.4.5", "1.2.3.256", "1..2.3", "1.2.3.4.", " 1.2.3.4", "1.2.3.4 ", "a.b.c.d",
            "1.2.3.-4", "1.2.3.4/32", "1234", "1.2.3.4:80", "１.2.3.4",
        ] {
            XCTAssertNil(IPAddress(sloppy: input), input)
        }
    }

    func testIPv6ParsingAcceptsEveryTextFormAndPrintsRFC5952() {
        let cases: [(String, String)] = [
            ("fd00::1", "fd00::1"),
            ("FD00:0:0:0:0:0:0:1", "fd00::1"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // first of two equal runs
            ("2001:0db8:0000:0000:0000:ff00:0042:8329", "2001:db8::ff00:42:8329"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // a single zero group is not compressed
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
            ("fd00:10:96::2c", "fd00:10:96::2c"),
            ("::1.2.3.4", "::102:304"),
            ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
            ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("::ffff:0102:0304", "::ffff:1.2.3.4"),
            ("::ffff:001.002.003.004", "::ffff:1.2.3.4"),  // the embedded quad is sloppy too
            ("0:0:0:0:0:0:0:0", "::"),
        ]
        for (input, expected) in cases {
            let address = IPAddress(sloppy: input)
            XCTAssertEqual(address?.description, expected, input)
            XCTAssertEqual(address?.family, .v6, input)
        }
    }

    func testIPv6ParsingRejectsMalformedText() {
        for input in [
            ":", ":::", "1:::2", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", "g::1", ":1::",
            "1::2:", "1:2:3:4:5:6:7:8::", "::1.2.3", "::1.2.3.4:5", "1.2.3.4::", "fe80::1%eth0", "[::1]", "::1/128",
            "1:2:3:4:5:6:7:1.2.3.4",
        ] {
            XCTAssertNil(IPAddress(sloppy: input), input)
        }
    }

    func testIPv4MappedInputStaysIPv6() {
        let mapped = ip("::ffff:10.0.0.1")
        XCTAssertEqual(mapped.family, .v6)
        XCTAssertNil(mapped.v4Value)
        XCTAssertNotEqual(mapped, ip("10.0.0.1"))
    }

    func testV4ValueIsHostOrder() {
        XCTAssertEqual(ip("10.0.0.1").v4Value, 0x0A00_0001)
        XCTAssertEqual(IPAddress(v4: 0xC0A8_0102).description, "192.168.1.2")
        XCTAssertNil(ip("fd00::1").v4Value)
    }

    func testMapped16WritesIPv4AsV4MappedAndRoundTrips() {
        XCTAssertEqual(ip("1.2.3.4").mapped16, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4])
        XCTAssertEqual(ip("fd00::1").mapped16, [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        for text in [
            "0.0.0.0", "10.180.0.1", "255.255.255.255", "::", "::1", "fd00:10:96::2c", "2001:db8::ff00:42:8329",
        ] {
            let address = ip(text)
            XCTAssertEqual(IPAddress(mapped16: address.mapped16), address, text)
        }
        // The mapped form decodes to IPv4, whatever family produced it.
        XCTAssertEqual(IPAddress(mapped16: ip("::ffff:1.2.3.4").mapped16), ip("1.2.3.4"))
        XCTAssertNil(IPAddress(mapped16: [1, 2, 3, 4]))
    }

    func testOrderingPutsIPv4FirstThenNumeric() {
        let sorted = ["fd00::1", "10.0.0.10", "::1", "10.0.0.9", "9.255.255.255"].map(ip).sorted()
        XCTAssertEqual(sorted.map(\.description), ["9.255.255.255", "10.0.0.9", "10.0.0.10", "::1", "fd00::1"])
    }

    func testLoopbackAndUnspecifiedAreRecognised() {
        XCTAssertTrue(ip("127.0.0.53").isLoopback)
        XCTAssertTrue(ip("::1").isLoopback)
        XCTAssertFalse(ip("10.0.0.1").isLoopback)
        XCTAssertTrue(ip("0.0.0.0").isUnspecified)
        XCTAssertTrue(ip("::").isUnspecified)
    }

    func testAddressesEncodeAsCanonicalStrings() throws {
        let data = try JSONEncoder().encode([ip("010.0.0.1"), ip("FD00::0001")])
        XCTAssertEqual(String(decoding: data, as: UTF8.self), #"["10.0.0.1","fd00::1"]"#)
        XCTAssertEqual(try JSONDecoder().decode([IPAddress].self, from: data), [ip("10.0.0.1"), ip("fd00::1")])
    }
}

final class CIDRTests: XCTestCase {
    func testSloppyParsingTrimsAndCanonicalisesTheNetwork() {
        let cases: [(String, String)] = [
            ("203.0.113.000/025", "203.0.113.0/25"),  // A.1(6)
            (" 198.51.100.0/24", "198.51.100.0/24"),  // A.2 padded source range
            ("203.0.113.7/25\n", "203.0.113.0/25"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("1.2.3.4/32", "1.2.3.4/32"),
            ("2001:db8:100::/48", "2001:db8:100::/48"),
            ("2001:db8:100:ffff::1/48", "2001:db8:100::/48"),
            ("fd00::1/127", "fd00::/127"),
            ("::/0", "::/0"),
        ]
        for (input, expected) in cases {
            XCTAssertEqual(CIDR(sloppy: input)?.description, expected, input)
        }
    }

    func testSloppyParsingRejectsMalformedCIDRs() {
        for input in [
            "", "10.0.0.0", "10.0.0.0/", "10.0.0.0/33", "fd00::/129", "10.0.0.0/-1", "10.0.0.0/8/8", "/8",
            "10.0.0.0/a", "bogus/8",
        ] {
            XCTAssertNil(CIDR(sloppy: input), input)
        }
    }

    func testContainsChecksTheNetworkAndTheFamily() {
        let v4 = cidr("203.0.113.0/25")
        XCTAssertTrue(v4.contains(ip("203.0.113.0")))
        XCTAssertTrue(v4.contains(ip("203.0.113.127")))
        XCTAssertFalse(v4.contains(ip("203.0.113.128")))
        XCTAssertFalse(v4.contains(ip("::ffff:203.0.113.1")))
        XCTAssertTrue(cidr("0.0.0.0/0").contains(ip("1.2.3.4")))
        XCTAssertFalse(cidr("0.0.0.0/0").contains(ip("::1")))
        XCTAssertTrue(cidr("2001:db8:100::/48").contains(ip("2001:db8:100:abcd::1")))
        XCTAssertFalse(cidr("2001:db8:100::/48").contains(ip("2001:db8:101::1")))
        XCTAssertTrue(cidr("fd00::1/128").contains(ip("fd00::1")))
    }

    func testMatchAllFamilyAndHostNetworks() {
        XCTAssertTrue(cidr("0.0.0.0/0").isMatchAll)
        XCTAssertTrue(cidr("::/0").isMatchAll)
        XCTAssertFalse(cidr("10.0.0.0/8").isMatchAll)
        XCTAssertEqual(cidr("::/0").family, .v6)
        XCTAssertEqual(CIDR(host: ip("198.51.100.10")).description, "198.51.100.10/32")
        XCTAssertEqual(CIDR(host: ip("fd00::1")).description, "fd00::1/128")
    }

    func testOrderingIsByNetworkThenLength() {
        let sorted = ["10.0.0.0/16", "fd00::/8", "10.0.0.0/8", "9.0.0.0/8"].map(cidr).sorted()
        XCTAssertEqual(sorted.map(\.description), ["9.0.0.0/8", "10.0.0.0/8", "10.0.0.0/16", "fd00::/8"])
    }
}

