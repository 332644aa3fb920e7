@testable import Datapath
import Foundation
import Glibc
import NetLab
import XCTest

/// `swiftlane cleanup` removes the clsact qdiscs Swiftlane created and only those: one that
/// existed before stays, and so does one another tool has attached a filter to since.
/// Runs the real `swiftlane cleanup` inside node A's namespace of a NodeLab.
final class QdiscOwnershipTests: XCTestCase {
    private var lab: NodeLab!
    private var pinPath = ""

    override func setUpWithError() throws {
        guard geteuid() == 0 else { throw XCTSkip("kernel test: needs root for namespaces and tc") }
        lab = try NodeLab(podsOnA: 0, podsOnB: 0)
        pinPath = uniquePinPath("qdisc")
    }

    override func tearDown() {
        lab?.teardown()
        SocketLoadBalancer.uninstall(pinPath: pinPath)
    }

    /// Runs `argv` in node A's network namespace only (`ip netns exec` would also remount
    /// /sys, hiding bpffs and so the pins from the command).
    private func inNodeA(_ argv: [String]) throws -> (Int32, String, String) {
        try runCommand(["nsenter", "--net=/run/netns/" + lab.nodeA.netns, "--"] + argv)
    }

    private func hasClsact(_ device: String) throws -> Bool {
        let (_, output, _) = try inNodeA(["tc", "qdisc", "show", "dev", device])
        return output.contains("clsact")
    }

    private func install(acceleration: NodePortOptions.Acceleration = .none) throws {
        // The datapath object holds its maps open; cleanup waits for them, so drop it here.
        _ = try NodePortDatapath.install(
            NodePortOptions(pinPath: pinPath, devices: [lab.externalDevice, lab.interNodeDevice], acceleration: acceleration,
                            networkNamespace: "/run/netns/" + lab.nodeA.netns),
            logger: testLogger)
    }

    private func cleanup() throws -> String {
        let (status, output, errors) = try inNodeA([ProbeRunner.defaultBinary(), "cleanup", "--pin-path", pinPath, "--wait", "5"])
        XCTAssertEqual(status, 0, output + errors)
        return output
    }

    func testCleanupRemovesTheQdiscsSwiftlaneCreatedAndKeepsOneThatExisted() throws {
        let (created, _, errors) = try inNodeA(["tc", "qdisc", "add", "dev", lab.interNodeDevice, "clsact"])
        XCTAssertEqual(created, 0, errors)
        XCTAssertFalse(try hasClsact(lab.externalDevice))
        try install()
        XCTAssertTrue(try hasClsact(lab.externalDevice), "the datapath adds the qdisc it needs")
        // A restart finds its own qdisc there: it stays recorded as Swiftlane's.
        try install()

        let output = try cleanup()
        XCTAssertTrue(output.contains("qdisc:" + lab.externalDevice), output)
        XCTAssertFalse(output.contains("qdisc:" + lab.interNodeDevice), output)
        XCTAssertFalse(try hasClsact(lab.externalDevice), "Swiftlane's own qdisc is gone")
        XCTAssertTrue(try hasClsact(lab.interNodeDevice), "the qdisc that was there before stays")
        let (_, filters, _) = try inNodeA(["tc", "filter", "show", "dev", lab.interNodeDevice, "ingress"])
        XCTAssertFalse(filters.contains("sl_nodeport") || filters.contains("0x5113"), "no Swiftlane filter is left on it: \(filters)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: pinPath), "the ownership record went with the pins")
    }

    func testAQdiscCarryingAnotherToolsFilterIsKept() throws {
        try install()
        // Another tool's filter: a classic-BPF classifier (needs no extra kernel module).
        let (added, _, errors) = try inNodeA([
            "tc", "filter", "add", "dev", lab.externalDevice, "ingress", "prio", "7", "protocol", "all",
            "bpf", "bytecode", "1,6 0 0 4294967295,", "classid", "1:1",
        ])
        XCTAssertEqual(added, 0, errors)

        let output = try cleanup()
        XCTAssertTrue(output.contains("kept the clsact qdisc Swiftlane created on \(lab.externalDevice) (1 filters of other tools)"), output)
        XCTAssertFalse(output.contains("qdisc:" + lab.externalDevice), output)
        XCTAssertTrue(output.contains("qdisc:" + lab.interNodeDevice), "the other device's qdisc had only ours: \(output)")
        XCTAssertTrue(try hasClsact(lab.externalDevice))
        let (_, filters, _) = try inNodeA(["tc", "filter", "show", "dev", lab.externalDevice, "ingress"])
        XCTAssertTrue(filters.contains("pref 7 bpf") && filters.contains("bytecode"), "the other tool's filter is untouched: \(filters)")
        XCTAssertFalse(filters.contains("sl_nodeport") || filters.contains("0x5113"), "Swiftlane's filter is gone: \(filters)")
    }

    func testCleanupDetachesXDPAndLeavesNothing() throws {
        try install(acceleration: .native)
        let (_, before, _) = try inNodeA(["ip", "link", "show", "dev", lab.externalDevice])
        XCTAssertTrue(before.contains("prog/xdp"), before)

        let output = try cleanup()
        XCTAssertTrue(output.contains("xdp:\(lab.externalDevice)/xdp") && output.contains("xdp:\(lab.interNodeDevice)/xdp"), output)
        for device in [lab.externalDevice, lab.interNodeDevice] {
            let (_, shown, _) = try inNodeA(["ip", "link", "show", "dev", device])
            XCTAssertFalse(shown.contains("xdp"), "no XDP program is left on \(device): \(shown)")
            XCTAssertFalse(try hasClsact(device), "no qdisc is left on \(device)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: pinPath), "no pin is left")
    }
}
