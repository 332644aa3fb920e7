import Controller
import Foundation
import Logging
import XCTest

@testable import Operations

/// The operations keys, reload classification and the reloader's decisions.
final class ConfigurationOperationsTests: XCTestCase {
    func testTheEndpointsDefaultToKubeProxysPorts() throws {
        let config = try SwiftlaneConfiguration.parse(yaml: "{}", environment: [:])
        XCTAssertEqual(config.operations.metricsBindAddress, BindAddress(host: "0.0.0.0", port: 10249))
        XCTAssertEqual(config.operations.healthzBindAddress, BindAddress(host: "0.0.0.0", port: 10256))
    }

    func testBindAddressesParseBothFamiliesAndEmptyDisables() throws {
        let config = try SwiftlaneConfiguration.parse(
            yaml: """
                metricsBindAddress: "[::1]:9100"
                healthzBindAddress: ""
                """, environment: [:])
        XCTAssertEqual(config.operations.metricsBindAddress, BindAddress(host: "::1", port: 9100))
        XCTAssertEqual(config.operations.metricsBindAddress?.description, "[::1]:9100")
        XCTAssertNil(config.operations.healthzBindAddress)
        let ephemeral = try SwiftlaneConfiguration.parse(yaml: "healthzBindAddress: 127.0.0.1:0", environment: [:])
        XCTAssertEqual(ephemeral.operations.healthzBindAddress, BindAddress(host: "127.0.0.1", port: 0))
    }

    func testEveryInvalidBindAddressNamesTheKeyAndTheValue() {
        let cases: [(key: String, value: String)] = [
            ("metricsBindAddress", "10249"),
            ("metricsBindAddress", "localhost:10249"),
            ("metricsBindAddress", "0.0.0.0:70000"),
            ("metricsBindAddress", "0.0.0.0:port"),
            ("healthzBindAddress", "::1:10256"),
            ("healthzBindAddress", "[10.0.0.1]:10256"),
            ("healthzBindAddress", "300.0.0.1:10256"),
        ]
        for (key, value) in cases {
            let yaml = "\(key): \"\(value)\""
            XCTAssertThrowsError(try SwiftlaneConfiguration.parse(yaml: yaml, environment: [:]), yaml) { error in
                XCTAssertEqual((error as? SwiftlaneConfiguration.Invalid)?.key, key, "\(error)")
                XCTAssertTrue("\(error)".contains("\"\(value)\""), "\(error) should name \(value)")
            }
        }
        XCTAssertThrowsError(try SwiftlaneConfiguration.parse(yaml: "metricsBindAddress: [a]", environment: [:])) {
            error in
            XCTAssertEqual((error as? SwiftlaneConfiguration.Invalid)?.key, "metricsBindAddress")
        }
    }

    /// Every value-carrying validation error of the whole file quotes the rejected value,
    /// so that an operator finds it in a ConfigMap without guessing.
    func testEveryValueErrorQuotesTheRejectedValue() {
        let cases: [(yaml: String, key: String, value: String)] = [
            ("bpfPinPath: relative/path", "bpfPinPath", "relative/path"),
            ("logLevel: loud", "logLevel", "loud"),
            (
                "source: {directory: {path: /m, pollIntervalMilliseconds: 5}}",
                "source.directory.pollIntervalMilliseconds", "5"
            ),
            (
                "source: {directory: {path: /m, pollIntervalMilliseconds: soon}}",
                "source.directory.pollIntervalMilliseconds", "soon"
            ),
            ("source: {kubernetes: {qps: fast}}", "source.kubernetes.qps", "fast"),
            ("source: {kubernetes: {burst: 0}}", "source.kubernetes.burst", "0"),
            (
                "source: {kubernetes: {deadConnectionTimeoutSeconds: 2}}",
                "source.kubernetes.deadConnectionTimeoutSeconds", "2"
            ),
            ("source: {kubernetes: {apiServer: 'ftp://10.0.0.1'}}", "source.kubernetes.apiServer", "ftp://10.0.0.1"),
            ("serviceProxyName: 'has space'", "serviceProxyName", "has space"),
            ("nodePortAddresses: [10.0.0.0/8, nonsense]", "nodePortAddresses", "nonsense"),
            ("clusterCIDR: 10.0.0.0/8,banana", "clusterCIDR", "banana"),
            ("masqueradeAll: sometimes", "masqueradeAll", "sometimes"),
            (
                "featureGates: {PreferSameTrafficDistribution: maybe}", "featureGates.PreferSameTrafficDistribution",
                "maybe"
            ),
            ("minSyncPeriodMilliseconds: 100000", "minSyncPeriodMilliseconds", "100000"),
            ("mapSizes: {services: 8}", "mapSizes.services", "8"),
            ("metricsBindAddress: nowhere", "metricsBindAddress", "nowhere"),
        ]
        for (yaml, key, value) in cases {
            XCTAssertThrowsError(try SwiftlaneConfiguration.parse(yaml: yaml, environment: [:]), yaml) { error in
                XCTAssertEqual((error as? SwiftlaneConfiguration.Invalid)?.key, key, "\(yaml): \(error)")
                XCTAssertTrue("\(error)".hasPrefix("config key \(key): "), "\(error)")
                XCTAssertTrue("\(error)".contains(value), "\(error) should name the value \(value)")
            }
        }
    }

    /// The shipped default file and the ConfigMap of the manifests parse, and say what
    /// the docs say they say.
    func testTheShippedConfigurationFilesParse() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let shipped = try SwiftlaneConfiguration.load(
            path: root.appendingPathComponent("config/swiftlane.yaml").path, environment: [:])
        XCTAssertEqual(shipped.operations, OperationsSettings(), "config/swiftlane.yaml keeps kube-proxy's ports")
        XCTAssertEqual(shipped.bpfPinPath, "/sys/fs/bpf/swiftlane")

        let manifests = try String(contentsOf: root.appendingPathComponent("manifests/swiftlane.yaml"), encoding: .utf8)
        let embedded = try XCTUnwrap(Self.configMapFile(in: manifests), "the ConfigMap holds swiftlane.yaml")
        let cluster = try SwiftlaneConfiguration.parse(yaml: embedded, environment: ["NODE_NAME": "node-1"])
        XCTAssertEqual(cluster.nodeName, "node-1", "NODE_NAME from the downward API wins")
        guard case .kubernetes(let kubernetes) = cluster.source else { return XCTFail("the DaemonSet watches the API") }
        XCTAssertNotNil(kubernetes.apiServer, "a kube-proxy replacement cannot reach the API through its own Service")
        XCTAssertEqual(
            cluster.cgroupPath, "/run/swiftlane/cgroupv2", "the host's cgroup root, mounted by the DaemonSet")
    }

    /// The `swiftlane.yaml` entry of the ConfigMap, un-indented.
    static func configMapFile(in manifests: String) -> String? {
        let lines = manifests.components(separatedBy: "\n")
        guard let start = lines.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces) == "swiftlane.yaml: |" })
        else { return nil }
        let indent = String(lines[start + 1].prefix { $0 == " " })
        return lines[(start + 1)...].prefix { $0.hasPrefix(indent) || $0.isEmpty }
            .map { $0.hasPrefix(indent) ? String($0.dropFirst(indent.count)) : $0 }.joined(separator: "\n")
    }

    // MARK: - Reload

    func testReloadSplitsLiveKeysFromKeysThatNeedARestart() throws {
        let old = try SwiftlaneConfiguration.parse(yaml: "source: {directory: /a}", environment: [:])
        let new = try SwiftlaneConfiguration.parse(
            yaml: """
                source: {directory: /b}
                logLevel: debug
                clusterCIDR: 10.244.0.0/16
                masqueradeAll: true
                minSyncPeriodMilliseconds: 500
                serviceProxyName: other
                nodeName: elsewhere
                bpfPinPath: /sys/fs/bpf/other
                cgroupPath: /sys/fs/cgroup/x
                mapSizes: {services: 1024}
                metricsBindAddress: 127.0.0.1:1
                healthzBindAddress: ""
                """, environment: [:])
        let differences = old.reloadDifferences(to: new)
        XCTAssertEqual(
            Set(differences.applied),
            [
                "source", "logLevel", "clusterCIDR", "masqueradeAll",
                "minSyncPeriodMilliseconds", "serviceProxyName",
            ])
        XCTAssertEqual(
            Set(differences.needRestart),
            [
                "nodeName", "bpfPinPath", "cgroupPath", "mapSizes.services",
                "metricsBindAddress", "healthzBindAddress",
            ])
        let effective = old.applyingLiveKeys(of: new)
        XCTAssertEqual(effective.logLevel, .debug)
        XCTAssertEqual(effective.translation, new.translation)
        XCTAssertEqual(effective.bpfPinPath, old.bpfPinPath, "restart-only keys keep their running value")
        XCTAssertEqual(effective.reloadDifferences(to: new).applied, [])
        XCTAssertTrue(old.reloadDifferences(to: old).isEmpty)
    }

    func testTheReloaderAppliesValidChangesAndKeepsTheRunningConfigurationOnErrors() throws {
        let directory = NSTemporaryDirectory() + "swiftlane-reload-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/config.yaml"
        let running = try SwiftlaneConfiguration.parse(yaml: "source: {directory: /m}", environment: [:])
        let applied = LockedList<SwiftlaneConfiguration>()
        let metrics = SwiftlaneMetrics(pinPath: directory, outcomeCounters: { [:] }, version: "test")
        let reloader = ConfigReloader(
            path: path, running: running, environment: [:], metrics: metrics,
            logger: Logger(label: "test")
        ) { applied.append($0) }

        XCTAssertNil(
            reloader.reload("source: {directory: /m}\nlogLevel: [loud]", effective: running), "invalid: nothing applied"
        )
        XCTAssertTrue(applied.items.isEmpty)

        XCTAssertNil(
            reloader.reload("source: {directory: /m}\nbpfPinPath: /sys/fs/bpf/x", effective: running),
            "a restart-only key alone applies nothing")
        XCTAssertTrue(applied.items.isEmpty)

        let next = try XCTUnwrap(
            reloader.reload(
                "source: {directory: /m}\nlogLevel: trace\nbpfPinPath: /sys/fs/bpf/x",
                effective: running))
        XCTAssertEqual(next.logLevel, .trace)
        XCTAssertEqual(next.bpfPinPath, running.bpfPinPath)
        XCTAssertEqual(applied.items, [next])

        let text = metrics.registry.emitToString()
        XCTAssertTrue(text.contains(#"swiftlane_config_reloads_total{result="rejected"} 1"#), text)
        XCTAssertTrue(text.contains(#"swiftlane_config_reloads_total{result="applied"} 2"#), text)
        XCTAssertTrue(text.contains("swiftlane_config_restart_required 1"), text)
    }
}

/// A list appended to from @Sendable closures.
final class LockedList<Element>: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [Element] = []

    func append(_ element: Element) { lock.withLock { storage.append(element) } }
    var items: [Element] { lock.withLock { storage } }
}
