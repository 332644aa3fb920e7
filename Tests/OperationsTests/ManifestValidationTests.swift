import Foundation
import XCTest
import Yams

/// The manifests are valid Kubernetes objects (checked offline against the OpenAPI
/// schemas by `kubernetes-validate`, installed by scripts/install-deps.sh) and the
/// DaemonSet asks for what the issue and docs/install.md promise, nothing more.
final class ManifestValidationTests: XCTestCase {
    private let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    private func validate(_ paths: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-m", "kubernetes_validate", "--strict"] + paths
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    func testEveryManifestValidatesAgainstTheKubernetesSchemas() throws {
        let folder = root.appendingPathComponent("manifests").path
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".yaml") }
            .sorted()
        XCTAssertEqual(files, ["cleanup.yaml", "swiftlane.yaml"])
        let (status, output) = try validate(files.map { folder + "/" + $0 })
        XCTAssertEqual(status, 0, output)
        for kind in [
            "serviceaccount/swiftlane", "clusterrole/swiftlane", "clusterrolebinding/swiftlane", "configmap/swiftlane",
            "daemonset/swiftlane", "daemonset/swiftlane-cleanup",
        ] {
            XCTAssertTrue(output.contains("passed for resource \(kind)"), "\(kind) not validated: \(output)")
        }
    }

    /// The validator is not a rubber stamp: a DaemonSet with a misspelt field fails.
    func testTheValidatorRejectsAnInvalidDaemonSet() throws {
        let text = try String(contentsOf: root.appendingPathComponent("manifests/swiftlane.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "hostNetwork: true", with: "hostNetwrok: true")
        let path = NSTemporaryDirectory() + "swiftlane-invalid-\(getpid()).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (status, output) = try validate([path])
        XCTAssertNotEqual(status, 0, output)
        XCTAssertTrue(output.contains("hostNetwrok"), output)
    }

    func testTheDaemonSetRunsOnEveryNodeWithOnlyTheCapabilitiesItNeeds() throws {
        let text = try String(contentsOf: root.appendingPathComponent("manifests/swiftlane.yaml"), encoding: .utf8)
        let documents = try Yams.load_all(yaml: text).compactMap { $0 as? [String: Any] }
        func object(_ kind: String) throws -> [String: Any] {
            try XCTUnwrap(documents.first { $0["kind"] as? String == kind }, kind)
        }
        let daemonSet = try object("DaemonSet")
        let spec = try XCTUnwrap(daemonSet["spec"] as? [String: Any])
        let update = try XCTUnwrap(spec["updateStrategy"] as? [String: Any])
        XCTAssertEqual(update["type"] as? String, "RollingUpdate")
        XCTAssertEqual((update["rollingUpdate"] as? [String: Any])?["maxUnavailable"] as? Int, 1)
        let pod = try XCTUnwrap((spec["template"] as? [String: Any])?["spec"] as? [String: Any])
        XCTAssertEqual(pod["hostNetwork"] as? Bool, true)
        XCTAssertNil(pod["hostPID"], "pods' namespaces come from /run/netns, not the host's PID namespace")
        XCTAssertEqual(pod["priorityClassName"] as? String, "system-node-critical")
        XCTAssertEqual(pod["serviceAccountName"] as? String, "swiftlane")
        let tolerations = try XCTUnwrap(pod["tolerations"] as? [[String: Any]])
        XCTAssertTrue(
            tolerations.contains { $0["operator"] as? String == "Exists" && $0["key"] == nil }, "tolerates every taint")

        let container = try XCTUnwrap((pod["containers"] as? [[String: Any]])?.first)
        let security = try XCTUnwrap(container["securityContext"] as? [String: Any])
        XCTAssertEqual(security["privileged"] as? Bool, false)
        let capabilities = try XCTUnwrap(security["capabilities"] as? [String: Any])
        XCTAssertEqual(capabilities["drop"] as? [String], ["ALL"])
        XCTAssertEqual(capabilities["add"] as? [String], ["BPF", "NET_ADMIN", "SYS_ADMIN"])
        let env = try XCTUnwrap(container["env"] as? [[String: Any]])
        let nodeName = try XCTUnwrap(env.first { $0["name"] as? String == "NODE_NAME" })
        XCTAssertEqual(
            ((nodeName["valueFrom"] as? [String: Any])?["fieldRef"] as? [String: Any])?["fieldPath"] as? String,
            "spec.nodeName")
        for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
            let get = try XCTUnwrap((container[probe] as? [String: Any])?["httpGet"] as? [String: Any], probe)
            XCTAssertEqual(get["path"] as? String, path)
            XCTAssertEqual(get["port"] as? Int, 10256)
        }
        let mounts = try XCTUnwrap(container["volumeMounts"] as? [[String: Any]])
        XCTAssertEqual(
            Set(mounts.compactMap { $0["mountPath"] as? String }),
            ["/etc/swiftlane", "/sys/fs/bpf", "/run/swiftlane/cgroupv2", "/run/netns"])
        let volumes = try XCTUnwrap(pod["volumes"] as? [[String: Any]])
        let hostPaths = volumes.compactMap { ($0["hostPath"] as? [String: Any])?["path"] as? String }
        XCTAssertEqual(Set(hostPaths), ["/sys/fs/bpf", "/sys/fs/cgroup", "/var/run/netns"])

        // RBAC: read Services, EndpointSlices and Nodes; write only Events.
        let role = try object("ClusterRole")
        var granted: [String: Set<String>] = [:]
        for rule in try XCTUnwrap(role["rules"] as? [[String: Any]]) {
            for resource in rule["resources"] as? [String] ?? [] {
                granted[resource, default: []].formUnion(rule["verbs"] as? [String] ?? [])
            }
        }
        XCTAssertEqual(
            granted,
            [
                "services": ["list", "watch"], "nodes": ["list", "watch"], "endpointslices": ["list", "watch"],
                "events": ["create", "patch"],
            ])
    }
}
