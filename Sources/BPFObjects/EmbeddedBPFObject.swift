import Foundation

/// The BPF objects compiled from `bpf/*.c` at build time (see Plugins/EmbedBPFObjects).
/// Each appears as a static property named after its source file, e.g. `sockLb`.
public enum BPFObjects {}

/// A compiled BPF ELF object carried inside the binary.
public struct EmbeddedBPFObject: Sendable {
    /// The source file's stem, e.g. "sock_lb".
    public let name: String
    /// The ELF bytes.
    public let bytes: [UInt8]

    /// An object from raw ELF bytes (tests load hand-made objects this way).
    public init(name: String, bytes: [UInt8]) {
        self.name = name
        self.bytes = bytes
    }

    init(name: String, base64: String) {
        self.name = name
        guard let data = Data(base64Encoded: base64) else {
            preconditionFailure("embedded BPF object \(name) is not valid base64")
        }
        self.bytes = [UInt8](data)
    }
}
