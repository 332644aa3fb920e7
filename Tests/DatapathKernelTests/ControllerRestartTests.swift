import Datapath
import Foundation
import Glibc
import NetLab
import Reconciler
import XCTest

/// The real `swiftlane run` process, restarted (SIGKILL, then SIGTERM) while a client
/// connects through a ClusterIP in a loop: the pinned programs and maps keep serving, so
/// not one connection fails, and the restarted controller adopts the maps unchanged.
final class ControllerRestartTests: XCTestCase {
    func testKillingAndRestartingTheControllerLosesNoConnection() throws {
        try requireKernelBPF()
        let lab = try ClusterLab(backends: 3)
        let pinPath = uniquePinPath("restart")
        let directory = NSTemporaryDirectory() + "swiftlane-restart-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var controllers: [LabProcess] = []
        defer {
            for controller in controllers { controller.stop() }
            lab.teardown()
            SocketLoadBalancer.uninstall(pinPath: pinPath)
            try? FileManager.default.removeItem(atPath: directory)
        }
        try lab.startProbeServers(tcpPort: SocketLBHarness.tcpPort, udpPort: SocketLBHarness.udpPort)
        try FileManager.default.createDirectory(atPath: directory + "/manifests", withIntermediateDirectories: true)
        let vip = lab.vipIPv4(30)
        try LabManifests.documents(
            LabManifests.service(name: "web", clusterIPs: [vip]),
            LabManifests.slice(service: "web", addresses: lab.backends.map(\.ipv4))
        ).write(toFile: directory + "/manifests/web.yaml", atomically: true, encoding: .utf8)
        try """
            nodeName: node-a
            source: {directory: {path: manifests, pollIntervalMilliseconds: 100}}
            cgroupPath: \(lab.clientCgroup.path)
            bpfPinPath: \(pinPath)
            """.write(toFile: directory + "/config.yaml", atomically: true, encoding: .utf8)

        let binary = ProbeRunner.defaultBinary()
        func startController() throws -> LabProcess {
            let process = try LabProcess.start(argv: [binary, "run", "--config", directory + "/config.yaml"])
            controllers.append(process)
            return process
        }
        var controller = try startController()
        let programmed = try waitForState(pinPath: pinPath) { !$0.masters.isEmpty }
        XCTAssertEqual(programmed.masters.count, 2, "web:80/TCP and web:53/UDP")

        let client = try LabProcess.start(
            argv: lab.probeRunner().command(["tcp", "--target", "\(vip):80", "--count", "1000000",
                                             "--interval-ms", "2", "--duration-seconds", "7"]),
            netns: lab.clientNetns)
        defer { client.stop() }
        Thread.sleep(forTimeInterval: 1.0)
        kill(controller.pid, SIGKILL)
        _ = controller.waitForExit(timeout: 5)
        Thread.sleep(forTimeInterval: 1.0)
        controller = try startController()
        Thread.sleep(forTimeInterval: 2.0)
        kill(controller.pid, SIGTERM)
        XCTAssertEqual(controller.waitForExit(timeout: 10), 0, "SIGTERM is a clean exit: \(controller.stderrText)")
        Thread.sleep(forTimeInterval: 0.5)
        controller = try startController()

        let report = try client.readJSON(TCPProbeReport.self, timeout: 60)
        XCTAssertEqual(report.failures, [:], "connections failed during restarts: \(report.firstError ?? "")")
        XCTAssertGreaterThan(report.ok, 300, "the client kept connecting throughout")
        XCTAssertEqual(Set(report.backends.keys), Set(lab.backends.map(\.name)))

        // The restarted controllers adopted what they found: same entries, same ids, and
        // not one map operation (each logs its syncs: "ops=0").
        Thread.sleep(forTimeInterval: 1.0)
        let after = try KernelLoadBalancerMaps(pinPath: pinPath).readState()
        XCTAssertEqual(after, programmed, "a restart with unchanged input rewrites nothing")
        XCTAssertTrue(controller.isRunning, controller.stderrText)
        for restarted in controllers.dropFirst() {
            let syncs = restarted.stderrText.split(separator: "\n").filter { $0.hasSuffix(" synced") }
            XCTAssertFalse(syncs.isEmpty, restarted.stderrText)
            for line in syncs { XCTAssertTrue(line.contains("ops=0"), "a restarted controller wrote to the maps: \(line)") }
        }
    }

    private func waitForState(pinPath: String, timeout: TimeInterval = 60, until done: (MapState) -> Bool) throws -> MapState {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let maps = try? KernelLoadBalancerMaps(pinPath: pinPath), let state = try? maps.readState(), done(state) {
                return state
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        struct Timeout: Error, CustomStringConvertible {
            var description: String { "the controller did not program the maps in time" }
        }
        throw Timeout()
    }
}
