import BPFObjects
import CLibBPF
import Foundation
import Glibc

/// An opened (and, after `load()`, loaded) libbpf object.
final class BPFObjectFile {
    let name: String
    let handle: OpaquePointer
    private let bytes: [UInt8]

    private init(name: String, handle: OpaquePointer, bytes: [UInt8]) {
        self.name = name
        self.handle = handle
        self.bytes = bytes
    }

    /// Opens an embedded object; maps pinned by name live under `pinRoot`.
    static func open(_ object: EmbeddedBPFObject, pinRoot: String) throws -> BPFObjectFile {
        // libbpf may keep pointing into the buffer until load: it stays owned by `bytes`.
        let bytes = object.bytes
        let handle = bytes.withUnsafeBytes { raw in
            clb_object_open_mem(raw.baseAddress, raw.count, object.name, pinRoot)
        }
        guard let handle else { throw BPFError("open BPF object", target: object.name, errno: errno) }
        return BPFObjectFile(name: object.name, handle: handle, bytes: bytes)
    }

    func close() { bpf_object__close(handle) }

    func program(named name: String) throws -> OpaquePointer {
        guard let program = bpf_object__find_program_by_name(handle, name) else {
            throw BPFError("find program", target: "\(name) in \(self.name)", errno: ENOENT)
        }
        return program
    }

    /// Sets map capacities before load; every name must be a map of this object.
    func setMapSizes(_ sizes: [String: UInt32]) throws {
        for (name, entries) in sizes.sorted(by: { $0.key < $1.key }) {
            guard let map = bpf_object__find_map_by_name(handle, name) else {
                throw BPFError("size map", target: "\(name) (not a map of \(self.name))", errno: ENOENT)
            }
            try checkBPF(bpf_map__set_max_entries(map, entries), "set max_entries \(entries) of", target: name)
        }
    }

    /// Names of the maps this object shares through pins.
    var pinnedMapNames: [String] {
        var names: [String] = []
        var map = bpf_object__next_map(handle, nil)
        while let current = map {
            if !bpf_map__is_internal(current), bpf_map__pin_path(current) != nil {
                names.append(String(cString: bpf_map__name(current)))
            }
            map = bpf_object__next_map(handle, current)
        }
        return names
    }

    /// Before libbpf reuses a pinned map, compares the pin with what this object declares
    /// and fails listing every difference: reusing a map of another layout would corrupt
    /// the datapath silently.
    func checkPinnedMaps() throws {
        var differences: [String] = []
        var map = bpf_object__next_map(handle, nil)
        while let current = map {
            defer { map = bpf_object__next_map(handle, current) }
            guard !bpf_map__is_internal(current), let pinPath = bpf_map__pin_path(current).map({ String(cString: $0) }),
                  FileManager.default.fileExists(atPath: pinPath) else { continue }
            let name = String(cString: bpf_map__name(current))
            let fd = bpf_obj_get(pinPath)
            guard fd >= 0 else {
                differences.append("\(name): \(pinPath) exists but cannot be opened as a BPF map (\(BPFError.name(of: errno)))")
                continue
            }
            defer { Glibc.close(fd) }
            var info = bpf_map_info()
            guard clb_map_info(fd, &info) == 0 else {
                differences.append("\(name): \(pinPath) is not a BPF map")
                continue
            }
            let expected: [(String, UInt32, UInt32)] = [
                ("type", UInt32(bpf_map__type(current).rawValue), info.type),
                ("key_size", bpf_map__key_size(current), info.key_size),
                ("value_size", bpf_map__value_size(current), info.value_size),
                ("max_entries", bpf_map__max_entries(current), info.max_entries),
                ("map_flags", bpf_map__map_flags(current), info.map_flags),
            ]
            for (field, want, have) in expected where want != have {
                differences.append("\(name): \(field) is \(have) in the pin at \(pinPath), this build expects \(want)")
            }
        }
        if !differences.isEmpty {
            throw BPFError("reuse pinned maps of", target: name, errno: EINVAL,
                           detail: differences.joined(separator: "\n") + "\nRemove the old state with `swiftlane cleanup` (this interrupts service traffic) or restore the matching version.")
        }
    }

    /// Loads every program; a verifier rejection is thrown with the verifier's log
    /// (libbpf retries a rejected program with the log on and prints it; we capture it).
    func load() throws {
        let (error, log) = LibbpfLog.capturingFailure {
            try checkBPF(bpf_object__load(handle), "load BPF object", target: name)
        }
        guard let error = error as? BPFError else { return }
        throw BPFError(error.operation, target: error.target, errno: error.errno, detail: Self.verifierLog(from: log))
    }

    /// The part of libbpf's output that holds the verifier log, or all of it.
    static func verifierLog(from lines: [String]) -> String {
        let text = lines.joined(separator: "\n")
        if let start = text.range(of: "-- BEGIN PROG LOAD LOG --"), let end = text.range(of: "-- END PROG LOAD LOG --") {
            return "verifier log:\n" + text[start.upperBound..<end.lowerBound].trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return text
    }
}
