import Controller
import Foundation
import Logging
import XCTest

final class ConfigurationTests: XCTestCase {
    func testAFullConfigurationParses() throws {
        let config = try SwiftlaneConfiguration.parse(yaml: """
            nodeName: node-a
            source: {directory: {path: /srv/manifests, pollIntervalMilliseconds: 100}}
            cgroupPath: /sys/fs/cgroup/kubepods
            bpfPinPath: /sys/fs/bpf/lane
            logLevel: debug
            """, environment: [:])
        XCTAssertEqual(config.nodeName, "node-a")
        XCTAssertEqual(config.source, .directory(.init(path: "/srv/manifests", pollIntervalMilliseconds: 100)))
        XCTAssertEqual(config.cgroupPath, "/sys/fs/cgroup/kubepods")
        XCTAssertEqual(config.bpfPinPath, "/sys/fs/bpf/lane")
        XCTAssertEqual(config.logLevel, .debug)
    }

    func testDefaultsApplyAndNodeNameComesFromTheEnvironment() throws {
        let config = try SwiftlaneConfiguration.parse(yaml: "source: {directory: m}", environment: ["NODE_NAME": "from-env"], relativeTo: "/etc/swiftlane")
        XCTAssertEqual(config.nodeName, "from-env")
        XCTAssertEqual(config.source, .directory(.init(path: "/etc/swiftlane/m")), "relative paths resolve against the config's folder")
        XCTAssertEqual(config.bpfPinPath, "/sys/fs/bpf/swiftlane")
        XCTAssertNil(config.cgroupPath)
    }

    func testTheKubernetesSourceIsTheDefault() throws {
        let config = try SwiftlaneConfiguration.parse(yaml: "nodeName: node-a", environment: [:])
        XCTAssertEqual(config.source, .kubernetes(.init()))
        XCTAssertNil(config.serviceProxyName)
        guard case .kubernetes(let kubernetes) = config.source else { return XCTFail() }
        XCTAssertNil(kubernetes.kubeconfig)
        XCTAssertNil(kubernetes.apiServer)
        XCTAssertEqual(kubernetes.qps, 5, "kube-proxy's default")
        XCTAssertEqual(kubernetes.burst, 10)
    }

    func testEveryKubernetesSourceKeyParses() throws {
        let config = try SwiftlaneConfiguration.parse(yaml: """
            serviceProxyName: swiftlane
            source:
              kubernetes:
                kubeconfig: kube-proxy.conf
                apiServer: https://[fd00::10]:6443
                qps: 20.5
                burst: 40
            """, environment: [:], relativeTo: "/etc/swiftlane")
        XCTAssertEqual(config.serviceProxyName, "swiftlane")
        XCTAssertEqual(config.source, .kubernetes(.init(
            kubeconfig: "/etc/swiftlane/kube-proxy.conf", apiServer: "https://[fd00::10]:6443", qps: 20.5, burst: 40)),
            "a relative kubeconfig resolves against the config's folder")
        let empty = try SwiftlaneConfiguration.parse(yaml: "source: {kubernetes: {}}", environment: [:])
        XCTAssertEqual(empty.source, .kubernetes(.init()))
        let bare = try SwiftlaneConfiguration.parse(yaml: "source:\n  kubernetes:\n", environment: [:])
        XCTAssertEqual(bare.source, .kubernetes(.init()), "an empty kubernetes: key means in-cluster defaults")
    }

    func testTranslationAndDatapathKeysParse() throws {
        let config = try SwiftlaneConfiguration.parse(yaml: """
            nodePortAddresses: [10.0.0.0/8, primary, "fd00::/64"]
            clusterCIDR: 10.244.0.0/16, fd00:10:244::/56
            masqueradeAll: true
            featureGates: {PreferSameTrafficDistribution: false}
            minSyncPeriodMilliseconds: 0
            mapSizes: {services: 1024, backendSlots: 4096}
            source: {kubernetes: {deadConnectionTimeoutSeconds: 10}}
            """, environment: [:])
        XCTAssertEqual(config.translation.nodePortAddresses, ["10.0.0.0/8", "primary", "fd00::/64"])
        XCTAssertEqual(config.translation.clusterCIDRs.map(\.description), ["10.244.0.0/16", "fd00:10:244::/56"])
        XCTAssertTrue(config.translation.masqueradeAll)
        XCTAssertFalse(config.translation.preferSameTrafficDistribution)
        XCTAssertEqual(config.minSyncPeriodMilliseconds, 0)
        XCTAssertEqual(config.mapSizes, ["services": 1024, "backendSlots": 4096])
        XCTAssertEqual(config.datapathOptions.mapSizes, ["sl_services_v2": 1024, "sl_slots_v1": 4096])
        guard case .kubernetes(let kubernetes) = config.source else { return XCTFail("\(config.source)") }
        XCTAssertEqual(kubernetes.deadConnectionTimeoutSeconds, 10)
    }

    func testEveryInvalidValueIsReportedWithItsKey() {
        let cases: [(yaml: String, key: String)] = [
            ("nodename: a", "nodename"),
            ("nodeName: ''", "nodeName"),
            ("bpfPinPath: relative/path", "bpfPinPath"),
            ("logLevel: loud", "logLevel"),
            ("source: {directory: {pollIntervalMilliseconds: 100}}", "source.directory.path"),
            ("source: {directory: {path: /m, pollIntervalMilliseconds: 5}}", "source.directory.pollIntervalMilliseconds"),
            ("source: {directory: {path: /m, pollIntervalMilliseconds: soon}}", "source.directory.pollIntervalMilliseconds"),
            ("source: {directory: {path: /m, extra: 1}}", "source.directory.extra"),
            ("source: {ftp: x}", "source"),
            ("source: {kubernetes: yes}", "source.kubernetes"),
            ("source: {kubernetes: {kubeconfig: ''}}", "source.kubernetes.kubeconfig"),
            ("source: {kubernetes: {apiServer: 'ftp://10.0.0.1'}}", "source.kubernetes.apiServer"),
            ("source: {kubernetes: {apiServer: 'https://10.0.0.1:99999'}}", "source.kubernetes.apiServer"),
            ("source: {kubernetes: {qps: 0}}", "source.kubernetes.qps"),
            ("source: {kubernetes: {qps: fast}}", "source.kubernetes.qps"),
            ("source: {kubernetes: {burst: 0}}", "source.kubernetes.burst"),
            ("source: {kubernetes: {burst: many}}", "source.kubernetes.burst"),
            ("source: {kubernetes: {token: abc}}", "source.kubernetes.token"),
            ("source: {kubernetes: {}, directory: /m}", "source"),
            ("serviceProxyName: 'has space'", "serviceProxyName"),
            ("serviceProxyName: '-dash-first'", "serviceProxyName"),
            ("serviceProxyName: ''", "serviceProxyName"),
            ("source: [a]", "source"),
            ("- just a list", "(file)"),
            ("nodePortAddresses: [10.0.0.0/8, nonsense]", "nodePortAddresses"),
            ("nodePortAddresses: 10.0.0.0/8", "nodePortAddresses"),
            ("clusterCIDR: 10.0.0.0/8,banana", "clusterCIDR"),
            ("masqueradeAll: sometimes", "masqueradeAll"),
            ("featureGates: {PreferSameTrafficDistribution: maybe}", "featureGates.PreferSameTrafficDistribution"),
            ("featureGates: {Unknown: true}", "featureGates.Unknown"),
            ("minSyncPeriodMilliseconds: 100000", "minSyncPeriodMilliseconds"),
            ("mapSizes: {services: 8}", "mapSizes.services"),
            ("mapSizes: {slots: 1000}", "mapSizes.slots"),
            ("source: {kubernetes: {deadConnectionTimeoutSeconds: 2}}", "source.kubernetes.deadConnectionTimeoutSeconds"),
            ("key: [unclosed", "(file)"),
        ]
        for (yaml, key) in cases {
            XCTAssertThrowsError(try SwiftlaneConfiguration.parse(yaml: yaml, environment: [:]), yaml) { error in
                XCTAssertEqual((error as? SwiftlaneConfiguration.Invalid)?.key, key, "\(yaml): \(error)")
                if key.hasPrefix("source.kubernetes.") || key == "serviceProxyName", yaml.contains(": ") {
                    let value = yaml.split(separator: ":").last.map { $0.trimmingCharacters(in: CharacterSet(charactersIn: " '{}")) } ?? ""
                    if !value.isEmpty, key != "source.kubernetes.token" {
                        XCTAssertTrue("\(error)".contains(value), "\(error) should name the value \(value)")
                    }
                }
            }
        }
    }
}

final class DirectorySourceTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "swiftlane-dir-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func write(_ name: String, _ text: String) throws {
        try text.write(toFile: directory + "/" + name, atomically: true, encoding: .utf8)
    }

    private let service = """
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: default}
        spec: {clusterIP: 198.19.0.1, ports: [{name: http, port: 80}]}
        """

    func testItReadsYAMLJSONMultiDocumentAndListFilesAndIgnoresOthers() throws {
        try write("a.yaml", service + "\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
        try write("b.json", #"{"kind":"List","apiVersion":"v1","items":[{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{"name":"web-1","namespace":"default","labels":{"kubernetes.io/service-name":"web"}},"addressType":"IPv4","endpoints":[{"addresses":["198.18.0.11"]}],"ports":[{"name":"http","port":8080}]}]}"#)
        try write("notes.txt", "not a manifest")
        let source = DirectorySource(path: directory, logger: Logger(label: "test"))
        XCTAssertTrue(try source.refresh())
        let objects = source.objects()
        XCTAssertEqual(objects.services.map(\.metadata.name), ["web"])
        XCTAssertEqual(objects.endpointSlices.map(\.metadata.name), ["web-1"])
        XCTAssertFalse(try source.refresh(), "nothing changed")
    }

    func testABrokenFileKeepsItsLastGoodObjectsAndReportsTheError() throws {
        try write("web.yaml", service)
        let source = DirectorySource(path: directory, logger: Logger(label: "test"))
        try source.refresh()
        try write("web.yaml", service.replacingOccurrences(of: "port: 80", with: "port: [eighty"))
        try source.refresh()
        XCTAssertEqual(source.objects().services.map(\.metadata.name), ["web"], "the broken file's last good objects remain")
        XCTAssertNotNil(source.errors["web.yaml"])
        XCTAssertEqual(source.parseFailures, 1)
        try FileManager.default.removeItem(atPath: directory + "/web.yaml")
        XCTAssertTrue(try source.refresh())
        XCTAssertTrue(source.objects().services.isEmpty, "a deleted file withdraws its objects")
        XCTAssertNil(source.errors["web.yaml"])
    }
}
