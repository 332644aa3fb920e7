import Foundation
import XCTest

@testable import ServiceModel

final class ManifestDecoderTests: XCTestCase {
    private func decode(_ text: String, source: String = "manifest.yaml") throws -> ManifestObjects {
        try ManifestDecoder.decode(Data(text.utf8), source: source)
    }

    private func error(
        _ text: String, source: String = "services.yaml", file: StaticString = #filePath, line: UInt = #line
    )
        -> ManifestError?
    {
        do {
            _ = try decode(text, source: source)
            XCTFail("expected an error", file: file, line: line)
            return nil
        } catch let error as ManifestError {
            return error
        } catch {
            XCTFail("unexpected error type \(error)", file: file, line: line)
            return nil
        }
    }

    func testMultiDocumentYAMLYieldsEveryKindAndSkipsOthers() throws {
        let objects = try decode(
            """
            apiVersion: v1
            kind: Service
            metadata:
              name: web
            spec:
              clusterIP: 10.96.0.10
              ports:
              - name: http
                port: 80
                targetPort: http
            ---
            # only a comment
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: web-1
              namespace: shop
              labels:
                kubernetes.io/service-name: web
            addressType: IPv4
            endpoints:
            - addresses: ["10.244.1.5"]
              conditions: {ready: true}
              nodeName: node-a
            ports:
            - name: http
              port: 8080
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: foo
            ---
            kind: Node
            apiVersion: v1
            metadata:
              name: node-a
            ---
            """)
        XCTAssertEqual(objects.services.count, 1)
        XCTAssertEqual(objects.services[0].metadata.namespace, "default")  // defaulted
        XCTAssertEqual(objects.services[0].spec.ports[0].targetPort, .string("http"))
        XCTAssertEqual(objects.services[0].spec.ports[0].protocol, "TCP")
        XCTAssertEqual(objects.endpointSlices.first?.metadata.namespace, "shop")
        XCTAssertEqual(objects.endpointSlices.first?.endpoints.first?.conditions.ready, true)
        XCTAssertEqual(objects.endpointSlices.first?.ports, [EndpointPort(name: "http", port: 8080)])
        XCTAssertEqual(objects.nodes.map(\.metadata.name), ["node-a"])
        XCTAssertEqual(objects.nodes[0].metadata.namespace, "")  // cluster-scoped: not defaulted
        XCTAssertEqual(objects.skipped, ["ConfigMap default/foo"])
    }

    func testEmptyInputAndEmptyDocumentsAreFine() throws {
        XCTAssertEqual(try decode(""), ManifestObjects())
        XCTAssertEqual(try decode("---\n---\n# nothing\n---\n{}\n"), ManifestObjects())
        XCTAssertEqual(try decode("", source: "empty.json"), ManifestObjects())
    }

    func testYAMLNullsAndUnnamedPortsKeepTheirMeaning() throws {
        let objects = try decode(
            """
            kind: EndpointSlice
            metadata: {name: s, labels: {kubernetes.io/service-name: svc}}
            addressType: IPv4
            endpoints: null
            ports:
            - name: ""
              port: 80
            - name:
              port: 81
            - port: 82
            """)
        XCTAssertEqual(objects.endpointSlices[0].endpoints, [])
        XCTAssertEqual(objects.endpointSlices[0].ports.map(\.name), ["", nil, nil])
    }

    func testListKindsInYAMLAndJSON() throws {
        let yaml = try decode(
            """
            apiVersion: v1
            kind: List
            items:
            - apiVersion: v1
              kind: Service
              metadata: {name: a, namespace: x}
              spec: {clusterIP: 10.0.0.1}
            - apiVersion: v1
              kind: Secret
              metadata: {name: s, namespace: x}
            - kind: Node
              metadata: {name: n1}
            ---
            kind: ServiceList
            items:
            - metadata: {name: b}
              spec: {clusterIP: 10.0.0.2}
            ---
            kind: NodeList
            items:
            - metadata: {name: n2}
            ---
            kind: EndpointSliceList
            items: null
            """)
        XCTAssertEqual(yaml.services.map(\.metadata.name), ["a", "b"])
        XCTAssertEqual(yaml.services[1].metadata.namespace, "default")
        XCTAssertEqual(yaml.nodes.map(\.metadata.name), ["n1", "n2"])
        XCTAssertEqual(yaml.skipped, ["Secret x/s"])

        let json = try decode(
            #"{"kind":"EndpointSliceList","items":[{"metadata":{"name":"e","namespace":"z"},"addressType":"IPv6"}]}"#,
            source: "slices.json")
        XCTAssertEqual(json.endpointSlices.map(\.addressType), ["IPv6"])
    }

    func testListItemsWithoutKindAreAnErrorNamingTheItem() {
        let error = error(
            """
            kind: List
            items:
            - metadata: {name: mystery, namespace: ns}
            """)
        XCTAssertEqual(error?.document, 1)
        XCTAssertEqual(error?.field, "items[0].kind")
        XCTAssertEqual(
            error?.description, "services.yaml document 1 (object ns/mystery): items[0].kind: missing required field")
    }

    func testTypeErrorsNameSourceDocumentObjectAndFieldPath() {
        let error = error(
            """
            kind: ConfigMap
            metadata: {name: fine}
            ---
            apiVersion: v1
            kind: Service
            metadata:
              name: web
            spec:
              ports:
              - port: http
            """)
        XCTAssertEqual(
            error?.description,
            "services.yaml document 2 (Service default/web): spec.ports[0].port: expected Int, got String")
        XCTAssertEqual(error?.source, "services.yaml")
        XCTAssertEqual(error?.object, "Service default/web")
    }

    func testTypeErrorsInJSONListItemsNameTheItem() {
        let error = error(
            #"{"kind":"ServiceList","items":[{"metadata":{"name":"ok"}},{"metadata":{"name":"bad","namespace":"n"},"spec":{"externalIPs":"1.2.3.4"}}]}"#,
            source: "list.json")
        XCTAssertEqual(
            error?.description,
            "list.json document 1 (Service n/bad): items[1].spec.externalIPs: expected Array, got String")
    }

    func testTypeErrorsInJSONDescribeWhatWasFound() {
        let cases: [(String, String)] = [
            (
                #"{"kind":"Service","metadata":{"name":"a"},"spec":{"ports":[{"port":"80"}]}}"#,
                "spec.ports[0].port: expected Int, got String"
            ),
            (
                #"{"kind":"Service","metadata":{"name":"a"},"spec":{"clusterIP":7}}"#,
                "spec.clusterIP: expected String, got Int"
            ),
            (#"{"kind":"Service","metadata":{"name":"a"},"spec":[]}"#, "spec: expected Object, got Array"),
            (
                #"{"kind":"EndpointSlice","metadata":{"name":"a"},"endpoints":[{"conditions":{"ready":"yes"}}]}"#,
                "endpoints[0].conditions.ready: expected Bool, got String"
            ),
        ]
        for (json, expected) in cases {
            let error = error(json, source: "x.json")
            XCTAssertTrue(
                error?.description.hasSuffix(expected) == true, "\(error?.description ?? "nil") vs \(expected)")
        }
    }

    func testYAMLSyntaxErrorsNameTheDocument() {
        let error = error("kind: Service\n---\nkind: [unclosed\n")
        XCTAssertEqual(error?.document, 2)
        XCTAssertTrue(error?.message.hasPrefix("YAML syntax error") == true, error?.message ?? "")
    }

    func testInvalidJSONIsReported() {
        let error = error(#"{"kind": "Service", "#, source: "broken.json")
        XCTAssertEqual(error?.source, "broken.json")
        XCTAssertEqual(error?.document, 1)
    }

    func testDocumentsWithoutKindOrNotMappingsAreErrors() {
        XCTAssertEqual(
            error("metadata: {name: x}")?.description, "services.yaml document 1 (object x): kind: missing kind")
        XCTAssertEqual(error("- a\n- b\n")?.description, "services.yaml document 1: expected Object, got Array")
    }

    func testJSONIsChosenByTheSourceName() throws {
        // A JSON document named .yaml still parses (YAML is a superset for this input)…
        XCTAssertEqual(try decode(#"{"kind":"Node","metadata":{"name":"n"}}"#).nodes.count, 1)
        // …and YAML named .json does not.
        XCTAssertNotNil(error("kind: Node\n", source: "node.JSON"))
    }

    func testFixturesDecodeThroughTheManifestDecoder() throws {
        var all = ManifestObjects()
        for file in try FileManager.default.contentsOfDirectory(atPath: Fixtures.directory.path).sorted()
        where file.hasSuffix(".json") {
            all.append(contentsOf: try Fixtures.manifest(file))
        }
        XCTAssertEqual(all.services.count, 8)  // six single Services + two from the list page
        XCTAssertEqual(all.endpointSlices.count, 7)  // five single slices + two from the list
        XCTAssertEqual(all.skipped, [])
    }
}
