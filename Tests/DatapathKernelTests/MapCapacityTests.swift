import CLibBPF
import Controller
import Datapath
import Foundation
import NetLab
import ServiceModel
import XCTest

/// A full service map: the frontends that do not fit fail with a clear error naming
/// their Service, nothing else is disturbed, and they are programmed once space returns.
final class MapCapacityTests: XCTestCase {
    func testAFullServiceMapFailsOnlyTheServicesThatDoNotFitAndRecovers() throws {
        try requireKernelBPF()
        let harness = try SocketLBHarness(label: "full", mapSizes: [SL_MAP_NAME_SERVICES: 4])
        defer { harness.tearDown() }
        let lab = harness.lab
        let (a, b, c) = (lab.vipIPv4(31), lab.vipIPv4(32), lab.vipIPv4(33))
        func service(_ name: String, _ vip: String) -> String {
            LabManifests.documents(LabManifests.service(name: name, clusterIPs: [vip]),
                                   LabManifests.slice(service: name, addresses: lab.backends.map(\.ipv4)))
        }
        // Three Services of two ports each: six frontends for four entries.
        let objects = try ManifestDecoder.decode(Data(LabManifests.documents(service("a", a), service("b", b), service("c", c)).utf8),
                                                 source: "full.yaml")
        let report = harness.syncer.sync(objects)
        XCTAssertEqual(report.failures.count, 2, "\(report.failures)")
        for failure in report.failures {
            XCTAssertTrue(failure.hasPrefix("default/c: "), failure)
            XCTAssertTrue(failure.contains("E2BIG"), failure)
        }
        XCTAssertEqual(try harness.probe.tcp(target: "\(a):80", count: 10).ok, 10, "a is served")
        XCTAssertEqual(try harness.probe.tcp(target: "\(b):80", count: 10).ok, 10, "b is served")
        XCTAssertEqual(try harness.probe.tcp(target: "\(c):80", count: 3).failures, ["ENETUNREACH": 3], "c is not half-programmed")
        let state = try harness.datapath.maps.readState()
        XCTAssertEqual(state.masters.count, 4)
        XCTAssertEqual(state.referenced, state, "no slot or backend left behind by the failed frontends")

        // Space returns when a goes away: c is programmed by the next sync.
        let withoutA = try ManifestDecoder.decode(Data(LabManifests.documents(service("b", b), service("c", c)).utf8), source: "full.yaml")
        XCTAssertEqual(harness.syncer.sync(withoutA).failures, [])
        XCTAssertEqual(try harness.probe.tcp(target: "\(c):80", count: 10).ok, 10)
        XCTAssertEqual(try harness.probe.tcp(target: "\(a):80", count: 3).failures, ["ENETUNREACH": 3])
    }
}

/// The backends map and the slot array full, the same way: the Service that does not fit
/// fails with an error naming the map, the Services programmed before keep exactly their
/// entries and keep serving, and the Service is programmed once space returns (for slots,
/// once the removed Service's ranges leave their 1 s quarantine).
final class BackendAndSlotCapacityTests: XCTestCase {
    /// Three Services (TCP 80 and UDP 53, three backends): six backends and six slots each.
    private func services(_ lab: ClusterLab, _ names: [String]) throws -> ManifestObjects {
        let documents = names.map { name in
            let index = ["a", "b", "c"].firstIndex(of: name)!
            return LabManifests.documents(
                LabManifests.service(name: name, clusterIPs: [lab.vipIPv4(31 + index)]),
                LabManifests.slice(service: name, addresses: lab.backends.map(\.ipv4),
                                   tcpPort: Int(SocketLBHarness.tcpPort) + index, udpPort: Int(SocketLBHarness.udpPort) + index))
        }
        return try ManifestDecoder.decode(Data(documents.joined(separator: "---\n").utf8), source: "full.yaml")
    }

    private func check(map: String, label: String) throws {
        try requireKernelBPF()
        // 16 entries: a and b take twelve, c's six do not fit.
        let harness = try SocketLBHarness(label: label, mapSizes: [map: 16])
        defer { harness.tearDown() }
        let lab = harness.lab
        // Each Service's backends listen on their own ports (8080+i, 8053+i): distinct backends.
        for index in 1..<3 {
            for backend in lab.backends {
                try lab.startProbeServer(on: backend, tcpPort: SocketLBHarness.tcpPort + UInt16(index),
                                         udpPort: SocketLBHarness.udpPort + UInt16(index))
            }
        }
        XCTAssertEqual(harness.syncer.sync(try services(lab, ["a", "b"])).failures, [])
        let before = try harness.datapath.maps.readState()

        let report = harness.syncer.sync(try services(lab, ["a", "b", "c"]))
        XCTAssertFalse(report.failures.isEmpty, "c does not fit in \(map)")
        for failure in report.failures {
            XCTAssertTrue(failure.hasPrefix("default/c: "), failure)
            XCTAssertEqual(ReconcileFailure(failure).map, map, "the error names the full map: \(failure)")
            XCTAssertTrue(failure.contains("E2BIG") || failure.contains("ENOSPC") || failure.contains("slot array full"), failure)
        }
        let after = try harness.datapath.maps.readState()
        XCTAssertEqual(after.referenced, after, "nothing half-written is left behind by c")
        for (key, master) in before.masters {
            XCTAssertEqual(after.masters[key], master, "\(key) unchanged")
            XCTAssertEqual(after.meta[key], before.meta[key])
        }
        for (id, backend) in before.backends { XCTAssertEqual(after.backends[id], backend) }
        for (index, slot) in before.slots { XCTAssertEqual(after.slots[index], slot, "slot \(index) unchanged") }
        // Frontends are the unit: each of c's is either whole (its range and backends
        // written, checked by `referenced` above) or absent.
        let cFrontends = after.meta.values.filter { $0.service == "default/c" }.count
        XCTAssertEqual(cFrontends, 2 - report.failures.count, "c's frontends that did not fit are absent")
        XCTAssertEqual(try harness.probe.tcp(target: "\(lab.vipIPv4(31)):80", count: 10).ok, 10, "a is served")
        XCTAssertEqual(try harness.probe.tcp(target: "\(lab.vipIPv4(32)):80", count: 10).ok, 10, "b is served")

        // a removed: its backends are free at once, its slots after the quarantine. The
        // syncer retries c until it fits (a source would, after its backoff).
        let withoutA = try services(lab, ["b", "c"])
        let deadline = Date().addingTimeInterval(10)
        var last = harness.syncer.sync(withoutA)
        while !last.failures.isEmpty && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.2)
            last = harness.syncer.sync(withoutA)
        }
        XCTAssertEqual(last.failures, [], "c programmed once space returned")
        let c = try harness.probe.tcp(target: "\(lab.vipIPv4(33)):80", count: 10)
        XCTAssertEqual(c.ok, 10, "c is served: \(c.failures) \(c.firstError ?? "")")
        XCTAssertEqual(try harness.probe.tcp(target: "\(lab.vipIPv4(32)):80", count: 10).ok, 10, "b is still served")
        let recovered = try harness.datapath.maps.readState()
        XCTAssertEqual(recovered.referenced, recovered)
        XCTAssertEqual(Set(recovered.meta.values.map(\.service)), ["default/b", "default/c"])
    }

    func testAFullBackendsMapFailsOnlyTheServiceThatDoesNotFitAndRecovers() throws {
        try check(map: SL_MAP_NAME_BACKENDS, label: "fullbe")
    }

    func testAFullSlotArrayFailsOnlyTheServiceThatDoesNotFitAndRecoversAfterQuarantine() throws {
        try check(map: SL_MAP_NAME_SLOTS, label: "fullslot")
    }
}
