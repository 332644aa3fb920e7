import Datapath
import Foundation
import Glibc
import NetLab
import Reconciler
import XCTest

/// The real `swiftlane run` on node A of a `NodeLab`, with the socket load balancer on a
/// cgroup of node A's client pod and the external-traffic datapath on node A's devices,
/// killed with SIGKILL and restarted, then stopped with SIGTERM and restarted (an
/// upgrade), while two clients connect without pause: one pod through the ClusterIP, the
/// external client through the NodePort. Not one connection may fail.
///
/// `SWIFTLANE_RELIABILITY_LONG=1` (scripts/reliability.sh) runs more rounds.
final class RestartUnderLoadTests: XCTestCase {
    static let clusterIP = "10.96.0.10"
    static let nodePort = 30080

    func testRestartsUnderLoadLoseNoConnectionThroughClusterIPOrNodePort() throws {
        try requireKernelBPF()
        let rounds = ProcessInfo.processInfo.environment["SWIFTLANE_RELIABILITY_LONG"] == "1" ? 10 : 1
        // a1 and b1 serve; a2 is the in-cluster client (its own cgroup, no server).
        let lab = try NodeLab(podsOnA: 2, podsOnB: 1)
        let pinPath = uniquePinPath("restartload")
        let directory = NSTemporaryDirectory() + "swiftlane-restartload-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var cgroup: Cgroup2?
        var controllers: [LabProcess] = []
        defer {
            for controller in controllers { controller.stop() }
            lab.teardown()
            try? cgroup?.destroy()
            SocketLoadBalancer.uninstall(pinPath: pinPath)
            try? FileManager.default.removeItem(atPath: directory)
        }
        let (server, client) = (lab.podsOnA[0], lab.podsOnA[1])
        let remote = lab.podsOnB[0]
        for pod in [server, remote] { try lab.startProbeServer(on: pod) }
        cgroup = try Cgroup2.create(name: lab.prefix + "-cg")
        try FileManager.default.createDirectory(atPath: directory + "/manifests", withIntermediateDirectories: true)
        try manifests(endpoints: [server, remote]).write(toFile: directory + "/manifests/web.yaml", atomically: true, encoding: .utf8)
        try """
            nodeName: node-a
            source: {directory: {path: manifests, pollIntervalMilliseconds: 100}}
            cgroupPath: \(cgroup!.path)
            bpfPinPath: \(pinPath)
            metricsBindAddress: 127.0.0.1:0
            healthzBindAddress: 127.0.0.1:0
            nodePort: {enabled: true, devices: [\(lab.externalDevice), \(lab.interNodeDevice)]}
            """.write(toFile: directory + "/config.yaml", atomically: true, encoding: .utf8)

        // In node A's network namespace only (nsenter --net keeps the mounts: bpffs, cgroupfs).
        let binary = ProbeRunner.defaultBinary()
        func startController() throws -> LabProcess {
            let process = try LabProcess.start(
                argv: ["nsenter", "--net=/run/netns/" + lab.nodeA.netns, binary, "run", "--config", directory + "/config.yaml"])
            controllers.append(process)
            return process
        }
        var controller = try startController()
        // web:80 on the ClusterIP and web:30080 on the node's addresses.
        let programmed = try waitForState(pinPath: pinPath, controller: controller) {
            $0.masters.count == 2 && controller.stderrText.contains(" synced")
        }

        let seconds = 6 + rounds * 5
        func load(_ runner: ProbeRunner, _ target: String) throws -> LabProcess {
            try LabProcess.start(
                argv: runner.command(["tcp", "--target", target, "--count", "10000000", "--interval-ms", "2",
                                      "--duration-seconds", "\(seconds)"]),
                netns: runner.netns)
        }
        let inCluster = ProbeRunner(binary: binary, netns: client.netns, cgroup: cgroup!.path)
        let clusterIPClient = try load(inCluster, "\(Self.clusterIP):80")
        defer { clusterIPClient.stop() }
        let nodePortClient = try load(lab.clientProbe(), "\(lab.externalIPv4):\(Self.nodePort)")
        defer { nodePortClient.stop() }

        Thread.sleep(forTimeInterval: 1.5)
        for _ in 0..<rounds {
            kill(controller.pid, SIGKILL)
            _ = controller.waitForExit(timeout: 5)
            Thread.sleep(forTimeInterval: 1.0)
            controller = try startController()
            _ = try waitForState(pinPath: pinPath, controller: controller) { _ in
                controller.stderrText.contains(" synced")
            }
            Thread.sleep(forTimeInterval: 1.0)
            kill(controller.pid, SIGTERM)
            XCTAssertEqual(controller.waitForExit(timeout: 20), 0, "SIGTERM is a clean exit: \(controller.stderrText)")
            Thread.sleep(forTimeInterval: 0.5)
            controller = try startController()
            _ = try waitForState(pinPath: pinPath, controller: controller) { _ in
                controller.stderrText.contains(" synced")
            }
            Thread.sleep(forTimeInterval: 1.5)
        }

        let viaClusterIP = try clusterIPClient.readJSON(TCPProbeReport.self, timeout: Double(seconds) + 60)
        let viaNodePort = try nodePortClient.readJSON(TCPProbeReport.self, timeout: 60)
        print("restart under load (\(rounds) round(s) of SIGKILL + SIGTERM restarts over \(seconds) s): "
              + "ClusterIP \(viaClusterIP.ok) ok / \(viaClusterIP.attempts) attempts, failures \(viaClusterIP.failures); "
              + "NodePort \(viaNodePort.ok) ok / \(viaNodePort.attempts) attempts, failures \(viaNodePort.failures)")
        XCTAssertEqual(viaClusterIP.failures, [:], "ClusterIP connections failed: \(viaClusterIP.firstError ?? "")")
        XCTAssertEqual(viaNodePort.failures, [:], "NodePort connections failed: \(viaNodePort.firstError ?? "")")
        XCTAssertGreaterThan(viaClusterIP.ok, 200 * rounds, "the ClusterIP client kept connecting throughout")
        XCTAssertGreaterThan(viaNodePort.ok, 200 * rounds, "the NodePort client kept connecting throughout")
        XCTAssertEqual(Set(viaClusterIP.backends.keys), [server.name, remote.name])
        XCTAssertEqual(Set(viaNodePort.backends.keys), [server.name, remote.name])

        // Every restart adopted the maps: same entries, same ids, no map write.
        XCTAssertEqual(try KernelLoadBalancerMaps(pinPath: pinPath).readState(), programmed)
        XCTAssertTrue(controller.isRunning, controller.stderrText)
        for restarted in controllers.dropFirst() {
            for line in restarted.stderrText.split(separator: "\n") where line.hasSuffix(" synced") {
                XCTAssertTrue(line.contains("ops=0"), "a restarted controller wrote to the maps: \(line)")
            }
        }
    }

    /// web: a NodePort Service (TCP 80 → 8080, node port 30080) served by `endpoints`.
    private func manifests(endpoints: [NodeLabPod]) -> String {
        let lines = endpoints.map { pod in
            "  - addresses: [\"\(pod.ipv4)\"]\n    conditions: {ready: true}\n    nodeName: \(pod.name.hasPrefix("a") ? "node-a" : "node-b")"
        }.joined(separator: "\n")
        return """
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: default}
            spec:
              type: NodePort
              clusterIP: \(Self.clusterIP)
              clusterIPs: [\(Self.clusterIP)]
              ipFamilies: [IPv4]
              ports:
              - {name: http, port: 80, protocol: TCP, nodePort: \(Self.nodePort)}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-ipv4, namespace: default, labels: {kubernetes.io/service-name: web}}
            addressType: IPv4
            endpoints:
            \(lines)
            ports:
              - {name: http, port: 8080, protocol: TCP}

            """
    }

    private func waitForState(pinPath: String, controller: LabProcess, timeout: TimeInterval = 60,
                              until done: (MapState) -> Bool) throws -> MapState {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let maps = try? KernelLoadBalancerMaps(pinPath: pinPath), let state = try? maps.readState(), done(state) {
                return state
            }
            guard controller.isRunning else { throw Failure("the controller exited: \(controller.stderrText)") }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw Failure("the controller did not program the maps in time: \(controller.stderrText.suffix(3000))")
    }
}
