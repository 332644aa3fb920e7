import BPFObjects
import CLibBPF
import Foundation
import Glibc
import Logging
import ServiceModel

/// Where and how the external-traffic datapath (`bpf/nodeport.c`) is installed.
public struct NodePortOptions: Sendable {
    /// How traffic reaches a remote backend.
    public enum Mode: String, Sendable, CaseIterable {
        /// Source NAT to the node's address: replies come back through this node.
        case snat
        /// Direct server return: a remote backend gets the client's packet DNATed only, with
        /// the frontend in an IPv4 option or IPv6 destination options header; its node
        /// replies to the client directly
        /// (`bpf/include/swiftlane/dsr.h`, docs/external-traffic.md).
        case dsr
    }

    /// XDP in front of tc ingress (`bpf/nodeport.c`, `sl_nodeport_xdp`): it translates and
    /// redirects what it can and passes the rest to tc, which stays attached.
    public enum Acceleration: String, Sendable, CaseIterable {
        case none
        /// XDP_FLAGS_SKB_MODE: the generic hook, after the skb is built (any device).
        case generic
        /// XDP_FLAGS_DRV_MODE: in the driver. Redirecting into a veth needs an XDP program
        /// (or GRO) on that veth's peer (`NodePortDatapath.attachXDPPass`).
        case native

        /// The XDP attach flags (linux/if_link.h), nil for `.none`.
        var xdpFlags: UInt32? {
            switch self {
            case .none: nil
            case .generic: 1 << 1  // XDP_FLAGS_SKB_MODE
            case .native: 1 << 2  // XDP_FLAGS_DRV_MODE
            }
        }
    }

    /// bpffs directory holding the pinned maps (shared with the socket load balancer).
    public var pinPath: String
    /// Devices to attach to; empty = autodetect (see `NodePortDatapath.detectDevices`).
    public var devices: [String]
    public var mode: Mode
    public var acceleration: Acceleration
    /// CIDRs of node addresses that serve NodePorts (kube-proxy A.12), per family: empty
    /// or no CIDR of a family = every address of that family on the devices.
    public var nodePortAddresses: [String]
    /// Source ports for SNAT. The default stays clear of Linux's ephemeral port range.
    public var snatPorts: ClosedRange<UInt16>
    /// A SNAT port held by a closed flow (FIN or RST seen) is given to a new flow once the
    /// old one has been idle this long, in seconds.
    public var snatReclaimAfterSeconds: Double
    /// Capacity of sl_nat_v2 (`mapSizes.nodePortFlows`; LRU: a full table evicts the least
    /// recently used flow): two entries per source-NATed or local flow, one per DSR flow.
    /// A pinned table of another size is refused at start-up, as for every map.
    public var conntrackMaxEntries: UInt32
    /// Network namespace (a path such as /run/netns/NAME) whose devices are meant; nil =
    /// the caller's. Tests use it to attach inside a lab namespace.
    public var networkNamespace: String?
    /// The ICMP/ICMPv6 port unreachables the datapath sends itself, node-wide: a token
    /// bucket of `burst` refilled at `perSecond` (0: no limit); the kernel's own defaults
    /// (icmp_msgs_per_sec, _burst). Path-MTU errors are never limited.
    public var icmpErrorLimit: ICMPErrorLimit = ICMPErrorLimit()

    public struct ICMPErrorLimit: Equatable, Sendable {
        public var perSecond: UInt32
        public var burst: UInt32

        public init(perSecond: UInt32 = 1000, burst: UInt32 = 50) {
            self.perSecond = perSecond
            self.burst = burst
        }
    }

    public init(pinPath: String = DatapathOptions.defaultPinPath, devices: [String] = [], mode: Mode = .snat,
                acceleration: Acceleration = .none, nodePortAddresses: [String] = [],
                snatPorts: ClosedRange<UInt16> = 61000...65535, snatReclaimAfterSeconds: Double = 1,
                conntrackMaxEntries: UInt32 = UInt32(SL_DEFAULT_NAT_MAX), networkNamespace: String? = nil) {
        self.conntrackMaxEntries = conntrackMaxEntries
        self.pinPath = pinPath
        self.devices = devices
        self.mode = mode
        self.acceleration = acceleration
        self.nodePortAddresses = nodePortAddresses
        self.snatPorts = snatPorts
        self.snatReclaimAfterSeconds = snatReclaimAfterSeconds
        self.networkNamespace = networkNamespace
    }
}

/// The external-traffic datapath: `bpf/nodeport.c` on tc ingress and egress (clsact) of
/// the node's devices, serving NodePorts, externalIPs and LoadBalancer VIPs from the
/// service maps the controller programs (shared through their pins with the socket load
/// balancer), IPv4 and IPv6, SNAT or DSR mode; optionally
/// accelerated by XDP on the same devices.
///
/// Attachment is by netlink tc filters under a fixed handle and priority: they outlive
/// the process, and installing again replaces the program in place (`BPF_TC_F_REPLACE`,
/// one netlink request per hook), so a restart or upgrade never leaves a device without
/// the datapath. XDP (`nodePort.acceleration`) is attached through a bpf_link pinned under
/// `<pinPath>/links/` (`xdp_<device>_<mode>`), so it too survives a restart, which replaces
/// its program in place (`bpf_link_update`). `uninstall` removes the filters and the XDP
/// links; the pinned maps are removed with the socket load balancer's
/// (`SocketLoadBalancer.uninstall`, which also drops any link pin left).
public final class NodePortDatapath: @unchecked Sendable {
    /// One attached device.
    public struct Device: Sendable, Equatable {
        public var name: String
        public var ifindex: Int32
        /// The device's IPv4 addresses (dotted quad); the first is its SNAT address.
        public var ipv4: [String]
        /// The device's global and unique-local IPv6 addresses (link-local ones cannot be
        /// NodePort or SNAT addresses); the first is its IPv6 SNAT address.
        public var ipv6: [String] = []
    }

    /// How a hook came to be attached.
    public enum AttachOutcome: String, Sendable {
        case attached  // no filter of ours was there
        case replaced  // our filter was there and now runs the new program
    }

    /// The tc filter handle and priority of Swiftlane's programs (one per hook).
    public static let filterHandle: UInt32 = 0x5113
    public static let filterPriority: UInt32 = 1
    static let ingressProgram = "sl_nodeport_ingress"
    static let egressProgram = "sl_nodeport_egress"
    static let xdpProgram = "sl_nodeport_xdp"
    static let xdpPassProgram = "sl_xdp_pass"

    public let options: NodePortOptions
    public private(set) var devices: [Device] = []
    public private(set) var outcomes: [String: AttachOutcome] = [:]
    /// The pinned counters (shared with the socket load balancer).
    public let counters: BPFMap<UInt32, UInt64>
    let nat: BPFMap<sl_nat_key, sl_nat_entry>
    let nodeAddresses: BPFMap<sl_node_addr_key, sl_node_addr>
    let deviceMap: BPFMap<UInt32, sl_device>
    /// DSR flows whose backend lives on this node: (backend, client) → frontend.
    let dsr: BPFMap<sl_dsr_key, sl_dsr_entry>
    /// Ports of fragmented datagrams being translated: (addresses, IP id, proto) → the
    /// ports their first fragment carried, for the later fragments (LRU).
    let fragments: BPFMap<sl_frag_key, sl_frag_entry>
    private let object: BPFObjectFile
    /// `nodePortAddresses` and the node that resolves its `primary`, as last followed.
    private let selectionLock = NSLock()
    private var nodePortSelection: (entries: [String], node: ProxyNode)
    let ingressFD: Int32
    let egressFD: Int32
    let xdpFD: Int32
    let xdpPassFD: Int32
    private let logger: Logger

    // MARK: - Install

    /// Loads the programs (reusing the pinned maps after a compatibility check), then
    /// attaches them to the configured or detected devices and records the devices and
    /// node addresses in the maps.
    public static func install(_ options: NodePortOptions, logger: Logger) throws -> NodePortDatapath {
        let datapath = try load(options, logger: logger)
        datapath.migrateFlowsOfTheV1Layout()
        try datapath.attach()
        return datapath
    }

    /// Flows tracked by a datapath of the sl_nat_v1 layout (before the route kept per flow,
    /// struct sl_nat_route): copied into sl_nat_v2 before the new programs attach, so that
    /// an upgrade keeps established connections (their packets would otherwise be new
    /// flows: TCP segments other than SYN would go to the stack, which resets them). The
    /// old pin goes afterwards; the old programs hold the old map until they are replaced.
    /// Never fails the install: a flow not carried over is what a restart without state
    /// would lose anyway.
    func migrateFlowsOfTheV1Layout() {
        let oldPath = options.pinPath + "/" + SL_MAP_NAME_NAT_V1
        guard FileManager.default.fileExists(atPath: oldPath) else { return }
        do {
            let old = try BPFMap<sl_nat_key, sl_nat_entry_v1>(pinnedAt: oldPath, name: SL_MAP_NAME_NAT_V1)
            var carried = 0, failed = 0
            for (key, value) in old.entries() {
                var entry = sl_nat_entry()
                entry.to_addr = value.to_addr
                entry.nat_addr = value.nat_addr
                entry.to_port = value.to_port
                entry.nat_port = value.nat_port
                entry.rev_nat_id = value.rev_nat_id
                entry.last_seen_ns = value.last_seen_ns
                entry.flags = value.flags
                // NOEXIST: an entry the new map already has is newer.
                do { try nat.update(key, entry, flags: UInt64(BPF_NOEXIST)); carried += 1 } catch { failed += 1 }
            }
            unlink(oldPath)
            logger.info("carried tracked flows over from \(SL_MAP_NAME_NAT_V1) to \(SL_MAP_NAME_NAT)",
                        metadata: ["entries": "\(carried)", "notCarried": "\(failed)"])
        } catch {
            logger.warning("tracked flows of \(oldPath) not carried over: \(error)")
        }
    }

    /// Loads the programs without attaching them (BPF_PROG_TEST_RUN needs no device).
    static func load(_ options: NodePortOptions, logger: Logger) throws -> NodePortDatapath {
        guard options.snatPorts.lowerBound > 0 else {
            throw BPFError("install external-traffic datapath", target: "SNAT ports \(options.snatPorts)", errno: EINVAL)
        }
        LibbpfLog.install(logger: logger)
        try KernelEnvironment.prepareBPFFilesystem(pinPath: options.pinPath)
        let object = try BPFObjectFile.open(BPFObjects.nodeport, pinRoot: options.pinPath)
        do {
            try object.setMapSizes([SL_MAP_NAME_NAT: options.conntrackMaxEntries])
            try object.checkPinnedMaps()
            var low = options.snatPorts.lowerBound, high = options.snatPorts.upperBound
            try checkBPF(clb_rodata_set(object.handle, "sl_snat_port_min", &low, 2), "set rodata", target: "sl_snat_port_min")
            try checkBPF(clb_rodata_set(object.handle, "sl_snat_port_max", &high, 2), "set rodata", target: "sl_snat_port_max")
            var reclaim = UInt64(max(0, options.snatReclaimAfterSeconds) * 1e9)
            try checkBPF(clb_rodata_set(object.handle, "sl_snat_reclaim_ns", &reclaim, 8), "set rodata", target: "sl_snat_reclaim_ns")
            var dsrMode: UInt8 = options.mode == .dsr ? 1 : 0
            try checkBPF(clb_rodata_set(object.handle, "sl_dsr_mode", &dsrMode, 1), "set rodata", target: "sl_dsr_mode")
            var icmpRate = options.icmpErrorLimit.perSecond, icmpBurst = max(1, options.icmpErrorLimit.burst)
            try checkBPF(clb_rodata_set(object.handle, "sl_icmp_errors_per_sec", &icmpRate, 4), "set rodata",
                         target: "sl_icmp_errors_per_sec")
            try checkBPF(clb_rodata_set(object.handle, "sl_icmp_errors_burst", &icmpBurst, 4), "set rodata",
                         target: "sl_icmp_errors_burst")
            try object.load()
            let ingress = bpf_program__fd(try object.program(named: ingressProgram))
            let egress = bpf_program__fd(try object.program(named: egressProgram))
            let xdp = bpf_program__fd(try object.program(named: xdpProgram))
            let xdpPass = bpf_program__fd(try object.program(named: xdpPassProgram))
            func path(_ name: String) -> String { options.pinPath + "/" + name }
            return NodePortDatapath(
                options: options, object: object, ingressFD: ingress, egressFD: egress, xdpFD: xdp, xdpPassFD: xdpPass,
                logger: logger,
                counters: try BPFMap(pinnedAt: path(SL_MAP_NAME_COUNTERS), name: SL_MAP_NAME_COUNTERS),
                nat: try BPFMap(pinnedAt: path(SL_MAP_NAME_NAT), name: SL_MAP_NAME_NAT),
                nodeAddresses: try BPFMap(pinnedAt: path(SL_MAP_NAME_NODE_ADDRS), name: SL_MAP_NAME_NODE_ADDRS),
                deviceMap: try BPFMap(pinnedAt: path(SL_MAP_NAME_DEVICES), name: SL_MAP_NAME_DEVICES),
                dsr: try BPFMap(pinnedAt: path(SL_MAP_NAME_DSR), name: SL_MAP_NAME_DSR),
                fragments: try BPFMap(pinnedAt: path(SL_MAP_NAME_FRAG), name: SL_MAP_NAME_FRAG))
        } catch {
            object.close()
            throw error
        }
    }

    private init(options: NodePortOptions, object: BPFObjectFile, ingressFD: Int32, egressFD: Int32, xdpFD: Int32,
                 xdpPassFD: Int32, logger: Logger,
                 counters: BPFMap<UInt32, UInt64>, nat: BPFMap<sl_nat_key, sl_nat_entry>,
                 nodeAddresses: BPFMap<sl_node_addr_key, sl_node_addr>, deviceMap: BPFMap<UInt32, sl_device>,
                 dsr: BPFMap<sl_dsr_key, sl_dsr_entry>, fragments: BPFMap<sl_frag_key, sl_frag_entry>) {
        self.options = options
        self.nodePortSelection = (options.nodePortAddresses, ProxyNode(name: ""))
        self.object = object
        self.ingressFD = ingressFD
        self.egressFD = egressFD
        self.xdpFD = xdpFD
        self.xdpPassFD = xdpPassFD
        self.logger = logger
        self.counters = counters
        self.nat = nat
        self.nodeAddresses = nodeAddresses
        self.deviceMap = deviceMap
        self.dsr = dsr
        self.fragments = fragments
    }

    deinit { object.close() }

    /// Attaches both programs to every device (replacing ours in place where present) and
    /// rewrites the device and node-address maps to match, removing stale entries.
    func attach() throws {
        let (found, outcomes) = try Self.inNamespace(options.networkNamespace) { () throws -> ([Device], [String: AttachOutcome]) in
            let addresses = Self.interfaceIPv4Addresses()
            let addresses6 = Self.interfaceIPv6Addresses()
            let names = options.devices.isEmpty
                ? Self.detectDevices(addresses: addresses.merging(addresses6) { $0 + $1 }) : options.devices
            guard !names.isEmpty else {
                throw BPFError("find devices", target: "nodePort.devices", errno: ENODEV,
                               detail: "no device with an IPv4 or IPv6 address was found; set nodePort.devices")
            }
            var devices: [Device] = []
            var outcomes: [String: AttachOutcome] = [:]
            for name in names {
                let ifindex = Int32(if_nametoindex(name))
                guard ifindex > 0 else { throw BPFError("find device", target: name, errno: errno) }
                try QdiscOwnership.ensureClsact(ifindex: ifindex, device: name, pinPath: options.pinPath)
                for (egress, fd, hook) in [(Int32(0), ingressFD, "ingress"), (1, egressFD, "egress")] {
                    var existing: UInt32 = 0
                    try checkBPF(clb_tc_query(ifindex, egress, Self.filterHandle, Self.filterPriority, &existing),
                                 "query tc \(hook) filter on", target: name)
                    try checkBPF(clb_tc_attach(ifindex, egress, fd, Self.filterHandle, Self.filterPriority),
                                 "attach tc \(hook) program to", target: name)
                    outcomes["\(name)/\(hook)"] = existing == 0 ? .attached : .replaced
                }
                // XDP after tc: whatever XDP passes on, tc ingress is already there to handle.
                if options.acceleration.xdpFlags != nil {
                    outcomes["\(name)/xdp"] = try attachXDP(device: name, ifindex: ifindex)
                } else {
                    Self.removeXDPLinks(device: name, pinPath: options.pinPath)
                }
                devices.append(Device(name: name, ifindex: ifindex, ipv4: addresses[name] ?? [], ipv6: addresses6[name] ?? []))
            }
            return (devices, outcomes)
        }
        self.devices = found
        self.outcomes = outcomes
        try writeDeviceMaps()
        logger.info("external-traffic datapath attached", metadata: [
            "devices": "\(found.map(\.name))", "mode": "\(options.mode.rawValue)",
            "acceleration": "\(options.acceleration.rawValue)",
            "replaced": "\(outcomes.values.filter { $0 == .replaced }.count)",
        ])
    }

    /// Attaches the XDP program to a device through a pinned link, or replaces the program
    /// of the link already pinned for it in this mode. A link of the other mode cannot be
    /// switched in place: it is removed first (XDP is off for an instant; tc still serves).
    private func attachXDP(device name: String, ifindex: Int32) throws -> AttachOutcome {
        let directory = SocketLoadBalancer.linkDirectory(pinPath: options.pinPath)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/" + Self.xdpLinkName(device: name, acceleration: options.acceleration)
        Self.removeXDPLinks(device: name, pinPath: options.pinPath, keeping: path)
        let pinned = bpf_obj_get(path)
        if pinned >= 0 {
            defer { close(pinned) }
            if clb_xdp_link_ifindex(pinned) == ifindex {
                try checkBPF(bpf_link_update(pinned, xdpFD, nil), "replace XDP program on", target: name)
                return .replaced
            }
            unlink(path)  // its device is gone, or is another one by now
        }
        let link = try checkBPF(clb_xdp_link_create(xdpFD, ifindex, options.acceleration.xdpFlags ?? 0),
                                "attach XDP (\(options.acceleration.rawValue)) program to", target: name)
        defer { close(link) }
        try checkBPF(bpf_obj_pin(link, path), "pin XDP link", target: path)
        return .attached
    }

    /// File name of a device's pinned XDP link under `<pinPath>/links/`.
    static func xdpLinkName(device: String, acceleration: NodePortOptions.Acceleration) -> String {
        "xdp_\(device)_\(acceleration.rawValue)"
    }

    /// Detaches and unpins the device's XDP links (but `keeping`). Detaching explicitly
    /// (BPF_LINK_DETACH) takes effect at once, so a link of another mode can follow right
    /// away; dropping the last pin alone would detach only in the kernel's deferred work.
    /// Returns the link names removed.
    @discardableResult
    static func removeXDPLinks(device: String, pinPath: String, keeping: String? = nil) -> [String] {
        let directory = SocketLoadBalancer.linkDirectory(pinPath: pinPath)
        return NodePortOptions.Acceleration.allCases.filter { $0.xdpFlags != nil }.compactMap { acceleration in
            let name = xdpLinkName(device: device, acceleration: acceleration)
            let path = directory + "/" + name
            guard path != keeping else { return nil }
            let link = bpf_obj_get(path)
            if link >= 0 {
                _ = bpf_link_detach(link)
                close(link)
            }
            return unlink(path) == 0 ? name : nil
        }
    }

    /// Native XDP redirects into a veth only when the veth's peer runs an XDP program (or
    /// has GRO on, which enables the NAPI that receives XDP frames); otherwise the frame is
    /// dropped (veth_xdp_xmit: ENXIO). This attaches a program that passes everything, in
    /// native mode by netlink, to `device`, the peer of a veth this datapath redirects into
    /// (in labs, where veth peers stand for the other machines and their NICs). It stays
    /// until the device goes.
    public func attachXDPPass(device: String, networkNamespace: String?) throws {
        try Self.inNamespace(networkNamespace) {
            let ifindex = Int32(if_nametoindex(device))
            guard ifindex > 0 else { throw BPFError("find device", target: device, errno: errno) }
            try checkBPF(clb_xdp_attach(ifindex, xdpPassFD, NodePortOptions.Acceleration.native.xdpFlags ?? 0),
                         "attach XDP pass program to", target: device)
        }
    }

    /// The device map (ifindex → SNAT addresses) and node-address map (address → serves
    /// NodePorts?) for the current devices, both families; entries of devices gone are
    /// removed.
    private func writeDeviceMaps() throws {
        // A.12, as the plan resolves it, per family: that family's CIDRs (with `primary`
        // the node's first address of the family); none, or a zero one, selects every
        // address of the family.
        let selection = selectionLock.withLock { nodePortSelection }
        let options = TranslationOptions(nodePortAddresses: selection.entries)
        var selects: [IPFamily: (IPAddress) -> Bool] = [:]
        for family in [IPFamily.v4, .v6] {
            let cidrs = LoadBalancerPlan.nodePortCIDRs(family: family, node: selection.node, options: options)
            let all = cidrs.isEmpty || cidrs.contains(where: \.isMatchAll)
            selects[family] = { ip in all || cidrs.contains { $0.contains(ip) } }
        }
        var wantedDevices: [UInt32: sl_device] = [:]
        var wantedAddresses: [[UInt32]: (sl_node_addr_key, sl_node_addr)] = [:]
        for device in devices {
            var entry = sl_device()
            if let first = device.ipv4.first, let words = Self.v4MappedWords(first) { entry.snat_addr = words }
            if let first = device.ipv6.first, let words = Self.ipv6Words(first) { entry.snat_addr6 = words }
            wantedDevices[UInt32(device.ifindex)] = entry
            for address in device.ipv4 + device.ipv6 {
                guard let ip = IPAddress(sloppy: address),
                      let words = ip.family == .v4 ? Self.v4MappedWords(address) : Self.ipv6Words(address) else { continue }
                var key = sl_node_addr_key()
                key.addr = words
                var value = sl_node_addr()
                value.ifindex = UInt32(device.ifindex)
                if selects[ip.family]?(ip) == true {
                    value.flags = UInt32(SL_NODE_ADDR_F_NODE_PORT.rawValue)
                }
                wantedAddresses[[words.0, words.1, words.2, words.3]] = (key, value)
            }
        }
        for (ifindex, entry) in wantedDevices { try deviceMap.update(ifindex, entry) }
        for ifindex in deviceMap.keys() where wantedDevices[ifindex] == nil { try deviceMap.delete(ifindex) }
        for (key, value) in wantedAddresses.values { try nodeAddresses.update(key, value) }
        for key in nodeAddresses.keys() where wantedAddresses[[key.addr.0, key.addr.1, key.addr.2, key.addr.3]] == nil {
            try nodeAddresses.delete(key)
        }
    }

    /// Makes the node-address map follow a changed `nodePortAddresses` (configuration
    /// reload) or a change of the node's primary address (`primary`), without a restart.
    /// Cheap when nothing changed: called after every sync.
    public func followNodePortAddresses(_ entries: [String], node: ProxyNode) throws {
        let primary = node.primaryAddress(.v4)
        let primary6 = node.primaryAddress(.v6)
        let changed = selectionLock.withLock { () -> Bool in
            let current = nodePortSelection
            guard current.entries != entries || current.node.primaryAddress(.v4) != primary
                    || current.node.primaryAddress(.v6) != primary6 else { return false }
            nodePortSelection = (entries, node)
            return true
        }
        guard changed else { return }
        try writeDeviceMaps()
        logger.info("NodePort addresses changed", metadata: [
            "nodePortAddresses": "\(entries)", "primary": "\(primary.map { "\($0)" } ?? "unknown")",
        ])
    }

    /// The node addresses that serve NodePorts now (introspection, tests).
    public func nodePortServingAddresses() -> [String] {
        nodeAddresses.keys().compactMap { key in
            guard let value = nodeAddresses.lookup(key), value.flags & UInt32(SL_NODE_ADDR_F_NODE_PORT.rawValue) != 0 else {
                return nil
            }
            return IPAddress(mapped16: withUnsafeBytes(of: key.addr) { Array($0) })?.description
        }.sorted()
    }

    // MARK: - Uninstall

    /// Removes Swiftlane's tc filters from `devices` (in `networkNamespace`, nil = the
    /// caller's) and, given the pin path, their pinned XDP links. Devices that are gone, or
    /// carry nothing of ours, are skipped. Returns the hooks removed ("dev/ingress",
    /// "dev/xdp"). The clsact qdisc stays: `QdiscOwnership.removeOwned` removes the ones
    /// Swiftlane created.
    @discardableResult
    public static func uninstall(devices: [String], networkNamespace: String? = nil, pinPath: String? = nil) -> [String] {
        (try? inNamespace(networkNamespace) { () -> [String] in
            var removed: [String] = []
            for name in devices {
                if let pinPath, !removeXDPLinks(device: name, pinPath: pinPath).isEmpty { removed.append("\(name)/xdp") }
                let ifindex = Int32(if_nametoindex(name))
                guard ifindex > 0 else { continue }
                for (egress, hook) in [(Int32(0), "ingress"), (1, "egress")]
                where clb_tc_detach(ifindex, egress, filterHandle, filterPriority) == 0 {
                    removed.append("\(name)/\(hook)")
                }
            }
            return removed
        }) ?? []
    }

    // MARK: - Introspection

    /// The per-CPU outcome counters summed across CPUs, by reason name.
    public func outcomeCounters() -> [String: UInt64] {
        var result: [String: UInt64] = [:]
        for (index, name) in OutcomeReason.names.enumerated() {
            result[name] = counters.perCPUSum(UInt32(index))
        }
        return result
    }

    /// Number of tracked flow entries (both directions) and the table's capacity.
    public func natPressure() -> (entries: Int, capacity: UInt32) {
        (nat.keys().count, nat.info.max_entries)
    }

    /// Number of fragmented datagrams whose ports are recorded, and the table's capacity.
    public func fragmentPressure() -> (entries: Int, capacity: UInt32) {
        (fragments.keys().count, fragments.info.max_entries)
    }

    /// Number of DSR flows recorded for this node's backends, and the table's capacity.
    public func dsrPressure() -> (entries: Int, capacity: UInt32) {
        (dsr.keys().count, dsr.info.max_entries)
    }

    // MARK: - Connection tracking garbage collection

    /// How long an idle tracked flow is kept (seconds since its last packet in either
    /// direction). The defaults follow Cilium's: 6 h for TCP, 10 s once a FIN or RST was
    /// seen, 60 s for UDP.
    public struct ConntrackTimeouts: Sendable, Equatable {
        public var tcp: Double
        public var tcpClosing: Double
        public var udp: Double

        public init(tcp: Double = 21600, tcpClosing: Double = 10, udp: Double = 60) {
            self.tcp = tcp
            self.tcpClosing = tcpClosing
            self.udp = udp
        }

        /// The idle timeout of a flow of `proto` (IPPROTO_*), closing or not.
        func timeout(proto: UInt8, closing: Bool) -> Double {
            proto == UInt8(IPPROTO_TCP) ? (closing ? tcpClosing : tcp) : udp
        }
    }

    /// What one garbage collection pass did, and the table's pressure afterwards.
    public struct ConntrackReport: Sendable, Equatable {
        /// Entries looked at (each flow has a FORWARD and a REPLY entry).
        public var scanned = 0
        /// Entries deleted.
        public var removed = 0
        /// Entries left, and the table's capacity (LRU: when full, new flows evict the
        /// least recently used ones).
        public var remaining = 0
        public var capacity: UInt32 = 0
        /// The same for the DSR table (flows whose backend lives on this node).
        public var dsrRemoved = 0
        public var dsrRemaining = 0
        public var dsrCapacity: UInt32 = 0
    }

    /// Deletes the entries of flows idle longer than their timeout. A flow's two entries
    /// are judged together, by the later of their last-seen times (a one-way UDP stream
    /// refreshes only one of them) and go together; an entry whose partner is gone goes
    /// by its own age. `now` is CLOCK_MONOTONIC in ns (bpf_ktime_get_ns's clock);
    /// tests pass a later one instead of waiting.
    @discardableResult
    public func collectGarbage(timeouts: ConntrackTimeouts = ConntrackTimeouts(), now: UInt64? = nil) -> ConntrackReport {
        let now = now ?? Self.monotonicNanoseconds()
        var report = ConntrackReport(capacity: nat.info.max_entries)
        let entries = nat.entries()
        report.scanned = entries.count
        var byKey: [[UInt32]: (sl_nat_key, sl_nat_entry)] = [:]
        for (key, value) in entries { byKey[Self.words(key)] = (key, value) }
        var doomed: [sl_nat_key] = []
        var judged = Set<[UInt32]>()
        for (key, value) in entries {
            let id = Self.words(key)
            guard !judged.contains(id) else { continue }
            judged.insert(id)
            let partnerKey = Self.partner(of: key, value)
            let partner = byKey[Self.words(partnerKey)]
            if partner != nil { judged.insert(Self.words(partnerKey)) }
            let lastSeen = max(value.last_seen_ns, partner?.1.last_seen_ns ?? 0)
            let closing = (value.flags | (partner?.1.flags ?? 0)) & UInt16(SL_NAT_F_CLOSING.rawValue) != 0
            let timeout = timeouts.timeout(proto: key.proto, closing: closing)
            guard now > lastSeen, Double(now - lastSeen) / 1e9 > timeout else { continue }
            doomed.append(key)
            if let partner { doomed.append(partner.0) }
        }
        for key in doomed where (try? nat.delete(key)) != nil { report.removed += 1 }
        report.remaining = report.scanned - report.removed
        collectDSRGarbage(timeouts: timeouts, now: now, into: &report)
        return report
    }

    /// DSR entries are refreshed by their backend's replies (and the client's carriers)
    /// and marked closing by the backend's FIN or RST; same timeouts as tracked flows.
    private func collectDSRGarbage(timeouts: ConntrackTimeouts, now: UInt64, into report: inout ConntrackReport) {
        report.dsrCapacity = dsr.info.max_entries
        for (key, value) in dsr.entries() {
            let closing = value.flags & UInt16(SL_NAT_F_CLOSING.rawValue) != 0
            if now > value.last_seen_ns, Double(now - value.last_seen_ns) / 1e9 > timeouts.timeout(proto: key.proto, closing: closing),
               (try? dsr.delete(key)) != nil {
                report.dsrRemoved += 1
            } else {
                report.dsrRemaining += 1
            }
        }
    }

    /// The other entry of a flow: a FORWARD entry's REPLY entry and the reverse.
    static func partner(of key: sl_nat_key, _ value: sl_nat_entry) -> sl_nat_key {
        let snat = value.flags & UInt16(SL_NAT_F_SNAT.rawValue) != 0
        var other = sl_nat_key()
        other.proto = key.proto
        if key.dir == UInt8(SL_NAT_DIR_FORWARD.rawValue) {
            // client -> frontend  ⇒  backend -> (SNAT address : port | client)
            other.dir = UInt8(SL_NAT_DIR_REPLY.rawValue)
            other.saddr = value.to_addr
            other.sport = value.to_port
            other.daddr = snat ? value.nat_addr : key.saddr
            other.dport = snat ? value.nat_port : key.sport
        } else {
            // backend -> (SNAT address : port | client)  ⇒  client -> frontend
            other.dir = UInt8(SL_NAT_DIR_FORWARD.rawValue)
            other.saddr = snat ? value.nat_addr : key.daddr
            other.sport = snat ? value.nat_port : key.dport
            other.daddr = value.to_addr
            other.dport = value.to_port
        }
        return other
    }

    private static func words(_ key: sl_nat_key) -> [UInt32] {
        [key.saddr.0, key.saddr.1, key.saddr.2, key.saddr.3, key.daddr.0, key.daddr.1, key.daddr.2, key.daddr.3,
         UInt32(key.sport) << 16 | UInt32(key.dport), UInt32(key.proto) << 8 | UInt32(key.dir)]
    }

    static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    // MARK: - Testing

    public enum Program: Sendable { case ingress, egress, xdp }

    /// Runs one program on one packet (BPF_PROG_TEST_RUN, in the caller's network
    /// namespace): the verdict and the packet as the program left it.
    public func testRun(_ program: Program, packet: [UInt8]) throws -> (verdict: Int32, packet: [UInt8]) {
        var output = [UInt8](repeating: 0, count: max(packet.count, 128) + 256)
        var outputSize = UInt32(output.count)
        var verdict: UInt32 = 0
        let fd = switch program {
        case .ingress: ingressFD
        case .egress: egressFD
        case .xdp: xdpFD
        }
        let name = switch program {
        case .ingress: Self.ingressProgram
        case .egress: Self.egressProgram
        case .xdp: Self.xdpProgram
        }
        let result = packet.withUnsafeBytes { input in
            output.withUnsafeMutableBytes { out in
                clb_prog_test_run(fd, input.baseAddress, UInt32(input.count), out.baseAddress, &outputSize, &verdict)
            }
        }
        try checkBPF(result, "BPF_PROG_TEST_RUN", target: name)
        return (Int32(bitPattern: verdict), Array(output.prefix(Int(outputSize))))
    }

    // MARK: - Helpers

    /// Devices to attach to by default: every non-loopback interface with an IPv4 or a
    /// global IPv6 address, except bridges (pod networks, read from /sys/class/net, which
    /// shows the namespace sysfs was mounted in: the host's, where the controller runs).
    static func detectDevices(addresses: [String: [String]]) -> [String] {
        addresses.keys.filter { name in
            name != "lo" && !FileManager.default.fileExists(atPath: "/sys/class/net/\(name)/bridge")
        }.sorted()
    }

    /// IPv4 addresses by interface name (getifaddrs, in the calling thread's namespace).
    static func interfaceIPv4Addresses() -> [String: [String]] { interfaceAddresses(family: AF_INET) }

    /// Global and unique-local IPv6 addresses by interface name: link-local addresses
    /// (fe80::/10) are skipped, as kube-proxy never serves NodePorts on them and they
    /// cannot be a SNAT address towards a backend.
    static func interfaceIPv6Addresses() -> [String: [String]] { interfaceAddresses(family: AF_INET6) }

    /// Addresses of `family` (AF_INET or AF_INET6) by interface name, loopback and IPv6
    /// link-local excluded (in the calling thread's namespace; see `InterfaceAddresses`).
    private static func interfaceAddresses(family: Int32) -> [String: [String]] {
        let wanted: IPFamily = family == AF_INET ? .v4 : .v6
        return InterfaceAddresses.current().compactMapValues { addresses in
            let texts = addresses.filter { $0.family == wanted }.map(\.description)
            return texts.isEmpty ? nil : texts
        }
    }

    /// An IPv6 address as the ABI's words (network order).
    static func ipv6Words(_ address: String) -> (UInt32, UInt32, UInt32, UInt32)? {
        var raw = in6_addr()
        guard inet_pton(AF_INET6, address, &raw) == 1 else { return nil }
        return withUnsafeBytes(of: &raw) { bytes in
            let words = bytes.bindMemory(to: UInt32.self)
            return (words[0], words[1], words[2], words[3])
        }
    }

    /// An IPv4 address as the ABI's v4-mapped words (network order).
    static func v4MappedWords(_ address: String) -> (UInt32, UInt32, UInt32, UInt32)? {
        var raw = in_addr()
        guard inet_pton(AF_INET, address, &raw) == 1 else { return nil }
        return (0, 0, UInt32(0x0000_ffff).bigEndian, raw.s_addr)
    }

    /// Runs `body` on the calling thread inside the network namespace at `path` (nil: as
    /// is), and returns the thread to its namespace afterwards, also when `body` throws.
    private static let cloneNewNet: Int32 = 0x4000_0000  // CLONE_NEWNET (needs _GNU_SOURCE in C)

    static func inNamespace<T>(_ path: String?, _ body: () throws -> T) throws -> T {
        guard let path else { return try body() }
        let original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard original >= 0 else { throw BPFError("open own network namespace", target: "/proc/thread-self/ns/net", errno: errno) }
        defer { close(original) }
        let target = open(path, O_RDONLY | O_CLOEXEC)
        guard target >= 0 else { throw BPFError("open network namespace", target: path, errno: errno) }
        defer { close(target) }
        try checkBPF(clb_setns(target, Self.cloneNewNet), "enter network namespace", target: path)
        defer {
            // Failing to return would leave this thread in the lab: nothing sane follows.
            if clb_setns(original, Self.cloneNewNet) != 0 { fatalError("cannot return to the original network namespace") }
        }
        return try body()
    }
}

