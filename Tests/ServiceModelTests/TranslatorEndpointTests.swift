import XCTest

@testable import ServiceModel

/// A.3: which slices and endpoints are considered, and how they bind to ServicePorts.
final class TranslatorEndpointSelectionTests: XCTestCase {
    private let v4Only = TranslationOptions(ipFamilies: [.v4])

    private func clusterIPVerdict(
        _ slices: [EndpointSlice], service: Service = makeService("web"), node: ProxyNode = nodeA,
        file: StaticString = #filePath, line: UInt = #line
    ) -> String? {
        translate([service], slices, node: node, options: v4Only).plan.only(.clusterIP, file: file, line: line)?.verdict
    }

    func testOnlySlicesOfTheFamilysAddressTypeAreUsed() {
        // A.3(1): FQDN is ignored entirely, IPv6 slices feed only the IPv6 dataplane.
        let slices = [
            makeSlice("fqdn", service: "web", addressType: "FQDN", endpoints: [makeEndpoint("web.example.com")]),
            makeSlice("v6", service: "web", addressType: "IPv6", endpoints: [makeEndpoint("fd00::1")]),
        ]
        XCTAssertEqual(clusterIPVerdict(slices), "reject")
    }

    func testSlicesWithoutTheServiceNameLabelAreIgnoredWithADiagnostic() {
        // A.3(2)
        var slice = makeSlice("orphan", service: "web", endpoints: [makeEndpoint("10.0.0.1")])
        slice.metadata.labels = [:]
        var empty = makeSlice("empty", service: "", endpoints: [makeEndpoint("10.0.0.2")])
        empty.metadata.labels[WellKnown.serviceNameLabel] = ""
        let result = translate([makeService("web")], [slice, empty], options: v4Only)
        XCTAssertEqual(result.plan.only(.clusterIP)?.action, .reject)
        XCTAssertEqual(result.diagnostics.map(\.object), ["EndpointSlice ns/empty", "EndpointSlice ns/orphan"])
        XCTAssertEqual(result.diagnostics.map(\.field), ["metadata.labels", "metadata.labels"])
    }

    func testHandMadeSlicesWithTheLabelWork() {
        // A.3(2): ownership and managed-by do not matter.
        var slice = makeSlice("manual", service: "web", endpoints: [makeEndpoint("10.0.0.1")])
        slice.metadata.labels["endpointslice.kubernetes.io/managed-by"] = "me"
        XCTAssertEqual(clusterIPVerdict([slice]), "forward 10.0.0.1:80")
    }

    func testSlicesHiddenByKubeProxysLabelSelectorAreIgnored() {
        // A.1(1): headless and other-proxy slices never reach kube-proxy.
        var headless = makeSlice("h", service: "web", endpoints: [makeEndpoint("10.0.0.1")])
        headless.metadata.labels[WellKnown.headlessLabel] = ""
        var other = makeSlice("o", service: "web", endpoints: [makeEndpoint("10.0.0.2")])
        other.metadata.labels[WellKnown.serviceProxyNameLabel] = "x"
        XCTAssertEqual(clusterIPVerdict([headless, other]), "reject")
    }

    func testSlicesOfAServiceAreUnionedAndALaterCopyOfASliceReplacesIt() {
        // A.3(3)
        let a = makeSlice("a", service: "web", endpoints: [makeEndpoint("10.0.0.1")])
        let b = makeSlice("b", service: "web", endpoints: [makeEndpoint("10.0.0.2")])
        let bUpdated = makeSlice("b", service: "web", endpoints: [makeEndpoint("10.0.0.3")])
        XCTAssertEqual(clusterIPVerdict([a, b]), "forward 10.0.0.1:80,10.0.0.2:80")
        XCTAssertEqual(clusterIPVerdict([a, b, bUpdated]), "forward 10.0.0.1:80,10.0.0.3:80")
    }

    func testSlicesBindByNamespaceToo() {
        let elsewhere = makeSlice("a", service: "web", namespace: "other", endpoints: [makeEndpoint("10.0.0.1")])
        XCTAssertEqual(clusterIPVerdict([elsewhere]), "reject")
    }

    func testSlicePortsBindByNameAndProtocolAndGiveTheBackendPort() {
        // A.3(4): the slice port number is the backend port; no match ⇒ no endpoints ⇒ REJECT.
        let service = makeService(
            "web", ports: [ServicePort(name: "http", port: 80), ServicePort(name: "dns", protocol: "UDP", port: 53)])
        let slice = makeSlice(
            "s", service: "web",
            ports: [EndpointPort(name: "http", port: 8080), EndpointPort(name: "dns", port: 5353, protocol: "TCP")],
            endpoints: [makeEndpoint("10.0.0.1")])
        let plan = translate([service], [slice], options: v4Only).plan
        XCTAssertEqual(plan.frontends.map(\.verdict), ["reject", "forward 10.0.0.1:8080"])  // dns/UDP first by name
    }

    func testOneServicePortCanHaveBackendsOnDifferentPortsAcrossSlices() throws {
        // A.3(4): fixtures endpointslice-clusterip-a (8080) and -b (8081).
        let service = try Fixtures.service("service-clusterip.json")
        let slices = [
            try Fixtures.slice("endpointslice-clusterip-a.json"), try Fixtures.slice("endpointslice-clusterip-b.json"),
        ]
        let zoneless = ProxyNode(name: "node-x")
        let plan = translate([service], slices, node: zoneless, options: v4Only).plan
        let http = plan.frontends.first { $0.portName == "http" }
        XCTAssertEqual(http?.verdict, "forward 10.244.1.5:8080,10.244.2.7:8080,10.244.3.11:8081")
        let metrics = plan.frontends.first { $0.portName == "metrics" }
        XCTAssertEqual(metrics?.verdict, "forward 10.244.1.5:9090,10.244.2.7:9090,10.244.3.11:9090")
    }

    func testPortsWithNilNameOrNoNumberAreIgnoredButTheEmptyNameIsTheUnnamedPort() {
        // A.3(4)
        let service = makeService("web", ports: [ServicePort(name: "", port: 80)])
        let slice = makeSlice(
            "s", service: "web",
            ports: [
                EndpointPort(name: nil, port: 7000), EndpointPort(name: "", port: nil), EndpointPort(name: "", port: 0),
                EndpointPort(name: "", port: 8080),
            ],
            endpoints: [makeEndpoint("10.0.0.1")])
        let result = translate([service], [slice], options: v4Only)
        XCTAssertEqual(result.plan.only(.clusterIP)?.verdict, "forward 10.0.0.1:8080")
        XCTAssertEqual(result.diagnostics.map(\.field), ["ports[0].name", "ports[1].port", "ports[2].port"])
    }

    func testOnlyTheFirstAddressIsUsedAndAddresslessEndpointsAreSkipped() {
        // A.3(5)
        let slice = makeSlice(
            "s", service: "web",
            endpoints: [
                Endpoint(addresses: ["10.0.0.1", "10.0.0.99"]), Endpoint(addresses: []), makeEndpoint("10.0.0.2"),
            ])
        let result = translate([makeService("web")], [slice], options: v4Only)
        XCTAssertEqual(result.plan.only(.clusterIP)?.verdict, "forward 10.0.0.1:80,10.0.0.2:80")
        XCTAssertEqual(result.diagnostics.map(\.field), ["endpoints[1].addresses"])
    }

    func testUnparsableAndWrongFamilyEndpointAddressesAreSkippedWithDiagnostics() {
        let slice = makeSlice(
            "s", service: "web",
            endpoints: [makeEndpoint("10.0.0.300"), makeEndpoint("fd00::1"), makeEndpoint("10.0.0.1")])
        let result = translate([makeService("web")], [slice], options: v4Only)
        XCTAssertEqual(result.plan.only(.clusterIP)?.verdict, "forward 10.0.0.1:80")
        XCTAssertEqual(result.diagnostics.count, 2)
    }

    func testDuplicateEndpointsPreferTheNonTerminatingOccurrenceInEitherOrder() {
        // A.3(8): same IP:port in two slices (pod moving, or IP reused while the old pod terminates).
        // Slices are processed in name order, so swapping the names swaps the processing order.
        for (oldName, newName) in [("a", "b"), ("b", "a")] {
            let old = makeSlice(oldName, service: "web", endpoints: [terminatingEndpoint("10.0.0.1", node: "node-a")])
            let new = makeSlice(newName, service: "web", endpoints: [makeEndpoint("10.0.0.1", node: "node-b")])
            let slices = [old, new]
            let service = makeService("web") { $0.spec.internalTrafficPolicy = "Local" }
            // With iTP=Local on node-a: the surviving occurrence is the remote ready one, so
            // no local endpoint remains ⇒ DROP (had the terminating local copy won, it would forward).
            XCTAssertEqual(clusterIPVerdict(slices, service: service), "drop")
            XCTAssertEqual(clusterIPVerdict(slices), "forward 10.0.0.1:80")
        }
    }

    func testTheSameIPOnDifferentPortsIsTwoBackends() {
        // A.3(8) "Different endpoints with duplicate IPs should not be filtered"
        let a = makeSlice("a", service: "web", endpoints: [makeEndpoint("10.0.0.1")])
        let b = makeSlice(
            "b", service: "web", ports: [EndpointPort(name: "p80", port: 81)], endpoints: [makeEndpoint("10.0.0.1")])
        XCTAssertEqual(clusterIPVerdict([a, b]), "forward 10.0.0.1:80,10.0.0.1:81")
    }

    func testBackendsAreSortedByTheIPPortString() {
        // A.3(9): string order, so 10.0.0.10 sorts before 10.0.0.9.
        let slice = makeSlice(
            "s", service: "web", endpoints: ["10.0.0.9", "10.0.0.10", "10.0.0.1"].map { makeEndpoint($0) })
        XCTAssertEqual(clusterIPVerdict([slice]), "forward 10.0.0.10:80,10.0.0.1:80,10.0.0.9:80")
    }

    func testLocalityIsNodeNameEqualityAndAnEmptyProxyNodeNameMakesNothingLocal() {
        // A.3(10)
        let service = makeService("web") { $0.spec.internalTrafficPolicy = "Local" }
        let slice = makeSlice(
            "s", service: "web",
            endpoints: [
                makeEndpoint("10.0.0.1", node: "node-a"), makeEndpoint("10.0.0.2", node: "NODE-A"),
                makeEndpoint("10.0.0.3"),
            ])
        XCTAssertEqual(clusterIPVerdict([slice], service: service), "forward 10.0.0.1:80")
        XCTAssertEqual(clusterIPVerdict([slice], service: service, node: ProxyNode(name: "")), "drop")
        let local = translate([service], [slice], options: v4Only).plan.only(.clusterIP)?.backends
        XCTAssertEqual(local?.map(\.isLocal), [true])
    }
}

/// A.4: Cluster set, Local set, topology and the serving-terminating fallback.
final class TranslatorEndpointCategoryTests: XCTestCase {
    private let v4Only = TranslationOptions(ipFamilies: [.v4])

    private func verdict(
        _ endpoints: [Endpoint], node: ProxyNode = nodeA,
        options: TranslationOptions = TranslationOptions(ipFamilies: [.v4]),
        configure: (inout Service) -> Void = { _ in }, file: StaticString = #filePath, line: UInt = #line
    ) -> String? {
        let service = makeService("web", configure)
        let slice = makeSlice("s", service: "web", endpoints: endpoints)
        return translate([service], [slice], node: node, options: options).plan.only(
            .clusterIP, file: file, line: line)?.verdict
    }

    func testConditionsDefaultToReadyServingAndNotTerminating() {
        // A.3(6)
        XCTAssertEqual(verdict([Endpoint(addresses: ["10.0.0.1"])]), "forward 10.0.0.1:80")
    }

    func testEndpointsThatAreNeitherReadyNorServingTerminatingAreNeverUsed() {
        // A.4: ready=false,serving=false and ready=false,serving=true,terminating=false.
        XCTAssertEqual(
            verdict([
                unusableEndpoint("10.0.0.1"), makeEndpoint("10.0.0.2", ready: false, serving: true, terminating: false),
            ]),
            "reject")
    }

    func testReadyEndpointsWinOverServingTerminatingOnes() {
        XCTAssertEqual(verdict([makeEndpoint("10.0.0.1"), terminatingEndpoint("10.0.0.2")]), "forward 10.0.0.1:80")
    }

    func testWithoutReadyEndpointsTheClusterSetFallsBackToServingTerminatingOnes() {
        // A.4(2.3)
        XCTAssertEqual(
            verdict([
                terminatingEndpoint("10.0.0.2"), unusableEndpoint("10.0.0.3"),
                makeEndpoint("10.0.0.4", ready: false, serving: false, terminating: true),
            ]),
            "forward 10.0.0.2:80")
    }

    func testZoneHintsPreferTheNodesZoneWhenEveryReadyEndpointIsHinted() {
        // A.4(2.1) PreferSameZone
        let endpoints = [
            makeEndpoint("10.0.0.1", zones: ["zone-a"]), makeEndpoint("10.0.0.2", zones: ["zone-b"]),
            makeEndpoint("10.0.0.3", zones: ["zone-b", "zone-a"]),
            terminatingEndpoint("10.0.0.4"),  // unhinted but not ready: does not disable hints
        ]
        XCTAssertEqual(verdict(endpoints), "forward 10.0.0.1:80,10.0.0.3:80")
    }

    func testZoneHintsAreIgnoredInEachOfTheirIgnoreCases() {
        // A.4(2.1): any ready endpoint unhinted; node without zone; empty zone; zone not hinted.
        let oneUnhinted = [makeEndpoint("10.0.0.1", zones: ["zone-a"]), makeEndpoint("10.0.0.2")]
        XCTAssertEqual(verdict(oneUnhinted), "forward 10.0.0.1:80,10.0.0.2:80")
        let emptyHintList = [makeEndpoint("10.0.0.1", zones: ["zone-a"]), makeEndpoint("10.0.0.2", zones: [])]
        XCTAssertEqual(verdict(emptyHintList), "forward 10.0.0.1:80,10.0.0.2:80")

        let hinted = [makeEndpoint("10.0.0.1", zones: ["zone-a"]), makeEndpoint("10.0.0.2", zones: ["zone-b"])]
        XCTAssertEqual(verdict(hinted, node: ProxyNode(name: "node-a")), "forward 10.0.0.1:80,10.0.0.2:80")
        XCTAssertEqual(
            verdict(hinted, node: ProxyNode(name: "node-a", labels: [WellKnown.zoneLabel: ""])),
            "forward 10.0.0.1:80,10.0.0.2:80")
        XCTAssertEqual(
            verdict(hinted, node: ProxyNode(name: "node-d", labels: [WellKnown.zoneLabel: "zone-d"])),
            "forward 10.0.0.1:80,10.0.0.2:80")
    }

    func testTopologyIsNotAppliedToTheServingTerminatingFallback() {
        let endpoints = [
            makeEndpoint("10.0.0.1", ready: false, serving: true, terminating: true, zones: ["zone-b"]),
            terminatingEndpoint("10.0.0.2"),
        ]
        XCTAssertEqual(verdict(endpoints), "forward 10.0.0.1:80,10.0.0.2:80")
    }

    func testNodeHintsPreferThisNodeWhenTheGateIsOn() {
        // A.4(2.1) PreferSameNode, which beats zone hints.
        let endpoints = [
            makeEndpoint("10.0.0.1", zones: ["zone-a"], nodes: ["node-b"]),
            makeEndpoint("10.0.0.2", zones: ["zone-a"], nodes: ["node-a"]),
        ]
        XCTAssertEqual(verdict(endpoints), "forward 10.0.0.2:80")
        // A.3(7): with the gate off node hints are discarded; zone hints still apply.
        XCTAssertEqual(
            verdict(endpoints, options: TranslationOptions(preferSameTrafficDistribution: false, ipFamilies: [.v4])),
            "forward 10.0.0.1:80,10.0.0.2:80")
    }

    func testNodeHintsAreIgnoredUnlessEveryReadyEndpointHasOneAndOneNamesThisNode() {
        let partly = [makeEndpoint("10.0.0.1", nodes: ["node-a"]), makeEndpoint("10.0.0.2", zones: ["zone-a"])]
        XCTAssertEqual(verdict(partly), "forward 10.0.0.1:80,10.0.0.2:80")
        let elsewhere = [makeEndpoint("10.0.0.1", nodes: ["node-b"]), makeEndpoint("10.0.0.2", nodes: ["node-c"])]
        XCTAssertEqual(verdict(elsewhere), "forward 10.0.0.1:80,10.0.0.2:80")
        // Falls through to zone hints when node hints do not apply.
        let zoned = [
            makeEndpoint("10.0.0.1", zones: ["zone-a"], nodes: ["node-b"]),
            makeEndpoint("10.0.0.2", zones: ["zone-b"], nodes: ["node-c"]),
        ]
        XCTAssertEqual(verdict(zoned), "forward 10.0.0.1:80")
    }

    func testTheLocalSetIgnoresTopologyAndFallsBackIndependently() {
        // A.4(4): iTP=Local; the Local set takes local ready endpoints, hints notwithstanding…
        let iTPLocal: (inout Service) -> Void = { $0.spec.internalTrafficPolicy = "Local" }
        let hinted = [
            makeEndpoint("10.0.0.1", node: "node-a", zones: ["zone-b"]),
            makeEndpoint("10.0.0.2", node: "node-b", zones: ["zone-a"]),
        ]
        XCTAssertEqual(verdict(hinted, configure: iTPLocal), "forward 10.0.0.1:80")
        // …else local serving-terminating ones, even while remote ready endpoints exist.
        let fallback = [terminatingEndpoint("10.0.0.1", node: "node-a"), makeEndpoint("10.0.0.2", node: "node-b")]
        XCTAssertEqual(verdict(fallback, configure: iTPLocal), "forward 10.0.0.1:80")
        XCTAssertEqual(verdict(fallback), "forward 10.0.0.2:80")
    }

    func testLocalPolicyWithOnlyRemoteUsableEndpointsDropsWhileNoUsableEndpointsRejects() {
        // A.4(4) hasAnyEndpoints: DROP vs REJECT for Local policy.
        let iTPLocal: (inout Service) -> Void = { $0.spec.internalTrafficPolicy = "Local" }
        XCTAssertEqual(verdict([makeEndpoint("10.0.0.2", node: "node-b")], configure: iTPLocal), "drop")
        XCTAssertEqual(verdict([terminatingEndpoint("10.0.0.2", node: "node-b")], configure: iTPLocal), "drop")
        XCTAssertEqual(verdict([unusableEndpoint("10.0.0.1", node: "node-a")], configure: iTPLocal), "reject")
        XCTAssertEqual(verdict([], configure: iTPLocal), "reject")
    }
}
