import Controller
import Datapath
import Foundation
import Glibc
import KubeAPI
import NetLab
import ServiceModel
import XCTest

/// The whole path: a Service and its EndpointSlice on the (fake) API server → informers →
/// the synced gate → translation → pinned BPF maps → real connections from the lab's
/// client namespace through the ClusterIP. Needs root and BPF, like the datapath kernel
/// tests; on this project's machines and in CI it runs.
final class KubernetesEndToEndTests: XCTestCase {
    private var server: FakeAPIServer?
    private var lab: ClusterLab?
    private var pinPath: String?
    private var client: KubeClient?
    private var task: Task<Void, Error>?

    override func setUpWithError() throws {
        guard geteuid() == 0 else { throw XCTSkip("kernel test: needs root (euid \(geteuid()))") }
        guard FileManager.default.fileExists(atPath: "/sys/kernel/btf/vmlinux")
            || FileManager.default.fileExists(atPath: "/proc/sys/kernel/unprivileged_bpf_disabled")
        else { throw XCTSkip("kernel test: this kernel has no BPF syscall") }
    }

    override func tearDown() async throws {
        task?.cancel()
        _ = await task?.result
        client?.shutdown()
        server?.stop()
        lab?.teardown()
        if let pinPath { SocketLoadBalancer.uninstall(pinPath: pinPath) }
    }

    /// Polls `check` until it returns nil (a liveness limit; the last complaint is the failure).
    private func eventually(_ what: String, limit: TimeInterval = 30, _ check: () throws -> String?) async throws {
        let deadline = Date().addingTimeInterval(limit)
        var complaint = "not checked"
        while Date() < deadline {
            guard let problem = try check() else { return }
            complaint = problem
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTFail("\(what): \(complaint)")
        throw TestTimeout(what: what)
    }

    func testTrafficThroughAClusterIPFollowsServiceChangesOnTheAPIServer() async throws {
        let server = try FakeAPIServer()
        self.server = server
        let lab = try ClusterLab(backends: 2)
        self.lab = lab
        try lab.startProbeServers(tcpPort: 8080, udpPort: 8053)
        let pinPath = "/sys/fs/bpf/swiftlane-test-kubeapi-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        self.pinPath = pinPath
        let datapath = try SocketLoadBalancer.install(
            DatapathOptions(pinPath: pinPath, cgroupPath: lab.clientCgroup.path), logger: testLogger)
        let syncer = try ProxySyncer(nodeName: "node-a", maps: datapath.maps, logger: testLogger)
        let client = try KubeClient(configuration: try server.clientConfiguration(), logger: testLogger)
        self.client = client
        let service = KubernetesSyncService(
            client: client, syncer: syncer, serviceProxyName: nil, minimumSyncInterval: .milliseconds(50),
            informerOptions: InformerHarness<ServiceModel.Service>.options(), logger: testLogger)
        task = Task { try await service.run() }
        let probe = lab.probeRunner()
        let vip = lab.vipIPv4(30)
        let (first, second) = (lab.backends[0], lab.backends[1])

        // Created: both backends answer through the ClusterIP.
        try server.upsert("services", TestObjects.service("web", clusterIP: vip, port: 80))
        try server.upsert("endpointslices", TestObjects.slice("web-1", service: "web", addresses: [first.ipv4, second.ipv4]))
        try await eventually("both backends through \(vip):80") {
            let report = try probe.tcp(target: "\(vip):80", count: 40)
            return report.ok == 40 && Set(report.backends.keys) == [first.name, second.name] ? nil : "\(report.backends) \(report.failures)"
        }

        // Endpoints changed: only the second backend.
        try server.upsert("endpointslices", TestObjects.slice("web-1", service: "web", addresses: [second.ipv4]))
        try await eventually("only \(second.name)") {
            let report = try probe.tcp(target: "\(vip):80", count: 20)
            return report.backends == [second.name: 20] ? nil : "\(report.backends) \(report.failures)"
        }

        // Service changed: it moves to port 81; port 80 is no longer translated.
        try server.upsert("services", TestObjects.service("web", clusterIP: vip, port: 81))
        try await eventually("the service on port 81") {
            let moved = try probe.tcp(target: "\(vip):81", count: 10)
            let old = try probe.tcp(target: "\(vip):80", count: 5)
            return moved.backends == [second.name: 10] && old.ok == 0 ? nil : "81: \(moved.backends) 80: \(old.backends)"
        }

        // Deleted: the client namespace has no route to the VIP, so only translation reached it.
        try server.delete("services", key: "default/web")
        try await eventually("no translation after the delete") {
            let report = try probe.tcp(target: "\(vip):81", count: 5)
            return report.failures == ["ENETUNREACH": 5] ? nil : "\(report.failures) \(report.backends)"
        }
        XCTAssertTrue(try datapath.maps.readState().masters.isEmpty, "the frontend was pruned from the maps")
    }
}
