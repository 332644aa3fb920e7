@testable import Controller
import Datapath
import XCTest

final class NodePortConfigurationTests: XCTestCase {
    func testTheExternalTrafficDatapathIsOffBySNATAndAutodetectedByDefault() throws {
        let config = try SwiftlaneConfiguration.parse(yaml: "nodeName: n", environment: [:])
        XCTAssertFalse(config.nodePort.enabled)
        XCTAssertEqual(config.nodePort.devices, [])
        XCTAssertEqual(config.nodePort.mode, .snat)
        XCTAssertEqual(config.nodePort.acceleration, NodePortOptions.Acceleration.none)
        XCTAssertEqual(config.nodePort.conntrack, NodePortDatapath.ConntrackTimeouts(tcp: 21600, tcpClosing: 10, udp: 60))
        XCTAssertEqual(config.nodePort.icmpErrorLimit, NodePortOptions.ICMPErrorLimit(perSecond: 1000, burst: 50),
                       "the kernel's icmp_msgs_per_sec and icmp_msgs_burst")
    }

    func testEveryNodePortKeyParses() throws {
        let config = try SwiftlaneConfiguration.parse(yaml: """
            nodePortAddresses: [192.0.2.0/24]
            bpfPinPath: /sys/fs/bpf/x
            nodePort:
              enabled: true
              devices: [eth1, bond0]
              mode: dsr
              acceleration: native
              conntrack: {tcpSeconds: 3600, tcpClosingSeconds: 5, udpSeconds: 30, gcIntervalSeconds: 2}
              icmpErrors: {perSecond: 0, burst: 10}
            """, environment: [:])
        XCTAssertTrue(config.nodePort.enabled)
        XCTAssertEqual(config.nodePort.devices, ["eth1", "bond0"])
        XCTAssertEqual(config.nodePort.mode, .dsr)
        XCTAssertEqual(config.nodePort.acceleration, .native)
        XCTAssertEqual(config.nodePort.conntrack, NodePortDatapath.ConntrackTimeouts(tcp: 3600, tcpClosing: 5, udp: 30))
        XCTAssertEqual(config.nodePort.conntrackGCIntervalSeconds, 2)
        let options = config.nodePort.options(pinPath: config.bpfPinPath, nodePortAddresses: config.translation.nodePortAddresses)
        XCTAssertEqual(options.pinPath, "/sys/fs/bpf/x")
        XCTAssertEqual(options.devices, ["eth1", "bond0"])
        XCTAssertEqual(options.nodePortAddresses, ["192.0.2.0/24"])
        XCTAssertEqual(options.icmpErrorLimit, NodePortOptions.ICMPErrorLimit(perSecond: 0, burst: 10))
    }

    func testBadNodePortValuesNameTheirKey() {
        let cases: [(String, String)] = [
            ("nodePort: {mode: tunnel}", "nodePort.mode"),
            ("nodePort: {acceleration: fast}", "nodePort.acceleration"),
            ("nodePort: {devices: [\"a very long device name\"]}", "nodePort.devices"),
            ("nodePort: {enabled: yes-please}", "nodePort.enabled"),
            ("nodePort: {conntrack: {udpSeconds: 0}}", "nodePort.conntrack.udpSeconds"),
            ("nodePort: {conntrack: {tcp: 5}}", "nodePort.conntrack.tcp"),
            ("nodePort: {device: [eth0]}", "nodePort.device"),
            ("nodePort: {icmpErrors: {burst: 0}}", "nodePort.icmpErrors.burst"),
            ("nodePort: {icmpErrors: {perSecond: -1}}", "nodePort.icmpErrors.perSecond"),
            ("nodePort: {icmpErrors: {rate: 5}}", "nodePort.icmpErrors.rate"),
        ]
        for (yaml, key) in cases {
            XCTAssertThrowsError(try SwiftlaneConfiguration.parse(yaml: yaml, environment: [:]), yaml) { error in
                XCTAssertEqual((error as? SwiftlaneConfiguration.Invalid)?.key, key, "\(yaml): \(error)")
            }
        }
    }

    func testChangingNodePortKeysNeedsARestart() throws {
        let before = try SwiftlaneConfiguration.parse(yaml: "nodeName: n", environment: [:])
        let after = try SwiftlaneConfiguration.parse(yaml: "nodeName: n\nnodePort: {enabled: true}", environment: [:])
        XCTAssertEqual(before.reloadDifferences(to: after).needRestart, ["nodePort"])
    }
}
