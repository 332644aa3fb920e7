import CLibBPF
import Foundation
import Glibc

/// Finding and preparing the kernel pieces the datapath needs: bpffs and cgroup v2.
public enum KernelEnvironment {
    static let bpfFilesystemMagic: UInt = 0xCAFE_4A11
    static let cgroup2Magic: UInt = 0x6367_7270

    /// Mounts bpffs at `/sys/fs/bpf` if nothing is mounted there (Cilium and Calico do the
    /// same: many distributions do not mount it at boot), then creates `pinPath`.
    /// Refuses a pin path outside a bpffs.
    public static func prepareBPFFilesystem(pinPath: String, mountPoint: String = "/sys/fs/bpf") throws {
        if !isFilesystem(mountPoint, magic: bpfFilesystemMagic) {
            try? FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
            if mount("bpf", mountPoint, "bpf", 0, nil) != 0 {
                throw BPFError("mount bpffs at", target: mountPoint, errno: errno)
            }
        }
        try FileManager.default.createDirectory(atPath: pinPath, withIntermediateDirectories: true)
        guard isFilesystem(pinPath, magic: bpfFilesystemMagic) else {
            throw BPFError("use pin path", target: pinPath, errno: EINVAL, detail: "\(pinPath) is not on a bpf filesystem")
        }
    }

    /// The cgroup v2 mount to attach socket programs to: `/sys/fs/cgroup` on a unified
    /// host, `/sys/fs/cgroup/unified` on a hybrid one; otherwise the first cgroup2 mount.
    public static func detectCgroup2Root() throws -> String {
        for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] where isFilesystem(candidate, magic: cgroup2Magic) {
            return candidate
        }
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count > 2, fields[2] == "cgroup2" { return String(fields[1]) }
        }
        throw BPFError("find", target: "a cgroup v2 mount", errno: ENOENT, detail: "set cgroupPath in the config")
    }

    /// The id the kernel reports for a cgroup (in link info): the directory's inode.
    public static func cgroupID(path: String) throws -> UInt64 {
        var info = stat()
        guard stat(path, &info) == 0 else { throw BPFError("stat cgroup", target: path, errno: errno) }
        return UInt64(info.st_ino)
    }

    static func isFilesystem(_ path: String, magic: UInt) -> Bool {
        let found = clb_filesystem_magic(path)
        return found >= 0 && UInt(found) == magic
    }
}
