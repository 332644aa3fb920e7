import Controller
import Datapath
import Foundation
import Glibc
import NetLab
import ServiceModel
import XCTest

/// The route kept per flow (struct sl_nat_route) follows the FIB: an established flow
/// whose route changes takes the new route within SL_ROUTE_RECHECK_NS (1 s), on tc and in
/// XDP.
final class RouteCacheTests: XCTestCase {
    func testAnEstablishedFlowFollowsARouteChangeWithinASecond() throws {
        try requireKernelBPF()
        for acceleration in [NodePortOptions.Acceleration.none, .native] {
            let lab = try ForwardingLab()
            let pinPath = uniquePinPath("route")
            defer {
                lab.teardown()
                SocketLoadBalancer.uninstall(pinPath: pinPath)
            }
            _ = try NodePortDatapath.install(
                NodePortOptions(pinPath: pinPath, devices: [lab.nodeExternalDevice, lab.nodeInternalDevice],
                                acceleration: acceleration, networkNamespace: "/run/netns/" + lab.nodeNetns),
                logger: testLogger)
            let syncer = try ProxySyncer(nodeName: "node-a", maps: try KernelLoadBalancerMaps(pinPath: pinPath), logger: testLogger)
            XCTAssertEqual(syncer.sync(try ManifestDecoder.decode(Data(lab.nodePortManifest(backends: 1, namespace: "routes").utf8), source: "routes.yaml")).failures.count, 0)
            let generator = try XDPTrafficGenerator(sinkCIDR: lab.backendCIDR)
            try generator.attach(to: lab)
            let frame = try lab.udpFrame(destinationPort: ForwardingLab.udpNodePort)
            try generator.configure(.init(frame: frame, l4ChecksumOffset: 0, flows: 4, newFlows: false))

            let before = try generator.measure(warmUp: 0.05, seconds: 0.2)
            XCTAssertGreaterThan(before.sunk, 1000, "\(acceleration): the flows reach the backend behind the sink")
            // The backends move behind the generator's side (whose stack drops what it gets):
            // once the kept routes are re-asked, nothing reaches the sink any more.
            try lab.exec(["ip", "route", "replace", lab.backendCIDR, "via", lab.generatorIPv4, "dev", lab.nodeExternalDevice],
                         netns: lab.nodeNetns)
            Thread.sleep(forTimeInterval: 1.5)
            let moved = try generator.measure(warmUp: 0.05, seconds: 0.2)
            XCTAssertLessThan(moved.sunk, before.sunk / 100, "\(acceleration): the flows follow the new route")
            // And back.
            try lab.exec(["ip", "route", "replace", lab.backendCIDR, "via", lab.sinkIPv4, "dev", lab.nodeInternalDevice],
                         netns: lab.nodeNetns)
            Thread.sleep(forTimeInterval: 1.5)
            let back = try generator.measure(warmUp: 0.05, seconds: 0.2)
            XCTAssertGreaterThan(back.sunk, 1000, "\(acceleration): the flows follow the route back")
        }
    }
}
