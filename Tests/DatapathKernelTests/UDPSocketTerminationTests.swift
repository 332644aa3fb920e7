import BPFObjects
import CLibBPF
import Foundation
import Glibc
import NetLab
import Reconciler
import ServiceModel
import XCTest

@testable import Datapath

/// Connected UDP sockets that socket LB sent to a backend which then left its service are
/// destroyed (datapath-notes §4.1), in every network namespace, and nothing else is: real
/// sockets held by `probe udp-hold` processes in lab namespaces, through the lab cgroup's
/// hooks, and the real `sock_terminate` iterator.
final class UDPSocketTerminationTests: XCTestCase {
    private var harness: SocketLBHarness?
    private var terminator: UDPSocketTerminator?
    private var sessions: [UDPHoldSession] = []
    private var pinPaths: [String] = []

    private static let dnsPort: UInt16 = 53

    override func setUpWithError() throws {
        try requireKernelBPF()
    }

    override func tearDown() {
        for session in sessions { session.process.stop() }
        sessions.removeAll()
        terminator?.close()
        terminator = nil
        harness?.tearDown()
        harness = nil
        for path in pinPaths { SocketLoadBalancer.uninstall(pinPath: path) }
    }

    // MARK: - Helpers

    /// A lab with socket LB and the terminator; skips (with the reason) on a kernel
    /// without bpf_sock_destroy, which this project's machines have.
    private func makeHarness() throws -> (SocketLBHarness, UDPSocketTerminator) {
        let harness = try SocketLBHarness(label: "udpterm" + name.filter { $0.isLetter }.suffix(10))
        self.harness = harness
        let terminator = try UDPSocketTerminator.install(pinPath: harness.pinPath, logger: testLogger)
        self.terminator = terminator
        guard terminator.isSupported else { throw XCTSkip("kernel lacks bpf_sock_destroy (6.5+)") }
        return (harness, terminator)
    }

    /// The DNS-like service: VIP:53/UDP (and :80/TCP) in front of `backends`' probe ports.
    private func dnsService(vip: String, family: String = "IPv4", backends: [String]) -> String {
        LabManifests.documents(
            LabManifests.service(name: "dns", clusterIPs: [vip], families: [family]),
            LabManifests.slice(service: "dns", family: family, addresses: backends))
    }

    private func udpBackend(_ address: String) -> BackendAddress {
        BackendAddress(address: IPAddress(sloppy: address)!, port: SocketLBHarness.udpPort, proto: .udp)
    }

    private func hold(_ runner: ProbeRunner, target: String, sockets: Int) throws -> UDPHoldSession {
        let session = try runner.startUDPHold(target: target, sockets: sockets)
        sessions.append(session)
        return session
    }

    private func sockets(_ report: UDPHoldReport, firstReached backend: String) -> [UDPHoldReport.Socket] {
        report.sockets.filter { $0.first == backend }
    }

    // MARK: - Loading

    func testTheTerminatorObjectPassesTheVerifier() throws {
        let path = uniquePinPath("sockterm")
        pinPaths.append(path)
        try KernelEnvironment.prepareBPFFilesystem(pinPath: path)
        let file = try BPFObjectFile.open(BPFObjects.sockTerminate, pinRoot: path)
        defer { file.close() }
        try file.load()
        let program = try file.program(named: UDPSocketTerminator.programName)
        XCTAssertGreaterThanOrEqual(bpf_program__fd(program), 0)
        XCTAssertEqual(bpf_program__type(program), BPF_PROG_TYPE_TRACING)
        XCTAssertEqual(bpf_program__expected_attach_type(program), BPF_TRACE_ITER)
        XCTAssertTrue(file.pinnedMapNames.contains(SL_MAP_NAME_SOCK_FRONTEND), "shares the socket storage by its pin")
        XCTAssertFalse(file.pinnedMapNames.contains(UDPSocketTerminator.backendsMapName), "its backend set is private")
    }

    func testInstallSharesOnlyTheSocketStoragePin() throws {
        let path = uniquePinPath("sockterm-pins")
        pinPaths.append(path)
        try KernelEnvironment.prepareBPFFilesystem(pinPath: path)
        // Pin every map of maps.h (as the socket load balancer would), then keep only the
        // socket storage: the terminator must need nothing else and create nothing.
        do {
            let file = try BPFObjectFile.open(BPFObjects.sockLb, pinRoot: path)
            defer { file.close() }
            try file.load()
        }
        for name in try FileManager.default.contentsOfDirectory(atPath: path) where name != SL_MAP_NAME_SOCK_FRONTEND {
            XCTAssertEqual(unlink(path + "/" + name), 0, name)
        }
        // A services map sized by the operator (other capacity than maps.h): not this
        // object's business, so it must not refuse to start over it.
        let resized = bpf_map_create(BPF_MAP_TYPE_HASH, SL_MAP_NAME_SERVICES, 20, 20, 1000, nil)
        XCTAssertGreaterThanOrEqual(resized, 0)
        XCTAssertEqual(bpf_obj_pin(resized, path + "/" + SL_MAP_NAME_SERVICES), 0)
        close(resized)
        let terminator = try UDPSocketTerminator.install(pinPath: path, logger: testLogger)
        defer { terminator.close() }
        XCTAssertTrue(terminator.isSupported, "this project's kernels have bpf_sock_destroy (6.5+)")
        XCTAssertEqual(
            try Set(FileManager.default.contentsOfDirectory(atPath: path)),
            [SL_MAP_NAME_SOCK_FRONTEND, SL_MAP_NAME_SERVICES])
        XCTAssertEqual(
            try terminator.terminateConnected(to: [udpBackend("198.18.251.9")]), 0,
            "no socket was ever balanced through this storage")
    }

    func testInstallBeforeTheSocketLoadBalancerFailsNamingTheMissingPin() throws {
        let path = uniquePinPath("sockterm-nolb")
        pinPaths.append(path)
        try KernelEnvironment.prepareBPFFilesystem(pinPath: path)
        XCTAssertThrowsError(try UDPSocketTerminator.install(pinPath: path, logger: testLogger)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(SL_MAP_NAME_SOCK_FRONTEND) && text.contains("ENOENT"), text)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: path), [], "nothing was pinned")
    }

    func testWithoutBpfSockDestroyNothingIsLoadedAndNothingIsTerminated() throws {
        let path = uniquePinPath("sockterm-old")
        pinPaths.append(path)
        try KernelEnvironment.prepareBPFFilesystem(pinPath: path)
        // No pin either: an old kernel must not fail the controller's start-up.
        let terminator = try UDPSocketTerminator.install(
            pinPath: path, logger: testLogger, kernelFunctionProbe: { _ in 0 })
        defer { terminator.close() }
        XCTAssertFalse(terminator.isSupported)
        XCTAssertEqual(try terminator.terminateConnected(to: [udpBackend("198.18.251.9")]), 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: path), [], "nothing was loaded or pinned")
    }

    // MARK: - Terminating

    func testSocketsBalancedToARemovedBackendAreAbortedWhileOthersKeepWorking() throws {
        let (harness, terminator) = try makeHarness()
        let lab = harness.lab
        let (b1, b2) = (lab.backends[0], lab.backends[1])
        let vip = lab.vipIPv4(30)
        let target = harness.ipv4Target(vip, port: Self.dnsPort)
        try harness.apply(dnsService(vip: vip, backends: [b1.ipv4, b2.ipv4]))
        // 24 sockets over two backends: both are reached unless the picker is broken
        // (a fair one misses a backend with probability 2^-23).
        let held = try hold(harness.probe, target: target, sockets: 24)
        let toB1 = sockets(held.established, firstReached: b1.name).count
        let toB2 = sockets(held.established, firstReached: b2.name).count
        XCTAssertEqual(toB1 + toB2, 24, "every socket made its first exchange: \(held.established)")
        XCTAssertGreaterThan(toB1, 0)
        XCTAssertGreaterThan(toB2, 0)

        try harness.apply(dnsService(vip: vip, backends: [b2.ipv4]))
        let destroyed = try terminator.terminate([udpBackend(b1.ipv4)])
        XCTAssertEqual(destroyed.count, toB1, "exactly the sockets balanced to b1: \(destroyed)")
        XCTAssertEqual(Set(destroyed.map(\.backend)), [udpBackend(b1.ipv4)])
        XCTAssertEqual(Set(destroyed.map(\.frontend)), [target])

        let final = try held.finish()
        for socket in sockets(final, firstReached: b1.name) {
            XCTAssertEqual(socket.second, "ECONNABORTED", "a destroyed socket reports ECONNABORTED: \(socket)")
            XCTAssertEqual(socket.sendError, "EDESTADDRREQ", "and is no longer connected: \(socket)")
            XCTAssertEqual(socket.reconnected, b2.name, "reconnecting goes through the service again: \(socket)")
        }
        for socket in sockets(final, firstReached: b2.name) {
            XCTAssertEqual(socket.second, b2.name, "a socket balanced to a remaining backend is untouched: \(socket)")
        }
        let fresh = try harness.probe.udp(target: target, count: 20, connected: true)
        XCTAssertEqual(fresh.backends, [b2.name: 20], "new sockets reach the remaining backend")
    }

    func testASocketConnectedDirectlyToTheBackendIsLeftAlone() throws {
        let (harness, terminator) = try makeHarness()
        let lab = harness.lab
        let (b1, b2) = (lab.backends[0], lab.backends[1])
        let vip = lab.vipIPv4(31)
        try harness.apply(dnsService(vip: vip, backends: [b1.ipv4]))
        let viaService = try hold(harness.probe, target: harness.ipv4Target(vip, port: Self.dnsPort), sockets: 2)
        // Same backend address and port, same cgroup, but no service in between: no storage.
        let direct = try hold(harness.probe, target: "\(b1.ipv4):\(SocketLBHarness.udpPort)", sockets: 2)
        XCTAssertEqual(viaService.established.sockets.map(\.first), [b1.name, b1.name])
        XCTAssertEqual(direct.established.sockets.map(\.first), [b1.name, b1.name])

        try harness.apply(dnsService(vip: vip, backends: [b2.ipv4]))
        XCTAssertEqual(try terminator.terminateConnected(to: [udpBackend(b1.ipv4)]), 2)
        XCTAssertEqual(try viaService.finish().sockets.map(\.second), ["ECONNABORTED", "ECONNABORTED"])
        XCTAssertEqual(
            try direct.finish().sockets.map(\.second), [b1.name, b1.name],
            "a socket that talks to the pod directly keeps talking to it")
    }

    func testSocketsInEveryNetworkNamespaceAreTerminated() throws {
        let (harness, terminator) = try makeHarness()
        let lab = harness.lab
        let (b1, b2) = (lab.backends[0], lab.backends[1])
        // A second client namespace on the lab bridge (made like a pod, in no service), its
        // probe in the same cgroup: the iterator must be run inside it to see its sockets.
        let secondClient = try lab.addBackend()
        let secondRunner = ProbeRunner(netns: secondClient.netns, cgroup: lab.clientCgroup.path)
        let vip = lab.vipIPv4(32)
        let target = harness.ipv4Target(vip, port: Self.dnsPort)
        try harness.apply(dnsService(vip: vip, backends: [b1.ipv4]))
        let first = try hold(harness.probe, target: target, sockets: 3)
        let second = try hold(secondRunner, target: target, sockets: 3)
        XCTAssertEqual(first.established.sockets.map(\.first), Array(repeating: b1.name, count: 3))
        XCTAssertEqual(second.established.sockets.map(\.first), Array(repeating: b1.name, count: 3))

        try harness.apply(dnsService(vip: vip, backends: [b2.ipv4]))
        // TCP backends are not the terminator's business: nothing is walked or destroyed.
        let tcpB1 = BackendAddress(address: IPAddress(sloppy: b1.ipv4)!, port: SocketLBHarness.udpPort, proto: .tcp)
        XCTAssertEqual(try terminator.terminateConnected(to: [tcpB1]), 0)
        let destroyed = try terminator.terminate([udpBackend(b1.ipv4)])
        XCTAssertEqual(destroyed.count, 6, "\(destroyed)")
        XCTAssertEqual(
            Set(destroyed.map(\.networkNamespace)).count, 2, "sockets of both client namespaces: \(destroyed)")
        for session in [first, second] {
            let final = try session.finish()
            XCTAssertEqual(final.sockets.map(\.second), Array(repeating: "ECONNABORTED", count: 3), "\(final)")
            XCTAssertEqual(final.sockets.map(\.reconnected), Array(repeating: b2.name, count: 3), "\(final)")
        }
        XCTAssertEqual(try terminator.terminateConnected(to: [udpBackend(b1.ipv4)]), 0, "nothing left to destroy")
    }

    func testIPv6SocketsBalancedToARemovedBackendAreTerminated() throws {
        let (harness, terminator) = try makeHarness()
        let lab = harness.lab
        let (b1, b2) = (lab.backends[0], lab.backends[1])
        let vip = lab.vipIPv6(33)
        let target = harness.ipv6Target(vip, port: Self.dnsPort)
        try harness.apply(dnsService(vip: vip, family: "IPv6", backends: [b1.ipv6]))
        let held = try hold(harness.probe, target: target, sockets: 2)
        XCTAssertEqual(held.established.sockets.map(\.first), [b1.name, b1.name])

        try harness.apply(dnsService(vip: vip, family: "IPv6", backends: [b2.ipv6]))
        XCTAssertEqual(
            try terminator.terminateConnected(to: [udpBackend(b1.ipv4)]), 0,
            "the IPv4 address of the same pod is another backend")
        XCTAssertEqual(try terminator.terminateConnected(to: [udpBackend(b1.ipv6)]), 2)
        let final = try held.finish()
        XCTAssertEqual(final.sockets.map(\.second), ["ECONNABORTED", "ECONNABORTED"])
        XCTAssertEqual(final.sockets.map(\.reconnected), [b2.name, b2.name])
    }
}
