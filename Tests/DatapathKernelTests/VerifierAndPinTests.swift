@testable import Datapath
import BPFObjects
import CLibBPF
import Foundation
import Glibc
import XCTest

/// Every BPF object must pass the kernel verifier; pinned state must be checked before
/// reuse; a verifier rejection must reach the operator with the verifier's log.
final class VerifierAndPinTests: XCTestCase {
    private var pinPaths: [String] = []

    override func setUpWithError() throws {
        try requireKernelBPF()
    }

    override func tearDown() {
        for path in pinPaths { SocketLoadBalancer.uninstall(pinPath: path) }
    }

    private func pinPath(_ label: String) throws -> String {
        let path = uniquePinPath(label)
        pinPaths.append(path)
        try KernelEnvironment.prepareBPFFilesystem(pinPath: path)
        return path
    }

    /// Loads an embedded object and checks every program got a kernel fd.
    private func assertLoads(_ object: EmbeddedBPFObject) throws {
        let path = try pinPath(object.name)
        let file = try BPFObjectFile.open(object, pinRoot: path)
        defer { file.close() }
        try file.load()
        var program = bpf_object__next_program(file.handle, nil)
        var loaded: [String] = []
        while let current = program {
            XCTAssertGreaterThanOrEqual(bpf_program__fd(current), 0, String(cString: bpf_program__name(current)))
            loaded.append(String(cString: bpf_program__name(current)))
            program = bpf_object__next_program(file.handle, current)
        }
        XCTAssertFalse(loaded.isEmpty)
        XCTAssertEqual(Set(file.pinnedMapNames), [SL_MAP_NAME_SERVICES, SL_MAP_NAME_SLOTS, SL_MAP_NAME_BACKENDS, SL_MAP_NAME_REVNAT,
                                                  SL_MAP_NAME_SOCK_REVNAT, SL_MAP_NAME_COUNTERS, SL_MAP_NAME_SOCK_FRONTEND,
                                                  SL_MAP_NAME_AFFINITY, SL_MAP_NAME_FRONTEND_META, SL_MAP_NAME_SOURCE_RANGES,
                                                  SL_MAP_NAME_HEALTH_CHECKS, SL_MAP_NAME_NAT, SL_MAP_NAME_NODE_ADDRS,
                                                  SL_MAP_NAME_DEVICES, SL_MAP_NAME_DSR, SL_MAP_NAME_FRAG])
    }

    func testSockLBObjectPassesTheVerifier() throws {
        try assertLoads(BPFObjects.sockLb)
        XCTAssertEqual(Set(SocketLoadBalancer.hooks.map(\.program)).count, 8)
    }

    func testAProgramTheVerifierRejectsFailsWithTheVerifierLog() throws {
        // An out-of-bounds read of the context: the verifier must refuse it.
        let source = """
            #include <linux/bpf.h>
            #include <bpf/bpf_helpers.h>
            char LICENSE[] SEC("license") = "GPL";
            SEC("cgroup/connect4")
            int bad(struct bpf_sock_addr *ctx) { return *(int *)((char *)ctx + 4096); }
            """
        let directory = NSTemporaryDirectory() + "swiftlane-bad-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try source.write(toFile: directory + "/bad.c", atomically: true, encoding: .utf8)
        #if arch(x86_64)
        let multiarch = "/usr/include/x86_64-linux-gnu"
        #else
        let multiarch = "/usr/include/aarch64-linux-gnu"
        #endif
        let clang = Process()
        clang.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        clang.arguments = ["clang", "-O2", "-g", "-target", "bpf", "-I", multiarch, "-c", directory + "/bad.c", "-o", directory + "/bad.o"]
        try clang.run()
        clang.waitUntilExit()
        XCTAssertEqual(clang.terminationStatus, 0, "clang must compile the test program")
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: directory + "/bad.o")))
        let file = try BPFObjectFile.open(EmbeddedBPFObject(name: "bad", bytes: bytes), pinRoot: try pinPath("bad"))
        defer { file.close() }
        XCTAssertThrowsError(try file.load()) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("verifier log:"), text)
            XCTAssertTrue(text.contains("invalid bpf_context access") || text.contains("invalid"), text)
        }
    }

    func testAnIncompatiblePinnedMapIsRefusedListingEveryDifference() throws {
        let path = try pinPath("compat")
        // A "services" map of another layout: other key size, value size and capacity.
        let fd = bpf_map_create(BPF_MAP_TYPE_HASH, "sl_services_v2", 8, 24, 1000, nil)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(bpf_obj_pin(fd, path + "/" + SL_MAP_NAME_SERVICES), 0)
        close(fd)
        XCTAssertThrowsError(try SocketLoadBalancer.install(DatapathOptions(pinPath: path, cgroupPath: try makeCgroup()), logger: testLogger)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("sl_services_v2: key_size is 8"), text)
            XCTAssertTrue(text.contains("value_size is 24"), text)
            XCTAssertTrue(text.contains("max_entries is 1000"), text)
        }
    }

    func testAReinstallAdoptsPinnedMapsAndReplacesProgramsInPlace() throws {
        let path = try pinPath("adopt")
        let cgroup = try makeCgroup()
        let first = try SocketLoadBalancer.install(DatapathOptions(pinPath: path, cgroupPath: cgroup), logger: testLogger)
        XCTAssertEqual(first.attachments.map(\.outcome), Array(repeating: .attached, count: 8))
        try first.maps.backends.update(7, sl_backend())
        let second = try SocketLoadBalancer.install(DatapathOptions(pinPath: path, cgroupPath: cgroup), logger: testLogger)
        XCTAssertEqual(second.attachments.map(\.outcome), Array(repeating: .replaced, count: 8))
        XCTAssertNotNil(second.maps.backends.lookup(7), "the pinned backend map was reused with its content")
        // Exactly one program per hook is attached to the cgroup: replaced, not added.
        let attached = try BPFTool.cgroupPrograms(cgroup)
        XCTAssertEqual(attached.count, 8, "\(attached)")
    }

    private var cgroups: [String] = []

    private func makeCgroup() throws -> String {
        let root = try KernelEnvironment.detectCgroup2Root()
        let path = root + "/swiftlane-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        XCTAssertEqual(mkdir(path, 0o755), 0)
        addTeardownBlock { [pinPaths] in
            for pin in pinPaths { SocketLoadBalancer.uninstall(pinPath: pin) }
            rmdir(path)
        }
        return path
    }
}

enum BPFTool {
    /// Program names attached to a cgroup, as bpftool lists them.
    static func cgroupPrograms(_ cgroup: String) throws -> [String] {
        let process = Process()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["bpftool", "-j", "cgroup", "show", cgroup]
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let entries = (try JSONSerialization.jsonObject(with: data.isEmpty ? Data("[]".utf8) : data)) as? [[String: Any]] ?? []
        return entries.compactMap { $0["name"] as? String }
    }
}
