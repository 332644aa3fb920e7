import CLibBPF
import Foundation
import Glibc
import Logging

/// Read-only views of an installed datapath for operators: how full each pinned map is,
/// which pinned links still hold a program attached, and which kernel objects an
/// installation owns (so `cleanup` can prove they are gone). Works on whatever is pinned
/// under the pin path, so maps and links added by later datapath work are covered
/// without changes here.
public enum DatapathInspection {
    /// The ABI version of the maps and programs this build ships (`SL_ABI_VERSION`).
    public static var abiVersion: Int { Int(SL_ABI_VERSION) }

    /// One pinned map's occupancy.
    public struct MapUsage: Equatable, Sendable {
        /// The pin's file name (the full map name; the kernel keeps only 15 characters).
        public var name: String
        public var id: UInt32
        /// The kernel's map type (`BPF_MAP_TYPE_*`).
        public var type: UInt32
        /// Entries in use. For hash, LRU and LPM maps every key present; for the slot
        /// array, the slots of the backend sets the services map points at.
        public var entries: Int
        /// `max_entries`.
        public var capacity: UInt32

        /// entries / capacity, 0...1.
        public var pressure: Double { capacity == 0 ? 0 : Double(entries) / Double(capacity) }
    }

    /// Occupancy of every pinned map under `pinPath` whose fill level means something:
    /// hash-like maps, and the slot array. Per-CPU counter arrays and socket storage (no
    /// capacity) are left out.
    public static func mapUsage(pinPath: String) -> [MapUsage] {
        var result: [MapUsage] = []
        for name in pinnedFiles(pinPath) {
            let fd = bpf_obj_get(pinPath + "/" + name)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var info = bpf_map_info()
            guard objectKind(fd: fd) == .map, clb_map_info(fd, &info) == 0 else { continue }
            let entries: Int
            switch bpf_map_type(rawValue: info.type) {
            case BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LPM_TRIE, BPF_MAP_TYPE_PERCPU_HASH,
                BPF_MAP_TYPE_LRU_PERCPU_HASH:
                entries = countKeys(fd: fd, keySize: Int(info.key_size), limit: Int(info.max_entries))
            case BPF_MAP_TYPE_ARRAY where name == SL_MAP_NAME_SLOTS:
                // An array always holds max_entries slots; what is in use are the ranges
                // the frontends point at (released ranges are free whatever they contain).
                guard
                    let services = try? BPFMap<sl_service_key, sl_service_value>(
                        pinnedAt: pinPath + "/" + SL_MAP_NAME_SERVICES, name: SL_MAP_NAME_SERVICES)
                else { continue }
                entries = services.entries().reduce(0) { $0 + Int($1.1.count) }
            default:
                continue
            }
            result.append(
                MapUsage(name: name, id: info.id, type: info.type, entries: entries, capacity: info.max_entries))
        }
        return result.sorted { $0.name < $1.name }
    }

    /// One pinned link and what it holds.
    public struct LinkAttachment: Equatable, Sendable {
        /// The pin's path relative to the pin path, e.g. `links/cgroup_connect4`.
        public var pin: String
        public var programID: UInt32
        /// The program's name as the kernel has it (at most 15 characters).
        public var programName: String
        /// False when the link no longer attaches its program anywhere (its cgroup was
        /// removed, for instance).
        public var attached: Bool
    }

    /// Every link pinned under `pinPath` (and its `links/` folder).
    public static func linkAttachments(pinPath: String) -> [LinkAttachment] {
        var result: [LinkAttachment] = []
        for relative in pinnedFiles(pinPath) + pinnedFiles(pinPath + "/links").map({ "links/" + $0 }) {
            let fd = bpf_obj_get(pinPath + "/" + relative)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var info = bpf_link_info()
            guard objectKind(fd: fd) == .link, clb_link_info(fd, &info) == 0 else { continue }
            var attached = true
            if info.type == BPF_LINK_TYPE_CGROUP.rawValue { attached = info.cgroup.cgroup_id != 0 }
            result.append(
                LinkAttachment(
                    pin: relative, programID: info.prog_id,
                    programName: programName(id: info.prog_id) ?? "?", attached: attached))
        }
        return result.sorted { $0.pin < $1.pin }
    }

    // MARK: - Ownership (cleanup)

    /// The kernel objects an installation holds through its pins.
    public struct OwnedObjects: Equatable, Sendable {
        public var programIDs: Set<UInt32> = []
        public var mapIDs: Set<UInt32> = []

        public var isEmpty: Bool { programIDs.isEmpty && mapIDs.isEmpty }
    }

    /// One tc filter of the external-traffic datapath.
    public struct TCAttachment: Equatable, Sendable {
        public var device: String
        /// `ingress` or `egress`.
        public var hook: String
        public var programID: UInt32
    }

    /// Swiftlane's tc filters (its handle and priority on clsact) on every device of this
    /// network namespace. tc filters are not pinned, so they are found on the devices.
    public static func tcAttachments() -> [TCAttachment] {
        var result: [TCAttachment] = []
        for device in networkDevices() {
            let ifindex = Int32(if_nametoindex(device))
            guard ifindex > 0 else { continue }
            for (egress, hook) in [(Int32(0), "ingress"), (1, "egress")] {
                var programID: UInt32 = 0
                if clb_tc_query(
                    ifindex, egress, NodePortDatapath.filterHandle, NodePortDatapath.filterPriority, &programID) == 0,
                    programID != 0
                {
                    result.append(TCAttachment(device: device, hook: hook, programID: programID))
                }
            }
        }
        return result
    }

    /// The names of this network namespace's devices.
    public static func networkDevices() -> [String] {
        guard let list = if_nameindex() else { return [] }
        defer { if_freenameindex(list) }
        var names: [String] = []
        var entry = list
        while entry.pointee.if_index != 0, let name = entry.pointee.if_name {
            names.append(String(cString: name))
            entry += 1
        }
        return names
    }

    /// The programs the pinned links and Swiftlane's tc filters run, and the pinned maps,
    /// by kernel id.
    public static func ownedObjects(pinPath: String) -> OwnedObjects {
        var owned = OwnedObjects()
        for link in linkAttachments(pinPath: pinPath) { owned.programIDs.insert(link.programID) }
        for filter in tcAttachments() { owned.programIDs.insert(filter.programID) }
        for name in pinnedFiles(pinPath) {
            let fd = bpf_obj_get(pinPath + "/" + name)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var info = bpf_map_info()
            if objectKind(fd: fd) == .map, clb_map_info(fd, &info) == 0 { owned.mapIDs.insert(info.id) }
        }
        return owned
    }

    /// Those of `objects` the kernel still has. A program or map lives on while a link, a
    /// pin, another program or an open file descriptor holds it.
    public static func stillLoaded(_ objects: OwnedObjects) -> OwnedObjects {
        var live = OwnedObjects()
        for id in objects.programIDs {
            let fd = bpf_prog_get_fd_by_id(id)
            if fd >= 0 || errno != ENOENT { live.programIDs.insert(id) }
            if fd >= 0 { close(fd) }
        }
        for id in objects.mapIDs {
            let fd = bpf_map_get_fd_by_id(id)
            if fd >= 0 || errno != ENOENT { live.mapIDs.insert(id) }
            if fd >= 0 { close(fd) }
        }
        return live
    }

    /// Processes holding a file descriptor of one of `objects` (from
    /// `/proc/<pid>/fdinfo`), as "pid (command)".
    public static func holders(of objects: OwnedObjects) -> [String] {
        var result = Set<String>()
        let processes = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for pid in processes where Int32(pid) != nil {
            let fdinfo = "/proc/\(pid)/fdinfo"
            for fd in (try? FileManager.default.contentsOfDirectory(atPath: fdinfo)) ?? [] {
                guard let text = try? String(contentsOfFile: fdinfo + "/" + fd, encoding: .utf8) else { continue }
                for line in text.split(separator: "\n") {
                    let fields = line.split(whereSeparator: { $0 == ":" || $0 == "\t" || $0 == " " })
                    guard fields.count == 2, let id = UInt32(fields[1]) else { continue }
                    let held =
                        (fields[0] == "prog_id" && objects.programIDs.contains(id))
                        || (fields[0] == "map_id" && objects.mapIDs.contains(id))
                    if held {
                        let command =
                            (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?
                            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
                        result.insert("\(pid) (\(command))")
                    }
                }
            }
        }
        return result.sorted()
    }

    /// Sends libbpf's own messages to `logger` from now on. Commands that probe every
    /// device for tc filters give a quiet logger: "no qdisc here" is the expected answer.
    public static func forwardLibbpfOutput(to logger: Logger) {
        LibbpfLog.install(logger: logger)
    }

    // MARK: - Helpers

    enum ObjectKind { case map, link, program }

    /// What a BPF fd refers to. The kernel's info call answers for any kind (and fills a
    /// map's info into a link's struct), so the kind comes from the fd's fdinfo, which
    /// names `map_type`, `link_type` or `prog_type`.
    static func objectKind(fd: Int32) -> ObjectKind? {
        guard let text = try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            if line.hasPrefix("map_type:") { return .map }
            if line.hasPrefix("link_type:") { return .link }
            if line.hasPrefix("prog_type:") { return .program }
        }
        return nil
    }

    private static func pinnedFiles(_ directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { name in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: directory + "/" + name, isDirectory: &isDirectory)
                && !isDirectory.boolValue
        }.sorted()
    }

    /// Counts the keys of a map by walking them (one bpf() call per key). A key deleted
    /// under the walk makes the kernel start again from the first key, so the count stops
    /// at the map's capacity rather than walk forever.
    private static func countKeys(fd: Int32, keySize: Int, limit: Int) -> Int {
        let current = UnsafeMutableRawPointer.allocate(byteCount: max(keySize, 1), alignment: 8)
        let next = UnsafeMutableRawPointer.allocate(byteCount: max(keySize, 1), alignment: 8)
        defer {
            current.deallocate()
            next.deallocate()
        }
        var count = 0
        var previous: UnsafeMutableRawPointer? = nil
        while count < limit, bpf_map_get_next_key(fd, previous, next) == 0 {
            count += 1
            current.copyMemory(from: next, byteCount: keySize)
            previous = current
        }
        return count
    }

    private static func programName(id: UInt32) -> String? {
        let fd = bpf_prog_get_fd_by_id(id)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = bpf_prog_info()
        guard clb_prog_info(fd, &info) == 0 else { return nil }
        return withUnsafeBytes(of: info.name) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}
