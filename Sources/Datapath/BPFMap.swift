import CLibBPF
import Glibc

/// A BPF map opened by fd, with fixed-layout key and value types (the ABI structs).
/// The fd is owned: closed on deinit.
public final class BPFMap<Key: BitwiseCopyable, Value: BitwiseCopyable>: @unchecked Sendable {
    public let name: String
    public let fd: Int32

    /// Takes ownership of `fd`, checking that the map's key and value sizes match the
    /// Swift types (a mismatch here means the ABI header and the code disagree).
    public init(name: String, fd: Int32) throws {
        self.name = name
        self.fd = fd
        var info = bpf_map_info()
        try checkBPF(clb_map_info(fd, &info), "inspect map", target: name)
        guard info.key_size == MemoryLayout<Key>.size, info.value_size == MemoryLayout<Value>.size else {
            close(fd)
            throw BPFError("open map", target: name, errno: EINVAL,
                           detail: "key/value size \(info.key_size)/\(info.value_size), Swift expects \(MemoryLayout<Key>.size)/\(MemoryLayout<Value>.size)")
        }
    }

    /// Opens a pinned map.
    public convenience init(pinnedAt path: String, name: String) throws {
        let fd = bpf_obj_get(path)
        if fd < 0 { throw BPFError("open pinned map", target: path, errno: errno) }
        try self.init(name: name, fd: fd)
    }

    deinit { close(fd) }

    public var info: bpf_map_info {
        var info = bpf_map_info()
        _ = clb_map_info(fd, &info)
        return info
    }

    public func lookup(_ key: Key) -> Value? {
        var key = key
        let value = UnsafeMutablePointer<Value>.allocate(capacity: 1)
        defer { value.deallocate() }
        return bpf_map_lookup_elem(fd, &key, value) == 0 ? value.pointee : nil
    }

    public func update(_ key: Key, _ value: Value, flags: UInt64 = UInt64(BPF_ANY)) throws {
        var key = key
        var value = value
        if bpf_map_update_elem(fd, &key, &value, flags) != 0 {
            throw BPFError("update", target: name, errno: errno)
        }
    }

    /// Writes many entries in one bpf() call (BPF_MAP_UPDATE_BATCH, 5.6+). On failure the
    /// thrown error says how many were written first; kernels without batch support
    /// answer EINVAL/ENOTSUP before writing anything.
    public func updateBatch(_ keys: [Key], _ values: [Value]) throws {
        precondition(keys.count == values.count)
        var count = UInt32(keys.count)
        let result = keys.withUnsafeBytes { keyBytes in
            values.withUnsafeBytes { valueBytes in
                bpf_map_update_batch(fd, keyBytes.baseAddress, valueBytes.baseAddress, &count, nil)
            }
        }
        if result != 0 {
            throw BatchError(written: Int(count), error: BPFError("batch update", target: name, errno: errno))
        }
    }

    /// Deletes many keys in one bpf() call (BPF_MAP_DELETE_BATCH, 5.6+; hash maps). The
    /// kernel stops at a missing key (ENOENT): that key is skipped and the rest go in
    /// another call, so a missing key is not an error, as in `delete`.
    public func deleteBatch(_ keys: [Key]) throws {
        var start = 0
        while start < keys.count {
            var count = UInt32(keys.count - start)
            let result = keys.withUnsafeBytes { keyBytes in
                bpf_map_delete_batch(fd, keyBytes.baseAddress! + start * MemoryLayout<Key>.stride, &count, nil)
            }
            if result == 0 { return }
            let failedAt = start + Int(count)
            guard errno == ENOENT, failedAt < keys.count else {
                throw BatchError(written: failedAt, error: BPFError("batch delete from", target: name, errno: errno))
            }
            start = failedAt + 1
        }
    }

    public struct BatchError: Error, CustomStringConvertible {
        public var written: Int
        public var error: BPFError
        public var description: String { "\(error) after \(written) entries" }
    }

    /// Deletes `key`; a missing key is not an error (the goal state is reached).
    public func delete(_ key: Key) throws {
        var key = key
        if bpf_map_delete_elem(fd, &key) != 0 && errno != ENOENT {
            throw BPFError("delete from", target: name, errno: errno)
        }
    }

    /// Every key currently in the map (a snapshot; concurrent writers may add or remove).
    public func keys() -> [Key] {
        var result: [Key] = []
        let current = UnsafeMutablePointer<Key>.allocate(capacity: 1)
        let next = UnsafeMutablePointer<Key>.allocate(capacity: 1)
        defer { current.deallocate(); next.deallocate() }
        var previous: UnsafeMutablePointer<Key>? = nil
        while bpf_map_get_next_key(fd, previous, next) == 0 {
            result.append(next.pointee)
            current.pointee = next.pointee
            previous = current
        }
        return result
    }

    /// Every entry (keys, then a lookup each; entries deleted meanwhile are skipped).
    public func entries() -> [(Key, Value)] {
        keys().compactMap { key in lookup(key).map { (key, $0) } }
    }
}

extension BPFMap where Key == UInt32, Value == UInt64 {
    /// Reads one slot of a per-CPU array and sums it across CPUs.
    public func perCPUSum(_ index: UInt32) -> UInt64 {
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { return 0 }
        var key = index
        var values = [UInt64](repeating: 0, count: cpus)
        guard bpf_map_lookup_elem(fd, &key, &values) == 0 else { return 0 }
        return values.reduce(0, &+)
    }
}
