import BPFObjects
import CLibBPF
import Foundation
import Glibc
import Logging
import Reconciler
import ServiceModel

/// Terminates connected UDP sockets that socket LB sent to a backend which has since left
/// its service (datapath-notes §4.1: DNS clients and statsd keep talking to a deleted pod).
///
/// Socket LB rewrites a connected UDP socket's destination once, at connect(), and records
/// the backend in the socket's own storage (`sl_sock_fe_v1`). When the controller removes
/// that backend, `terminateConnected(to:)` runs the `bpf/sock_terminate.c` socket iterator
/// in every network namespace of the node (each pod's and the host's): it destroys each
/// connected UDP socket that is connected to a removed backend *and* whose storage says socket
/// LB put it there. The application sees ECONNABORTED (recv) or EDESTADDRREQ (send) and
/// reconnects through the service, reaching a live backend. Sockets that reach the backend
/// directly, or were balanced to other backends, are left alone.
///
/// Needs the `bpf_sock_destroy` kfunc (Linux 6.5+). Without it `install` logs one notice
/// and returns a terminator whose `isSupported` is false and whose `terminateConnected`
/// does nothing: clients then keep the old backend until they reconnect by themselves.
public final class UDPSocketTerminator: @unchecked Sendable {
    /// A socket the iterator destroyed: what it asked for and where socket LB had sent it.
    public struct TerminatedSocket: Hashable, Sendable, CustomStringConvertible {
        public var frontend: String
        public var backend: BackendAddress
        /// Inode of the network namespace the socket lived in.
        public var networkNamespace: UInt64

        public var description: String { "\(frontend) -> \(backend) (netns \(networkNamespace))" }
    }

    /// Whether this kernel can destroy sockets from BPF (`bpf_sock_destroy`, 6.5+).
    public let isSupported: Bool

    private let logger: Logger
    private let lock = NSLock()
    private var object: BPFObjectFile?
    private var link: OpaquePointer?
    private var backends: BPFMap<sl_backend, UInt8>?
    private let backendsCapacity: Int

    static let programName = "sl_terminate_udp"
    static let backendsMapName = "sl_terminate_backends"

    private init(
        isSupported: Bool, logger: Logger, object: BPFObjectFile? = nil, link: OpaquePointer? = nil,
        backends: BPFMap<sl_backend, UInt8>? = nil, backendsCapacity: Int = 0
    ) {
        self.isSupported = isSupported
        self.logger = logger
        self.object = object
        self.link = link
        self.backends = backends
        self.backendsCapacity = backendsCapacity
    }

    deinit { close() }

    // MARK: - Install

    /// Loads the iterator, sharing the socket storage pinned under `pinPath` (the socket load
    /// balancer must be installed first: it creates that pin). On a kernel without
    /// `bpf_sock_destroy` nothing is loaded and the result is unsupported (see the type's
    /// documentation); any other failure throws.
    public static func install(pinPath: String, logger: Logger) throws -> UDPSocketTerminator {
        try install(pinPath: pinPath, logger: logger, kernelFunctionProbe: { clb_kernel_btf_has_func($0) })
    }

    /// `install` with the kernel BTF probe injected (1 = has it, 0 = not, -errno = no BTF),
    /// so tests can take the path of a kernel without `bpf_sock_destroy`.
    static func install(pinPath: String, logger: Logger, kernelFunctionProbe: (String) -> Int32) throws
        -> UDPSocketTerminator
    {
        LibbpfLog.install(logger: logger)
        let probe = kernelFunctionProbe("bpf_sock_destroy")
        guard probe == 1 else {
            var metadata: Logger.Metadata = [:]
            if probe < 0 { metadata["btfError"] = "\(BPFError.name(of: -probe))" }
            logger.notice(
                "kernel lacks bpf_sock_destroy (< 6.5, or no BTF): connected UDP sockets to removed backends are not terminated; clients keep sending to a removed backend until they reconnect",
                metadata: metadata)
            return UDPSocketTerminator(isSupported: false, logger: logger)
        }
        let storagePin = pinPath + "/" + SL_MAP_NAME_SOCK_FRONTEND
        guard FileManager.default.fileExists(atPath: storagePin) else {
            throw BPFError(
                "find pinned socket storage", target: storagePin, errno: ENOENT,
                detail: "install the socket load balancer before the UDP socket terminator")
        }

        let object = try BPFObjectFile.open(BPFObjects.sockTerminate, pinRoot: pinPath)
        var link: OpaquePointer?
        do {
            try shareOnlySocketStorage(object)
            try object.load()
            link = bpf_program__attach_iter(try object.program(named: programName), nil)
            guard let link else { throw BPFError("attach iterator", target: programName, errno: errno) }
            guard let map = bpf_object__find_map_by_name(object.handle, backendsMapName) else {
                throw BPFError("find map", target: "\(backendsMapName) in \(object.name)", errno: ENOENT)
            }
            let fd = dup(bpf_map__fd(map))
            if fd < 0 { throw BPFError("dup fd of", target: backendsMapName, errno: errno) }
            let backends = try BPFMap<sl_backend, UInt8>(name: backendsMapName, fd: fd)
            logger.info("UDP socket terminator installed", metadata: ["pinPath": "\(pinPath)"])
            return UDPSocketTerminator(
                isSupported: true, logger: logger, object: object, link: link,
                backends: backends, backendsCapacity: Int(bpf_map__max_entries(map)))
        } catch {
            if let link { bpf_link__destroy(link) }
            object.close()
            throw error
        }
    }

    /// maps.h declares every pinned map, but the iterator reads only the socket storage. The
    /// others are not created: nothing here uses them, and reusing their pins would tie this
    /// object to their sizes. The storage pin is checked by libbpf before reuse (type, key,
    /// value, flags), and checked again here to fail with a readable list.
    private static func shareOnlySocketStorage(_ object: BPFObjectFile) throws {
        var map = bpf_object__next_map(object.handle, nil)
        while let current = map {
            defer { map = bpf_object__next_map(object.handle, current) }
            guard !bpf_map__is_internal(current), bpf_map__pin_path(current) != nil else { continue }
            let name = String(cString: bpf_map__name(current))
            if name == SL_MAP_NAME_SOCK_FRONTEND {
                try checkPin(of: current, name: name)
            } else {
                try checkBPF(bpf_map__set_autocreate(current, false), "skip creating map", target: name)
            }
        }
    }

    private static func checkPin(of map: OpaquePointer, name: String) throws {
        let path = String(cString: bpf_map__pin_path(map))
        let fd = bpf_obj_get(path)
        if fd < 0 { throw BPFError("open pinned map", target: path, errno: errno) }
        defer { Glibc.close(fd) }
        var info = bpf_map_info()
        try checkBPF(clb_map_info(fd, &info), "inspect pinned map", target: path)
        let fields: [(String, UInt32, UInt32)] = [
            ("type", UInt32(bpf_map__type(map).rawValue), info.type),
            ("key_size", bpf_map__key_size(map), info.key_size),
            ("value_size", bpf_map__value_size(map), info.value_size),
            ("map_flags", bpf_map__map_flags(map), info.map_flags),
        ]
        let differences = fields.filter { $0.1 != $0.2 }
            .map { "\(name): \($0.0) is \($0.2) in the pin at \(path), this build expects \($0.1)" }
        if !differences.isEmpty {
            throw BPFError("reuse pinned map", target: name, errno: EINVAL, detail: differences.joined(separator: "\n"))
        }
    }

    /// Detaches the iterator and releases the object. Idempotent; later calls to
    /// `terminateConnected` throw EBADF.
    public func close() {
        lock.lock()
        defer { lock.unlock() }
        if let link { bpf_link__destroy(link) }
        link = nil
        backends = nil
        object?.close()
        object = nil
    }

    // MARK: - Terminating

    /// Destroys every connected UDP socket, in every network namespace of the node, that
    /// socket LB connected to one of `backends` (only `.udp` ones are considered). Call it
    /// after the backends left their services in the maps, so reconnecting sockets cannot
    /// pick them again. Returns how many sockets were destroyed (0 when unsupported).
    ///
    /// A namespace that vanishes or cannot be entered during the walk is skipped with a
    /// warning; the call throws only when no namespace at all could be walked or the
    /// backend set cannot be written. Calls are serialised.
    @discardableResult
    public func terminateConnected(to backends: Set<BackendAddress>) throws -> Int {
        try terminate(backends).count
    }

    /// Like `terminateConnected(to:)`, returning what was destroyed.
    public func terminate(_ backends: Set<BackendAddress>) throws -> [TerminatedSocket] {
        let udp = backends.filter { $0.proto == .udp }.sorted()
        guard isSupported, !udp.isEmpty else { return [] }
        lock.lock()
        defer { lock.unlock() }
        guard let link, let map = self.backends else {
            throw BPFError("terminate UDP sockets with", target: "a closed terminator", errno: EBADF)
        }
        let start = DispatchTime.now()
        let namespaces = NetworkNamespaceWalk.openAll()
        defer { for namespace in namespaces { Glibc.close(namespace.fd) } }

        var destroyed: [TerminatedSocket] = []
        var walked = Set<UInt64>()
        var problems: [String] = []
        // The backend map is small and fixed in size: larger sets are walked in chunks.
        for chunkStart in stride(from: 0, to: udp.count, by: backendsCapacity) {
            let chunk = udp[chunkStart..<min(chunkStart + backendsCapacity, udp.count)]
            defer { for backend in chunk { try? map.delete(sl_backend(backend)) } }
            for backend in chunk { try map.update(sl_backend(backend), 1) }
            let result = NetworkNamespaceWalk.run(iterator: bpf_link__fd(link), in: namespaces)
            destroyed += result.destroyed
            walked.formUnion(result.walked)
            problems += result.problems
        }
        let elapsedMs = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
        for problem in problems {
            logger.warning("UDP socket termination skipped a network namespace", metadata: ["problem": "\(problem)"])
        }
        if walked.isEmpty {
            throw BPFError(
                "walk UDP sockets of", target: "any network namespace", errno: EPERM,
                detail: problems.joined(separator: "\n"))
        }
        for socket in destroyed {
            logger.debug("destroyed connected UDP socket of a removed backend", metadata: ["socket": "\(socket)"])
        }
        logger.info(
            "terminated connected UDP sockets of removed backends",
            metadata: [
                "destroyed": "\(destroyed.count)", "backends": "\(udp.map(\.description).joined(separator: ","))",
                "namespaces": "\(walked.count)", "skippedNamespaces": "\(problems.count)",
                "ms": "\(String(format: "%.1f", elapsedMs))",
            ])
        return destroyed
    }
}

// MARK: - Namespaces

/// Finding every network namespace of the node and running the iterator inside each.
/// An iterator sees the sockets of the network namespace its fd was created in, and a
/// thread can enter another one with setns(2): so one dedicated thread enters each
/// namespace in turn and creates and reads an iterator there. The calling thread (and the
/// rest of the process) never changes namespace; the dedicated thread ends afterwards.
enum NetworkNamespaceWalk {
    struct Handle {
        let inode: UInt64
        let fd: Int32
        let path: String
    }

    struct Result {
        var destroyed: [UDPSocketTerminator.TerminatedSocket] = []
        var walked: Set<UInt64> = []
        var problems: [String] = []
    }

    /// CLONE_NEWNET from <sched.h> (hidden from Swift behind _GNU_SOURCE).
    static let cloneNewNet: Int32 = 0x4000_0000

    /// Directories where `ip netns` and CNI plugins bind-mount namespaces that may have no
    /// process (yet).
    static let namedNamespaceDirectories = ["/run/netns", "/var/run/netns"]

    /// Opens each distinct network namespace once: this process's, every process's
    /// (`/proc/<pid>/ns/net`: pods, the host), and the named ones. Sees the node's pods only
    /// when run in the host PID namespace (or with /run/netns shared). Namespaces
    /// referenced only by a thread other than a process's main thread, or only by an open
    /// fd, are not found.
    static func openAll() -> [Handle] {
        var handles: [Handle] = []
        var seen = Set<UInt64>()
        func consider(_ path: String) {
            var info = stat()
            guard stat(path, &info) == 0, !seen.contains(UInt64(info.st_ino)) else { return }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return }  // The process exited meanwhile.
            // Identify by the opened fd: the pid may have been reused between stat and open.
            var opened = stat()
            guard fstat(fd, &opened) == 0, seen.insert(UInt64(opened.st_ino)).inserted else {
                Glibc.close(fd)
                return
            }
            handles.append(Handle(inode: UInt64(opened.st_ino), fd: fd, path: path))
        }
        consider("/proc/self/ns/net")
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries where Int32(entry) != nil {
            consider("/proc/\(entry)/ns/net")
        }
        for directory in namedNamespaceDirectories {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                consider(directory + "/" + name)
            }
        }
        return handles
    }

    /// Runs the iterator of `linkFD` once in each namespace, on a dedicated thread.
    static func run(iterator linkFD: Int32, in namespaces: [Handle]) -> Result {
        final class Box: @unchecked Sendable { var result = Result() }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            for namespace in namespaces {
                let entered = clb_setns(namespace.fd, cloneNewNet)
                guard entered == 0 else {
                    box.result.problems.append("setns \(namespace.path): \(BPFError.name(of: -entered))")
                    continue
                }
                do {
                    for record in try readIterator(linkFD) {
                        box.result.destroyed.append(terminatedSocket(record, namespace: namespace.inode))
                    }
                    box.result.walked.insert(namespace.inode)
                } catch {
                    box.result.problems.append("\(namespace.path): \(error)")
                }
            }
        }
        thread.name = "swiftlane-udp-terminate"
        thread.start()
        done.wait()
        return box.result
    }

    /// Creates an iterator in the calling thread's network namespace and reads it to the end:
    /// one `sl_sock_frontend` per destroyed socket.
    static func readIterator(_ linkFD: Int32) throws -> [sl_sock_frontend] {
        let fd = bpf_iter_create(linkFD)
        if fd < 0 { throw BPFError("create UDP socket iterator", target: "link fd \(linkFD)", errno: errno) }
        defer { Glibc.close(fd) }
        // At most 16 KiB per read: the kernel stops adding records once a read's size is
        // reached, so its 32 KiB buffer can never overflow mid-record. An overflow would
        // make it run the program again on the same socket, which by then is destroyed and
        // would go uncounted.
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = read(fd, &chunk, chunk.count)
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw BPFError("read UDP socket iterator", target: "link fd \(linkFD)", errno: errno)
            }
            output += chunk[0..<count]
        }
        let size = MemoryLayout<sl_sock_frontend>.size
        guard output.count % size == 0 else {
            throw BPFError(
                "decode UDP socket iterator output", target: "\(output.count) bytes", errno: EPROTO,
                detail: "not a whole number of \(size)-byte records")
        }
        return output.withUnsafeBytes { raw in
            stride(from: 0, to: raw.count, by: size).map {
                raw.loadUnaligned(fromByteOffset: $0, as: sl_sock_frontend.self)
            }
        }
    }

    static func terminatedSocket(_ record: sl_sock_frontend, namespace: UInt64) -> UDPSocketTerminator.TerminatedSocket
    {
        let frontend = IPAddress(abiWords: record.frontend_addr)
        let backend = IPAddress(abiWords: record.backend_addr) ?? IPAddress(v4: 0)
        let frontendPort = UInt16(bigEndian: record.frontend_port)
        let frontendText =
            frontend.map { $0.family == .v6 ? "[\($0)]:\(frontendPort)" : "\($0):\(frontendPort)" } ?? "?"
        return UDPSocketTerminator.TerminatedSocket(
            frontend: frontendText,
            backend: BackendAddress(address: backend, port: UInt16(bigEndian: record.backend_port), proto: .udp),
            networkNamespace: namespace)
    }
}
