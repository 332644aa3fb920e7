import Datapath
import Foundation
import Glibc
import NetLab
import XCTest

/// A real `swiftlane run` watching the (fake) API server reports its Events there: the
/// Node's `Starting`, and `FailedToStartServiceHealthcheck` on a LoadBalancer Service whose
/// healthCheckNodePort another process holds.
final class RunEventsEndToEndTests: XCTestCase {
    private var server: FakeAPIServer?
    private var lab: ClusterLab?
    private var controller: LabProcess?
    private var directory = ""
    private var pinPath = ""
    private var squatter: Int32 = -1

    override func setUpWithError() throws {
        guard geteuid() == 0 else { throw XCTSkip("kernel test: needs root (euid \(geteuid()))") }
    }

    override func tearDown() {
        controller?.stop()
        if squatter >= 0 { close(squatter) }
        server?.stop()
        lab?.teardown()
        if !pinPath.isEmpty { SocketLoadBalancer.uninstall(pinPath: pinPath) }
        if !directory.isEmpty { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// A listening socket on 127.0.0.1 at a free port, held for the whole test.
    private func holdAPort() throws -> Int {
        squatter = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(squatter, pointer, length) == 0 && listen(squatter, 1) == 0 && getsockname(squatter, pointer, &length) == 0
            }
        }
        guard bound else { throw TestTimeout(what: "a port to hold (errno \(errno))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private func events() throws -> [[String: Any]] {
        try server?.command("events")["events"] as? [[String: Any]] ?? []
    }

    func testSwiftlaneRunReportsItsStartAndAHealthCheckPortItCannotServe() throws {
        let server = try FakeAPIServer()
        self.server = server
        let lab = try ClusterLab(backends: 1)
        self.lab = lab
        let port = try holdAPort()
        try server.upsert("nodes", TestObjects.node("node-a", zone: "z1"))
        var service = TestObjects.service("web", namespace: "shop", clusterIP: lab.vipIPv4(40))
        var spec = service["spec"] as! [String: Any]
        spec["type"] = "LoadBalancer"
        spec["externalTrafficPolicy"] = "Local"
        spec["healthCheckNodePort"] = port
        spec["ports"] = [["name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080]]
        service["spec"] = spec
        service["status"] = ["loadBalancer": ["ingress": [["ip": "192.0.2.50"]]]]
        try server.upsert("services", service)
        try server.upsert(
            "endpointslices", TestObjects.slice("web-1", service: "web", namespace: "shop", addresses: [lab.backends[0].ipv4]))

        directory = NSTemporaryDirectory() + "swiftlane-events-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        pinPath = "/sys/fs/bpf/swiftlane-test-events-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try """
            apiVersion: v1
            kind: Config
            clusters: [{name: fake, cluster: {server: "\(server.url)", certificate-authority: \(server.certificates.caCertificate)}}]
            users: [{name: nobody, user: {}}]
            contexts: [{name: fake, context: {cluster: fake, user: nobody}}]
            current-context: fake
            """.write(toFile: directory + "/kubeconfig", atomically: true, encoding: .utf8)
        try """
            nodeName: node-a
            source: {kubernetes: {kubeconfig: \(directory)/kubeconfig}}
            cgroupPath: \(lab.clientCgroup.path)
            bpfPinPath: \(pinPath)
            metricsBindAddress: 127.0.0.1:0
            healthzBindAddress: 127.0.0.1:0
            """.write(toFile: directory + "/config.yaml", atomically: true, encoding: .utf8)
        let controller = try LabProcess.start(argv: [ProbeRunner.defaultBinary(), "run", "--config", directory + "/config.yaml"])
        self.controller = controller

        let deadline = Date().addingTimeInterval(60)
        var seen: [[String: Any]] = []
        while Date() < deadline {
            seen = try events()
            let reasons = Set(seen.compactMap { $0["reason"] as? String })
            if reasons.isSuperset(of: ["Starting", "FailedToStartServiceHealthcheck"]) { break }
            guard controller.isRunning else { return XCTFail("controller exited: \(controller.stderrText.suffix(3000))") }
            Thread.sleep(forTimeInterval: 0.1)
        }
        let starting = try XCTUnwrap(seen.first { $0["reason"] as? String == "Starting" }, "\(seen)\n\(controller.stderrText.suffix(3000))")
        XCTAssertEqual((starting["regarding"] as? [String: Any])?["kind"] as? String, "Node")
        XCTAssertEqual((starting["regarding"] as? [String: Any])?["name"] as? String, "node-a")
        XCTAssertEqual(starting["reportingInstance"] as? String, "swiftlane-node-a")
        let failure = try XCTUnwrap(seen.first { $0["reason"] as? String == "FailedToStartServiceHealthcheck" }, "\(seen)")
        XCTAssertEqual(failure["type"] as? String, "Warning")
        XCTAssertEqual((failure["metadata"] as? [String: Any])?["namespace"] as? String, "shop")
        XCTAssertEqual((failure["regarding"] as? [String: Any])?["name"] as? String, "web")
        XCTAssertTrue((failure["note"] as? String ?? "").contains("on port \(port)"), "\(failure)")

        // Retried every second, but reported once.
        Thread.sleep(forTimeInterval: 2.5)
        XCTAssertEqual(try events().filter { $0["reason"] as? String == "FailedToStartServiceHealthcheck" }.count, 1)
    }
}
