import Foundation
import XCTest

@testable import ServiceModel

final class LoadBalancerPlanTests: XCTestCase {
    private var samplePlan: LoadBalancerPlan {
        LoadBalancerPlan(
            frontends: [
                Frontend(
                    service: "ns/lb", portName: "http", protocol: .tcp, kind: .loadBalancer,
                    address: ip("198.51.100.1"),
                    port: 80, action: .forward, backends: [Backend(address: ip("10.0.0.1"), port: 8080, isLocal: true)],
                    nodeBackends: [
                        Backend(address: ip("10.0.0.2"), port: 8080), Backend(address: ip("10.0.0.1"), port: 8080),
                    ],
                    affinitySeconds: 10800, sourceRanges: [cidr("203.0.113.0/25")]),
                Frontend(
                    service: "ns/lb", portName: "http", protocol: .tcp, kind: .nodePort, address: nil, family: .v6,
                    port: 30080, action: .reject),
                Frontend(
                    service: "ns/a", portName: "", protocol: .udp, kind: .clusterIP, address: ip("fd00::a"), port: 53,
                    action: .forward, backends: [Backend(address: ip("fd00::1"), port: 5353)]),
            ],
            healthChecks: [HealthCheck(service: "ns/lb", port: 30000, localEndpoints: 1)])
    }

    func testJSONHasTheAgreedShapeWithSortedKeysAndOmittedEmptyFields() {
        XCTAssertEqual(
            samplePlan.jsonString(pretty: false),
            #"{"frontends":[{"action":"forward","address":"fd00::a","affinitySeconds":0,"backends":["[fd00::1]:5353"],"#
                + #""kind":"ClusterIP","port":53,"portName":"","protocol":"UDP","service":"ns/a"},"#
                + #"{"action":"reject","address":"*","affinitySeconds":0,"family":"IPv6","kind":"NodePort","port":30080,"#
                + #""portName":"http","protocol":"TCP","service":"ns/lb"},"#
                + #"{"action":"forward","address":"198.51.100.1","affinitySeconds":10800,"backends":["10.0.0.1:8080"],"#
                + #""kind":"LoadBalancer","nodeBackends":["10.0.0.1:8080","10.0.0.2:8080"],"port":80,"portName":"http","#
                + #""protocol":"TCP","service":"ns/lb","sourceRanges":["203.0.113.0/25"]}],"#
                + #""healthChecks":[{"localEndpoints":1,"port":30000,"service":"ns/lb"}]}"#)
    }

    func testAnEmptyPlanIsAnEmptyObject() {
        XCTAssertEqual(LoadBalancerPlan().jsonString(pretty: false), "{}")
    }

    func testPrettyJSONIsIndented() {
        let pretty = samplePlan.jsonString(pretty: true)
        XCTAssertTrue(pretty.contains("\n  \"frontends\" : ["), pretty)
    }

    func testJSONRoundTripsExceptForTheLocalFlag() throws {
        let decoded = try JSONDecoder().decode(
            LoadBalancerPlan.self, from: Data(samplePlan.jsonString(pretty: true).utf8))
        var expected = samplePlan
        for index in expected.frontends.indices {
            expected.frontends[index].backends = expected.frontends[index].backends.map {
                Backend(address: $0.address, port: $0.port)
            }
        }
        XCTAssertEqual(decoded, expected)
    }

    func testFrontendsSortByServicePortProtocolKindFamilyAddressAndPort() {
        func make(
            _ service: String, _ portName: String, _ proto: TransportProtocol, _ kind: FrontendKind, _ address: String?,
            _ family: IPFamily, _ port: UInt16
        ) -> Frontend {
            Frontend(
                service: service, portName: portName, protocol: proto, kind: kind, address: address.map(ip),
                family: family, port: port, action: .reject)
        }
        let ordered = [
            make("a/x", "p", .tcp, .clusterIP, "10.0.0.1", .v4, 80),
            make("a/x", "p", .tcp, .nodePort, nil, .v4, 30000),
            make("a/x", "p", .tcp, .nodePort, nil, .v6, 30000),
            make("a/x", "p", .tcp, .externalIP, "192.0.2.10", .v4, 80),
            make("a/x", "p", .tcp, .externalIP, "192.0.2.9", .v4, 80),
            make("a/x", "p", .tcp, .loadBalancer, "198.51.100.1", .v4, 80),
            make("a/x", "p", .udp, .clusterIP, "10.0.0.1", .v4, 80),
            make("a/x", "q", .tcp, .clusterIP, "10.0.0.1", .v4, 80),
            make("b/x", "", .tcp, .clusterIP, "10.0.0.2", .v4, 80),
        ]
        XCTAssertEqual(LoadBalancerPlan(frontends: ordered.reversed()).frontends, ordered)
    }

    func testBackendsPrintAndParseBothFamilies() {
        XCTAssertEqual(Backend(address: ip("10.0.0.1"), port: 80).description, "10.0.0.1:80")
        XCTAssertEqual(Backend(address: ip("fd00::1"), port: 80).description, "[fd00::1]:80")
        XCTAssertEqual(Backend("[fd00::1]:80"), Backend(address: ip("fd00::1"), port: 80))
        XCTAssertEqual(Backend("10.0.0.1:65535"), Backend(address: ip("10.0.0.1"), port: 65535))
        XCTAssertNil(Backend("10.0.0.1"))
        XCTAssertNil(Backend("10.0.0.1:65536"))
    }

    func testTheTableAlignsColumns() {
        let table = samplePlan.tableString()
        let lines = table.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(lines[0], "SERVICE  PORT        PROTO  KIND          ADDRESS       ACTION   BACKENDS")
        XCTAssertEqual(lines[1], "ns/a     53          UDP    ClusterIP     fd00::a       forward  [fd00::1]:5353")
        XCTAssertEqual(lines[2], "ns/lb    http:30080  TCP    NodePort      *(IPv6)       reject   -")
        XCTAssertEqual(
            lines[3],
            "ns/lb    http:80     TCP    LoadBalancer  198.51.100.1  forward  10.0.0.1:8080 from-node=10.0.0.1:8080,10.0.0.2:8080 affinity=10800s allow=203.0.113.0/25"
        )
        XCTAssertEqual(lines[5], "HEALTHCHECK  PORT   LOCAL-ENDPOINTS")
        XCTAssertEqual(lines[6], "ns/lb        30000  1")
    }

    func testConflictingFrontendsOfTwoServicesAreDiagnosed() {
        let a = makeService("a", clusterIP: "172.30.0.1") { $0.spec.externalIPs = ["192.0.2.1"] }
        let b = makeService("b", clusterIP: "172.30.0.2") { $0.spec.externalIPs = ["192.0.2.1"] }
        let slices = [
            makeSlice("a", service: "a", endpoints: [makeEndpoint("10.0.0.1")]),
            makeSlice("b", service: "b", endpoints: [makeEndpoint("10.0.0.2")]),
        ]
        let result = translate([a, b], slices)
        XCTAssertEqual(result.plan.frontends(.externalIP).count, 2)
        XCTAssertEqual(
            result.diagnostics.map(\.description),
            ["Service ns/b: spec.ports: ExternalIP 192.0.2.1:80/TCP also used by ns/a"])
    }
}
