import XCTest

@testable import ServiceModel

/// The "expected kube-proxy interpretation" listed in shared/spec/fixtures/README.md.
final class FixtureTranslationTests: XCTestCase {
    private var objects = ManifestObjects()

    override func setUpWithError() throws {
        objects = ManifestObjects()
        for file in try FileManager.default.contentsOfDirectory(atPath: Fixtures.directory.path).sorted()
        where file.hasPrefix("service-") || file.hasPrefix("endpointslice-") {
            objects.append(contentsOf: try Fixtures.manifest(file))
        }
    }

    private func plan(node: ProxyNode, families: Set<IPFamily> = [.v4]) -> TranslationResult {
        Translator.plan(
            services: objects.services, endpointSlices: objects.endpointSlices, node: node,
            options: TranslationOptions(ipFamilies: families))
    }

    private func node(_ name: String, zone: String) -> ProxyNode {
        ProxyNode(name: name, labels: [WellKnown.zoneLabel: zone], addresses: [ip("192.168.10.1")])
    }

    func testWebHTTPPrefersTheNodesZone() {
        let cases: [(ProxyNode, String)] = [
            (node("node-a", zone: "zone-a"), "forward 10.244.1.5:8080"),
            (node("node-c", zone: "zone-c"), "forward 10.244.3.11:8081"),
            (node("node-d", zone: "zone-d"), "forward 10.244.1.5:8080,10.244.2.7:8080,10.244.3.11:8081"),
        ]
        for (node, expected) in cases {
            let web = plan(node: node).plan.frontends.first { $0.service == "shop/web" && $0.portName == "http" }
            XCTAssertEqual(web?.address, ip("10.96.120.15"))
            XCTAssertEqual(web?.port, 80)
            XCTAssertEqual(web?.verdict, expected, node.name)
            XCTAssertEqual(web?.affinitySeconds, 10800)
        }
    }

    func testIngressLoadBalancerWithLocalPolicy() {
        let result = plan(node: node("node-a", zone: "zone-a"))
        let ingress = result.plan.frontends.filter { $0.service == "edge/ingress" }
        XCTAssertEqual(
            ingress.map { "\($0.kind) \($0.addressString):\($0.port) \($0.verdict) node=\($0.nodeVerdict ?? "-")" },
            [
                "ClusterIP 10.96.33.4:443 forward 10.244.1.20:8443 node=-",
                "NodePort *:31443 forward 10.244.1.20:8443 node=10.244.1.20:8443",
                "LoadBalancer 198.51.100.10:443 forward 10.244.1.20:8443 node=10.244.1.20:8443",
                "LoadBalancer 198.51.100.12:443 forward 10.244.1.20:8443 node=10.244.1.20:8443",
            ])
        for lb in ingress where lb.kind == .loadBalancer {
            XCTAssertEqual(lb.sourceRanges.map(\.description), ["198.51.100.0/24", "203.0.113.0/25"])
        }
        XCTAssertEqual(result.plan.healthChecks.first { $0.service == "edge/ingress" }?.localEndpoints, 1)
        let onC = plan(node: node("node-c", zone: "zone-c")).plan
        XCTAssertEqual(
            onC.healthChecks.first { $0.service == "edge/ingress" },
            HealthCheck(service: "edge/ingress", port: 32456, localEndpoints: 0))
        // node-c has no local endpoint: outside traffic is dropped, node traffic uses the zone-c Cluster set.
        let vip = onC.frontends.first { $0.service == "edge/ingress" && $0.kind == .loadBalancer }
        XCTAssertEqual(vip?.action, .drop)
        XCTAssertEqual(vip?.nodeVerdict, "10.244.1.20:8443")
    }

    func testHeadlessExternalNameAndFQDNProduceNothing() {
        let services = Set(
            plan(node: node("node-a", zone: "zone-a"), families: [.v4, .v6]).plan.frontends.map(\.service))
        XCTAssertEqual(services, ["edge/ingress", "net/echo", "shop/api", "shop/web"])
    }

    func testNodePortServiceWithInternalPolicyLocal() {
        // shop/api has no slice among the fixtures: every frontend rejects, per port and protocol.
        let api = plan(node: node("node-a", zone: "zone-a")).plan.frontends.filter { $0.service == "shop/api" }
        XCTAssertEqual(
            api.map { "\($0.portName)/\($0.protocol) \($0.kind) \($0.addressString):\($0.port) \($0.action)" },
            [
                "dns/UDP ClusterIP 10.96.7.200:53 reject", "dns/UDP NodePort *:30053 reject",
                "dns/UDP ExternalIP 192.0.2.50:53 reject",
                "grpc/TCP ClusterIP 10.96.7.200:9000 reject", "grpc/TCP NodePort *:30900 reject",
                "grpc/TCP ExternalIP 192.0.2.50:9000 reject",
            ])
    }

    func testEchoDualStack() {
        let echo = plan(node: node("node-a", zone: "zone-a"), families: [.v4, .v6]).plan.frontends.filter {
            $0.service == "net/echo"
        }
        XCTAssertEqual(
            echo.map { "\($0.kind) \($0.addressString) \($0.verdict)" },
            [
                "ClusterIP 10.96.44.2 reject", "ClusterIP fd00:10:96::2c forward [fd00:10:244:1::7]:7007",
                "ExternalIP 192.0.2.60 reject", "ExternalIP 2001:db8:60::1 forward [fd00:10:244:1::7]:7007",
            ])
    }

    func testFixturesProduceNoDiagnostics() {
        XCTAssertEqual(plan(node: node("node-a", zone: "zone-a"), families: [.v4, .v6]).diagnostics, [])
    }
}
