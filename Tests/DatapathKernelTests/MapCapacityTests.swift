import CLibBPF
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
