import Foundation
import Logging
import ServiceModel

/// The embedded source: Services, EndpointSlices and Nodes read from `*.yaml`, `*.yml`
/// and `*.json` files in one directory, re-read when a file changes.
///
/// A file that stops parsing keeps contributing its last good objects (and the error is
/// logged and counted), so a half-written or broken file never withdraws services.
public final class DirectorySource: @unchecked Sendable {
    public let path: String
    private let logger: Logger
    private var files: [String: FileState] = [:]

    private struct FileState {
        var fingerprint: Fingerprint
        var objects: ManifestObjects
        var error: String?
    }

    private struct Fingerprint: Equatable {
        var modified: TimeInterval
        var size: Int
        var inode: Int
    }

    /// Problems in the files, by file name (empty when every file parsed).
    public private(set) var errors: [String: String] = [:]
    /// Number of times a file failed to parse (for metrics).
    public private(set) var parseFailures = 0
    /// The largest manifest document accepted (`maxObjectBytes`); nil: no cap.
    public let maximumObjectBytes: Int?
    /// Files refused since `objects()` last handed them out.
    private var newRejections: [Rejection] = []

    public init(path: String, maximumObjectBytes: Int? = nil, logger: Logger) {
        self.path = path
        self.maximumObjectBytes = maximumObjectBytes
        self.logger = logger
    }

    /// Whether a file name is one the directory source reads.
    public static func isManifest(_ name: String) -> Bool {
        !name.hasPrefix(".") && (name.hasSuffix(".yaml") || name.hasSuffix(".yml") || name.hasSuffix(".json"))
    }

    /// Re-reads changed files. Returns true if the set of objects may have changed.
    @discardableResult
    public func refresh() throws -> Bool {
        let fileManager = FileManager.default
        var isDirectory: ObjCBool = false
        guard fileManager.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw SwiftlaneConfiguration.Invalid(key: "source.directory", message: "\(path) is not a directory")
        }
        let names = try fileManager.contentsOfDirectory(atPath: path).filter(Self.isManifest).sorted()
        var changed = false
        for name in Set(files.keys).subtracting(names) {
            files[name] = nil
            errors[name] = nil
            changed = true
        }
        for name in names {
            let full = path + "/" + name
            guard let attributes = try? fileManager.attributesOfItem(atPath: full) else { continue }
            let fingerprint = Fingerprint(
                modified: (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0,
                size: (attributes[.size] as? NSNumber)?.intValue ?? 0,
                inode: (attributes[.systemFileNumber] as? NSNumber)?.intValue ?? 0)
            if files[name]?.fingerprint == fingerprint { continue }
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: full))
                let objects = try ManifestDecoder.decode(data, source: name, maximumObjectBytes: maximumObjectBytes)
                files[name] = FileState(fingerprint: fingerprint, objects: objects, error: nil)
                errors[name] = nil
                changed = true
            } catch {
                parseFailures += 1
                let message = "\(error)"
                if errors[name] != message {
                    logger.error("manifest rejected; keeping its last good objects", metadata: ["file": "\(full)", "error": "\(message)"])
                    // A sync carries the rejection to the metrics (it changes no object).
                    newRejections.append((error as? ManifestError)?.rejection
                        ?? Rejection(kind: "Manifest", object: name, field: "", reason: "parse", message: message))
                    changed = true
                }
                errors[name] = message
                // Remember the fingerprint so the same broken content is not re-parsed
                // every poll; keep the previous objects.
                files[name] = FileState(fingerprint: fingerprint, objects: files[name]?.objects ?? ManifestObjects(), error: message)
            }
        }
        return changed
    }

    /// Every object from every file. An object defined in two files (same kind,
    /// namespace and name) is taken from the file that sorts last, with a warning.
    public func objects() -> ManifestObjects {
        var services: [String: ServiceModel.Service] = [:]
        var slices: [String: EndpointSlice] = [:]
        var nodes: [String: ServiceModel.Node] = [:]
        var origin: [String: String] = [:]
        func note(_ key: String, _ file: String) {
            if let previous = origin[key], previous != file {
                logger.warning("object defined in two files; using the later one", metadata: ["object": "\(key)", "files": "\(previous), \(file)"])
            }
            origin[key] = file
        }
        for name in files.keys.sorted() {
            let objects = files[name]!.objects
            for service in objects.services {
                let key = "Service \(service.metadata.namespace)/\(service.metadata.name)"
                note(key, name)
                services[key] = service
            }
            for slice in objects.endpointSlices {
                let key = "EndpointSlice \(slice.metadata.namespace)/\(slice.metadata.name)"
                note(key, name)
                slices[key] = slice
            }
            for node in objects.nodes {
                let key = "Node \(node.metadata.name)"
                note(key, name)
                nodes[key] = node
            }
        }
        var result = ManifestObjects()
        result.services = services.keys.sorted().map { services[$0]! }
        result.endpointSlices = slices.keys.sorted().map { slices[$0]! }
        result.nodes = nodes.keys.sorted().map { nodes[$0]! }
        result.rejected = newRejections
        newRejections = []
        return result
    }
}
