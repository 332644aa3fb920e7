import Controller
import Foundation
import KubeAPI
import Logging
import Reconciler
import ServiceModel
import XCTest

@testable import Operations

/// kube-proxy's sync metrics as a real `ProxySyncer` (on the in-memory maps) reports them
/// through its observer.
final class SyncMetricsTests: XCTestCase {
    private let now = Date()

    private func objects(sliceVersion: String, trigger: Date, withLocalOnly: Bool) throws -> ManifestObjects {
        let formatter = ISO8601DateFormatter()
        var yaml = """
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: default, resourceVersion: "1"}
            spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, protocol: TCP}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: web-1
              namespace: default
              resourceVersion: "\(sliceVersion)"
              labels: {kubernetes.io/service-name: web}
              annotations: {endpoints.kubernetes.io/last-change-trigger-time: "\(formatter.string(from: trigger))"}
            addressType: IPv4
            endpoints: [{addresses: [10.0.0.1], conditions: {ready: true}, nodeName: node-a}]
            ports: [{name: http, port: 8080, protocol: TCP}]

            """
        if withLocalOnly {
            yaml += """
                ---
                apiVersion: v1
                kind: Service
                metadata: {name: local-only, namespace: default, resourceVersion: "1"}
                spec: {clusterIP: 10.96.0.11, internalTrafficPolicy: Local, ports: [{name: http, port: 80, protocol: TCP}]}
                ---
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata: {name: local-only-1, namespace: default, resourceVersion: "1", labels: {kubernetes.io/service-name: local-only}}
                addressType: IPv4
                endpoints: [{addresses: [10.0.0.2], conditions: {ready: true}, nodeName: node-b}]
                ports: [{name: http, port: 8080, protocol: TCP}]

                """
        }
        return try ManifestDecoder.decode(Data(yaml.utf8), source: "test.yaml")
    }

    private func value(_ text: String, _ sample: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(sample + " ") {
            return Double(line.dropFirst(sample.count + 1))
        }
        return nil
    }

    func testChangesLatencyAndNoLocalEndpointsFollowTheSyncs() throws {
        let metrics = SwiftlaneMetrics(
            pinPath: "/nonexistent", outcomeCounters: { [:] }, version: "test",
            startedAt: now.addingTimeInterval(-10))
        let health = ProxyHealth()
        let syncer = try ProxySyncer(
            nodeName: "node-a", maps: InMemoryLoadBalancerMaps(), logger: Logger(label: "test"))
        syncer.observer = SyncTelemetry(metrics: metrics, health: health)

        syncer.sync(try objects(sliceVersion: "1", trigger: now.addingTimeInterval(-2), withLocalOnly: true))
        var text = metrics.registry.emitToString()
        XCTAssertEqual(value(text, "kubeproxy_sync_proxy_rules_service_changes_total"), 2)
        XCTAssertEqual(value(text, "kubeproxy_sync_proxy_rules_endpoint_changes_total"), 2)
        XCTAssertEqual(
            value(text, "kubeproxy_network_programming_duration_seconds_count"), 1, "only web-1 carries a trigger time")
        XCTAssertGreaterThanOrEqual(value(text, "kubeproxy_network_programming_duration_seconds_sum") ?? 0, 2)
        XCTAssertEqual(
            value(text, #"kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"}"#), 1)
        XCTAssertEqual(value(text, "kubeproxy_sync_proxy_rules_duration_seconds_count"), 1)
        XCTAssertNotNil(value(text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds"))
        XCTAssertEqual(value(text, "swiftlane_frontends"), 2)

        // The same objects again: a sync, but no change.
        syncer.sync(try objects(sliceVersion: "1", trigger: now.addingTimeInterval(-2), withLocalOnly: true))
        text = metrics.registry.emitToString()
        XCTAssertEqual(value(text, "kubeproxy_sync_proxy_rules_service_changes_total"), 2)
        XCTAssertEqual(value(text, "kubeproxy_sync_proxy_rules_endpoint_changes_total"), 2)
        XCTAssertEqual(value(text, "kubeproxy_sync_proxy_rules_duration_seconds_count"), 2)

        // web-1 changes, local-only and its slice go away.
        syncer.sync(try objects(sliceVersion: "2", trigger: now.addingTimeInterval(-1), withLocalOnly: false))
        text = metrics.registry.emitToString()
        XCTAssertEqual(value(text, "kubeproxy_sync_proxy_rules_service_changes_total"), 3)
        XCTAssertEqual(value(text, "kubeproxy_sync_proxy_rules_endpoint_changes_total"), 4)
        XCTAssertEqual(value(text, "kubeproxy_network_programming_duration_seconds_count"), 2)
        XCTAssertEqual(
            value(text, #"kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"}"#), 0)

        // A change triggered before the proxy started is not a programming latency of ours.
        syncer.sync(try objects(sliceVersion: "3", trigger: now.addingTimeInterval(-60), withLocalOnly: false))
        text = metrics.registry.emitToString()
        XCTAssertEqual(value(text, "kubeproxy_sync_proxy_rules_endpoint_changes_total"), 5)
        XCTAssertEqual(value(text, "kubeproxy_network_programming_duration_seconds_count"), 2)
    }

    func testReconcileFailuresAreCountedByErrno() throws {
        XCTAssertEqual(
            ReconcileFailure("default/web: update sl_services_v2 failed: E2BIG (Argument list too long)"),
            ReconcileFailure(reason: "E2BIG", map: "sl_services_v2"))
        XCTAssertEqual(
            ReconcileFailure("default/web: slot array full: no free range of 3 slots (E2BIG)"),
            ReconcileFailure(reason: "E2BIG", map: "sl_slots_v1"))
        XCTAssertEqual(ReconcileFailure("default/web: something odd"), ReconcileFailure(reason: "other", map: nil))
        XCTAssertEqual(
            ReconcileFailure("update sl_backends_v1 failed: ENOMEM (Cannot allocate memory)").metadata,
            ["errno": "ENOMEM", "map": "sl_backends_v1"])

        // Through a syncer whose service map holds one frontend.
        let metrics = SwiftlaneMetrics(pinPath: "/nonexistent", outcomeCounters: { [:] }, version: "test")
        let health = ProxyHealth()
        let syncer = try ProxySyncer(
            nodeName: "node-a", maps: InMemoryLoadBalancerMaps(serviceCapacity: 1),
            logger: Logger(label: "test"))
        syncer.observer = SyncTelemetry(metrics: metrics, health: health)
        let report = syncer.sync(try objects(sliceVersion: "1", trigger: now, withLocalOnly: true))
        XCTAssertEqual(report.failures.count, 1)
        let text = metrics.registry.emitToString()
        XCTAssertEqual(
            value(text, #"swiftlane_reconcile_errors_total{reason="E2BIG"}"#), 1,
            "the in-memory fake says \"service map full (E2BIG)\": \(report.failures)")
        let failedService = try XCTUnwrap(report.failures.first?.split(separator: ":").first).description
        XCTAssertEqual(value(text, "swiftlane_reconcile_service_errors_total{service=\"\(failedService)\"}"), 1,
                       "failures are counted by Service too")
        XCTAssertNil(
            value(text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds").flatMap { $0 > 0 ? $0 : nil },
            "a sync with failures is not a successful sync")
        XCTAssertTrue(health.readyz().body.contains("the last sync left 1 frontends on their previous state"))
    }

    /// A refused field becomes a Warning on its object; rejections naming no API object
    /// (an unreadable file) do not.
    func testARejectedFieldIsAWarningOnItsObject() {
        let field = Rejection(kind: "Service", object: "shop/web", field: "spec.externalIPs[0]", reason: "spec.externalIPs[]",
                              message: "unparsable IP \"300.1.1.1\"")
        let event = try? XCTUnwrap(SyncTelemetry.rejectionEvent(field, node: "node-a"))
        XCTAssertEqual(event?.regarding, .service(namespace: "shop", name: "web"))
        XCTAssertEqual(event?.type, .warning)
        XCTAssertEqual(event?.reason, "RejectedByProxy")
        XCTAssertEqual(event?.note, "node node-a ignored spec.externalIPs[0]: unparsable IP \"300.1.1.1\"")
        let slice = Rejection(kind: "EndpointSlice", object: "shop/web-1", field: "", reason: "size", message: "too big")
        XCTAssertEqual(SyncTelemetry.rejectionEvent(slice, node: "n")?.regarding.apiVersion, "discovery.k8s.io/v1")
        XCTAssertEqual(SyncTelemetry.rejectionEvent(slice, node: "n")?.note, "node n ignored the object: too big")
        XCTAssertNil(SyncTelemetry.rejectionEvent(
            Rejection(kind: "Manifest", object: "broken.yaml", field: "", reason: "parse", message: "bad"), node: "n"))
    }

    /// Through a real syncer: an unparsable source range is skipped, the rest served, and
    /// the Service gets the Warning.
    func testAnUnparsableSourceRangeReachesTheEventRecorder() async throws {
        final class Seen: @unchecked Sendable {
            let lock = NSLock()
            var notes: [String] = []
        }
        let seen = Seen()
        let events = EventRecorder(reportingInstance: "swiftlane-node-a", logger: Logger(label: "test"))
        events.onOutcome = { reason, _ in seen.lock.withLock { seen.notes.append(reason) } }
        let run = Task { await events.run() }
        defer { run.cancel() }
        let syncer = try ProxySyncer(nodeName: "node-a", maps: InMemoryLoadBalancerMaps(), logger: Logger(label: "test"))
        syncer.observer = SyncTelemetry(metrics: nil, health: ProxyHealth(), events: events)
        let yaml = """
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: shop}
            spec: {type: LoadBalancer, clusterIP: 10.96.0.10, loadBalancerSourceRanges: ["10.0.0.0/33"],
                   ports: [{name: http, port: 80, protocol: TCP, nodePort: 30080}]}
            """
        let report = syncer.sync(try ManifestDecoder.decode(Data(yaml.utf8), source: "test.yaml"))
        XCTAssertEqual(report.failures, [])
        XCTAssertTrue(report.rejected.contains { $0.object == "shop/web" && $0.field == "spec.loadBalancerSourceRanges[0]" },
                      "\(report.rejected)")
        let deadline = Date().addingTimeInterval(10)
        while !seen.lock.withLock({ seen.notes.contains("RejectedByProxy") }) && Date() < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTAssertTrue(seen.lock.withLock { seen.notes.contains("RejectedByProxy") })
    }

    /// A Service that could not be programmed gets a Warning Event (once per dedupe
    /// window, however many syncs retry it), and the event outcome is a metric.
    func testAServiceThatCannotBeProgrammedGetsOneWarningEvent() async throws {
        let metrics = SwiftlaneMetrics(pinPath: "/nonexistent", outcomeCounters: { [:] }, version: "test")
        final class Seen: @unchecked Sendable {
            let lock = NSLock()
            var outcomes: [String] = []
        }
        let seen = Seen()
        let events = EventRecorder(reportingInstance: "swiftlane-node-a", logger: Logger(label: "test"))
        events.onOutcome = { reason, outcome in
            metrics.recordEvent(reason: reason, outcome: outcome.rawValue)
            seen.lock.withLock { seen.outcomes.append("\(reason)/\(outcome.rawValue)") }
        }
        let run = Task { await events.run() }
        defer { run.cancel() }
        let syncer = try ProxySyncer(
            nodeName: "node-a", maps: InMemoryLoadBalancerMaps(serviceCapacity: 1), logger: Logger(label: "test"))
        syncer.observer = SyncTelemetry(metrics: metrics, health: ProxyHealth(), events: events)
        let report = syncer.sync(try objects(sliceVersion: "1", trigger: now, withLocalOnly: true))
        let failed = try XCTUnwrap(report.failedServices.first)
        XCTAssertEqual(report.failedServices.count, 1)
        _ = syncer.sync(try objects(sliceVersion: "1", trigger: now, withLocalOnly: true))  // the retry fails again

        let event = SyncTelemetry.programmingFailure(service: failed.key, error: failed.value, node: "node-a")
        XCTAssertEqual(event.reason, "FailedToProgramService")
        XCTAssertEqual(event.type, .warning)
        XCTAssertEqual("\(event.regarding.namespace ?? "")/\(event.regarding.name)", failed.key)
        XCTAssertTrue(event.note.contains("E2BIG"), event.note)
        let deadline = Date().addingTimeInterval(10)
        while seen.lock.withLock({ seen.outcomes.count }) < 2 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(seen.lock.withLock { seen.outcomes.sorted() },
                       ["FailedToProgramService/suppressed", "FailedToProgramService/unsent"])
        let text = metrics.registry.emitToString()
        XCTAssertEqual(value(text, #"swiftlane_events_total{reason="FailedToProgramService",result="unsent"}"#), 1, text)
    }
}
