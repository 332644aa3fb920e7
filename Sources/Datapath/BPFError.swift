import Glibc

/// A failure of the kernel datapath, with enough context to act on: what was attempted,
/// on which map / program / path, the errno, and for program loads the verifier's log.
public struct BPFError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var target: String
    public var errno: Int32
    /// The verifier log (load failures) or the list of differences (incompatible pins).
    public var detail: String

    public init(_ operation: String, target: String, errno: Int32, detail: String = "") {
        self.operation = operation
        self.target = target
        self.errno = errno
        self.detail = detail
    }

    public var errnoName: String { Self.name(of: errno) }

    public var description: String {
        var text = "\(operation) \(target) failed"
        if errno != 0 { text += ": \(errnoName) (\(String(cString: strerror(errno))))" }
        if !detail.isEmpty { text += "\n" + detail }
        return text
    }

    static func name(of code: Int32) -> String {
        switch code {
        case EPERM: return "EPERM"
        case ENOENT: return "ENOENT"
        case E2BIG: return "E2BIG"
        case ENOMEM: return "ENOMEM"
        case EEXIST: return "EEXIST"
        case EINVAL: return "EINVAL"
        case ENOSPC: return "ENOSPC"
        case EBUSY: return "EBUSY"
        case EACCES: return "EACCES"
        case ENOTSUP: return "ENOTSUP"
        case EBADF: return "EBADF"
        default: return "errno \(code)"
        }
    }
}

/// Turns a libbpf / bpf() return (0 or -errno, or -1 with errno set) into a throw.
@discardableResult
func checkBPF(_ result: Int32, _ operation: @autoclosure () -> String, target: @autoclosure () -> String) throws -> Int32 {
    if result >= 0 { return result }
    let code = result == -1 ? Glibc.errno : -result
    throw BPFError(operation(), target: target(), errno: code)
}
