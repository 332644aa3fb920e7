import XCTest

@testable import ServiceModel

/// A LoadBalancer `ns/lb` on port 80 (nodePort 30080) with externalIP 192.0.2.1 and VIP 198.51.100.1.
func makeLoadBalancer(
    externalTrafficPolicy: String = "Cluster", internalTrafficPolicy: String? = nil,
    _ configure: (inout Service) -> Void = { _ in }
) -> Service {
    makeService("lb", clusterIP: "172.30.0.50", ports: [ServicePort(name: "p80", port: 80, nodePort: 30080)]) {
        $0.spec.type = "LoadBalancer"
        $0.spec.externalIPs = ["192.0.2.1"]
        $0.spec.externalTrafficPolicy = externalTrafficPolicy
        $0.spec.internalTrafficPolicy = internalTrafficPolicy
        if externalTrafficPolicy == "Local" { $0.spec.healthCheckNodePort = 30000 }
        $0.status.loadBalancer.ingress = [LoadBalancerIngress(ip: "198.51.100.1")]
        configure(&$0)
    }
}

/// A.5: frontends and the set each one uses.
final class TranslatorFrontendSetTests: XCTestCase {
    private let v4Only = TranslationOptions(ipFamilies: [.v4])
    private let externalKinds: [FrontendKind] = [.nodePort, .externalIP, .loadBalancer]

    private func plan(_ service: Service, _ endpoints: [Endpoint]) -> LoadBalancerPlan {
        let slices = endpoints.isEmpty ? [] : [makeSlice("lb-1", service: "lb", endpoints: endpoints)]
        return translate([service], slices, options: v4Only).plan
    }

    func testEveryKindOfFrontendIsProgrammedForAServiceWithEndpoints() {
        let plan = plan(makeLoadBalancer(), [makeEndpoint("10.0.0.1")])
        XCTAssertEqual(
            plan.frontends.map { "\($0.kind) \($0.addressString):\($0.port) \($0.verdict)" },
            [
                "ClusterIP 172.30.0.50:80 forward 10.0.0.1:80",
                "NodePort *:30080 forward 10.0.0.1:80",
                "ExternalIP 192.0.2.1:80 forward 10.0.0.1:80",
                "LoadBalancer 198.51.100.1:80 forward 10.0.0.1:80",
            ])
        XCTAssertTrue(plan.frontends.allSatisfy { $0.nodeBackends == nil })
    }

    func testInternalTrafficPolicyLocalUsesOnlyLocalEndpointsForTheClusterIP() {
        let plan = plan(
            makeLoadBalancer(internalTrafficPolicy: "Local"),
            [makeEndpoint("10.0.0.1", node: "node-a"), makeEndpoint("10.0.0.2", node: "node-b")])
        XCTAssertEqual(plan.only(.clusterIP)?.verdict, "forward 10.0.0.1:80")
        for kind in externalKinds {
            XCTAssertEqual(plan.only(kind)?.verdict, "forward 10.0.0.1:80,10.0.0.2:80", "\(kind)")
        }
    }

    func testExternalTrafficPolicyLocalSendsOutsideTrafficToLocalEndpointsAndNodeTrafficToTheClusterSet() {
        // A.5 external chain; the ClusterIP is unaffected by eTP.
        let plan = plan(
            makeLoadBalancer(externalTrafficPolicy: "Local"),
            [makeEndpoint("10.0.0.1", node: "node-a"), makeEndpoint("10.0.0.2", node: "node-b")])
        XCTAssertEqual(plan.only(.clusterIP)?.verdict, "forward 10.0.0.1:80,10.0.0.2:80")
        XCTAssertNil(plan.only(.clusterIP)?.nodeBackends)
        for kind in externalKinds {
            XCTAssertEqual(plan.only(kind)?.verdict, "forward 10.0.0.1:80", "\(kind)")
            XCTAssertEqual(plan.only(kind)?.nodeVerdict, "10.0.0.1:80,10.0.0.2:80", "\(kind)")
        }
    }

    func testExternalTrafficPolicyLocalFallsBackToLocalServingTerminatingEndpoints() {
        // A.4(4) [TestTerminatingEndpointsTrafficPolicyLocal]
        let plan = plan(
            makeLoadBalancer(externalTrafficPolicy: "Local"),
            [terminatingEndpoint("10.0.0.1", node: "node-a"), makeEndpoint("10.0.0.2", node: "node-b")])
        XCTAssertEqual(plan.only(.loadBalancer)?.verdict, "forward 10.0.0.1:80")
        XCTAssertEqual(plan.only(.loadBalancer)?.nodeVerdict, "10.0.0.2:80")
    }

    func testNodePortFrontendsAreWildcardsOnePerFamily() {
        let service = makeLoadBalancer {
            $0.spec.clusterIPs = ["172.30.0.50", "fd00::50"]
            $0.spec.ipFamilies = ["IPv4", "IPv6"]
        }
        let slices = [
            makeSlice("v4", service: "lb", endpoints: [makeEndpoint("10.0.0.1")]),
            makeSlice("v6", service: "lb", addressType: "IPv6", endpoints: [makeEndpoint("fd00::1")]),
        ]
        let nodePorts = translate([service], slices).plan.frontends(.nodePort)
        XCTAssertEqual(nodePorts.map(\.family), [.v4, .v6])
        XCTAssertEqual(nodePorts.map(\.addressString), ["*", "*"])
        XCTAssertEqual(nodePorts.map(\.verdict), ["forward 10.0.0.1:80", "forward [fd00::1]:80"])
    }
}

/// A.6: no usable endpoints, REJECT vs DROP.
final class TranslatorRejectDropTests: XCTestCase {
    private let v4Only = TranslationOptions(ipFamilies: [.v4])
    private let externalKinds: [FrontendKind] = [.nodePort, .externalIP, .loadBalancer]

    private func plan(_ service: Service, _ endpoints: [Endpoint]) -> LoadBalancerPlan {
        let slices = endpoints.isEmpty ? [] : [makeSlice("lb-1", service: "lb", endpoints: endpoints)]
        return translate([service], slices, options: v4Only).plan
    }

    func testWithoutEndpointsEveryFrontendRejects() {
        // A.6 row 1: REJECT from any source; external frontends are still emitted, as reject.
        let plan = plan(makeLoadBalancer(externalTrafficPolicy: "Local"), [])
        XCTAssertEqual(plan.frontends.map(\.verdict), ["reject", "reject", "reject", "reject"])
        XCTAssertTrue(plan.frontends.allSatisfy { $0.nodeBackends == nil })
    }

    func testUnusableEndpointsOrAnUnmatchedSlicePortRejectLikeNoEndpoints() {
        XCTAssertEqual(
            plan(makeLoadBalancer(), [unusableEndpoint("10.0.0.1")]).frontends.map(\.action),
            [.reject, .reject, .reject, .reject])
        let service = makeLoadBalancer()
        let slice = makeSlice(
            "lb-1", service: "lb", ports: [EndpointPort(name: "other", port: 80)], endpoints: [makeEndpoint("10.0.0.1")]
        )
        XCTAssertEqual(
            translate([service], [slice], options: v4Only).plan.frontends.map(\.action),
            [.reject, .reject, .reject, .reject])
    }

    func testInternalTrafficPolicyLocalWithoutLocalEndpointsDropsOnlyTheClusterIP() {
        // A.6 row 2; A.5: iTP applies only to the ClusterIP frontend.
        let plan = plan(makeLoadBalancer(internalTrafficPolicy: "Local"), [makeEndpoint("10.0.0.2", node: "node-b")])
        XCTAssertEqual(plan.only(.clusterIP)?.verdict, "drop")
        for kind in externalKinds { XCTAssertEqual(plan.only(kind)?.verdict, "forward 10.0.0.2:80", "\(kind)") }
    }

    func testExternalTrafficPolicyLocalWithoutLocalEndpointsDropsOutsideTrafficButShortCircuitsNodeTraffic() {
        // A.6 row 3
        let plan = plan(makeLoadBalancer(externalTrafficPolicy: "Local"), [makeEndpoint("10.0.0.2", node: "node-b")])
        XCTAssertEqual(plan.only(.clusterIP)?.verdict, "forward 10.0.0.2:80")
        for kind in externalKinds {
            XCTAssertEqual(plan.only(kind)?.verdict, "drop", "\(kind)")
            XCTAssertEqual(plan.only(kind)?.nodeVerdict, "10.0.0.2:80", "\(kind)")
        }
    }

    func testBothPoliciesLocalWithOnlyRemoteEndpointsDropEverywhere() {
        let plan = plan(
            makeLoadBalancer(externalTrafficPolicy: "Local", internalTrafficPolicy: "Local"),
            [makeEndpoint("10.0.0.2", node: "node-b")])
        XCTAssertEqual(plan.frontends.map(\.action), [.drop, .drop, .drop, .drop])
        XCTAssertEqual(plan.only(.nodePort)?.nodeVerdict, "10.0.0.2:80")
    }
}

/// A.7: dual-stack, externalIPs and LB ingress.
final class TranslatorDualStackTests: XCTestCase {
    func testADualStackServiceWithOnlyAnIPv6SliceRejectsOnIPv4AndForwardsOnIPv6() throws {
        let service = try Fixtures.service("service-dualstack.json")
        let slice = try Fixtures.slice("endpointslice-dualstack-ipv6.json")
        let plan = translate([service], [slice]).plan
        XCTAssertEqual(
            plan.frontends.map { "\($0.kind) \($0.addressString):\($0.port) \($0.verdict)" },
            [
                "ClusterIP 10.96.44.2:7 reject",
                "ClusterIP fd00:10:96::2c:7 forward [fd00:10:244:1::7]:7007",
                "ExternalIP 192.0.2.60:7 reject",
                "ExternalIP 2001:db8:60::1:7 forward [fd00:10:244:1::7]:7007",
            ])
        XCTAssertTrue(plan.frontends.allSatisfy { $0.portName == "" && $0.service == "net/echo" })
    }

    func testEachFamilyTakesOnlyItsOwnExternalIPsVIPsAndSourceRanges() {
        let service = makeLoadBalancer {
            $0.spec.clusterIPs = ["172.30.0.50", "fd00::50"]
            $0.spec.ipFamilies = ["IPv4", "IPv6"]
            $0.spec.externalIPs = ["192.0.2.1", "2001:db8::e"]
            $0.spec.loadBalancerSourceRanges = ["203.0.113.0/24", "2001:db8:100::/48"]
            $0.status.loadBalancer.ingress = [
                LoadBalancerIngress(ip: "198.51.100.1"), LoadBalancerIngress(ip: "2001:db8::1b"),
            ]
        }
        let plan = translate([service]).plan
        for family in IPFamily.allCases {
            let frontends = plan.frontends.filter { $0.family == family && $0.kind != .nodePort }
            XCTAssertTrue(frontends.allSatisfy { $0.address?.family == family }, "\(family)")
            XCTAssertTrue(frontends.flatMap(\.sourceRanges).allSatisfy { $0.family == family }, "\(family)")
        }
        XCTAssertEqual(plan.only(.loadBalancer, family: .v6)?.sourceRanges.map(\.description), ["2001:db8:100::/48"])
    }
}

/// A.8: session affinity.
final class TranslatorSessionAffinityTests: XCTestCase {
    func testTheAffinityTimeoutIsSharedByEveryFrontendOfTheServicePort() {
        let service = makeLoadBalancer { $0.spec.sessionAffinity = "ClientIP" }
        let slice = makeSlice("s", service: "lb", endpoints: [makeEndpoint("10.0.0.1")])
        let plan = translate([service], [slice], options: TranslationOptions(ipFamilies: [.v4])).plan
        XCTAssertEqual(plan.frontends.count, 4)
        XCTAssertEqual(Set(plan.frontends.map(\.affinitySeconds)), [10800])
    }
}

/// A.9: loadBalancerSourceRanges.
final class TranslatorSourceRangeTests: XCTestCase {
    private let v4Only = TranslationOptions(ipFamilies: [.v4])
    private let slice = makeSlice("s", service: "lb", endpoints: [makeEndpoint("10.0.0.1")])

    func testSourceRangesApplyOnlyToLoadBalancerFrontends() {
        // [TestLoadBalancer "nodePort bypasses LoadBalancerSourceRanges"]
        let service = makeLoadBalancer { $0.spec.loadBalancerSourceRanges = ["203.0.113.0/25", " 198.51.100.0/24 "] }
        let plan = translate([service], [slice], options: v4Only).plan
        XCTAssertEqual(
            plan.only(.loadBalancer)?.sourceRanges.map(\.description), ["198.51.100.0/24", "203.0.113.0/25"])
        for kind in [FrontendKind.clusterIP, .nodePort, .externalIP] {
            XCTAssertEqual(plan.only(kind)?.sourceRanges, [], "\(kind)")
        }
    }

    func testIPv6OnlySourceRangesLeaveTheIPv4VIPUnrestricted() {
        // A.7 pitfall: the firewall is installed only when the family-filtered list is non-empty.
        let service = makeLoadBalancer { $0.spec.loadBalancerSourceRanges = ["2001:db8:100::/48"] }
        XCTAssertEqual(translate([service], [slice], options: v4Only).plan.only(.loadBalancer)?.sourceRanges, [])
    }

    func testUnparsableSourceRangesAreDroppedWithADiagnostic() {
        let service = makeLoadBalancer { $0.spec.loadBalancerSourceRanges = ["203.0.113.0/25", "bogus"] }
        let result = translate([service], [slice], options: v4Only)
        XCTAssertEqual(result.plan.only(.loadBalancer)?.sourceRanges.map(\.description), ["203.0.113.0/25"])
        XCTAssertEqual(result.diagnostics.map(\.field), ["spec.loadBalancerSourceRanges[1]"])
    }

    func testTheServicesVIPsAreAllowedWhenTheNodesOwnIPIsInARange() {
        // [TestLoadBalancer "same node to LB1, SNATted to LB1 (implicitly allowed)"]
        let service = makeLoadBalancer {
            $0.spec.loadBalancerSourceRanges = ["192.168.0.0/24"]
            $0.status.loadBalancer.ingress = [
                LoadBalancerIngress(ip: "198.51.100.1"), LoadBalancerIngress(ip: "198.51.100.2"),
            ]
        }
        let plan = translate([service], [slice], options: v4Only).plan  // nodeA is 192.168.0.2
        for frontend in plan.frontends(.loadBalancer) {
            XCTAssertEqual(
                frontend.sourceRanges.map(\.description), ["192.168.0.0/24", "198.51.100.1/32", "198.51.100.2/32"])
        }
        // Only the primary node IP counts, and only when some range contains it.
        let elsewhere = ProxyNode(name: "node-a", addresses: [ip("10.1.0.2"), ip("192.168.0.9")])
        let other = translate([service], [slice], node: elsewhere, options: v4Only).plan
        XCTAssertEqual(other.frontends(.loadBalancer).first?.sourceRanges.map(\.description), ["192.168.0.0/24"])
    }

    func testRejectingLoadBalancerFrontendsKeepTheirSourceRanges() {
        // nftables installs the firewall even without endpoints (spec E); the verdict is reject anyway.
        let service = makeLoadBalancer { $0.spec.loadBalancerSourceRanges = ["203.0.113.0/25"] }
        let frontend = translate([service], [], options: v4Only).plan.only(.loadBalancer)
        XCTAssertEqual(frontend?.action, .reject)
        XCTAssertEqual(frontend?.sourceRanges.map(\.description), ["203.0.113.0/25"])
    }
}
