import XCTest

@testable import ServiceModel

/// A.10: healthCheckNodePort listeners.
final class TranslatorHealthCheckTests: XCTestCase {
    private let v4Only = TranslationOptions(ipFamilies: [.v4])

    private func healthChecks(_ service: Service, _ slices: [EndpointSlice], node: ProxyNode = nodeA) -> [HealthCheck] {
        translate([service], slices, node: node, options: v4Only).plan.healthChecks
    }

    func testLocalEndpointsCountsDistinctLocalReadyIPsAcrossAllPorts() {
        let service = makeLoadBalancer(externalTrafficPolicy: "Local") {
            $0.spec.ports.append(ServicePort(name: "metrics", port: 9090, nodePort: 30090))
        }
        let slice = makeSlice(
            "s", service: "lb",
            ports: [EndpointPort(name: "p80", port: 80), EndpointPort(name: "metrics", port: 9090)],
            endpoints: [
                makeEndpoint("10.0.0.1", node: "node-a"), makeEndpoint("10.0.0.2", node: "node-a"),
                makeEndpoint("10.0.0.3", node: "node-b"),
                terminatingEndpoint("10.0.0.4", node: "node-a"),  // never counts
                // ready wins over terminating (publishNotReadyAddresses): kube-proxy counts IsReady().
                makeEndpoint("10.0.0.5", node: "node-a", ready: true, serving: true, terminating: true),
                unusableEndpoint("10.0.0.6", node: "node-a"),
            ])
        // A second slice repeating 10.0.0.1 on another port still counts it once.
        let extra = makeSlice(
            "t", service: "lb", ports: [EndpointPort(name: "p80", port: 8080)],
            endpoints: [makeEndpoint("10.0.0.1", node: "node-a")])
        XCTAssertEqual(
            healthChecks(service, [slice, extra]), [HealthCheck(service: "ns/lb", port: 30000, localEndpoints: 3)])
    }

    func testOnlyTerminatingLocalEndpointsReportZeroWhileTrafficIsStillServed() {
        // [TestHealthCheckNodePortWhenTerminating]
        let service = makeLoadBalancer(externalTrafficPolicy: "Local")
        let slice = makeSlice(
            "s", service: "lb",
            endpoints: [terminatingEndpoint("10.0.0.1", node: "node-a"), makeEndpoint("10.0.0.2", node: "node-b")])
        XCTAssertEqual(healthChecks(service, [slice]).map(\.localEndpoints), [0])
        XCTAssertEqual(
            translate([service], [slice], options: v4Only).plan.only(.loadBalancer)?.verdict, "forward 10.0.0.1:80")
    }

    func testAServiceWithoutEndpointsReportsZero() {
        XCTAssertEqual(
            healthChecks(makeLoadBalancer(externalTrafficPolicy: "Local"), []),
            [HealthCheck(service: "ns/lb", port: 30000, localEndpoints: 0)])
    }

    func testHealthChecksExistOnlyForLocalPolicyLoadBalancers() {
        // A.2: a healthCheckNodePort on a Cluster-policy LB is ignored [TestOverallIPTablesRules svc5];
        // NodePort + eTP=Local has no health check either.
        let cluster = makeLoadBalancer { $0.spec.healthCheckNodePort = 30000 }
        XCTAssertEqual(healthChecks(cluster, []), [])
        let nodePort = makeLoadBalancer(externalTrafficPolicy: "Local") { $0.spec.type = "NodePort" }
        XCTAssertEqual(healthChecks(nodePort, []), [])
    }

    func testALocalPolicyLoadBalancerWithoutAHealthCheckPortIsDiagnosed() {
        let service = makeLoadBalancer(externalTrafficPolicy: "Local") { $0.spec.healthCheckNodePort = nil }
        let result = translate([service], [], options: v4Only)
        XCTAssertEqual(result.plan.healthChecks, [])
        XCTAssertEqual(result.diagnostics.map(\.field), ["spec.healthCheckNodePort"])
    }

    func testDualStackHealthChecksReportOneListenerWithTheLargerFamilyCount() {
        let service = makeLoadBalancer(externalTrafficPolicy: "Local") {
            $0.spec.clusterIPs = ["172.30.0.50", "fd00::50"]
            $0.spec.ipFamilies = ["IPv4", "IPv6"]
        }
        let slices = [
            makeSlice("v4", service: "lb", endpoints: [makeEndpoint("10.0.0.1", node: "node-a")]),
            makeSlice(
                "v6", service: "lb", addressType: "IPv6",
                endpoints: [makeEndpoint("fd00::1", node: "node-a"), makeEndpoint("fd00::2", node: "node-a")]),
        ]
        XCTAssertEqual(
            translate([service], slices).plan.healthChecks,
            [HealthCheck(service: "ns/lb", port: 30000, localEndpoints: 2)])
    }
}

/// A.11: which set a connection uses and whether it is masqueraded.
final class TrafficDecisionTests: XCTestCase {
    private let clusterCIDR = TranslationOptions(clusterCIDRs: [cidr("10.244.0.0/16")], ipFamilies: [.v4])
    private let podSource = ip("10.244.1.7")
    private let hostSource = ip("192.168.0.2")
    private let remoteSource = ip("203.0.113.9")

    private func plan(_ service: Service, _ endpoints: [Endpoint]) -> LoadBalancerPlan {
        translate([service], [makeSlice("s", service: "lb", endpoints: endpoints)], options: clusterCIDR).plan
    }

    func testClusterIPTrafficIsMasqueradedOnlyWhenNotFromAClusterPod() {
        // A.11(1) with the ClusterCIDR detector.
        let frontend = plan(makeLoadBalancer(), [makeEndpoint("10.244.2.1")]).only(.clusterIP)!
        XCTAssertFalse(
            frontend.decision(source: podSource, sourceIsNodeAddress: false, node: nodeA, options: clusterCIDR)
                .masquerade)
        XCTAssertTrue(
            frontend.decision(source: hostSource, sourceIsNodeAddress: true, node: nodeA, options: clusterCIDR)
                .masquerade)
        XCTAssertTrue(
            frontend.decision(source: remoteSource, sourceIsNodeAddress: false, node: nodeA, options: clusterCIDR)
                .masquerade)
    }

    func testClusterIPTrafficWithoutADetectorIsNeverMasqueradedUnlessMasqueradeAll() {
        let frontend = plan(makeLoadBalancer(), [makeEndpoint("10.244.2.1")]).only(.clusterIP)!
        let none = TranslationOptions(ipFamilies: [.v4])
        XCTAssertFalse(
            frontend.decision(source: hostSource, sourceIsNodeAddress: true, node: nodeA, options: none).masquerade)
        let all = TranslationOptions(clusterCIDRs: [cidr("10.244.0.0/16")], masqueradeAll: true, ipFamilies: [.v4])
        XCTAssertTrue(
            frontend.decision(source: podSource, sourceIsNodeAddress: false, node: nodeA, options: all).masquerade)
    }

    func testTheNodeCIDRDetectorUsesTheNodesPodCIDRs() {
        let frontend = plan(makeLoadBalancer(), [makeEndpoint("10.244.2.1")]).only(.clusterIP)!
        let options = TranslationOptions(ipFamilies: [.v4], localTrafficDetection: .nodeCIDR)
        XCTAssertFalse(
            frontend.decision(source: ip("10.244.1.7"), sourceIsNodeAddress: false, node: nodeA, options: options)
                .masquerade)
        XCTAssertTrue(
            frontend.decision(source: ip("10.244.2.7"), sourceIsNodeAddress: false, node: nodeA, options: options)
                .masquerade)
    }

    func testExternalTrafficWithClusterPolicyIsAlwaysMasqueraded() {
        // A.11(2)
        let frontend = plan(makeLoadBalancer(), [makeEndpoint("10.244.2.1")]).only(.nodePort)!
        for source in [podSource, remoteSource] {
            let decision = frontend.decision(
                source: source, sourceIsNodeAddress: false, node: nodeA, options: clusterCIDR)
            XCTAssertEqual(decision, TrafficDecision(action: .forward, backends: frontend.backends, masquerade: true))
        }
    }

    func testExternalTrafficWithLocalPolicyShortCircuitsPodsAndHostsAndPreservesClientIPs() {
        // A.5 external chain steps 1-3, A.11(2).
        let lb = plan(
            makeLoadBalancer(externalTrafficPolicy: "Local"),
            [makeEndpoint("10.244.1.5", node: "node-a"), makeEndpoint("10.244.2.5", node: "node-b")]
        ).only(.externalIP)!
        let cluster = [
            Backend(address: ip("10.244.1.5"), port: 80, isLocal: true), Backend(address: ip("10.244.2.5"), port: 80),
        ]
        let local = [Backend(address: ip("10.244.1.5"), port: 80, isLocal: true)]
        XCTAssertEqual(
            lb.decision(source: podSource, sourceIsNodeAddress: false, node: nodeA, options: clusterCIDR),
            TrafficDecision(action: .forward, backends: cluster, masquerade: false))
        XCTAssertEqual(
            lb.decision(source: hostSource, sourceIsNodeAddress: true, node: nodeA, options: clusterCIDR),
            TrafficDecision(action: .forward, backends: cluster, masquerade: true))
        XCTAssertEqual(
            lb.decision(source: remoteSource, sourceIsNodeAddress: false, node: nodeA, options: clusterCIDR),
            TrafficDecision(action: .forward, backends: local, masquerade: false))
        // Without a detector pods get the outside behaviour.
        XCTAssertEqual(
            lb.decision(
                source: podSource, sourceIsNodeAddress: false, node: nodeA,
                options: TranslationOptions(ipFamilies: [.v4])),
            TrafficDecision(action: .forward, backends: local, masquerade: false))
    }

    func testLocalPolicyWithoutLocalEndpointsDropsOnlyOutsideTraffic() {
        // A.6 row 3
        let nodePort = plan(
            makeLoadBalancer(externalTrafficPolicy: "Local"), [makeEndpoint("10.244.2.5", node: "node-b")]
        ).only(.nodePort)!
        XCTAssertEqual(
            nodePort.decision(source: remoteSource, sourceIsNodeAddress: false, node: nodeA, options: clusterCIDR)
                .action, .drop)
        XCTAssertEqual(
            nodePort.decision(source: podSource, sourceIsNodeAddress: false, node: nodeA, options: clusterCIDR).action,
            .forward)
        XCTAssertEqual(
            nodePort.decision(source: hostSource, sourceIsNodeAddress: true, node: nodeA, options: clusterCIDR).action,
            .forward)
    }

    func testSourceRangesDropDisallowedSourcesEvenPodsWithLocalPolicy() {
        // A.9 [TestLoadBalancer "pod to LB1 (blocked by LoadBalancerSourceRanges)"]
        let service = makeLoadBalancer(externalTrafficPolicy: "Local") {
            $0.spec.loadBalancerSourceRanges = ["203.0.113.0/24"]
        }
        let lb = plan(service, [makeEndpoint("10.244.1.5", node: "node-a")]).only(.loadBalancer)!
        XCTAssertEqual(
            lb.decision(source: podSource, sourceIsNodeAddress: false, node: nodeA, options: clusterCIDR).action, .drop)
        XCTAssertEqual(
            lb.decision(source: remoteSource, sourceIsNodeAddress: false, node: nodeA, options: clusterCIDR).action,
            .forward)
        // NodePorts are not filtered.
        let nodePort = plan(service, [makeEndpoint("10.244.1.5", node: "node-a")]).only(.nodePort)!
        XCTAssertEqual(
            nodePort.decision(source: podSource, sourceIsNodeAddress: false, node: nodeA, options: clusterCIDR).action,
            .forward)
    }

    func testHairpinConnectionsAreAlwaysMasqueraded() {
        // A.11(3)
        let frontend = plan(makeLoadBalancer(), [makeEndpoint("10.244.1.7")]).only(.clusterIP)!
        let decision = frontend.decision(
            source: podSource, sourceIsNodeAddress: false, node: nodeA, options: clusterCIDR)
        XCTAssertFalse(decision.masquerade)
        XCTAssertTrue(decision.masquerades(source: podSource, to: frontend.backends[0]))
        XCTAssertFalse(decision.masquerades(source: ip("10.244.1.8"), to: frontend.backends[0]))
    }

    func testRejectingFrontendsRejectEverySource() {
        let frontends = plan(makeLoadBalancer(externalTrafficPolicy: "Local"), []).frontends
        for frontend in frontends {
            for (source, isNode) in [(podSource, false), (hostSource, true), (remoteSource, false)] {
                XCTAssertEqual(
                    frontend.decision(source: source, sourceIsNodeAddress: isNode, node: nodeA, options: clusterCIDR)
                        .action, .reject)
            }
        }
    }
}

/// A.12: nodePortAddresses.
final class NodePortAddressTests: XCTestCase {
    private let node = ProxyNode(
        name: "node-a",
        addresses: [
            ip("192.168.0.2"), ip("10.0.0.2"), ip("127.0.0.1"), ip("fd00:192:168::2"), ip("2001:db8::2"), ip("::1"),
        ])

    private func addresses(_ entries: [String], families: Set<IPFamily> = [.v4, .v6]) -> [String] {
        LoadBalancerPlan.nodePortAddresses(
            for: node, options: TranslationOptions(nodePortAddresses: entries, ipFamilies: families)
        ).map(\.description)
    }

    func testEmptyMeansEveryNonLoopbackAddress() {
        XCTAssertEqual(addresses([]), ["10.0.0.2", "192.168.0.2", "2001:db8::2", "fd00:192:168::2"])
        XCTAssertEqual(addresses([], families: [.v6]), ["2001:db8::2", "fd00:192:168::2"])
    }

    func testCIDRsRestrictTheirFamilyAndAFamilyWithoutCIDRsMatchesAll() {
        XCTAssertEqual(addresses(["192.168.0.0/16"]), ["192.168.0.2", "2001:db8::2", "fd00:192:168::2"])
        XCTAssertEqual(addresses(["192.168.0.0/16", "2001:db8::/32"]), ["192.168.0.2", "2001:db8::2"])
    }

    func testAZeroCIDROverridesEverythingElse() {
        XCTAssertEqual(
            addresses(["192.168.0.0/16", "0.0.0.0/0"]), ["10.0.0.2", "192.168.0.2", "2001:db8::2", "fd00:192:168::2"])
    }

    func testPrimaryMeansTheFirstAddressOfEachFamily() {
        XCTAssertEqual(addresses(["primary"]), ["192.168.0.2", "fd00:192:168::2"])
    }

    func testLoopbackIsNeverServedAndIsDiagnosed() {
        XCTAssertEqual(addresses(["127.0.0.0/8"], families: [.v4]), [])
        let result = translate([], options: TranslationOptions(nodePortAddresses: ["127.0.0.1/32", "nonsense"]))
        XCTAssertEqual(result.diagnostics.map(\.field), ["nodePortAddresses[0]", "nodePortAddresses[1]"])
    }

    func testThePlanKeepsTheWildcardWhateverTheSetting() {
        let service = makeLoadBalancer()
        let slice = makeSlice("s", service: "lb", endpoints: [makeEndpoint("10.0.0.1")])
        let options = TranslationOptions(nodePortAddresses: ["192.168.0.0/16"], ipFamilies: [.v4])
        XCTAssertEqual(translate([service], [slice], options: options).plan.only(.nodePort)?.addressString, "*")
    }
}
