import Controller
import Datapath
import Foundation
import Glibc
import Reconciler
import ServiceModel
import XCTest

/// 100,000 endpoints (1,000 Services × 100) in the kernel maps, churned for a bounded time
/// through the real syncer: every round replaces endpoints of 10% of the Services, deletes
/// a few Services and brings back the ones deleted the round before. Then the original
/// objects are restored, and the maps must be back at the baseline: the same entries
/// served, the same counts, no backend or rev-NAT id left allocated, every slot either in
/// use or free once the 1 s quarantine has passed, and the controller's picture equal to
/// what the kernel holds. RSS growth over the churn is printed (and bounded loosely).
///
/// Bounded by `SWIFTLANE_SOAK_SECONDS` (default 10; scripts/reliability.sh runs 600).
final class ChurnSoakTests: XCTestCase {
    static let services = 1_000
    static let endpointsPerService = 100

    private func service(_ index: Int, version: Int) -> ServiceModel.Service {
        let ip = "10.100.\(index / 250).\(index % 250 + 1)"
        return ServiceModel.Service(
            metadata: ObjectMeta(name: String(format: "svc-%04d", index), namespace: "soak", resourceVersion: "s\(version)"),
            spec: ServiceSpec(type: "ClusterIP", clusterIP: ip, clusterIPs: [ip], ipFamilies: ["IPv4"],
                              ports: [ServicePort(name: "http", protocol: "TCP", port: 80)]))
    }

    private func slice(_ index: Int, addresses: [String], version: Int) -> EndpointSlice {
        EndpointSlice(
            metadata: ObjectMeta(name: String(format: "svc-%04d-a", index), namespace: "soak", resourceVersion: "e\(version)",
                                 labels: ["kubernetes.io/service-name": String(format: "svc-%04d", index)]),
            addressType: "IPv4",
            endpoints: addresses.map { Endpoint(addresses: [$0], conditions: EndpointConditions(ready: true), nodeName: "node-a") },
            ports: [EndpointPort(name: "http", port: 8080)])
    }

    private static func address(_ n: Int, block: Int) -> String { "\(block).\((n >> 16) & 255).\((n >> 8) & 255).\(n & 255)" }

    private static func residentMiB() -> Double {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Double(line.split(separator: " ").dropFirst().first ?? "0").map { $0 / 1024 } ?? 0
    }

    func testChurning100000EndpointsReturnsTheMapsToTheirBaselineWithoutLeaks() throws {
        try requireKernelBPF()
        let seconds = ProcessInfo.processInfo.environment["SWIFTLANE_SOAK_SECONDS"].flatMap(Double.init) ?? 10
        let harness = try SocketLBHarness(backends: 1, label: "soak")
        defer { harness.tearDown() }
        let syncer = harness.syncer
        let maps = harness.datapath.maps

        var addresses = (0..<Self.services).map { index in
            (0..<Self.endpointsPerService).map { Self.address(index * Self.endpointsPerService + $0, block: 10) }
        }
        let original = addresses
        var serviceVersions = Array(repeating: 1, count: Self.services)
        var sliceVersions = Array(repeating: 1, count: Self.services)
        var deleted = Set<Int>()
        func objects() -> ManifestObjects {
            let live = (0..<Self.services).filter { !deleted.contains($0) }
            return ManifestObjects(services: live.map { service($0, version: serviceVersions[$0]) },
                                   endpointSlices: live.map { slice($0, addresses: addresses[$0], version: sliceVersions[$0]) })
        }

        XCTAssertEqual(syncer.sync(objects()).failures, [])
        let baseline = try maps.readState()
        XCTAssertEqual(baseline.masters.count, Self.services)
        XCTAssertEqual(baseline.backends.count, Self.services * Self.endpointsPerService)
        let baselinePlan = baseline.servedPlan.jsonString(pretty: false)

        var random = SystemRandomNumberGenerator()
        var fresh = 0
        var rounds = 0, endpointChanges = 0, mapOps = 0
        var rssWarm = 0.0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds || rounds < 3 {
            for index in deleted { serviceVersions[index] += 1; sliceVersions[index] += 1 }
            deleted = Set((0..<5).map { _ in Int.random(in: 0..<Self.services, using: &random) })
            for _ in 0..<(Self.services / 10) {
                let index = Int.random(in: 0..<Self.services, using: &random)
                for position in (0..<10).map({ _ in Int.random(in: 0..<Self.endpointsPerService, using: &random) }) {
                    // Half the time a fresh address (a new backend id), else the original back.
                    if Bool.random(using: &random) {
                        addresses[index][position] = Self.address(fresh % (1 << 24), block: 11)
                        fresh += 1
                    } else {
                        addresses[index][position] = original[index][position]
                    }
                    endpointChanges += 1
                }
                sliceVersions[index] += 1
            }
            let report = syncer.sync(objects())
            XCTAssertEqual(report.failures, [], "round \(rounds)")
            mapOps += report.ops
            rounds += 1
            if rounds == 1 { rssWarm = Self.residentMiB() }
        }

        // Everything back as it was, 100 Services per sync as the churn went (all at once,
        // every changed Service needs a fresh range while its old one is quarantined: up to
        // twice the slots in use); then past the quarantine, one more sync.
        deleted = []
        for first in stride(from: 0, to: Self.services, by: 100) {
            for index in first..<(first + 100) {
                addresses[index] = original[index]
                serviceVersions[index] += 1
                sliceVersions[index] += 1
            }
            XCTAssertEqual(syncer.sync(objects()).failures, [], "restoring from svc-\(first)")
        }
        Thread.sleep(forTimeInterval: 1.2)
        XCTAssertEqual(syncer.sync(objects()).ops, 0, "a no-op resync writes nothing")
        let rssEnd = Self.residentMiB()

        let after = try maps.readState()
        XCTAssertEqual(after.servedPlan.jsonString(pretty: false), baselinePlan, "the same frontends and backends served")
        XCTAssertEqual(after.masters.count, baseline.masters.count)
        XCTAssertEqual(after.backends.count, baseline.backends.count, "no backend id leaked")
        XCTAssertEqual(after.revNats.count, baseline.revNats.count, "no rev-NAT id leaked")
        XCTAssertEqual(after.meta.count, baseline.meta.count)
        XCTAssertEqual(after.referenced, after, "every backend and rev-NAT entry is referenced by a frontend")
        XCTAssertEqual(syncer.reconciler.state, after, "the controller's picture is what the kernel holds")
        let used = after.masters.values.reduce(0) { $0 + Int($1.count) }
        let slots = syncer.reconciler.slots
        XCTAssertTrue(slots.stillQuarantined(at: Reconciler.monotonicNanoseconds()).isEmpty, "quarantines have passed")
        XCTAssertEqual(used + slots.freeCount + slots.quarantinedCount, Int(slots.capacity) - 1,
                       "every slot is in use or reclaimable (slot 0 is never allocated)")
        XCTAssertEqual(used, Self.services * Self.endpointsPerService)

        print(String(format: "churn soak: %d rounds in %.1f s, %d endpoint changes, %d Service deletions/re-creations, %d map ops; "
                     + "entries back at baseline (%d frontends, %d backends, %d rev-NATs, %d slots used); RSS %.1f MiB after "
                     + "the first round, %.1f MiB at the end (growth %.1f MiB)",
                     rounds, Date().timeIntervalSince(start), endpointChanges, rounds * 5, mapOps, after.masters.count,
                     after.backends.count, after.revNats.count, used, rssWarm, rssEnd, rssEnd - rssWarm))
        // A loose bound: a leak per change (hundreds of thousands of them) would exceed it.
        XCTAssertLessThan(rssEnd - rssWarm, 256, "RSS grew by \(rssEnd - rssWarm) MiB")
    }
}
