import CLibBPF
@testable import Datapath
import Foundation
import Glibc
import NetLab
import XCTest

/// An upgrade from the sl_nat_v1 layout keeps established flows: the install copies them
/// into sl_nat_v2 before the new programs attach, and removes the old pin.
final class NATMigrationTests: XCTestCase {
    func testFlowsTrackedInTheV1LayoutAreCarriedOverAndKeepForwarding() throws {
        try requireKernelBPF()
        let lab = try ForwardingLab()
        let pinPath = uniquePinPath("natv1")
        defer {
            lab.teardown()
            SocketLoadBalancer.uninstall(pinPath: pinPath)
        }
        XCTAssertEqual(mkdir(pinPath, 0o700), 0)
        // What a v1 datapath left pinned: one UDP flow client -> node:30054, source-NATed
        // to a backend behind the sink.
        let oldFD = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, SL_MAP_NAME_NAT_V1, UInt32(MemoryLayout<sl_nat_key>.size),
                                   UInt32(MemoryLayout<sl_nat_entry_v1>.size), 1024, nil)
        XCTAssertGreaterThanOrEqual(oldFD, 0)
        let old = try BPFMap<sl_nat_key, sl_nat_entry_v1>(name: SL_MAP_NAME_NAT_V1, fd: oldFD)
        var key = sl_nat_key()
        key.saddr = try XCTUnwrap(NodePortDatapath.v4MappedWords(lab.generatorIPv4))
        key.daddr = try XCTUnwrap(NodePortDatapath.v4MappedWords(lab.nodeExternalIPv4))
        key.sport = UInt16(10_000).bigEndian
        key.dport = ForwardingLab.udpNodePort.bigEndian
        key.proto = UInt8(IPPROTO_UDP)
        key.dir = UInt8(SL_NAT_DIR_FORWARD.rawValue)
        var entry = sl_nat_entry_v1()
        entry.to_addr = try XCTUnwrap(NodePortDatapath.v4MappedWords(lab.backendIPv4(0)))
        entry.to_port = UInt16(9000).bigEndian
        entry.nat_addr = try XCTUnwrap(NodePortDatapath.v4MappedWords(lab.nodeInternalIPv4))
        entry.nat_port = UInt16(40_000).bigEndian
        entry.rev_nat_id = 7
        entry.flags = UInt16(SL_NAT_F_SNAT.rawValue)
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        entry.last_seen_ns = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
        try old.update(key, entry)
        XCTAssertEqual(bpf_obj_pin(oldFD, pinPath + "/" + SL_MAP_NAME_NAT_V1), 0)

        let datapath = try NodePortDatapath.install(
            NodePortOptions(pinPath: pinPath, devices: [lab.nodeExternalDevice, lab.nodeInternalDevice],
                            networkNamespace: "/run/netns/" + lab.nodeNetns), logger: testLogger)
        XCTAssertFalse(FileManager.default.fileExists(atPath: pinPath + "/" + SL_MAP_NAME_NAT_V1), "the old pin is removed")
        let carried = try XCTUnwrap(datapath.nat.lookup(key), "the flow is in sl_nat_v2")
        XCTAssertEqual(carried.to_port, entry.to_port)
        XCTAssertEqual(carried.nat_port, entry.nat_port)
        XCTAssertEqual(carried.rev_nat_id, 7)
        XCTAssertEqual(carried.flags, entry.flags)
        XCTAssertEqual(carried.route.checked_ns, 0, "no route kept yet")

        // No Service exists: only the carried-over flow can take these frames to the backend.
        let generator = try XDPTrafficGenerator(sinkCIDR: lab.backendCIDR)
        try generator.attach(to: lab)
        let frame = try lab.udpFrame(destinationPort: ForwardingLab.udpNodePort)
        try generator.configure(.init(frame: frame, l4ChecksumOffset: 0, flows: 1, newFlows: false))
        let window = try generator.measure(warmUp: 0, seconds: 0.2)
        XCTAssertGreaterThan(window.sunk, 1000, "the flow's frames reach its backend")
        XCTAssertGreaterThan(datapath.outcomeCounters()["np_forward"] ?? 0, 1000)
        XCTAssertNotEqual(datapath.nat.lookup(key)?.route.checked_ns ?? 0, 0, "its route is kept once forwarded")
    }

    /// `mapSizes.nodePortFlows`: the flow table takes the configured size, and a running
    /// table of another size is refused (as every pinned map), not silently reused.
    func testTheFlowTableTakesItsConfiguredSize() throws {
        try requireKernelBPF()
        let lab = try ForwardingLab()
        let pinPath = uniquePinPath("natsize")
        defer {
            lab.teardown()
            SocketLoadBalancer.uninstall(pinPath: pinPath)
        }
        func options(_ entries: UInt32) -> NodePortOptions {
            NodePortOptions(pinPath: pinPath, devices: [lab.nodeExternalDevice, lab.nodeInternalDevice],
                            conntrackMaxEntries: entries, networkNamespace: "/run/netns/" + lab.nodeNetns)
        }
        let datapath = try NodePortDatapath.install(options(4096), logger: testLogger)
        XCTAssertEqual(datapath.natPressure().capacity, 4096)
        XCTAssertThrowsError(try NodePortDatapath.install(options(8192), logger: testLogger)) { error in
            XCTAssertTrue("\(error)".contains(SL_MAP_NAME_NAT), "names the map: \(error)")
        }
    }
}
