import Foundation
import ServiceModel

/// An API object an informer can hold: decodable leniently from the API server's JSON
/// and identified by namespace/name.
public protocol KubeObject: Codable, Sendable, Equatable {
    var metadata: ObjectMeta { get }
}

extension KubeObject {
    /// The informer cache key: `namespace/name`, or `name` for cluster-scoped objects.
    public var cacheKey: String {
        metadata.namespace.isEmpty ? metadata.name : metadata.namespace + "/" + metadata.name
    }
}

extension Service: KubeObject {}
extension EndpointSlice: KubeObject {}
extension Node: KubeObject {}

/// A `meta/v1 Status`: the body of a failed request and the object of an ERROR event.
public struct Status: Decodable, Sendable, Equatable, CustomStringConvertible {
    public var code: Int
    public var reason: String?
    public var message: String?
    /// `metadata.continue` of a 410 for an expired continue token (an inconsistent
    /// continuation, which an informer never uses).
    public var continueToken: String?

    public init(code: Int, reason: String? = nil, message: String? = nil, continueToken: String? = nil) {
        self.code = code
        self.reason = reason
        self.message = message
        self.continueToken = continueToken
    }

    enum CodingKeys: String, CodingKey { case code, reason, message, metadata }
    enum MetadataKeys: String, CodingKey { case `continue` }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        code = try c.decodeIfPresent(Int.self, forKey: .code) ?? 0
        reason = try c.decodeIfPresent(String.self, forKey: .reason)
        message = try c.decodeIfPresent(String.self, forKey: .message)
        if let metadata = try? c.nestedContainer(keyedBy: MetadataKeys.self, forKey: .metadata) {
            continueToken = try metadata.decodeIfPresent(String.self, forKey: .continue)
        }
    }

    public var description: String {
        "\(code) \(reason ?? "")" + (message.map { ": \($0)" } ?? "")
    }
}

/// One page of a LIST: `metadata.resourceVersion` (the snapshot), `metadata.continue`,
/// and the items, which carry no kind/apiVersion of their own.
public struct ObjectList<Object: Decodable>: Decodable {
    public var resourceVersion: String
    public var continueToken: String?
    public var items: [Object]

    enum CodingKeys: String, CodingKey { case metadata, items }
    enum MetadataKeys: String, CodingKey { case resourceVersion, `continue` }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let metadata = try c.nestedContainer(keyedBy: MetadataKeys.self, forKey: .metadata)
        resourceVersion = try metadata.decodeIfPresent(String.self, forKey: .resourceVersion) ?? ""
        continueToken = try metadata.decodeIfPresent(String.self, forKey: .continue).flatMap { $0.isEmpty ? nil : $0 }
        items = try c.decodeIfPresent([Object].self, forKey: .items) ?? []
    }
}

/// The kind of a watch event, without its object: what the watch state machine sees.
public enum WatchEventKind: Sendable, Equatable {
    case added
    case modified
    case deleted
    /// `initialEventsEnd`: the `k8s.io/initial-events-end` annotation that closes the
    /// initial state of a streaming list.
    case bookmark(initialEventsEnd: Bool)
    case error(Status)
}

/// One decoded line of a watch stream.
public struct WatchEvent<Object: KubeObject>: Decodable, Sendable {
    public var kind: WatchEventKind
    /// The object of ADDED/MODIFIED/DELETED (the last known state for DELETED); nil for
    /// BOOKMARK and ERROR, so a bookmark can never be taken for an object.
    public var object: Object?
    /// `metadata.resourceVersion` of the object or bookmark.
    public var resourceVersion: String?

    public static var initialEventsEndAnnotation: String { "k8s.io/initial-events-end" }

    enum CodingKeys: String, CodingKey { case type, object }

    /// The metadata of a bookmark (its other fields are zero values).
    private struct BookmarkObject: Decodable {
        var metadata: ObjectMeta?
    }

    public struct UnknownType: Error, CustomStringConvertible {
        public var type: String
        public var description: String { "unknown watch event type \"\(type)\"" }
    }

    public init(kind: WatchEventKind, object: Object?, resourceVersion: String?) {
        self.kind = kind
        self.object = object
        self.resourceVersion = resourceVersion
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let type = try c.decode(String.self, forKey: .type)
        switch type {
        case "ADDED", "MODIFIED", "DELETED":
            let object = try c.decode(Object.self, forKey: .object)
            self.object = object
            resourceVersion = object.metadata.resourceVersion
            kind = type == "ADDED" ? .added : type == "MODIFIED" ? .modified : .deleted
        case "BOOKMARK":
            let bookmark = try c.decode(BookmarkObject.self, forKey: .object)
            object = nil
            resourceVersion = bookmark.metadata?.resourceVersion
            kind = .bookmark(
                initialEventsEnd: bookmark.metadata?.annotations[Self.initialEventsEndAnnotation] == "true")
        case "ERROR":
            object = nil
            resourceVersion = nil
            kind = .error(try c.decode(Status.self, forKey: .object))
        default:
            throw UnknownType(type: type)
        }
    }
}
