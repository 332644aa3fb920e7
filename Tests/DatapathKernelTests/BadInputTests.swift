import Datapath
import Foundation
import Glibc
import NetLab
import Reconciler
import XCTest

/// Bad input fed to a real `swiftlane run` (directory source, 1 MiB object size cap):
/// invalid IPs, ports 0 and 65536, an unparsable endpoint address, a Service with 2,000
/// ports, 10,000 endpoints in one slice, a frontend claimed by two Services, and an
/// object over the size cap. Each refused object or field is logged naming the object
/// and the field and counted in `swiftlane_rejected_objects_total{kind, reason}`; what
/// kube-proxy accepts (2,000 ports, 10,000 endpoints) is programmed; and the Service that
/// was there before keeps exactly its map entries and keeps serving.
final class BadInputTests: XCTestCase {
    private var lab: ClusterLab!
    private var controller: RunningController?

    override func setUpWithError() throws {
        try requireKernelBPF()
        lab = try ClusterLab(backends: 2)
        try lab.startProbeServers(tcpPort: SocketLBHarness.tcpPort, udpPort: SocketLBHarness.udpPort)
    }

    override func tearDown() {
        controller?.tearDown()
        lab?.teardown()
    }

    func testBadObjectsAreRejectedNamedAndCountedAndDisturbNothingElse() throws {
        let good = lab.vipIPv4(40)
        let controller = try RunningController(
            lab: lab, label: "badinput",
            manifests: LabManifests.documents(
                LabManifests.service(name: "good", clusterIPs: [good]),
                LabManifests.slice(service: "good", addresses: lab.backends.map(\.ipv4))),
            extraConfig: "maxObjectBytes: 1048576")
        self.controller = controller
        try controller.waitUntil("ready") { try controller.get("/readyz").status == 200 }
        let maps = try KernelLoadBalancerMaps(pinPath: controller.pinPath)
        let before = try maps.readState()
        XCTAssertEqual(before.masters.count, 2, "good:80/TCP and good:53/UDP")

        let folder = controller.directory + "/manifests/"
        try badObjects().write(toFile: folder + "bad.yaml", atomically: true, encoding: .utf8)
        // Over the cap: 1.5 MiB of annotation. Its own file, as a refused document makes
        // its file keep its last good objects (none here).
        try """
            apiVersion: v1
            kind: Service
            metadata:
              name: huge
              namespace: default
              annotations: {padding: "\(String(repeating: "x", count: 1_536 << 10))"}
            spec:
              clusterIP: \(lab.vipIPv4(45))
              ports: [{name: http, port: 80, protocol: TCP}]

            """.write(toFile: folder + "huge.yaml", atomically: true, encoding: .utf8)

        // Programmed: wide's 2,000 frontends, many's 10,000 slots, bad-ports' one valid port.
        try controller.waitUntil("the bad objects' valid parts to be programmed", timeout: 60) {
            let state = try maps.readState()
            return Set(state.meta.values.map(\.service)).isSuperset(of: ["default/wide", "default/many", "default/bad-ports"])
                && state.masters.count == 2 + 2_000 + 1 + 1
        }
        // huge.yaml may be read a poll later than bad.yaml.
        try controller.waitUntil("the over-cap object to be rejected and counted") {
            try controller.scrape().value("swiftlane_rejected_objects_total", ["kind": "Service", "reason": "size"]) == 1
        }
        let after = try maps.readState()
        let byService = Dictionary(grouping: after.meta, by: { $0.value.service })
        XCTAssertEqual(byService["default/wide"]?.count, 2_000, "kube-proxy accepts a Service with 2,000 ports")
        let manyKey = try XCTUnwrap(byService["default/many"]?.first?.key)
        XCTAssertEqual(after.masters[manyKey]?.count, 10_000, "kube-proxy accepts 10,000 endpoints in one slice")
        XCTAssertEqual(byService["default/bad-ports"]?.map { $0.key.port }, [80], "ports 0 and 65536 are skipped")
        let badPortsKey = byService["default/bad-ports"]![0].key
        XCTAssertEqual(after.masters[badPortsKey]?.count, 1, "the unparsable endpoint address is skipped")
        XCTAssertNil(byService["default/bad-ip"], "a Service with an invalid clusterIP is not proxied")
        XCTAssertNil(byService["default/huge"], "the object over the size cap is not programmed")
        XCTAssertNil(byService["default/zz-dup"], "the frontend good holds is not taken over")

        // Nothing else disturbed: good's entries, ranges and ids are those it had.
        for (key, master) in before.masters {
            XCTAssertEqual(after.masters[key], master, "\(key)")
            XCTAssertEqual(after.meta[key], before.meta[key], "\(key)")
            XCTAssertEqual(after.revNats[master.revNatID], before.revNats[master.revNatID], "\(key)")
        }
        for (id, backend) in before.backends { XCTAssertEqual(after.backends[id], backend) }
        let served = try lab.probeRunner().tcp(target: "\(good):80", count: 20)
        XCTAssertEqual(served.ok, 20, "\(served.failures)")
        XCTAssertEqual(Set(served.backends.keys), Set(lab.backends.map(\.name)))

        // Each refusal logged, naming the object and the field.
        let log = controller.process.stderrText
        for expected in [
            "Service default/bad-ip: spec.clusterIP: unparsable clusterIP",
            "Service default/bad-ports: spec.ports[0].port: port 0 outside 1...65535",
            "Service default/bad-ports: spec.ports[1].port: port 65536 outside 1...65535",
            "EndpointSlice default/bad-ports-ipv4: endpoints[1].addresses[0]: unparsable IP",
            "EndpointSlice default/bad-ports-ipv4: ports[2].port: port 65536 outside 1...65535",
            "service=default/zz-dup",
            "huge.yaml document 1 (Service default/huge): 15",
        ] {
            XCTAssertTrue(log.contains(expected), "no log line with \(expected)")
        }
        XCTAssertTrue(log.contains("over the object size cap of 1048576 bytes (maxObjectBytes)"))

        // And counted.
        let samples = try controller.scrape()
        func rejected(_ kind: String, _ reason: String) -> Double {
            samples.value("swiftlane_rejected_objects_total", ["kind": kind, "reason": reason]) ?? 0
        }
        XCTAssertEqual(samples.types["swiftlane_rejected_objects"], "counter")
        XCTAssertEqual(rejected("Service", "spec.clusterIP"), 1)
        XCTAssertEqual(rejected("Service", "spec.ports[].port"), 2)
        XCTAssertEqual(rejected("EndpointSlice", "endpoints[].addresses[]"), 1)
        XCTAssertEqual(rejected("EndpointSlice", "ports[].port"), 2, "ports 0 and 65536 of the slice")
        XCTAssertGreaterThanOrEqual(rejected("Service", "duplicate-frontend"), 1)
        XCTAssertEqual(rejected("Service", "size"), 1)

        // The over-cap object shrunk below the cap: accepted on the next poll.
        try """
            apiVersion: v1
            kind: Service
            metadata: {name: huge, namespace: default}
            spec:
              clusterIP: \(lab.vipIPv4(45))
              ports: [{name: http, port: 80, protocol: TCP}]

            """.write(toFile: folder + "huge.yaml", atomically: true, encoding: .utf8)
        try controller.waitUntil("huge to be programmed once under the cap") {
            try maps.readState().meta.values.contains { $0.service == "default/huge" }
        }
    }

    private func badObjects() -> String {
        let backends = lab.backends.map(\.ipv4)
        let widePorts = (1...2_000).map { "  - {name: p\($0), port: \(10_000 + $0), protocol: TCP}" }.joined(separator: "\n")
        let wideSlicePorts = (1...2_000).map { "  - {name: p\($0), port: \(SocketLBHarness.tcpPort), protocol: TCP}" }
            .joined(separator: "\n")
        // 10,000 endpoints: 10.200.0.0 onwards (never connected to).
        let manyEndpoints = (0..<10_000).map { "  - {addresses: [\"10.200.\($0 / 250).\($0 % 250 + 1)\"], conditions: {ready: true}}" }
            .joined(separator: "\n")
        return [
            """
            apiVersion: v1
            kind: Service
            metadata: {name: bad-ip, namespace: default}
            spec:
              clusterIP: 10.96.0.300
              ports: [{name: http, port: 80, protocol: TCP}]

            """,
            """
            apiVersion: v1
            kind: Service
            metadata: {name: bad-ports, namespace: default}
            spec:
              clusterIP: \(lab.vipIPv4(41))
              ports:
              - {name: zero, port: 0, protocol: TCP}
              - {name: big, port: 65536, protocol: TCP}
              - {name: http, port: 80, protocol: TCP}

            """,
            """
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: bad-ports-ipv4, namespace: default, labels: {kubernetes.io/service-name: bad-ports}}
            addressType: IPv4
            endpoints:
            - {addresses: ["\(backends[0])"], conditions: {ready: true}}
            - {addresses: ["10.1.2.999"], conditions: {ready: true}}
            ports:
            - {name: http, port: \(SocketLBHarness.tcpPort), protocol: TCP}
            - {name: zero, port: 0, protocol: TCP}
            - {name: big, port: 65536, protocol: TCP}

            """,
            """
            apiVersion: v1
            kind: Service
            metadata: {name: wide, namespace: default}
            spec:
              clusterIP: \(lab.vipIPv4(42))
              ports:
            \(widePorts)

            """,
            """
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: wide-ipv4, namespace: default, labels: {kubernetes.io/service-name: wide}}
            addressType: IPv4
            endpoints: [{addresses: ["\(backends[1])"], conditions: {ready: true}}]
            ports:
            \(wideSlicePorts)

            """,
            """
            apiVersion: v1
            kind: Service
            metadata: {name: many, namespace: default}
            spec:
              clusterIP: \(lab.vipIPv4(43))
              ports: [{name: http, port: 80, protocol: TCP}]

            """,
            """
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: many-ipv4, namespace: default, labels: {kubernetes.io/service-name: many}}
            addressType: IPv4
            endpoints:
            \(manyEndpoints)
            ports: [{name: http, port: \(SocketLBHarness.tcpPort), protocol: TCP}]

            """,
            // The same ClusterIP and port as good: good keeps it.
            """
            apiVersion: v1
            kind: Service
            metadata: {name: zz-dup, namespace: default}
            spec:
              clusterIP: \(lab.vipIPv4(40))
              ports: [{name: http, port: 80, protocol: TCP}]

            """,
        ].joined(separator: "---\n")
    }
}
