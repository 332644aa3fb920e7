import Controller
import Datapath
import Foundation
import Glibc
import KubeAPI
import NetLab
import Reconciler
import ServiceModel
import XCTest

/// API server faults with the whole path running (fake API server → informers → syncer →
/// pinned maps → a client connecting through the ClusterIP without pause): the server
/// restarted (connections reset, port refusing for 2 s), a storm of 410s, a watch stream
/// stalled, a server that drips every response one byte at a time, and an object over the
/// size cap. Throughout, the maps keep the last good state (checked every 50 ms) and no
/// connection fails; afterwards a change made on the server is served, and the maps equal
/// the translation's plan of the server's objects, within `convergenceBound`.
///
/// `SWIFTLANE_RELIABILITY_LONG=1` stalls the stream for 3 minutes instead of 3 seconds.
final class APIServerFaultTests: XCTestCase {
    /// From the end of a fault to the maps equal to the plan (backoff at most 200 ms, a
    /// relist, a sync). Stated in docs/reliability.md.
    static let convergenceBound: TimeInterval = 15
    static let long = ProcessInfo.processInfo.environment["SWIFTLANE_RELIABILITY_LONG"] == "1"

    private var server: FakeAPIServer!
    private var lab: ClusterLab!
    private var pinPath: String?
    private var client: KubeClient?
    private var task: Task<Void, Error>?
    private var datapath: SocketLoadBalancer!
    private var syncer: ProxySyncer!
    private let reports = ReportLog()
    private var vip = ""
    /// What the server holds, by resource and key, to compute the plan.
    private var objects: [String: [String: [String: Any]]] = ["services": [:], "endpointslices": [:]]

    override func setUp() async throws {
        guard geteuid() == 0 else { throw XCTSkip("kernel test: needs root (euid \(geteuid()))") }
        guard FileManager.default.fileExists(atPath: "/sys/kernel/btf/vmlinux") else {
            throw XCTSkip("kernel test: this kernel has no BTF")
        }
    }

    override func tearDown() async throws {
        task?.cancel()
        _ = await task?.result
        client?.shutdown()
        server?.stop()
        lab?.teardown()
        if let pinPath { SocketLoadBalancer.uninstall(pinPath: pinPath) }
    }

    /// Server, lab, datapath and the Kubernetes source; web served by both backends.
    private func start(maximumObjectBytes: Int? = nil) async throws {
        server = try FakeAPIServer()
        lab = try ClusterLab(backends: 2)
        try lab.startProbeServers(tcpPort: 8080, udpPort: 8053)
        let pinPath = "/sys/fs/bpf/swiftlane-test-apifault-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        self.pinPath = pinPath
        datapath = try SocketLoadBalancer.install(
            DatapathOptions(pinPath: pinPath, cgroupPath: lab.clientCgroup.path), logger: testLogger)
        syncer = try ProxySyncer(nodeName: "node-a", maps: datapath.maps, logger: testLogger)
        syncer.observer = reports
        let client = try KubeClient(configuration: try server.clientConfiguration(), logger: testLogger)
        self.client = client
        var options = InformerHarness<ServiceModel.Service>.options()
        if let maximumObjectBytes { options.maximumObjectBytes = maximumObjectBytes }
        let service = KubernetesSyncService(
            client: client, syncer: syncer, serviceProxyName: nil, minimumSyncInterval: .milliseconds(50),
            informerOptions: options, logger: testLogger)
        task = Task { try await service.run() }
        vip = lab.vipIPv4(30)
        try put("services", TestObjects.service("web", clusterIP: vip, port: 80))
        try put("endpointslices", TestObjects.slice("web-1", service: "web", addresses: lab.backends.map(\.ipv4)))
        try await converged(within: 30)
    }

    private func put(_ resource: String, _ object: [String: Any]) throws {
        try server.upsert(resource, object)
        let meta = object["metadata"] as! [String: Any]
        objects[resource]!["\(meta["namespace"] ?? "default")/\(meta["name"]!)"] = object
    }

    /// The translation's plan of what the server holds.
    private func plan() throws -> LoadBalancerPlan {
        let decoder = JSONDecoder()
        let services = try objects["services"]!.values.map {
            try decoder.decode(ServiceModel.Service.self, from: JSONSerialization.data(withJSONObject: $0))
        }
        let slices = try objects["endpointslices"]!.values.map {
            try decoder.decode(EndpointSlice.self, from: JSONSerialization.data(withJSONObject: $0))
        }
        return Translator.plan(services: services, endpointSlices: slices,
                               node: ProxyNode(name: "node-a", labels: [:], addresses: [], podCIDRs: []),
                               options: syncer.options).plan
    }

    /// Waits until the maps serve exactly the plan; returns how long that took.
    @discardableResult
    private func converged(within bound: TimeInterval = convergenceBound) async throws -> TimeInterval {
        let start = Date()
        let expected = try plan().jsonString(pretty: true)
        var served = ""
        while Date().timeIntervalSince(start) < bound {
            served = try datapath.maps.readState().servedPlan.jsonString(pretty: true)
            if served == expected { return Date().timeIntervalSince(start) }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTFail("the maps did not converge to the plan within \(bound) s:\nserved \(served)\nplanned \(expected)")
        throw TestTimeout(what: "convergence")
    }

    /// Runs `fault` while a client connects through the ClusterIP and the maps are sampled;
    /// then changes web's endpoints on the server and waits for convergence. Prints the figures.
    private func survive(_ name: String, seconds: Int, _ fault: () async throws -> Void) async throws {
        let baseline = try datapath.maps.readState()
        let probe = try LabProcess.start(
            argv: lab.probeRunner().command(["tcp", "--target", "\(vip):80", "--count", "100000000",
                                             "--interval-ms", "5", "--duration-seconds", "\(seconds)"]),
            netns: lab.clientNetns)
        defer { probe.stop() }
        let sampler = MapSampler(maps: datapath.maps, baseline: baseline)
        let sampling = Task.detached { sampler.run() }
        try await fault()
        sampler.stop()
        _ = await sampling.value
        XCTAssertEqual(sampler.changed, [], "\(name): the maps left the last good state during the fault")

        // A change made after the fault is served within the bound.
        let second = lab.backends[1]
        try put("endpointslices", TestObjects.slice("web-1", service: "web", addresses: [second.ipv4]))
        let took = try await converged()
        let report = try probe.readJSON(TCPProbeReport.self, timeout: Double(seconds) + 60)
        print("API server fault \(name): \(report.ok) connections ok / \(report.attempts), failures \(report.failures); "
              + "maps sampled \(sampler.samples) times, all at the last good state; converged \(String(format: "%.2f", took)) s after the fault")
        XCTAssertEqual(report.failures, [:], "\(name): connections failed: \(report.firstError ?? "")")
        XCTAssertGreaterThan(report.ok, 50)
        // Back to both backends for the next fault.
        try put("endpointslices", TestObjects.slice("web-1", service: "web", addresses: lab.backends.map(\.ipv4)))
        try await converged()
    }

    func testTheServerKilledAndRestartedKeepsTheDatapathAndConverges() async throws {
        try await start()
        try await survive("restart", seconds: 5) {
            try server.waitForWatchers("services")
            try server.command("restart", ["down": 2])
        }
    }

    func testAStormOf410sKeepsTheDatapathAndConverges() async throws {
        try await start()
        try await survive("410 storm", seconds: 6) {
            // Twenty rounds: every watch ended by ERROR 410 after compaction, and the
            // watches that follow refused with 410 too, so every informer relists again and again.
            for _ in 0..<20 {
                try server.command("compact")
                try server.fault(["verb": "watch", "status": 410, "count": 2])
                try server.command("watch_error", ["resource": "services"])
                try server.command("watch_error", ["resource": "endpointslices"])
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let relists = try server.requests().filter(\.isList).count
        XCTAssertGreaterThan(relists, 10, "the storm made the informers relist")
    }

    func testAStalledWatchStreamKeepsTheDatapathAndConverges() async throws {
        try await start()
        let stall = Self.long ? 180 : 3
        try await survive("stalled stream (\(stall) s)", seconds: stall + 3) {
            // The next EndpointSlice watch stalls: open, alive, silent. A change made
            // meanwhile is not seen, so the maps stay as they were; it is delivered when
            // the stream resumes (after the sampling stopped).
            try server.fault(["resource": "endpointslices", "verb": "watch", "stall_seconds": stall, "count": 1])
            try server.command("end_watches", ["resource": "endpointslices"])
            try server.waitForWatchers("endpointslices")
            try put("endpointslices", TestObjects.slice("web-1", service: "web", addresses: [lab.backends[0].ipv4]))
            try await Task.sleep(for: .seconds(max(1, stall - 1)))
        }
    }

    func testAServerDrippingOneByteAtATimeKeepsTheDatapathAndConverges() async throws {
        try await start()
        try await survive("one-byte drip", seconds: 5) {
            // Relists and watches all dripped: the informers gather whole lists and events
            // from single bytes.
            try server.fault(["drip": true, "count": 8])
            try server.command("compact")
            try server.command("watch_error", ["resource": "services"])
            try server.command("watch_error", ["resource": "endpointslices"])
            try await Task.sleep(for: .seconds(3))
        }
    }

    func testAnObjectOverTheSizeCapIsRejectedAndKeepsItsLastGoodState() async throws {
        try await start(maximumObjectBytes: 4096)
        let baseline = try datapath.maps.readState()
        // web moved to port 81, with 8 KiB of annotation: refused, web stays on port 80.
        var huge = TestObjects.service("web", clusterIP: vip, port: 81)
        var meta = huge["metadata"] as! [String: Any]
        meta["annotations"] = ["padding": String(repeating: "x", count: 8192)]
        huge["metadata"] = meta
        try server.upsert("services", huge)
        let deadline = Date().addingTimeInterval(Self.convergenceBound)
        while reports.rejected.isEmpty && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        let rejection = try XCTUnwrap(reports.rejected.first, "the oversized Service was reported")
        XCTAssertEqual(rejection.kind, "Service")
        XCTAssertEqual(rejection.object, "default/web")
        XCTAssertEqual(rejection.reason, "size")
        XCTAssertEqual(try datapath.maps.readState(), baseline, "web keeps its last good state")
        XCTAssertEqual(try lab.probeRunner().tcp(target: "\(vip):80", count: 10).ok, 10)

        // The same change without the padding is accepted.
        try put("services", TestObjects.service("web", clusterIP: vip, port: 81))
        try await converged()
    }
}

/// Every sync's report, for the rejections.
private final class ReportLog: ProxySyncObserver, @unchecked Sendable {
    private let lock = NSLock()
    private var reports: [ProxySyncer.Report] = []

    func proxySyncer(_ syncer: ProxySyncer, didSync report: ProxySyncer.Report, objects: ManifestObjects, prune: Bool) {
        lock.withLock { reports.append(report) }
    }

    var rejected: [Rejection] { lock.withLock { reports.flatMap(\.rejected) } }
}

/// Reads the maps every 50 ms until stopped and records every sample that differs from
/// the baseline (the "last good state").
private final class MapSampler: @unchecked Sendable {
    private let maps: KernelLoadBalancerMaps
    private let baseline: MapState
    private let lock = NSLock()
    private var stopped = false
    private(set) var samples = 0
    private(set) var changed: [String] = []

    init(maps: KernelLoadBalancerMaps, baseline: MapState) {
        self.maps = maps
        self.baseline = baseline
    }

    func run() {
        while !lock.withLock({ stopped }) {
            let state = try? maps.readState()
            lock.withLock {
                samples += 1
                if state != baseline, changed.count < 5 { changed.append("sample \(samples): \(state.map { "\($0.masters.count) frontends" } ?? "unreadable")") }
            }
            usleep(50_000)
        }
    }

    func stop() { lock.withLock { stopped = true } }
}
