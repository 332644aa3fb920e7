import Datapath
import Foundation
import Glibc
import NetLab
import Reconciler
import XCTest

/// The operator's surface of a real `swiftlane run`: metrics checked against what the
/// kernel holds, health and readiness across sync states, configuration reload, SIGTERM
/// leaving traffic flowing, and `cleanup` leaving nothing behind.
final class OperationsKernelTests: XCTestCase {
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

    /// web: two ready backends; empty: no endpoint (REJECT); local-only: iTP=Local with its
    /// only endpoint on another node (DROP, kube-proxy's "no local endpoints").
    private func manifests(extraServices: Int = 0) -> String {
        var documents = [
            LabManifests.service(name: "web", clusterIPs: [lab.vipIPv4(40)]),
            LabManifests.slice(service: "web", addresses: lab.backends.map(\.ipv4)),
            LabManifests.service(name: "empty", clusterIPs: [lab.vipIPv4(41)]),
            """
            apiVersion: v1
            kind: Service
            metadata: {name: local-only, namespace: default}
            spec:
              clusterIP: \(lab.vipIPv4(42))
              internalTrafficPolicy: Local
              ports: [{name: http, port: 80, protocol: TCP}]

            """,
            """
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: local-only-1, namespace: default, labels: {kubernetes.io/service-name: local-only}}
            addressType: IPv4
            endpoints: [{addresses: ["\(lab.backends[0].ipv4)"], conditions: {ready: true}, nodeName: node-b}]
            ports: [{name: http, port: \(SocketLBHarness.tcpPort), protocol: TCP}]

            """,
        ]
        for index in 0..<extraServices {
            documents.append(
                LabManifests.service(
                    name: "extra-\(index)", clusterIPs: [lab.vipIPv4(100 + index)],
                    ports: [("http", 80, "TCP")]))
        }
        return documents.joined(separator: "---\n")
    }

    // MARK: - Metrics

    func testMetricsParseAsPrometheusTextAndMatchWhatTheKernelHolds() throws {
        let controller = try RunningController(lab: lab, label: "metrics", manifests: manifests())
        self.controller = controller
        try controller.waitUntil("the first sync") { try controller.get("/readyz").status == 200 }

        // Traffic: forwarded connections, refused ones, and a connect to no service.
        let probe = lab.probeRunner()
        let forwarded = try probe.tcp(target: "\(lab.vipIPv4(40)):80", count: 12)
        XCTAssertEqual(forwarded.ok, 12, "\(forwarded)")
        let refused = try probe.tcp(target: "\(lab.vipIPv4(41)):80", count: 3)
        XCTAssertEqual(refused.failures["ECONNREFUSED"], 3, "\(refused)")

        let samples = try controller.scrape()
        let maps = try KernelLoadBalancerMaps(pinPath: controller.pinPath)

        // Outcome counters: the exported values are the per-CPU counters, read again now
        // (the lab's cgroup has no other traffic, so they cannot have moved).
        let kernelCounters = maps.outcomeCounters()
        XCTAssertEqual(samples.types["swiftlane_datapath_outcomes"], "counter")
        for (reason, value) in kernelCounters {
            XCTAssertEqual(
                samples.value("swiftlane_datapath_outcomes_total", ["reason": reason]), Double(value), reason)
        }
        XCTAssertGreaterThanOrEqual(kernelCounters["sock_forward"] ?? 0, 12)
        XCTAssertGreaterThanOrEqual(kernelCounters["sock_reject"] ?? 0, 3)

        // Map occupancy, against the maps read entry by entry, and capacity against bpftool.
        let state = try maps.readState()
        let expectedEntries: [String: Int] = [
            "sl_services_v2": state.masters.count, "sl_backends_v1": state.backends.count,
            "sl_revnat_v1": state.revNats.count,
            "sl_fe_meta_v1": state.meta.count, "sl_slots_v1": state.masters.values.reduce(0) { $0 + Int($1.count) },
            "sl_affinity_v1": maps.affinity.keys().count, "sl_sock_rnat_v1": maps.sockRevNats.keys().count,
        ]
        XCTAssertEqual(state.masters.count, 5, "web and empty on 80/TCP and 53/UDP, local-only on 80/TCP")
        for (map, entries) in expectedEntries {
            XCTAssertEqual(samples.value("swiftlane_bpf_map_entries", ["map": map]), Double(entries), map)
            let shown = try XCTUnwrap(
                bpftool(["map", "show", "pinned", controller.pinPath + "/" + map]) as? [String: Any])
            let capacity = try XCTUnwrap(shown["max_entries"] as? Int)
            XCTAssertEqual(samples.value("swiftlane_bpf_map_capacity", ["map": map]), Double(capacity), map)
            XCTAssertEqual(
                try XCTUnwrap(samples.value("swiftlane_bpf_map_pressure", ["map": map])),
                Double(entries) / Double(capacity), accuracy: 1e-12, map)
        }

        // Attached programs: one series per pinned link, as many as bpftool sees on the cgroup.
        let attached = samples.all("swiftlane_bpf_program_attached")
        let onCgroup = try XCTUnwrap(bpftool(["cgroup", "show", lab.clientCgroup.path]) as? [[String: Any]])
        XCTAssertEqual(attached.filter { $0.value == 1 }.count, onCgroup.count)
        XCTAssertEqual(
            Set(attached.compactMap { $0.labels["program"] }), Set(onCgroup.compactMap { $0["name"] as? String }))

        // kube-proxy's metrics: every Service and slice seen once, the iTP=Local Service
        // counted as having no local endpoints, one successful sync at least.
        XCTAssertEqual(samples.value("kubeproxy_sync_proxy_rules_service_changes_total"), 3)
        XCTAssertEqual(samples.value("kubeproxy_sync_proxy_rules_endpoint_changes_total"), 2, "empty has no slice")
        XCTAssertEqual(
            samples.value("kubeproxy_sync_proxy_rules_no_local_endpoints_total", ["traffic_policy": "internal"]), 1)
        XCTAssertEqual(
            samples.value("kubeproxy_sync_proxy_rules_no_local_endpoints_total", ["traffic_policy": "external"]), 0)
        XCTAssertEqual(samples.types["kubeproxy_sync_proxy_rules_duration_seconds"], "histogram")
        XCTAssertGreaterThanOrEqual(samples.value("kubeproxy_sync_proxy_rules_duration_seconds_count") ?? 0, 1)
        XCTAssertGreaterThanOrEqual(samples.value("kubeproxy_network_programming_duration_seconds_count") ?? 0, 1)
        let lastSync = try XCTUnwrap(samples.value("kubeproxy_sync_proxy_rules_last_timestamp_seconds"))
        XCTAssertLessThanOrEqual(lastSync, Date().timeIntervalSince1970)
        XCTAssertGreaterThan(lastSync, 0)
        XCTAssertEqual(samples.value("swiftlane_frontends"), Double(state.masters.count))
        XCTAssertEqual(samples.all("swiftlane_build_info").first?.labels["version"], "0.1.0")
        XCTAssertTrue(samples.all("swiftlane_informer_synced").isEmpty, "no Kubernetes source: no informer series")
    }

    // MARK: - Health

    func testHealthAndReadinessFollowTheSyncState() throws {
        // A services map of 16 entries: the extra Services below overflow it.
        let controller = try RunningController(
            lab: lab, label: "health", manifests: manifests(),
            extraConfig: "mapSizes: {services: 16}")
        self.controller = controller
        try controller.waitUntil("ready") { try controller.get("/readyz").status == 200 }
        let ready = try controller.get("/readyz")
        XCTAssertEqual(ready.body, "[+]source ok\n[+]datapath ok\n[+]programmed ok\nreadyz check passed\n")
        let healthz = try controller.get("/healthz")
        XCTAssertEqual(healthz.status, 200)
        XCTAssertEqual(healthz.headers["content-type"], "application/json")
        XCTAssertEqual(healthz.headers["x-content-type-options"], "nosniff")
        let body = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(healthz.body.utf8)) as? [String: Any])
        XCTAssertEqual(body["nodeEligible"] as? Bool, true)
        XCTAssertEqual(
            body["lastUpdated"] as? String, body["currentTime"] as? String, "healthy: lastUpdated is now (kube-proxy)")
        XCTAssertEqual(try controller.get("/livez").status, 200)
        XCTAssertEqual(try controller.get("/nothing").status, 404)

        // A sync that cannot program everything: not ready, and the reason is said.
        try controller.writeManifests(manifests(extraServices: 20))
        try controller.waitUntil("readiness to fail") { try controller.get("/readyz").status == 503 }
        let notReady = try controller.get("/readyz")
        XCTAssertTrue(notReady.body.contains("[-]programmed failed: the last sync left"), notReady.body)
        XCTAssertTrue(notReady.body.hasSuffix("readyz check failed\n"))
        let samples = try controller.scrape()
        XCTAssertGreaterThanOrEqual(samples.value("swiftlane_reconcile_errors_total", ["reason": "E2BIG"]) ?? 0, 1)
        XCTAssertEqual(samples.value("swiftlane_bpf_map_entries", ["map": "sl_services_v2"]), 16)
        XCTAssertEqual(samples.value("swiftlane_bpf_map_pressure", ["map": "sl_services_v2"]), 1)
        // Within kube-proxy's 60 s a failing sync is not yet unhealthy.
        XCTAssertEqual(try controller.get("/healthz").status, 200)

        // The overflow removed: ready again.
        try controller.writeManifests(manifests())
        try controller.waitUntil("readiness to recover") { try controller.get("/readyz").status == 200 }
        let recovered = try controller.scrape()
        XCTAssertEqual(recovered.value("swiftlane_bpf_map_entries", ["map": "sl_services_v2"]), 5)
    }

    // MARK: - Reload

    func testAChangedConfigurationFileIsAppliedWithoutARestart() throws {
        let controller = try RunningController(lab: lab, label: "reload", manifests: manifests())
        self.controller = controller
        try controller.waitUntil("ready") { try controller.get("/readyz").status == 200 }
        let otherFolder = controller.directory + "/other"
        try FileManager.default.createDirectory(atPath: otherFolder, withIntermediateDirectories: true)
        try LabManifests.documents(
            LabManifests.service(name: "moved", clusterIPs: [lab.vipIPv4(50)]),
            LabManifests.slice(service: "moved", addresses: [lab.backends[1].ipv4])
        ).write(toFile: otherFolder + "/moved.yaml", atomically: true, encoding: .utf8)
        let base = RunningController.config(lab: lab, pinPath: controller.pinPath, extra: "")

        // An invalid value is rejected and named; the running configuration stays.
        try (base + "\nlogLevel: chatty\n").write(toFile: controller.configPath, atomically: true, encoding: .utf8)
        try controller.waitUntil("the rejection") {
            controller.process.stderrText.contains("configuration change rejected")
        }
        XCTAssertTrue(controller.process.stderrText.contains(#"config key logLevel: "chatty""#))
        XCTAssertEqual(try controller.scrape().value("swiftlane_config_reloads_total", ["result": "rejected"]), 1)

        // A new source folder and a key that needs a restart: the first applies at once.
        let moved = base.replacingOccurrences(of: "path: manifests", with: "path: other")
            .replacingOccurrences(of: "metricsBindAddress: 127.0.0.1:0", with: "metricsBindAddress: 127.0.0.1:1")
        try moved.write(toFile: controller.configPath, atomically: true, encoding: .utf8)
        try controller.waitUntil("the new source to be programmed") {
            let state = try KernelLoadBalancerMaps(pinPath: controller.pinPath).readState()
            return Set(state.meta.values.map(\.service)) == ["default/moved"]
        }
        let log = controller.process.stderrText
        XCTAssertTrue(log.contains("keys=source [Operations] configuration reloaded"), log)
        XCTAssertTrue(
            log.contains(
                "keys=metricsBindAddress [Operations] configuration keys changed that take effect only after a restart"),
            log)
        let samples = try controller.scrape()  // still on the port it started with
        XCTAssertEqual(samples.value("swiftlane_config_restart_required"), 1)
        XCTAssertEqual(samples.value("swiftlane_config_reloads_total", ["result": "applied"]), 1)
        let report = try lab.probeRunner().tcp(target: "\(lab.vipIPv4(50)):80", count: 5)
        XCTAssertEqual(report.backends, [lab.backends[1].name: 5], "the reloaded source serves")
        XCTAssertTrue(controller.process.isRunning)
    }

    // MARK: - SIGTERM

    /// SIGTERM stops the controller cleanly; the pinned programs and maps go on serving
    /// while no controller runs at all, as during an upgrade.
    func testSIGTERMLeavesTheDatapathServing() throws {
        let controller = try RunningController(lab: lab, label: "sigterm", manifests: manifests())
        self.controller = controller
        try controller.waitUntil("ready") { try controller.get("/readyz").status == 200 }
        let before = try KernelLoadBalancerMaps(pinPath: controller.pinPath).readState()

        let client = try LabProcess.start(
            argv: lab.probeRunner().command([
                "tcp", "--target", "\(lab.vipIPv4(40)):80", "--count", "1000000",
                "--interval-ms", "5", "--duration-seconds", "3",
            ]),
            netns: lab.clientNetns)
        defer { client.stop() }
        kill(controller.process.pid, SIGTERM)
        XCTAssertEqual(controller.process.waitForExit(timeout: 20), 0, controller.process.stderrText)
        XCTAssertTrue(controller.process.stderrText.contains("stopping; the datapath stays programmed"))

        let report = try client.readJSON(TCPProbeReport.self, timeout: 60)
        XCTAssertEqual(report.failures, [:], "connections failed after SIGTERM: \(report.firstError ?? "")")
        XCTAssertGreaterThan(report.ok, 50)
        XCTAssertEqual(Set(report.backends.keys), Set(lab.backends.map(\.name)))
        let onCgroup = try XCTUnwrap(bpftool(["cgroup", "show", lab.clientCgroup.path]) as? [[String: Any]])
        XCTAssertEqual(onCgroup.count, SocketLoadBalancer.hooks.count, "every program still attached")
        XCTAssertEqual(
            try KernelLoadBalancerMaps(pinPath: controller.pinPath).readState(), before, "the maps are untouched")
    }

    // MARK: - Capabilities

    /// The DaemonSet grants root exactly BPF, NET_ADMIN and SYS_ADMIN: with those alone the
    /// controller installs, serves and reports; without SYS_ADMIN (which also stands for
    /// PERFMON, which the verifier asks of these programs) it cannot load them.
    func testTheManifestsCapabilitiesAreEnoughAndSYSADMINIsNeeded() throws {
        let restricted = ["setpriv", "--bounding-set", "-all,+bpf,+net_admin,+sys_admin", "--"]
        let controller = try RunningController(lab: lab, label: "caps", manifests: manifests(), wrapper: restricted)
        self.controller = controller
        try controller.waitUntil("ready with three capabilities") { try controller.get("/readyz").status == 200 }
        let status = try String(contentsOfFile: "/proc/\(controller.process.pid)/status", encoding: .utf8)
        XCTAssertTrue(status.contains("CapEff:\t0000008000201000"), "exactly net_admin, sys_admin, bpf: \(status)")
        let report = try lab.probeRunner().tcp(target: "\(lab.vipIPv4(40)):80", count: 5)
        XCTAssertEqual(report.ok, 5, "\(report)")
        let samples = try controller.scrape()
        let programs = samples.all("swiftlane_bpf_program_attached").compactMap { $0.labels["program"] }
        XCTAssertEqual(programs.count, SocketLoadBalancer.hooks.count)
        XCTAssertFalse(programs.contains("?"), "program names need lookups by id (SYS_ADMIN): \(programs)")
        controller.tearDown()
        self.controller = nil

        let pinPath = uniquePinPath("caps-denied")
        defer { SocketLoadBalancer.uninstall(pinPath: pinPath) }
        let directory = NSTemporaryDirectory() + "swiftlane-caps-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory + "/manifests", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try RunningController.config(lab: lab, pinPath: pinPath, extra: "")
            .write(toFile: directory + "/config.yaml", atomically: true, encoding: .utf8)
        let (denied, _, errors) = try runCommand([
            "setpriv", "--bounding-set", "-all,+bpf,+net_admin", "--", ProbeRunner.defaultBinary(), "run", "--config",
            directory + "/config.yaml",
        ])
        XCTAssertNotEqual(denied, 0)
        XCTAssertTrue(errors.contains("BPF program load failed"), String(errors.suffix(2000)))
    }

    // MARK: - Cleanup

    func testCleanupLeavesNoPinProgramMapOrAttachmentBehind() throws {
        let controller = try RunningController(lab: lab, label: "cleanup", manifests: manifests())
        self.controller = controller
        try controller.waitUntil("ready") { try controller.get("/readyz").status == 200 }
        let programIDs = try XCTUnwrap(bpftool(["cgroup", "show", lab.clientCgroup.path]) as? [[String: Any]])
            .compactMap { $0["id"] as? Int }
        XCTAssertEqual(programIDs.count, SocketLoadBalancer.hooks.count)
        let pinned = try FileManager.default.contentsOfDirectory(atPath: controller.pinPath).filter { $0 != "links" }
        let mapIDs = try pinned.map { name in
            try XCTUnwrap(
                (bpftool(["map", "show", "pinned", controller.pinPath + "/" + name]) as? [String: Any])?["id"] as? Int)
        }
        let qdiscsBefore = try runCommand(["tc", "qdisc", "show"]).1
        let binary = ProbeRunner.defaultBinary()

        kill(controller.process.pid, SIGTERM)
        XCTAssertEqual(controller.process.waitForExit(timeout: 20), 0)
        let (status, output, errors) = try runCommand([binary, "cleanup", "--pin-path", controller.pinPath])
        XCTAssertEqual(status, 0, errors)
        XCTAssertTrue(output.contains("released: \(programIDs.count) programs, \(mapIDs.count) maps"), output)

        XCTAssertFalse(FileManager.default.fileExists(atPath: controller.pinPath), "no pin directory")
        XCTAssertEqual(
            try XCTUnwrap(bpftool(["cgroup", "show", lab.clientCgroup.path]) as? [[String: Any]]).count, 0,
            "no cgroup attachment")
        let programs = try XCTUnwrap(bpftool(["prog", "show"]) as? [[String: Any]]).compactMap { $0["id"] as? Int }
        XCTAssertTrue(Set(programIDs).isDisjoint(with: programs), "no program left loaded")
        let maps = try XCTUnwrap(bpftool(["map", "show"]) as? [[String: Any]]).compactMap { $0["id"] as? Int }
        XCTAssertTrue(Set(mapIDs).isDisjoint(with: maps), "no map left")
        XCTAssertEqual(try runCommand(["tc", "qdisc", "show"]).1, qdiscsBefore, "no qdisc added or left")
        for device in DatapathInspection.networkDevices() {
            for hook in ["ingress", "egress"] {
                let filters = try runCommand(["tc", "filter", "show", "dev", device, hook]).1
                XCTAssertFalse(filters.contains("sl_"), "\(device) \(hook): \(filters)")
            }
        }
        let report = try lab.probeRunner().tcp(target: "\(lab.vipIPv4(41)):80", count: 1, connectTimeoutMs: 300)
        XCTAssertNil(report.failures["ECONNREFUSED"], "the former REJECT frontend is no longer translated")
    }

    /// A process holding a map open keeps it alive: cleanup says so, naming the process,
    /// instead of claiming success.
    func testCleanupNamesTheProcessesThatStillHoldTheDatapath() throws {
        let pinPath = uniquePinPath("cleanup-held")
        defer { SocketLoadBalancer.uninstall(pinPath: pinPath) }
        var datapath: SocketLoadBalancer? = try SocketLoadBalancer.install(
            DatapathOptions(pinPath: pinPath, cgroupPath: lab.clientCgroup.path), logger: testLogger)
        XCTAssertNotNil(datapath)
        let (status, _, errors) = try runCommand([
            ProbeRunner.defaultBinary(), "cleanup", "--pin-path", pinPath, "--wait", "0.5",
        ])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(errors.contains("cleanup incomplete"), errors)
        XCTAssertTrue(errors.contains("held open by \(getpid()) ("), errors)
        XCTAssertEqual(
            try XCTUnwrap(bpftool(["cgroup", "show", lab.clientCgroup.path]) as? [[String: Any]]).count, 0,
            "the programs were detached all the same")
        datapath = nil
    }
}
