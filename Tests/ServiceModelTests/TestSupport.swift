import Foundation
import XCTest

@testable import ServiceModel

// MARK: - Fixtures

/// Fixture files copied from shared/spec/fixtures, located next to this file.
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "Fixtures")

    static func data(_ name: String) throws -> Data {
        try Data(contentsOf: directory.appendingPathComponent(name))
    }

    static func service(_ name: String) throws -> Service {
        try JSONDecoder().decode(Service.self, from: data(name))
    }

    static func slice(_ name: String) throws -> EndpointSlice {
        try JSONDecoder().decode(EndpointSlice.self, from: data(name))
    }

    /// The objects of a fixture file through `ManifestDecoder`.
    static func manifest(_ name: String) throws -> ManifestObjects {
        try ManifestDecoder.decode(data(name), source: name)
    }
}

// MARK: - Builders

func ip(_ text: String) -> IPAddress {
    guard let address = IPAddress(sloppy: text) else { fatalError("bad test IP \(text)") }
    return address
}

func cidr(_ text: String) -> CIDR {
    guard let value = CIDR(sloppy: text) else { fatalError("bad test CIDR \(text)") }
    return value
}

/// A ClusterIP Service `ns/<name>` with one TCP port `p80` (80) unless told otherwise.
func makeService(
    _ name: String, namespace: String = "ns", clusterIP: String = "172.30.0.41",
    ports: [ServicePort] = [ServicePort(name: "p80", port: 80)], _ configure: (inout Service) -> Void = { _ in }
) -> Service {
    var service = Service(
        metadata: ObjectMeta(name: name, namespace: namespace),
        spec: ServiceSpec(type: "ClusterIP", clusterIP: clusterIP, clusterIPs: [clusterIP], ports: ports))
    configure(&service)
    return service
}

/// A slice of `ns/<service>` with one TCP port `p80` (port 80) unless told otherwise.
func makeSlice(
    _ name: String, service: String, namespace: String = "ns", addressType: String = "IPv4",
    ports: [EndpointPort] = [EndpointPort(name: "p80", port: 80)], endpoints: [Endpoint]
) -> EndpointSlice {
    EndpointSlice(
        metadata: ObjectMeta(name: name, namespace: namespace, labels: [WellKnown.serviceNameLabel: service]),
        addressType: addressType, endpoints: endpoints, ports: ports)
}

/// An endpoint; conditions left `nil` take the API defaults (ready, serving, not terminating).
func makeEndpoint(
    _ address: String, node: String? = nil, ready: Bool? = nil, serving: Bool? = nil, terminating: Bool? = nil,
    zones: [String]? = nil, nodes: [String]? = nil
) -> Endpoint {
    var hints: EndpointHints?
    if zones != nil || nodes != nil {
        hints = EndpointHints(forZones: (zones ?? []).map(ForZone.init), forNodes: (nodes ?? []).map(ForNode.init))
    }
    return Endpoint(
        addresses: [address], conditions: EndpointConditions(ready: ready, serving: serving, terminating: terminating),
        nodeName: node, hints: hints)
}

/// Serving-terminating: ready=false, serving=true, terminating=true.
func terminatingEndpoint(_ address: String, node: String? = nil) -> Endpoint {
    makeEndpoint(address, node: node, ready: false, serving: true, terminating: true)
}

/// Neither ready nor serving-terminating.
func unusableEndpoint(_ address: String, node: String? = nil) -> Endpoint {
    makeEndpoint(address, node: node, ready: false, serving: false, terminating: false)
}

let nodeA = ProxyNode(
    name: "node-a", labels: [WellKnown.zoneLabel: "zone-a"], addresses: [ip("192.168.0.2"), ip("fd00:192:168::2")],
    podCIDRs: [cidr("10.244.1.0/24")])

func translate(
    _ services: [Service], _ slices: [EndpointSlice] = [], node: ProxyNode = nodeA,
    options: TranslationOptions = TranslationOptions()
) -> TranslationResult {
    Translator.plan(services: services, endpointSlices: slices, node: node, options: options)
}

extension LoadBalancerPlan {
    func frontends(_ kind: FrontendKind, service: String? = nil, family: IPFamily? = nil) -> [Frontend] {
        frontends.filter {
            $0.kind == kind && (service == nil || $0.service == service) && (family == nil || $0.family == family)
        }
    }

    /// The single frontend of `kind`; fails the test if there is not exactly one.
    func only(
        _ kind: FrontendKind, service: String? = nil, family: IPFamily? = nil, file: StaticString = #filePath,
        line: UInt = #line
    ) -> Frontend? {
        let found = frontends(kind, service: service, family: family)
        XCTAssertEqual(
            found.count, 1, "expected one \(kind) frontend, got \(found.count): \(found)", file: file, line: line)
        return found.first
    }
}

extension Frontend {
    /// `"forward 10.0.0.1:80,10.0.0.2:80"`, `"reject"`, `"drop"` for compact assertions.
    var verdict: String {
        backends.isEmpty ? action.rawValue : "\(action.rawValue) " + backends.map(\.description).joined(separator: ",")
    }

    var nodeVerdict: String? { nodeBackends.map { $0.map(\.description).joined(separator: ",") } }
}
