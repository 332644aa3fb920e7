import Controller
import Datapath
import Foundation
import Glibc
import Reconciler
import ServiceModel
import NetLab
import XCTest

/// After any reconcile, what the live maps serve (`dump`) is exactly what the translation
/// planned (`plan`), for varied inputs: the spec's fixtures (ClusterIP with affinity,
/// dual-stack, NodePort, LoadBalancer with eTP=Local, source ranges and a health-check
/// port, headless and ExternalName skipped), the demo manifests, and generated ones
/// (iTP=Local drop, reject, externalIPs, several slices, changes and removals).
final class DumpMatchesPlanTests: XCTestCase {
    private var pinPath = ""
    private var cgroup = ""
    private var datapath: SocketLoadBalancer!

    override func setUpWithError() throws {
        try requireKernelBPF()
        pinPath = uniquePinPath("dump")
        cgroup = try KernelEnvironment.detectCgroup2Root() + "/swiftlane-dump-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        XCTAssertEqual(mkdir(cgroup, 0o755), 0)
        datapath = try SocketLoadBalancer.install(DatapathOptions(pinPath: pinPath, cgroupPath: cgroup), logger: testLogger)
    }

    override func tearDown() {
        datapath = nil
        SocketLoadBalancer.uninstall(pinPath: pinPath)
        rmdir(cgroup)
    }

    private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("ServiceModelTests/Fixtures")
    private static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples/demo")

    private func objects(_ directory: URL, _ names: [String]? = nil) throws -> ManifestObjects {
        var result = ManifestObjects()
        let files = try names ?? FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        for name in files where name.hasSuffix(".json") || name.hasSuffix(".yaml") {
            let data = try Data(contentsOf: directory.appendingPathComponent(name))
            result.append(contentsOf: try ManifestDecoder.decode(data, source: name))
        }
        return result
    }

    /// Syncs `objects` and asserts the maps serve exactly the plan, as JSON text.
    private func assertDumpEqualsPlan(_ objects: ManifestObjects, node: String, syncer: ProxySyncer,
                                      file: StaticString = #filePath, line: UInt = #line) throws {
        let report = syncer.sync(objects)
        XCTAssertEqual(report.failures, [], file: file, line: line)
        let planned = Translator.plan(services: objects.services, endpointSlices: objects.endpointSlices,
                                      node: ProxyNode(name: node, labels: [:], addresses: [], podCIDRs: []),
                                      options: syncer.options).plan
        let served = try datapath.maps.readState().servedPlan
        XCTAssertFalse(planned.frontends.isEmpty, file: file, line: line)
        XCTAssertEqual(served.jsonString(pretty: true), planned.jsonString(pretty: true), file: file, line: line)
    }

    func testDumpEqualsPlanForTheSpecFixturesOnEveryNode() throws {
        let objects = try objects(Self.fixtures, [
            "service-clusterip.json", "endpointslice-clusterip-a.json", "endpointslice-clusterip-b.json",
            "service-dualstack.json", "endpointslice-dualstack-ipv6.json", "service-nodeport.json",
            "service-loadbalancer-local.json", "endpointslice-loadbalancer-local.json", "service-headless.json",
            "endpointslice-headless.json", "service-externalname.json", "endpointslice-empty-and-fqdn.json",
        ])
        for node in ["node-a", "node-b", "node-c", "elsewhere"] {
            // A fresh syncer per node adopts what the previous one programmed: the switch
            // is a reconcile like any other.
            let syncer = try ProxySyncer(nodeName: node, maps: datapath.maps, logger: testLogger)
            try assertDumpEqualsPlan(objects, node: node, syncer: syncer)
        }
        let served = try datapath.maps.readState().servedPlan
        XCTAssertTrue(served.frontends.contains { $0.kind == .nodePort && $0.address == nil }, "NodePort * frontends are served")
        XCTAssertTrue(served.frontends.contains { $0.nodeBackends != nil }, "eTP=Local node sets are served")
        XCTAssertTrue(served.frontends.contains { !$0.sourceRanges.isEmpty })
        XCTAssertTrue(served.frontends.contains { $0.affinitySeconds > 0 })
    }

    func testDumpEqualsPlanThroughChangesAndRemovals() throws {
        let syncer = try ProxySyncer(nodeName: "node-a", options: TranslationOptions(clusterCIDRs: [CIDR(sloppy: "198.18.0.0/16")!]),
                                     maps: datapath.maps, logger: testLogger)
        try assertDumpEqualsPlan(try objects(Self.examples), node: "node-a", syncer: syncer)
        func generated(_ endpoints: [String], internalLocal: Bool, externalIP: String) throws -> ManifestObjects {
            let yaml = """
                apiVersion: v1
                kind: Service
                metadata: {name: gen, namespace: t}
                spec:
                  clusterIP: 198.19.9.1
                  externalIPs: [\(externalIP)]
                  internalTrafficPolicy: \(internalLocal ? "Local" : "Cluster")
                  sessionAffinity: ClientIP
                  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
                  ports: [{name: a, port: 80, protocol: TCP}, {name: b, port: 53, protocol: UDP}]
                ---
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata: {name: gen-1, namespace: t, labels: {kubernetes.io/service-name: gen}}
                addressType: IPv4
                endpoints: [\(endpoints.map { "{addresses: [\($0)], nodeName: node-b}" }.joined(separator: ", "))]
                ports: [{name: a, port: 8080, protocol: TCP}, {name: b, port: 5353, protocol: UDP}]
                """
            return try ManifestDecoder.decode(Data(yaml.utf8), source: "gen.yaml")
        }
        for (endpoints, local, externalIP) in [
            (["198.18.1.1", "198.18.1.2"], false, "203.0.113.9"),
            (["198.18.1.2", "198.18.1.3", "198.18.1.4"], false, "203.0.113.9"),
            (["198.18.1.2"], true, "203.0.113.10"),   // iTP=Local, no endpoint on node-a: drop
            ([], false, "203.0.113.10"),              // no endpoints: reject
        ] {
            var objects = try objects(Self.examples)
            objects.append(contentsOf: try generated(endpoints, internalLocal: local, externalIP: externalIP))
            try assertDumpEqualsPlan(objects, node: "node-a", syncer: syncer)
        }
        try assertDumpEqualsPlan(try generated(["198.18.1.7"], internalLocal: false, externalIP: "203.0.113.11"),
                                 node: "node-a", syncer: syncer)
        XCTAssertEqual(syncer.sync(ManifestObjects()).failures, [])
        let empty = try datapath.maps.readState()
        XCTAssertTrue(empty.masters.isEmpty && empty.backends.isEmpty && empty.meta.isEmpty && empty.revNats.isEmpty,
                      "removing everything leaves the maps empty: \(empty)")
    }

    func testTheDumpCommandPrintsWhatThePlanCommandPlans() throws {
        let syncer = try ProxySyncer(nodeName: "node-a", maps: datapath.maps, logger: testLogger)
        syncer.sync(try objects(Self.fixtures, ["service-loadbalancer-local.json", "endpointslice-loadbalancer-local.json"]))
        let binary = ProbeBinary.path
        let dump = try runCommand([binary, "dump", "--pin-path", pinPath])
        let plan = try runCommand([binary, "plan", "--node", "node-a", "-f",
                                   Self.fixtures.appendingPathComponent("service-loadbalancer-local.json").path,
                                   Self.fixtures.appendingPathComponent("endpointslice-loadbalancer-local.json").path])
        XCTAssertEqual(dump, plan)
        XCTAssertTrue(dump.contains("\"nodeBackends\""), dump)
    }

    private func runCommand(_ argv: [String]) throws -> String {
        let process = Process()
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, argv.joined(separator: " "))
        return String(decoding: data, as: UTF8.self)
    }
}

enum ProbeBinary {
    /// The `swiftlane` binary built beside the test bundle.
    static var path: String { ProbeRunner.defaultBinary() }
}
