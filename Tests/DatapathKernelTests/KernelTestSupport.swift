import Controller
import Datapath
import Foundation
import Glibc
import Logging
import NetLab
import Reconciler
import ServiceModel
import XCTest

/// Kernel tests need root and a kernel that loads BPF programs. On this project's
/// machines and in CI they always have both; elsewhere they skip with the reason.
func requireKernelBPF(file: StaticString = #filePath, line: UInt = #line) throws {
    guard geteuid() == 0 else { throw XCTSkip("kernel test: needs root (euid \(geteuid()))") }
    guard FileManager.default.fileExists(atPath: "/sys/kernel/btf/vmlinux") || FileManager.default.fileExists(atPath: "/proc/sys/kernel/unprivileged_bpf_disabled") else {
        throw XCTSkip("kernel test: this kernel has no BPF syscall")
    }
}

/// A unique bpffs directory for one test, removed (with everything pinned in it) at the end.
func uniquePinPath(_ label: String) -> String {
    "/sys/fs/bpf/swiftlane-test-\(label)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
}

let testLogger: Logger = {
    var logger = Logger(label: "swiftlane.test")
    logger.logLevel = ProcessInfo.processInfo.environment["SWIFTLANE_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
    return logger
}()

/// A lab of namespaces with probe servers, and the socket load balancer attached to the
/// lab's client cgroup, driven in-process through the real controller code path
/// (manifests → translation → reconcile → pinned maps). Everything is removed by
/// `tearDown()`, also after a failure.
final class SocketLBHarness {
    static let tcpPort: UInt16 = 8080
    static let udpPort: UInt16 = 8053

    let lab: ClusterLab
    let pinPath: String
    let datapath: SocketLoadBalancer
    let syncer: ProxySyncer
    let probe: ProbeRunner

    init(backends: Int = 3, label: String, mapSizes: [String: UInt32] = [:]) throws {
        lab = try ClusterLab(backends: backends)
        pinPath = uniquePinPath(label)
        do {
            try lab.startProbeServers(tcpPort: Self.tcpPort, udpPort: Self.udpPort)
            datapath = try SocketLoadBalancer.install(
                DatapathOptions(pinPath: pinPath, cgroupPath: lab.clientCgroup.path, mapSizes: mapSizes), logger: testLogger)
            syncer = try ProxySyncer(nodeName: "node-a", maps: datapath.maps, logger: testLogger)
            probe = lab.probeRunner()
        } catch {
            SocketLoadBalancer.uninstall(pinPath: pinPath)
            lab.teardown()
            throw error
        }
    }

    func tearDown() {
        lab.teardown()
        SocketLoadBalancer.uninstall(pinPath: pinPath)
    }

    /// Programs exactly the objects in `yaml` (as the directory source would).
    @discardableResult
    func apply(_ yaml: String) throws -> ProxySyncer.Report {
        let objects = try ManifestDecoder.decode(Data(yaml.utf8), source: "test.yaml")
        let report = syncer.sync(objects)
        XCTAssertEqual(report.failures, [], "sync failures")
        return report
    }

    func ipv4Target(_ vip: String, port: UInt16 = 80) -> String { "\(vip):\(port)" }
    func ipv6Target(_ vip: String, port: UInt16 = 80) -> String { "[\(vip)]:\(port)" }
}

/// Manifests for the lab: a Service and one EndpointSlice per family.
enum LabManifests {
    static func service(name: String, clusterIPs: [String], families: [String] = ["IPv4"], ports: [(name: String, port: Int, proto: String)] = [("http", 80, "TCP"), ("dns", 53, "UDP")]) -> String {
        let portLines = ports.map { "  - {name: \($0.name), port: \($0.port), protocol: \($0.proto)}" }.joined(separator: "\n")
        return """
            apiVersion: v1
            kind: Service
            metadata: {name: \(name), namespace: default}
            spec:
              type: ClusterIP
              clusterIP: \(clusterIPs[0])
              clusterIPs: [\(clusterIPs.joined(separator: ", "))]
              ipFamilies: [\(families.joined(separator: ", "))]
              ports:
            \(portLines)

            """
    }

    static func slice(service: String, name: String? = nil, family: String = "IPv4", addresses: [String],
                      tcpPort: Int = Int(SocketLBHarness.tcpPort), udpPort: Int = Int(SocketLBHarness.udpPort),
                      ready: Bool = true) -> String {
        let endpoints = addresses.map { "  - addresses: [\"\($0)\"]\n    conditions: {ready: \(ready)}\n    nodeName: node-a" }
            .joined(separator: "\n")
        return """
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: \(name ?? service + "-" + family.lowercased())
              namespace: default
              labels: {kubernetes.io/service-name: \(service)}
            addressType: \(family)
            endpoints:
            \(addresses.isEmpty ? "  []" : endpoints)
            ports:
              - {name: http, port: \(tcpPort), protocol: TCP}
              - {name: dns, port: \(udpPort), protocol: UDP}

            """
    }

    static func documents(_ parts: String...) -> String { parts.joined(separator: "---\n") }
}
