import Controller
import Foundation
import Logging
import Reconciler
import ServiceModel
import XCTest

/// The syncer against the in-memory maps: incremental syncs touch only what changed,
/// and what they program is always what a full translation plans.
final class ProxySyncerTests: XCTestCase {
    private let logger = Logger(label: "test")

    private func objects(_ services: [(name: String, vip: String, endpoints: [String])], versioned: Bool = false) -> ManifestObjects {
        var objects = ManifestObjects()
        for (index, service) in services.enumerated() {
            objects.services.append(Service(
                metadata: ObjectMeta(name: service.name, namespace: "t", resourceVersion: versioned ? "s\(index)" : nil),
                spec: ServiceSpec(clusterIP: service.vip, ports: [ServicePort(name: "http", port: 80)])))
            objects.endpointSlices.append(EndpointSlice(
                metadata: ObjectMeta(name: service.name + "-1", namespace: "t",
                                     resourceVersion: versioned ? "e\(index)-\(service.endpoints.joined())" : nil,
                                     labels: [WellKnown.serviceNameLabel: service.name]),
                addressType: "IPv4", endpoints: service.endpoints.map { Endpoint(addresses: [$0]) },
                ports: [EndpointPort(name: "http", port: 8080)]))
        }
        return objects
    }

    private func assertServes(_ maps: InMemoryLoadBalancerMaps, _ objects: ManifestObjects, syncer: ProxySyncer,
                              file: StaticString = #filePath, line: UInt = #line) throws {
        let plan = Translator.plan(services: objects.services, endpointSlices: objects.endpointSlices,
                                   node: ProxyNode(name: syncer.nodeName, labels: [:], addresses: [], podCIDRs: []),
                                   options: syncer.options).plan
        XCTAssertEqual(try maps.readState().servedPlan.jsonString(pretty: true), plan.jsonString(pretty: true), file: file, line: line)
    }

    func testAnEndpointChangeReTranslatesAndRewritesOnlyItsService() throws {
        for versioned in [false, true] {
            let maps = InMemoryLoadBalancerMaps()
            let syncer = try ProxySyncer(nodeName: "n", maps: maps, logger: logger)
            var services = (1...50).map { (name: "s\($0)", vip: "198.19.0.\($0)", endpoints: ["198.18.0.\($0)", "198.18.1.\($0)"]) }
            XCTAssertEqual(syncer.sync(objects(services, versioned: versioned)).servicesChanged, 50)
            let again = syncer.sync(objects(services, versioned: versioned))
            XCTAssertEqual(again.servicesChanged, 0)
            XCTAssertEqual(again.ops, 0, "a no-op resync writes nothing")
            services[7].endpoints = ["198.18.0.8", "198.18.2.8"]
            let before = maps.appliedOps.count
            let change = syncer.sync(objects(services, versioned: versioned))
            XCTAssertEqual(change.servicesChanged, 1)
            let written = maps.appliedOps[before...]
            XCTAssertTrue(written.allSatisfy { op in
                if case .upsertMaster(let key, _) = op { return key.address.description == "198.19.0.8" }
                return true
            }, "only s8's frontend flips: \(Array(written))")
            try assertServes(maps, objects(services, versioned: versioned), syncer: syncer)
        }
    }

    func testRemovedServicesAreWithdrawnAndAFreedFrontendGoesToTheServiceThatAlsoClaimedIt() throws {
        let maps = InMemoryLoadBalancerMaps()
        let syncer = try ProxySyncer(nodeName: "n", maps: maps, logger: logger)
        // b claims a's ClusterIP too: a (first by name) keeps it.
        var services = [(name: "a", vip: "198.19.0.1", endpoints: ["198.18.0.1"]),
                        (name: "b", vip: "198.19.0.1", endpoints: ["198.18.0.2"]),
                        (name: "c", vip: "198.19.0.3", endpoints: ["198.18.0.3"])]
        syncer.sync(objects(services))
        XCTAssertEqual(try maps.readState().servedPlan.frontends.map(\.service), ["t/a", "t/c"])
        // a goes away: b gets the frontend in the same incremental sync.
        services.removeFirst()
        let report = syncer.sync(objects(services))
        XCTAssertEqual(report.failures, [])
        let served = try maps.readState().servedPlan.frontends
        XCTAssertEqual(served.map(\.service), ["t/b", "t/c"])
        XCTAssertEqual(served.first?.backends.map(\.description), ["198.18.0.2:8080"])
        services.removeAll { $0.name == "c" }
        syncer.sync(objects(services))
        XCTAssertEqual(try maps.readState().servedPlan.frontends.map(\.service), ["t/b"])
        XCTAssertEqual(try maps.readState().backends.count, 1, "c's backend is collected")
    }

    func testAServiceThatFailedIsRetriedOnTheNextSyncEvenWithoutAChange() throws {
        let maps = InMemoryLoadBalancerMaps(serviceCapacity: 1)
        let syncer = try ProxySyncer(nodeName: "n", maps: maps, logger: logger)
        let two = objects([(name: "a", vip: "198.19.0.1", endpoints: ["198.18.0.1"]),
                           (name: "b", vip: "198.19.0.2", endpoints: ["198.18.0.2"])])
        XCTAssertEqual(syncer.sync(two).failures.count, 1)
        maps.serviceCapacity = nil
        let retry = syncer.sync(two)
        XCTAssertEqual(retry.servicesChanged, 0)
        XCTAssertEqual(retry.failures, [])
        try assertServes(maps, two, syncer: syncer)
    }

    func testChangesFoundByPositionAndEveryFallbackProgramWhatATranslationPlans() throws {
        let maps = InMemoryLoadBalancerMaps()
        let syncer = try ProxySyncer(nodeName: "n", maps: maps, logger: logger)
        var services = (1...20).map { (name: "s\($0)", vip: "198.19.0.\($0)", endpoints: ["198.18.0.\($0)"]) }
        var current = objects(services, versioned: true)
        syncer.sync(current)
        // Same objects, one new version: found by position, one Service re-translated.
        services[4].endpoints = ["198.18.9.5"]
        current = objects(services, versioned: true)
        XCTAssertEqual(syncer.sync(current).servicesChanged, 1)
        try assertServes(maps, current, syncer: syncer)
        // A slice that moves to another Service (its label changed): regrouped.
        current.endpointSlices[6].metadata.labels[WellKnown.serviceNameLabel] = "s8"
        current.endpointSlices[6].metadata.resourceVersion = "moved"
        XCTAssertEqual(syncer.sync(current).servicesChanged, 2, "s7 lost its slice, s8 gained one")
        try assertServes(maps, current, syncer: syncer)
        // A Service added: the lists change length, regrouped.
        services.append((name: "s21", vip: "198.19.0.21", endpoints: ["198.18.0.21"]))
        current = objects(services, versioned: true)
        syncer.sync(current)
        try assertServes(maps, current, syncer: syncer)
        // Objects without versions: compared field by field.
        services[0].endpoints = ["198.18.7.1"]
        current = objects(services, versioned: false)
        syncer.sync(current)
        try assertServes(maps, current, syncer: syncer)
    }
}
