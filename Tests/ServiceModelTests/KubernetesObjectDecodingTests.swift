import Foundation
import XCTest

@testable import ServiceModel

final class KubernetesObjectDecodingTests: XCTestCase {
    func testClusterIPServiceFixtureDecodesWithNamedTargetPortAndAffinity() throws {
        let service = try Fixtures.service("service-clusterip.json")
        XCTAssertEqual(service.kind, "Service")
        XCTAssertEqual(service.metadata.name, "web")
        XCTAssertEqual(service.metadata.namespace, "shop")
        XCTAssertEqual(service.metadata.resourceVersion, "48213")
        XCTAssertEqual(service.metadata.labels, ["app": "web"])
        XCTAssertEqual(service.spec.type, "ClusterIP")
        XCTAssertEqual(service.spec.clusterIPs, ["10.96.120.15"])
        XCTAssertEqual(service.spec.ipFamilies, ["IPv4"])
        XCTAssertEqual(service.spec.ports.map(\.name), ["http", "metrics"])
        XCTAssertEqual(service.spec.ports[0].targetPort, .string("http"))
        XCTAssertEqual(service.spec.ports[1].targetPort, .int(9090))
        XCTAssertEqual(service.spec.sessionAffinity, "ClientIP")
        XCTAssertEqual(service.spec.sessionAffinityConfig?.clientIP?.timeoutSeconds, 10800)
        XCTAssertEqual(service.spec.internalTrafficPolicy, "Cluster")
        XCTAssertEqual(service.status.loadBalancer.ingress, [])
    }

    func testLoadBalancerServiceFixtureKeepsRawSourceRangesAndEveryIngress() throws {
        let service = try Fixtures.service("service-loadbalancer-local.json")
        XCTAssertEqual(
            service.spec.loadBalancerSourceRanges, ["203.0.113.0/25", " 198.51.100.0/24", "2001:db8:100::/48"])
        XCTAssertEqual(service.spec.externalTrafficPolicy, "Local")
        XCTAssertEqual(service.spec.healthCheckNodePort, 32456)
        XCTAssertEqual(service.spec.allocateLoadBalancerNodePorts, true)
        XCTAssertEqual(service.spec.ports[0].nodePort, 31443)
        XCTAssertEqual(service.metadata.annotations["service.kubernetes.io/topology-mode"], "Auto")
        XCTAssertEqual(
            service.status.loadBalancer.ingress,
            [
                LoadBalancerIngress(ip: "198.51.100.10", ipMode: "VIP"),
                LoadBalancerIngress(ip: "198.51.100.11", ipMode: "Proxy"),
                LoadBalancerIngress(ip: "198.51.100.12"),
                LoadBalancerIngress(hostname: "lb-7f3e.elb.example.com"),
            ])
    }

    func testEveryServiceFixtureDecodes() throws {
        let expectations: [(String, String?, String?)] = [
            ("service-nodeport.json", "NodePort", "10.96.7.200"),
            ("service-headless.json", "ClusterIP", "None"),
            ("service-externalname.json", "ExternalName", nil),
            ("service-dualstack.json", "ClusterIP", "10.96.44.2"),
        ]
        for (file, type, clusterIP) in expectations {
            let service = try Fixtures.service(file)
            XCTAssertEqual(service.spec.type, type, file)
            XCTAssertEqual(service.spec.clusterIP, clusterIP, file)
        }
        let nodePort = try Fixtures.service("service-nodeport.json")
        XCTAssertEqual(nodePort.spec.ports.map(\.protocol), ["TCP", "UDP"])
        XCTAssertEqual(nodePort.spec.externalIPs, ["192.0.2.50"])
        let dual = try Fixtures.service("service-dualstack.json")
        XCTAssertEqual(dual.spec.ports[0].name, "")
        XCTAssertEqual(dual.spec.ipFamilies, ["IPv4", "IPv6"])
    }

    func testEndpointSliceFixtureDecodesConditionsHintsAndPorts() throws {
        let slice = try Fixtures.slice("endpointslice-clusterip-a.json")
        XCTAssertEqual(slice.addressType, "IPv4")
        XCTAssertEqual(slice.serviceName, "web")
        XCTAssertEqual(slice.endpoints.count, 4)
        XCTAssertEqual(slice.endpoints[0].addresses, ["10.244.1.5"])
        XCTAssertEqual(slice.endpoints[0].nodeName, "node-a")
        XCTAssertEqual(slice.endpoints[0].zone, "zone-a")
        XCTAssertEqual(slice.endpoints[0].hints?.forZones, [ForZone(name: "zone-a")])
        XCTAssertEqual(
            slice.endpoints[2].conditions, EndpointConditions(ready: false, serving: true, terminating: true))
        XCTAssertNil(slice.endpoints[2].hints)
        XCTAssertEqual(
            slice.ports, [EndpointPort(name: "http", port: 8080), EndpointPort(name: "metrics", port: 9090)])

        let lb = try Fixtures.slice("endpointslice-loadbalancer-local.json")
        XCTAssertEqual(lb.endpoints[0].hints?.forZones.map(\.name), ["zone-a", "zone-c"])
        let headless = try Fixtures.slice("endpointslice-headless.json")
        XCTAssertEqual(headless.metadata.labels[WellKnown.headlessLabel], "")
        let v6 = try Fixtures.slice("endpointslice-dualstack-ipv6.json")
        XCTAssertEqual(v6.addressType, "IPv6")
        XCTAssertEqual(v6.ports[0].name, "")
    }

    func testEndpointSliceListWithNullEndpointsAndPortsDecodes() throws {
        let objects = try Fixtures.manifest("endpointslice-empty-and-fqdn.json")
        XCTAssertEqual(objects.endpointSlices.count, 2)
        let empty = objects.endpointSlices[0]
        XCTAssertEqual(empty.metadata.name, "orders-2bq7d")
        XCTAssertEqual(empty.endpoints, [])
        XCTAssertEqual(empty.ports, [])
        XCTAssertEqual(objects.endpointSlices[1].addressType, "FQDN")
        XCTAssertNil(objects.endpointSlices[1].endpoints[0].conditions.serving)
    }

    func testServiceListPageDecodesItemsWithoutKind() throws {
        let objects = try Fixtures.manifest("servicelist-page1.json")
        XCTAssertEqual(
            objects.services.map { "\($0.metadata.namespace)/\($0.metadata.name)" }, ["default/kubernetes", "shop/web"])
        XCTAssertNil(objects.services[0].kind)
        XCTAssertEqual(objects.services[1].spec.ports[0].targetPort, .string("http"))
    }

    /// Watch event objects, including BOOKMARKs with zero-valued fields (spec C.3).
    struct WatchEvent<Object: Decodable>: Decodable {
        var type: String
        var object: Object
    }

    func testWatchStreamObjectsIncludingBookmarksDecode() throws {
        let lines = String(decoding: try Fixtures.data("watch-services-stream.jsonl"), as: UTF8.self)
            .split(separator: "\n")
        let events = try lines.map { try JSONDecoder().decode(WatchEvent<Service>.self, from: Data($0.utf8)) }
        XCTAssertEqual(events.map(\.type), ["ADDED", "MODIFIED", "BOOKMARK", "DELETED"])
        let bookmark = events[2].object
        XCTAssertEqual(bookmark.metadata.resourceVersion, "48390")
        XCTAssertEqual(bookmark.metadata.name, "")
        XCTAssertEqual(bookmark.spec, ServiceSpec())
        XCTAssertEqual(events[1].object.spec.sessionAffinity, "ClientIP")
    }

    func testWatchListStreamBookmarkWithNullListsAndEmptyAddressTypeDecodes() throws {
        let lines = String(decoding: try Fixtures.data("watchlist-endpointslices-stream.jsonl"), as: UTF8.self)
            .split(separator: "\n")
        let events = try lines.map { try JSONDecoder().decode(WatchEvent<EndpointSlice>.self, from: Data($0.utf8)) }
        let bookmarks = events.filter { $0.type == "BOOKMARK" }
        XCTAssertEqual(bookmarks.count, 2)
        XCTAssertEqual(bookmarks[0].object.metadata.annotations["k8s.io/initial-events-end"], "true")
        XCTAssertEqual(bookmarks[0].object.addressType, "")
        XCTAssertEqual(bookmarks[0].object.endpoints, [])
        XCTAssertEqual(events.last?.object.metadata.resourceVersion, "70650")
    }

    func testNullListsAndMapsDecodeAsEmpty() throws {
        let json = """
            {"metadata":{"name":"x","labels":null,"annotations":null},
             "spec":{"clusterIPs":null,"ipFamilies":null,"ports":null,"externalIPs":null,
                     "loadBalancerSourceRanges":null,"type":null},
             "status":{"loadBalancer":{"ingress":null}}}
            """
        let service = try JSONDecoder().decode(Service.self, from: Data(json.utf8))
        XCTAssertEqual(service.metadata.labels, [:])
        XCTAssertEqual(service.spec, ServiceSpec())
        XCTAssertEqual(service.status.loadBalancer.ingress, [])

        let node = try JSONDecoder().decode(
            Node.self,
            from: Data(
                #"{"metadata":{"name":"n"},"spec":{"podCIDRs":null,"taints":null},"status":{"addresses":null}}"#.utf8))
        XCTAssertEqual(node.spec, NodeSpec())
        XCTAssertEqual(node.status.addresses, [])

        let endpoint = try JSONDecoder().decode(
            Endpoint.self, from: Data(#"{"addresses":null,"conditions":null,"hints":{"forZones":null}}"#.utf8))
        XCTAssertEqual(endpoint.addresses, [])
        XCTAssertEqual(endpoint.conditions, EndpointConditions())
        XCTAssertEqual(endpoint.hints, EndpointHints())
    }

    func testUnknownFieldsAreIgnored() throws {
        let json = """
            {"kind":"Service","apiVersion":"v1","futureTopLevel":{"a":[1,2]},
             "metadata":{"name":"x","namespace":"y","managedFields":[{"manager":"kubectl"}]},
             "spec":{"clusterIP":"10.0.0.1","trafficDistribution":"PreferSameNode","futureField":true,
                     "ports":[{"port":80,"appProtocol":"h2c","futurePortField":"x"}]},
             "status":{"loadBalancer":{"ingress":[{"ip":"1.2.3.4","ports":[{"port":80,"protocol":"TCP"}]}]},
                       "conditions":[]}}
            """
        let service = try JSONDecoder().decode(Service.self, from: Data(json.utf8))
        XCTAssertEqual(service.spec.ports, [ServicePort(port: 80)])
        XCTAssertEqual(service.status.loadBalancer.ingress, [LoadBalancerIngress(ip: "1.2.3.4")])
    }

    func testOutOfRangePortsDecodeForTheTranslatorToJudge() throws {
        let service = try JSONDecoder().decode(
            Service.self,
            from: Data(#"{"spec":{"ports":[{"port":65536,"nodePort":-1},{"port":0},{"name":"x"}]}}"#.utf8))
        XCTAssertEqual(service.spec.ports.map(\.port), [65536, 0, 0])
        XCTAssertEqual(service.spec.ports[0].nodePort, -1)
        let port = try JSONDecoder().decode(EndpointPort.self, from: Data(#"{"port":70000}"#.utf8))
        XCTAssertEqual(port.port, 70000)
        XCTAssertNil(port.name)
    }

    func testEndpointPortNameKeepsNilApartFromEmpty() throws {
        let ports = try JSONDecoder().decode(
            [EndpointPort].self, from: Data(#"[{"port":1},{"name":null,"port":2},{"name":"","port":3}]"#.utf8))
        XCTAssertEqual(ports.map(\.name), [nil, nil, ""])
        XCTAssertEqual(ports.map(\.protocol), ["TCP", "TCP", "TCP"])
        // And encoding keeps the difference.
        let encoded = try JSONDecoder().decode([EndpointPort].self, from: JSONEncoder().encode(ports))
        XCTAssertEqual(encoded.map(\.name), [nil, nil, ""])
    }

    func testIntOrStringDecodesEitherFormAndRejectsOthers() throws {
        XCTAssertEqual(
            try JSONDecoder().decode([IntOrString].self, from: Data(#"[8080,"http"]"#.utf8)),
            [.int(8080), .string("http")])
        XCTAssertThrowsError(try JSONDecoder().decode([IntOrString].self, from: Data(#"[{"a":1}]"#.utf8)))
        XCTAssertEqual(IntOrString.int(80).description, "80")
    }

    func testNodeDecodesLabelsPodCIDRsTaintsAndAddresses() throws {
        let json = """
            {"kind":"Node","apiVersion":"v1",
             "metadata":{"name":"node-a","labels":{"topology.kubernetes.io/zone":"zone-a"},
                         "deletionTimestamp":"2025-05-12T10:00:00Z"},
             "spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24","fd00:10:244:1::/64"],
                     "taints":[{"key":"ToBeDeletedByClusterAutoscaler","value":"1747040000","effect":"NoSchedule"}]},
             "status":{"addresses":[{"type":"Hostname","address":"node-a"},{"type":"ExternalIP","address":"203.0.113.9"},
                                    {"type":"InternalIP","address":"192.168.0.2"},{"type":"InternalIP","address":"fd00:192:168::2"}]}}
            """
        let node = try JSONDecoder().decode(Node.self, from: Data(json.utf8))
        XCTAssertEqual(node.metadata.deletionTimestamp, "2025-05-12T10:00:00Z")
        XCTAssertEqual(node.spec.taints.first?.key, WellKnown.toBeDeletedTaint)
        XCTAssertEqual(node.status.addresses.count, 4)

        let proxyNode = ProxyNode(node: node)
        XCTAssertEqual(proxyNode.name, "node-a")
        XCTAssertEqual(proxyNode.zone, "zone-a")
        // InternalIPs first: they are the primary node IPs.
        XCTAssertEqual(proxyNode.addresses, [ip("192.168.0.2"), ip("fd00:192:168::2"), ip("203.0.113.9")])
        XCTAssertEqual(proxyNode.primaryAddress(.v4), ip("192.168.0.2"))
        XCTAssertEqual(proxyNode.podCIDRs, [cidr("10.244.1.0/24"), cidr("fd00:10:244:1::/64")])
    }

    func testObjectsRoundTripThroughTheirJSONEncoding() throws {
        for file in ["service-clusterip.json", "service-loadbalancer-local.json", "service-dualstack.json"] {
            let service = try Fixtures.service(file)
            XCTAssertEqual(try JSONDecoder().decode(Service.self, from: JSONEncoder().encode(service)), service, file)
        }
        for file in ["endpointslice-clusterip-a.json", "endpointslice-loadbalancer-local.json"] {
            let slice = try Fixtures.slice(file)
            XCTAssertEqual(try JSONDecoder().decode(EndpointSlice.self, from: JSONEncoder().encode(slice)), slice, file)
        }
    }

    func testTransportProtocolNumbers() {
        XCTAssertEqual(TransportProtocol.allCases.map(\.ipProtocolNumber), [6, 17, 132])
        XCTAssertEqual(TransportProtocol(rawValue: "SCTP"), .sctp)
        XCTAssertNil(TransportProtocol(rawValue: "tcp"))
    }
}
