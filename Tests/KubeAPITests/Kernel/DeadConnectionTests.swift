import Foundation
import Glibc
import KubeAPI
import XCTest

/// A peer that vanishes without a FIN or RST (a crashed node, a cut cable) must be noticed
/// within `deadConnectionTimeout`, not the kernel's ~15 minutes. The server runs in a
/// network namespace behind a veth pair whose far end the test takes down: from then on
/// nothing is acknowledged. Needs root (namespaces).
final class DeadConnectionTests: XCTestCase {
    private var namespace: String?
    private var server: FakeAPIServer?
    private var client: KubeClient?

    override func setUpWithError() throws {
        guard geteuid() == 0 else { throw XCTSkip("kernel test: needs root to make a network namespace (euid \(geteuid()))") }
    }

    override func tearDown() {
        client?.shutdown()
        server?.stop()
        // Deleting the namespace deletes both ends of the veth pair.
        if let namespace { _ = try? runTool(["ip", "netns", "del", namespace]) }
    }

    func testASilentlyVanishedServerFailsTheWatchWithinTheDeadConnectionTimeout() async throws {
        let id = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let namespace = "kapi\(id)"
        let (hostEnd, farEnd) = ("kh\(id)", "kf\(id)")
        // A /30 in 198.19.254.0/24 (benchmark-test space, never routed off the machine).
        let block = 4 * Int.random(in: 1...62)
        let (hostAddress, serverAddress) = ("198.19.254.\(block + 1)", "198.19.254.\(block + 2)")
        try runTool(["ip", "netns", "add", namespace])
        self.namespace = namespace
        try runTool(["ip", "link", "add", hostEnd, "type", "veth", "peer", "name", farEnd, "netns", namespace])
        try runTool(["ip", "addr", "add", "\(hostAddress)/30", "dev", hostEnd])
        try runTool(["ip", "link", "set", hostEnd, "up"])
        try runTool(["ip", "-n", namespace, "addr", "add", "\(serverAddress)/30", "dev", farEnd])
        try runTool(["ip", "-n", namespace, "link", "set", farEnd, "up"])
        try runTool(["ip", "-n", namespace, "link", "set", "lo", "up"])

        let server = try FakeAPIServer(mode: .plain, host: serverAddress, netns: namespace)
        self.server = server
        var transport = TransportOptions()
        transport.keepaliveIdle = .seconds(1)
        transport.keepaliveInterval = .seconds(1)
        transport.deadConnectionTimeout = .seconds(3)
        let client = try KubeClient(configuration: try server.clientConfiguration(), transportOptions: transport, logger: testLogger)
        self.client = client

        let response = try await client.get("/api/v1/services?watch=true&resourceVersion=0&timeoutSeconds=600")
        XCTAssertEqual(response.head.status, 200)
        try server.waitForWatchers("services")
        try runTool(["ip", "-n", namespace, "link", "set", farEnd, "down"])

        // Liveness limit only: without the timeout the read would hang for many minutes.
        let canceller = response.canceller
        let limit = Task {
            try await Task.sleep(for: .seconds(60))
            canceller.cancel()
        }
        defer { limit.cancel() }
        do {
            while try await response.nextChunk() != nil {}
            XCTFail("the stream ended cleanly, but the server never closed it")
        } catch is CancellationError {
            XCTFail("the dead connection was not noticed within 60 s")
        } catch let error as CurlError {
            XCTAssertTrue(error.description.contains("GET http://\(serverAddress)"), "\(error)")
        }
    }
}
