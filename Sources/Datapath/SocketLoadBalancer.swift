import BPFObjects
import CLibBPF
import Foundation
import Glibc
import Logging

/// Where and how the socket load balancer is installed.
public struct DatapathOptions: Sendable {
    /// bpffs directory holding the pinned maps and links.
    public var pinPath: String
    /// cgroup v2 directory the socket programs attach to; nil = the cgroup v2 root.
    public var cgroupPath: String?
    /// Entries per map, by pinned map name; maps not named keep the size in maps.h. A
    /// pinned map of another size is refused (see checkPinnedMaps).
    public var mapSizes: [String: UInt32]

    public static let defaultPinPath = "/sys/fs/bpf/swiftlane"

    /// The maps whose size the configuration may set (`mapSizes.<key>`), by config key.
    public static let sizableMaps: [String: String] = [
        "services": SL_MAP_NAME_SERVICES, "backendSlots": SL_MAP_NAME_SLOTS, "backends": SL_MAP_NAME_BACKENDS,
        "revNat": SL_MAP_NAME_REVNAT, "socketRevNat": SL_MAP_NAME_SOCK_REVNAT, "affinity": SL_MAP_NAME_AFFINITY,
        // External traffic's flow table: pinned by this object too, so sized here as well.
        "nodePortFlows": SL_MAP_NAME_NAT,
    ]

    public init(pinPath: String = DatapathOptions.defaultPinPath, cgroupPath: String? = nil, mapSizes: [String: UInt32] = [:]) {
        self.pinPath = pinPath
        self.cgroupPath = cgroupPath
        self.mapSizes = mapSizes
    }
}

/// What the running kernel offers, probed once at start-up.
public struct KernelFeatures: Sendable, CustomStringConvertible {
    /// `bpf_set_retval` (5.18+): refused connects fail with ECONNREFUSED, not EPERM.
    public var setRetval: Bool
    /// cgroup getpeername hooks (5.8+).
    public var getpeername: Bool

    public var description: String { "set_retval=\(setRetval) getpeername=\(getpeername)" }
}

/// The socket-level load balancer: the `bpf/sock_lb.c` programs attached to a cgroup
/// through pinned links, sharing the pinned maps.
///
/// Installing is restart-safe: maps are reused from their pins (after a compatibility
/// check), and a pinned link is updated in place with the new program, so sockets of the
/// cgroup are translated without a gap while the controller restarts or upgrades.
public final class SocketLoadBalancer: @unchecked Sendable {
    /// One cgroup hook of the socket load balancer.
    public struct Hook: Sendable {
        public var program: String
        public var attachType: bpf_attach_type
        /// File name of the pinned link under `<pinPath>/links/`.
        public var linkName: String
        public var needsGetpeername: Bool
    }

    public static let hooks: [Hook] = [
        Hook(program: "sl_connect4", attachType: BPF_CGROUP_INET4_CONNECT, linkName: "cgroup_connect4", needsGetpeername: false),
        Hook(program: "sl_sendmsg4", attachType: BPF_CGROUP_UDP4_SENDMSG, linkName: "cgroup_sendmsg4", needsGetpeername: false),
        Hook(program: "sl_recvmsg4", attachType: BPF_CGROUP_UDP4_RECVMSG, linkName: "cgroup_recvmsg4", needsGetpeername: false),
        Hook(program: "sl_getpeername4", attachType: BPF_CGROUP_INET4_GETPEERNAME, linkName: "cgroup_getpeername4", needsGetpeername: true),
        Hook(program: "sl_connect6", attachType: BPF_CGROUP_INET6_CONNECT, linkName: "cgroup_connect6", needsGetpeername: false),
        Hook(program: "sl_sendmsg6", attachType: BPF_CGROUP_UDP6_SENDMSG, linkName: "cgroup_sendmsg6", needsGetpeername: false),
        Hook(program: "sl_recvmsg6", attachType: BPF_CGROUP_UDP6_RECVMSG, linkName: "cgroup_recvmsg6", needsGetpeername: false),
        Hook(program: "sl_getpeername6", attachType: BPF_CGROUP_INET6_GETPEERNAME, linkName: "cgroup_getpeername6", needsGetpeername: true),
    ]

    /// How a hook came to be attached by `install`.
    public enum AttachOutcome: String, Sendable {
        case attached   // a new link was created and pinned
        case replaced   // a pinned link was found and given the new program in place
        case skipped    // the kernel lacks this hook
    }

    public let options: DatapathOptions
    public let cgroupPath: String
    public let features: KernelFeatures
    public let maps: KernelLoadBalancerMaps
    public let attachments: [(hook: Hook, outcome: AttachOutcome)]

    public static func linkDirectory(pinPath: String) -> String { pinPath + "/links" }

    /// Loads the programs, reusing or creating the pinned maps, and attaches them.
    public static func install(_ options: DatapathOptions, logger: Logger) throws -> SocketLoadBalancer {
        LibbpfLog.install(logger: logger)
        try KernelEnvironment.prepareBPFFilesystem(pinPath: options.pinPath)
        let cgroupPath = try options.cgroupPath ?? KernelEnvironment.detectCgroup2Root()
        let features = KernelFeatures(
            setRetval: clb_probe_helper(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_set_retval) == 1,
            getpeername: clb_probe_attach_type(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_GETPEERNAME) == 1)
        if !features.setRetval {
            logger.notice("kernel lacks bpf_set_retval (< 5.18): connects to services without endpoints fail with EPERM instead of ECONNREFUSED")
        }
        if !features.getpeername {
            logger.notice("kernel lacks cgroup getpeername hooks (< 5.8): getpeername() on a service socket shows the backend")
        }

        let object = try BPFObjectFile.open(BPFObjects.sockLb, pinRoot: options.pinPath)
        defer { object.close() }
        try object.setMapSizes(options.mapSizes)
        try object.checkPinnedMaps()
        var haveSetRetval: UInt8 = features.setRetval ? 1 : 0
        try checkBPF(clb_rodata_set(object.handle, "sl_have_set_retval", &haveSetRetval, 1), "set rodata", target: "sl_have_set_retval")
        for hook in hooks where hook.needsGetpeername && !features.getpeername {
            bpf_program__set_autoload(try object.program(named: hook.program), false)
        }
        try object.load()

        let cgroupFD = open(cgroupPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard cgroupFD >= 0 else { throw BPFError("open cgroup", target: cgroupPath, errno: errno) }
        defer { close(cgroupFD) }
        let cgroupID = try KernelEnvironment.cgroupID(path: cgroupPath)
        let linkDirectory = Self.linkDirectory(pinPath: options.pinPath)
        try FileManager.default.createDirectory(atPath: linkDirectory, withIntermediateDirectories: true)

        var attachments: [(Hook, AttachOutcome)] = []
        for hook in hooks {
            if hook.needsGetpeername && !features.getpeername {
                attachments.append((hook, .skipped))
                continue
            }
            let program = try object.program(named: hook.program)
            let outcome = try attach(program, hook: hook, cgroupFD: cgroupFD, cgroupID: cgroupID,
                                     linkPath: linkDirectory + "/" + hook.linkName, logger: logger)
            attachments.append((hook, outcome))
        }
        let maps = try KernelLoadBalancerMaps(pinPath: options.pinPath)
        logger.info("socket load balancer installed", metadata: [
            "cgroup": "\(cgroupPath)", "pinPath": "\(options.pinPath)", "features": "\(features)",
            "replaced": "\(attachments.filter { $0.1 == .replaced }.count)",
            "attached": "\(attachments.filter { $0.1 == .attached }.count)",
        ])
        return SocketLoadBalancer(options: options, cgroupPath: cgroupPath, features: features, maps: maps, attachments: attachments)
    }

    private init(options: DatapathOptions, cgroupPath: String, features: KernelFeatures, maps: KernelLoadBalancerMaps,
                 attachments: [(hook: Hook, outcome: AttachOutcome)]) {
        self.options = options
        self.cgroupPath = cgroupPath
        self.features = features
        self.maps = maps
        self.attachments = attachments
    }

    /// Gives a pinned link the new program in place (never detach-then-attach: that would
    /// leave the cgroup untranslated for a moment), or attaches and pins a new link. A
    /// pinned link attached elsewhere (the configured cgroup changed) is replaced.
    private static func attach(_ program: OpaquePointer, hook: Hook, cgroupFD: Int32, cgroupID: UInt64,
                               linkPath: String, logger: Logger) throws -> AttachOutcome {
        if FileManager.default.fileExists(atPath: linkPath), let existing = bpf_link__open(linkPath) {
            defer { bpf_link__destroy(existing) }
            var info = bpf_link_info()
            let sameCgroup = clb_link_info(bpf_link__fd(existing), &info) == 0
                && info.type == BPF_LINK_TYPE_CGROUP.rawValue && info.cgroup.cgroup_id == cgroupID
                && info.cgroup.attach_type == hook.attachType.rawValue
            if sameCgroup {
                try checkBPF(bpf_link__update_program(existing, program), "replace program of link", target: linkPath)
                return .replaced
            }
            logger.notice("pinned link is attached to another cgroup; moving it", metadata: ["link": "\(linkPath)"])
            unlink(linkPath)
        }
        guard let link = bpf_program__attach_cgroup(program, cgroupFD) else {
            throw BPFError("attach \(hook.program) to cgroup", target: "fd \(cgroupFD)", errno: errno)
        }
        defer { bpf_link__destroy(link) }
        try checkBPF(bpf_link__pin(link, linkPath), "pin link", target: linkPath)
        return .attached
    }

    /// Run time and run count the kernel has recorded for each attached hook's program
    /// (recorded only while run-time statistics are enabled, see `enableRunTimeStatistics`).
    public static func programStatistics(pinPath: String) -> [String: (runTimeNs: UInt64, runCount: UInt64)] {
        var result: [String: (UInt64, UInt64)] = [:]
        for hook in hooks {
            let path = linkDirectory(pinPath: pinPath) + "/" + hook.linkName
            let linkFD = bpf_obj_get(path)
            guard linkFD >= 0 else { continue }
            defer { close(linkFD) }
            var link = bpf_link_info()
            guard clb_link_info(linkFD, &link) == 0 else { continue }
            let programFD = bpf_prog_get_fd_by_id(link.prog_id)
            guard programFD >= 0 else { continue }
            defer { close(programFD) }
            var program = bpf_prog_info()
            guard clb_prog_info(programFD, &program) == 0 else { continue }
            result[hook.program] = (program.run_time_ns, program.run_cnt)
        }
        return result
    }

    /// Turns on the kernel's per-program run-time statistics until the returned fd is
    /// closed (BPF_ENABLE_STATS; no global sysctl is touched).
    public static func enableRunTimeStatistics() throws -> Int32 {
        let fd = bpf_enable_stats(BPF_STATS_RUN_TIME)
        if fd < 0 { throw BPFError("enable BPF run-time statistics", target: "kernel", errno: errno) }
        return fd
    }

    /// Detaches every program (by removing the pinned links) and removes every pinned map
    /// under `pinPath`, then the directory itself. Returns what was removed.
    @discardableResult
    public static func uninstall(pinPath: String) -> [String] {
        var removed: [String] = []
        let fileManager = FileManager.default
        let linkDirectory = Self.linkDirectory(pinPath: pinPath)
        for name in (try? fileManager.contentsOfDirectory(atPath: linkDirectory)) ?? [] where unlink(linkDirectory + "/" + name) == 0 {
            removed.append("links/" + name)
        }
        rmdir(linkDirectory)
        for name in (try? fileManager.contentsOfDirectory(atPath: pinPath)) ?? [] where unlink(pinPath + "/" + name) == 0 {
            removed.append(name)
        }
        rmdir(pinPath)
        return removed
    }
}
