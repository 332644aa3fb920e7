import XCTest

@testable import ServiceModel

/// A.1 (which Services are proxied) and A.2 (per-ServicePort attributes).
final class TranslatorServiceSelectionTests: XCTestCase {
    private let endpoints = [makeSlice("s1", service: "web", endpoints: [makeEndpoint("10.180.0.1")])]

    func testServicesOwnedByAnotherProxyAreSkipped() {
        // A.1(1)
        let service = makeService("web") { $0.metadata.labels[WellKnown.serviceProxyNameLabel] = "other-proxy" }
        XCTAssertEqual(translate([service], endpoints).plan.frontends, [])
    }

    func testHeadlessServicesAreSkipped() {
        // A.1(2)
        for clusterIP in ["None", ""] {
            XCTAssertEqual(
                translate([makeService("web", clusterIP: clusterIP)], endpoints).plan.frontends, [], clusterIP)
        }
        var missing = makeService("web")
        missing.spec.clusterIP = nil
        XCTAssertEqual(translate([missing], endpoints).plan.frontends, [])
    }

    func testExternalNameServicesAreSkippedEvenWithAClusterIP() {
        // A.1(3)
        let service = makeService("web") { $0.spec.type = "ExternalName" }
        XCTAssertEqual(translate([service], endpoints).plan.frontends, [])
    }

    func testEachFamilyUsesTheClusterIPAtItsIPFamiliesIndex() {
        // A.1(4): ipFamilies order decides, not clusterIP.
        let service = makeService("web", clusterIP: "fd00::10") {
            $0.spec.clusterIPs = ["fd00::10", "172.30.0.10"]
            $0.spec.ipFamilies = ["IPv6", "IPv4"]
        }
        let plan = translate([service]).plan
        XCTAssertEqual(plan.only(.clusterIP, family: .v4)?.address, ip("172.30.0.10"))
        XCTAssertEqual(plan.only(.clusterIP, family: .v6)?.address, ip("fd00::10"))
    }

    func testAServiceWithOnlyAnIPv6ClusterIPProducesNothingForIPv4() {
        // A.1(4) "service with ipv6 clusterIP under ipv4 mode"
        let service = makeService("web", clusterIP: "fd00::10") { $0.spec.ipFamilies = ["IPv6"] }
        XCTAssertEqual(translate([service], options: TranslationOptions(ipFamilies: [.v4])).plan.frontends, [])
        XCTAssertEqual(translate([service], options: TranslationOptions(ipFamilies: [.v6])).plan.frontends.count, 1)
    }

    func testWithoutIPFamiliesTheClusterIPIsUsedForItsOwnFamilyOnly() {
        // A.1(4) version skew
        let service = makeService("web", clusterIP: "172.30.0.10") {
            $0.spec.ipFamilies = []; $0.spec.clusterIPs = []
        }
        let plan = translate([service]).plan
        XCTAssertEqual(plan.frontends.map(\.family), [.v4])
    }

    func testAMissingClusterIPsEntryForAFamilyIsDiagnosed() {
        let service = makeService("web") { $0.spec.ipFamilies = ["IPv4", "IPv6"] }
        let result = translate([service])
        XCTAssertEqual(result.plan.frontends.map(\.family), [.v4])
        XCTAssertEqual(result.diagnostics.map(\.field), ["spec.clusterIPs"])
    }

    func testIPStringsAreParsedSloppilyAndEmittedCanonically() {
        // A.1(6) [TestBadIPs]
        let service = makeService("web", clusterIP: "172.30.0.041") {
            $0.spec.type = "LoadBalancer"
            $0.spec.externalIPs = ["192.000.002.001"]
            $0.spec.loadBalancerSourceRanges = ["203.0.113.000/025"]
            $0.status.loadBalancer.ingress = [LoadBalancerIngress(ip: "198.051.100.010")]
        }
        let slice = makeSlice("s1", service: "web", endpoints: [makeEndpoint("10.180.00.001")])
        let plan = translate([service], [slice]).plan
        XCTAssertEqual(plan.only(.clusterIP)?.address?.description, "172.30.0.41")
        XCTAssertEqual(plan.only(.clusterIP)?.verdict, "forward 10.180.0.1:80")
        XCTAssertEqual(plan.only(.externalIP)?.address?.description, "192.0.2.1")
        XCTAssertEqual(plan.only(.loadBalancer)?.address?.description, "198.51.100.10")
        XCTAssertEqual(plan.only(.loadBalancer)?.sourceRanges.map(\.description), ["203.0.113.0/25"])
    }

    func testAnUnparsableClusterIPSkipsTheServiceWithADiagnostic() {
        let service = makeService("web", clusterIP: "10.0.0.256")
        let result = translate([service], endpoints)
        XCTAssertEqual(result.plan.frontends, [])
        XCTAssertEqual(
            result.diagnostics,
            [
                Diagnostic(
                    object: "Service ns/web", field: "spec.clusterIP", message: "unparsable clusterIP \"10.0.0.256\"")
            ])
    }

    func testTheLaterOfTwoServicesWithTheSameNameWins() {
        let first = makeService("web", clusterIP: "172.30.0.1")
        let second = makeService("web", clusterIP: "172.30.0.2")
        let result = translate([first, second])
        XCTAssertEqual(result.plan.only(.clusterIP)?.address, ip("172.30.0.2"))
        XCTAssertEqual(result.diagnostics.map(\.message), ["duplicate Service; the later one is used"])
    }

    func testAServiceWithoutNamespaceIsInDefault() {
        let service = makeService("web", namespace: "")
        XCTAssertEqual(translate([service]).plan.frontends.map(\.service), ["default/web"])
    }

    func testTheResultDoesNotDependOnInputOrder() {
        let services = [
            makeService("a", clusterIP: "172.30.0.1"),
            makeService(
                "b", clusterIP: "172.30.0.2",
                ports: [ServicePort(name: "p80", port: 80), ServicePort(name: "dns", protocol: "UDP", port: 53)]),
        ]
        let slices = [
            makeSlice("a-1", service: "a", endpoints: [makeEndpoint("10.0.0.1"), makeEndpoint("10.0.0.2")]),
            makeSlice("a-2", service: "a", endpoints: [makeEndpoint("10.0.0.3")]),
            makeSlice(
                "b-1", service: "b", ports: [EndpointPort(name: "dns", port: 5353, protocol: "UDP")],
                endpoints: [makeEndpoint("10.0.1.1")]),
        ]
        let forward = translate(services, slices)
        let backward = translate(services.reversed(), slices.reversed())
        XCTAssertEqual(forward, backward)
        XCTAssertEqual(forward.plan.jsonString(pretty: false), backward.plan.jsonString(pretty: false))
    }
}

final class TranslatorServicePortAttributeTests: XCTestCase {
    func testOneClusterIPFrontendPerServicePortKeyedByNameAndProtocol() {
        // A.1(5), A.2: protocol defaults to TCP; same number with another protocol is another port.
        let service = makeService(
            "dns",
            ports: [
                ServicePort(name: "dns-tcp", port: 53), ServicePort(name: "dns", protocol: "UDP", port: 53),
                ServicePort(name: "sctp", protocol: "SCTP", port: 9),
            ])
        let frontends = translate([service]).plan.frontends(.clusterIP)
        XCTAssertEqual(
            frontends.map { "\($0.portName)/\($0.protocol)/\($0.port)" },
            ["dns/UDP/53", "dns-tcp/TCP/53", "sctp/SCTP/9"])
    }

    func testInvalidPortsAreDroppedWithDiagnostics() {
        let service = makeService(
            "web",
            ports: [
                ServicePort(name: "zero", port: 0), ServicePort(name: "big", port: 65536),
                ServicePort(name: "icmp", protocol: "ICMP", port: 1),
                ServicePort(name: "ok", port: 65535, nodePort: 70000),
            ])
        let result = translate([service])
        XCTAssertEqual(result.plan.frontends.map(\.portName), ["ok"])
        XCTAssertEqual(
            result.diagnostics.map(\.field),
            ["spec.ports[0].port", "spec.ports[1].port", "spec.ports[2].protocol", "spec.ports[3].nodePort"])
    }

    func testExternalIPsAreFamilyFilteredAndUnparsableOnesDropped() {
        // A.2
        let service = makeService("web") {
            $0.spec.externalIPs = ["192.0.2.1", "", "nonsense", "2001:db8::1", "192.0.2.1"]
        }
        let plan = translate([service], options: TranslationOptions(ipFamilies: [.v4])).plan
        XCTAssertEqual(plan.frontends(.externalIP).map(\.addressString), ["192.0.2.1"])
    }

    func testLoadBalancerVIPsSkipProxyModeHostnamesAndOtherFamilies() {
        // A.2, A.7: ipMode Proxy is not programmed; hostname-only ignored.
        let service = makeService("web") {
            $0.spec.type = "LoadBalancer"
            $0.status.loadBalancer.ingress = [
                LoadBalancerIngress(ip: "198.51.100.10", ipMode: "VIP"),
                LoadBalancerIngress(ip: "198.51.100.11", ipMode: "Proxy"),
                LoadBalancerIngress(ip: "198.51.100.12"), LoadBalancerIngress(hostname: "lb.example.com"),
                LoadBalancerIngress(ip: "2001:db8::12"), LoadBalancerIngress(ip: ""),
            ]
        }
        let plan = translate([service], options: TranslationOptions(ipFamilies: [.v4])).plan
        XCTAssertEqual(plan.frontends(.loadBalancer).map(\.addressString), ["198.51.100.10", "198.51.100.12"])
    }

    func testSessionAffinityDefaultsToTenThousandEightHundredSeconds() {
        // A.2, A.8: API default when the config is absent.
        let defaulted = makeService("a", clusterIP: "172.30.0.1") { $0.spec.sessionAffinity = "ClientIP" }
        let explicit = makeService("b", clusterIP: "172.30.0.2") {
            $0.spec.sessionAffinity = "ClientIP"
            $0.spec.sessionAffinityConfig = SessionAffinityConfig(clientIP: ClientIPConfig(timeoutSeconds: 60))
        }
        let none = makeService("c", clusterIP: "172.30.0.3") { $0.spec.sessionAffinity = "None" }
        let invalid = makeService("d", clusterIP: "172.30.0.4") {
            $0.spec.sessionAffinity = "ClientIP"
            $0.spec.sessionAffinityConfig = SessionAffinityConfig(clientIP: ClientIPConfig(timeoutSeconds: 0))
        }
        let result = translate([defaulted, explicit, none, invalid])
        XCTAssertEqual(result.plan.frontends.map(\.affinitySeconds), [10800, 60, 0, 10800])
        XCTAssertEqual(result.diagnostics.map(\.object), ["Service ns/d"])
    }

    func testNodePortZeroMeansNoNodePortFrontend() {
        // A.2: allocateLoadBalancerNodePorts false leaves nodePort 0.
        let service = makeService("web", ports: [ServicePort(name: "p80", port: 80, nodePort: 0)]) {
            $0.spec.type = "LoadBalancer"
            $0.spec.allocateLoadBalancerNodePorts = false
            $0.status.loadBalancer.ingress = [LoadBalancerIngress(ip: "198.51.100.1")]
        }
        let slice = makeSlice("s", service: "web", endpoints: [makeEndpoint("10.0.0.1")])
        let plan = translate([service], [slice], options: TranslationOptions(ipFamilies: [.v4])).plan
        XCTAssertEqual(plan.frontends.map(\.kind), [.clusterIP, .loadBalancer])
    }

    func testExternalTrafficPolicyIsIgnoredForAPlainClusterIPService() {
        // A.2 externalPolicyLocal needs an externally accessible type; a ClusterIP Service
        // without externalIPs has no external frontends and uses the Cluster set everywhere.
        let service = makeService("web") { $0.spec.externalTrafficPolicy = "Local" }
        let slice = makeSlice("s", service: "web", endpoints: [makeEndpoint("10.0.0.1", node: "node-b")])
        let plan = translate([service], [slice]).plan
        XCTAssertEqual(plan.only(.clusterIP)?.verdict, "forward 10.0.0.1:80")
        XCTAssertEqual(plan.frontends.count, 1)
    }

    func testExternalIPsMakeAClusterIPServiceHonourExternalTrafficPolicy() {
        // A.2 / A.7: externalIPs count as external even on type ClusterIP.
        let service = makeService("web") {
            $0.spec.externalIPs = ["192.0.2.1"]
            $0.spec.externalTrafficPolicy = "Local"
        }
        let slice = makeSlice("s", service: "web", endpoints: [makeEndpoint("10.0.0.1", node: "node-b")])
        let external = translate([service], [slice]).plan.only(.externalIP)
        XCTAssertEqual(external?.action, .drop)
        XCTAssertEqual(external?.nodeVerdict, "10.0.0.1:80")
    }
}
