import CLibBPF
import Foundation
import Glibc

/// Which clsact qdiscs Swiftlane created, so that `swiftlane cleanup` removes exactly those
/// and never one another tool (a CNI, Cilium) set up before.
///
/// The record is a small hash map pinned beside the datapath's maps (`owned_qdiscs_v1`):
/// it lives exactly as long as bpffs, like the qdiscs themselves (both are gone after a
/// reboot), and every pod of the DaemonSet and the cleanup Job sees it. A qdisc is
/// recorded only when Swiftlane's own create call made it; one that existed stays out.
public enum QdiscOwnership {
    public static let pinName = "owned_qdiscs_v1"

    /// A device in a network namespace (device numbers and inode of its nsfs file).
    struct Key: Equatable {
        var netnsDevice: UInt64
        var netnsInode: UInt64
        var ifindex: UInt32
        var pad: UInt32 = 0
    }

    /// The device's name when the qdisc was made: an ifindex reused by another device
    /// later does not lose that device its qdisc.
    struct Value {
        var name: (UInt64, UInt64) = (0, 0)

        init(name: String) {
            withUnsafeMutableBytes(of: &self.name) { raw in
                for (index, byte) in name.utf8.prefix(15).enumerated() { raw[index] = byte }
            }
        }

        var deviceName: String {
            withUnsafeBytes(of: name) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
        }
    }

    /// Creates the clsact qdisc on `ifindex` unless it exists, and records it when this
    /// call created it. Runs in the calling thread's network namespace.
    static func ensureClsact(ifindex: Int32, device: String, pinPath: String) throws {
        let created = try checkBPF(clb_tc_clsact_create(ifindex), "create clsact qdisc on", target: device)
        guard created == 1 else { return }
        let map = try openOrCreate(pinPath: pinPath)
        try map.update(try key(ifindex: ifindex), Value(name: device))
    }

    /// What `removeOwned` did on each recorded device of this network namespace.
    public struct Removal: Equatable, Sendable {
        public var removed: [String] = []
        /// Devices whose qdisc stays: it carries filters of another tool.
        public var kept: [String] = []
    }

    /// Removes the clsact qdiscs Swiftlane created in the calling thread's network
    /// namespace, once Swiftlane's own filters are gone (call it after detaching them). A
    /// qdisc that now carries another tool's filters is kept, and said so. The record
    /// itself goes with the other pins.
    public static func removeOwned(pinPath: String) -> Removal {
        var result = Removal()
        guard let map = try? BPFMap<Key, Value>(pinnedAt: pinPath + "/" + pinName, name: pinName),
              let here = try? namespaceIdentity() else { return result }
        for key in map.keys() where key.netnsDevice == here.device && key.netnsInode == here.inode {
            defer { try? map.delete(key) }
            guard let recorded = map.lookup(key)?.deviceName else { continue }
            var nameBuffer = [CChar](repeating: 0, count: Int(IF_NAMESIZE) + 1)
            guard if_indextoname(key.ifindex, &nameBuffer) != nil, String(cString: nameBuffer) == recorded else { continue }
            let others = max(0, clb_tc_filter_count(Int32(key.ifindex), 0)) + max(0, clb_tc_filter_count(Int32(key.ifindex), 1))
            if others > 0 {
                result.kept.append("\(recorded) (\(others) filters of other tools)")
            } else if clb_tc_clsact_destroy(Int32(key.ifindex)) == 0 {
                result.removed.append(recorded)
            }
        }
        return result
    }

    private static func openOrCreate(pinPath: String) throws -> BPFMap<Key, Value> {
        let path = pinPath + "/" + pinName
        if let map = try? BPFMap<Key, Value>(pinnedAt: path, name: pinName) { return map }
        let fd = bpf_map_create(
            BPF_MAP_TYPE_HASH, "sl_owned_qdisc", UInt32(MemoryLayout<Key>.size), UInt32(MemoryLayout<Value>.size), 256, nil)
        if fd < 0 { throw BPFError("create map", target: pinName, errno: -fd) }
        let map = try BPFMap<Key, Value>(name: pinName, fd: fd)
        if bpf_obj_pin(fd, path) != 0 {
            let code = errno
            // Another process pinned it first: use that one.
            if code == EEXIST, let pinned = try? BPFMap<Key, Value>(pinnedAt: path, name: pinName) { return pinned }
            throw BPFError("pin map", target: path, errno: code)
        }
        return map
    }

    private static func key(ifindex: Int32) throws -> Key {
        let here = try namespaceIdentity()
        return Key(netnsDevice: here.device, netnsInode: here.inode, ifindex: UInt32(ifindex))
    }

    /// The calling thread's network namespace (`thread-self`: the datapath enters lab
    /// namespaces on one thread, and /proc/self would name the main thread's).
    private static func namespaceIdentity() throws -> (device: UInt64, inode: UInt64) {
        var status = stat()
        guard stat("/proc/thread-self/ns/net", &status) == 0 else {
            throw BPFError("identify network namespace", target: "/proc/thread-self/ns/net", errno: errno)
        }
        return (UInt64(status.st_dev), UInt64(status.st_ino))
    }
}
