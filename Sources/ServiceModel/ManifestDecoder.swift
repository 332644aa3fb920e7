import Foundation
import Yams

// MARK: - Results

/// The kube-proxy-relevant objects found in one or more manifest files.
public struct ManifestObjects: Equatable, Sendable {
    public var services: [Service]
    public var endpointSlices: [EndpointSlice]
    public var nodes: [Node]
    /// Objects of other kinds, described as `"ConfigMap default/foo"`, in file order.
    public var skipped: [String]
    /// Objects the source refused since it last handed out objects (over the size cap,
    /// unreadable), for the sync's log and metrics; they are not among the objects above.
    public var rejected: [Rejection]

    public init(
        services: [Service] = [], endpointSlices: [EndpointSlice] = [], nodes: [Node] = [], skipped: [String] = [],
        rejected: [Rejection] = []
    ) {
        self.services = services
        self.endpointSlices = endpointSlices
        self.nodes = nodes
        self.skipped = skipped
        self.rejected = rejected
    }

    /// Appends everything from `other` (e.g. the next file).
    public mutating func append(contentsOf other: ManifestObjects) {
        services += other.services
        endpointSlices += other.endpointSlices
        nodes += other.nodes
        skipped += other.skipped
        rejected += other.rejected
    }
}

/// A manifest that could not be read. The description names the source, the document
/// (1-based), the object and the field path, e.g.
/// `services.yaml document 2 (Service default/web): spec.ports[0].port: expected Int, got String`.
public struct ManifestError: Error, Equatable, Sendable, CustomStringConvertible {
    public var source: String
    /// 1-based index of the `---` document; `nil` when the error is not tied to one.
    public var document: Int?
    /// `"Kind namespace/name"` (or `"Kind name"` for cluster-scoped kinds), when known.
    public var object: String?
    /// Dotted field path with `[i]` indices, e.g. `spec.ports[0].port`, when known.
    public var field: String?
    public var message: String
    /// The document is larger than the object size cap (see `ManifestDecoder.decode`).
    public var overSizeCap = false

    public init(source: String, document: Int? = nil, object: String? = nil, field: String? = nil, message: String) {
        self.source = source
        self.document = document
        self.object = object
        self.field = field
        self.message = message
    }

    /// The rejection this error stands for in logs and metrics (reason `size` or `parse`).
    public var rejection: Rejection {
        let parts = (object ?? "").split(separator: " ", maxSplits: 1).map(String.init)
        return Rejection(kind: parts.count == 2 ? parts[0] : "Manifest", object: parts.count == 2 ? parts[1] : source,
                         field: field ?? "", reason: overSizeCap ? "size" : "parse", message: description)
    }

    public var description: String {
        var text = source
        if let document { text += " document \(document)" }
        if let object { text += " (\(object))" }
        text += ": "
        if let field, !field.isEmpty { text += field + ": " }
        return text + message
    }
}

// MARK: - Decoder

/// Reads Kubernetes manifests: JSON (source name ending in `.json`) or multi-document YAML.
///
/// Accepted per document: a `Service`, `EndpointSlice` or `Node`; a `List` (items carry their
/// own `kind`); a `ServiceList`, `EndpointSliceList` or `NodeList` (items may lack `kind`, as a
/// LIST response returns them, spec C.2). Other kinds are skipped and reported; empty
/// documents are ignored. A missing `metadata.namespace` of a Service or EndpointSlice
/// becomes `"default"`, as `kubectl apply` would do.
public enum ManifestDecoder {
    /// Decodes every document of `data`; `source` names the file in errors and picks the format.
    ///
    /// `maximumObjectBytes` caps the size of a document holding one object (a List
    /// document is not capped as a whole, nor its items one by one): a larger one fails
    /// the decoding with an error naming the object, as a misbehaving writer must not make
    /// the controller hold and translate arbitrarily large objects. A YAML document's size
    /// is that of the lines it spans.
    public static func decode(_ data: Data, source: String, maximumObjectBytes: Int? = nil) throws -> ManifestObjects {
        var objects = ManifestObjects()
        if source.lowercased().hasSuffix(".json") {
            try decodeDocument(JSONDocument(data: data), index: 1, bytes: data.count, cap: maximumObjectBytes,
                               source: source, into: &objects)
            return objects
        }

        guard let text = String(data: data, encoding: .utf8) else {
            throw ManifestError(source: source, message: "not valid UTF-8")
        }
        var index = 0
        do {
            var documents = try Yams.compose_all(yaml: text)
            var nodes: [Yams.Node] = []
            // Composed first (the sizes need every document's position); `index` names the
            // document a syntax error is in.
            while let node = documents.next() {
                nodes.append(node)
                index += 1
            }
            if let error = documents.error { throw error }
            index = 0
            let sizes = maximumObjectBytes == nil ? [] : documentSizes(text, nodes)
            for node in nodes {
                index += 1
                try decodeDocument(YAMLDocument(node: node), index: index, bytes: sizes.isEmpty ? nil : sizes[index - 1],
                                   cap: maximumObjectBytes, source: source, into: &objects)
            }
        } catch let error as ManifestError {
            throw error
        } catch {
            throw ManifestError(source: source, document: index + 1, message: "YAML syntax error: \(error)")
        }
        return objects
    }

    static let listKinds: [String: String?] = [
        "List": nil, "ServiceList": "Service", "EndpointSliceList": "EndpointSlice", "NodeList": "Node",
    ]

    /// The bytes each document spans: from the line its root node starts on to the line the
    /// next one starts on (nil for a document without a position).
    static func documentSizes(_ text: String, _ nodes: [Yams.Node]) -> [Int?] {
        var lineStarts = [0]
        for (offset, byte) in text.utf8.enumerated() where byte == 0x0A { lineStarts.append(offset + 1) }
        func offset(ofLine line: Int) -> Int { lineStarts[min(max(line - 1, 0), lineStarts.count - 1)] }
        let starts = nodes.map { $0.mark.map { offset(ofLine: $0.line) } }
        return starts.enumerated().map { index, start in
            guard let start else { return nil }
            let end = starts[(index + 1)...].lazy.compactMap { $0 }.first ?? text.utf8.count
            return max(0, end - start)
        }
    }

    private static func decodeDocument(
        _ document: some ManifestDocument, index: Int, bytes: Int?, cap: Int?, source: String,
        into objects: inout ManifestObjects
    ) throws {
        if document.isEmpty { return }
        let peek: DocumentPeek
        do {
            peek = try document.decode(DocumentPeek.self, userInfo: [:])
        } catch {
            throw manifestError(error, document: document, peek: nil, impliedKind: nil, index: index, source: source)
        }
        guard peek.isMapping else {
            let value = (try? document.decode(ManifestValue.self, userInfo: [:]))?.typeName ?? "something else"
            throw ManifestError(source: source, document: index, message: "expected Object, got \(value)")
        }
        guard let kind = peek.object.kind, !kind.isEmpty else {
            if peek.isEmptyMapping { return }
            throw ManifestError(
                source: source, document: index, object: peek.object.describe(kind: nil), field: "kind",
                message: "missing kind")
        }

        let impliedKind: String?? = listKinds[kind]
        if impliedKind == nil, let cap, let bytes, bytes > cap {
            var error = ManifestError(
                source: source, document: index, object: peek.object.describe(kind: nil), field: nil,
                message: "\(bytes) bytes, over the object size cap of \(cap) bytes (maxObjectBytes)")
            error.overSizeCap = true
            throw error
        }
        do {
            if let impliedKind {
                let list = try document.decode(
                    ManifestList.self, userInfo: [ManifestItem.impliedKindKey: impliedKind as Any])
                for item in list.items { item.add(to: &objects) }
            } else {
                let item = try document.decode(ManifestItem.self, userInfo: [:])
                item.add(to: &objects)
            }
        } catch {
            throw manifestError(
                error, document: document, peek: peek, impliedKind: impliedKind ?? nil, index: index, source: source)
        }
    }

    /// Turns a decoding failure into a `ManifestError` naming the object and the field path.
    private static func manifestError(
        _ error: Error, document: some ManifestDecoding, peek: DocumentPeek?, impliedKind: String?, index: Int,
        source: String
    ) -> ManifestError {
        guard let decodingError = error as? DecodingError else {
            return ManifestError(source: source, document: index, message: "\(error)")
        }
        let path: [CodingKey]
        let message: String
        switch decodingError {
        case .typeMismatch(let type, let context):
            path = context.codingPath
            let found = (try? document.decode(ManifestValue.self, userInfo: [:]))?.value(at: path)?.typeName
            message = "expected \(typeName(type)), got \(found ?? "a different type")"
        case .valueNotFound(let type, let context):
            path = context.codingPath
            message = "expected \(typeName(type)), got null"
        case .keyNotFound(let key, let context):
            path = context.codingPath + [key]
            message = "missing required field"
        case .dataCorrupted(let context):
            path = context.codingPath
            if let underlying = context.underlyingError {
                message = "\(context.debugDescription) (\(underlying))"
            } else {
                message = context.debugDescription
            }
        @unknown default:
            path = []
            message = "\(decodingError)"
        }

        // Name the list item when the failing field is inside one, else the document's object.
        var object = peek?.object.describe(kind: nil)
        if let peek, let items = peek.items, path.count >= 2, path[0].stringValue == "items",
            let itemIndex = path[1].intValue, itemIndex < items.count
        {
            object = items[itemIndex].describe(kind: impliedKind)
        }
        return ManifestError(
            source: source, document: index, object: object, field: fieldPath(path), message: message)
    }

    /// `spec.ports[0].port` from a coding path.
    static func fieldPath(_ path: [CodingKey]) -> String {
        var text = ""
        for key in path {
            if let index = key.intValue, key.stringValue == "Index \(index)" || key.stringValue == "\(index)" {
                text += "[\(index)]"
            } else if key.stringValue == "super" {
                continue
            } else {
                text += text.isEmpty ? key.stringValue : "." + key.stringValue
            }
        }
        return text
    }

    static func typeName(_ type: Any.Type) -> String {
        if type == IntOrString.self { return "Int or String" }
        let name = String(describing: type)
        if name.hasPrefix("Dictionary") || name.hasSuffix("Mapping") { return "Object" }
        if name.hasPrefix("Array") || name.hasSuffix("Sequence") { return "Array" }
        if name.hasSuffix("Scalar") { return "a scalar" }
        return name
    }
}

// MARK: - Documents

/// One document, decodable any number of times (JSON bytes or a YAML node).
protocol ManifestDecoding {
    func decode<T: Decodable>(_ type: T.Type, userInfo: [CodingUserInfoKey: Any]) throws -> T
}

protocol ManifestDocument: ManifestDecoding {
    /// `true` for an empty YAML document (`---` followed by nothing, or only comments).
    var isEmpty: Bool { get }
}

struct JSONDocument: ManifestDocument {
    let data: Data

    var isEmpty: Bool { data.allSatisfy { $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 } }

    func decode<T: Decodable>(_ type: T.Type, userInfo: [CodingUserInfoKey: Any]) throws -> T {
        let decoder = JSONDecoder()
        decoder.userInfo = userInfo
        return try decoder.decode(type, from: data)
    }
}

struct YAMLDocument: ManifestDocument {
    let node: Yams.Node

    var isEmpty: Bool {
        if case .scalar(let scalar) = node, scalar.string.isEmpty || node.null != nil { return true }
        return false
    }

    func decode<T: Decodable>(_ type: T.Type, userInfo: [CodingUserInfoKey: Any]) throws -> T {
        try YAMLDecoder().decode(type, from: node, userInfo: userInfo)
    }
}

// MARK: - Decodable views of a document

/// The kind and name of an object, read without failing on anything.
struct ObjectPeek: Decodable {
    var kind: String?
    var name: String?
    var namespace: String?

    enum CodingKeys: String, CodingKey { case kind, metadata }
    enum MetaKeys: String, CodingKey { case name, namespace }

    init(from decoder: Decoder) throws {
        guard let c = try? decoder.container(keyedBy: CodingKeys.self) else { return }
        kind = (try? c.decodeIfPresent(String.self, forKey: .kind)) ?? nil
        if let meta = try? c.nestedContainer(keyedBy: MetaKeys.self, forKey: .metadata) {
            name = (try? meta.decodeIfPresent(String.self, forKey: .name)) ?? nil
            namespace = (try? meta.decodeIfPresent(String.self, forKey: .namespace)) ?? nil
        }
    }

    /// `"Service default/web"`, `"Node node-a"`; `kind` is used when the object has none.
    func describe(kind fallback: String?) -> String? {
        guard let kind = kind ?? fallback else {
            guard let name else { return nil }
            return "object " + (namespace.map { "\($0)/" } ?? "") + name
        }
        return ManifestItem.describe(kind: kind, name: name ?? "", namespace: namespace ?? "")
    }
}

/// The document's own kind/name, whether it is a mapping, and its items' kinds/names.
struct DocumentPeek: Decodable {
    var object: ObjectPeek
    var isMapping = false
    var isEmptyMapping = false
    var items: [ObjectPeek]?

    enum CodingKeys: String, CodingKey { case items }

    init(from decoder: Decoder) throws {
        object = try ObjectPeek(from: decoder)
        guard let all = try? decoder.container(keyedBy: AnyKey.self) else { return }
        isMapping = true
        isEmptyMapping = all.allKeys.isEmpty
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if var list = try? c.nestedUnkeyedContainer(forKey: .items) {
            var peeks: [ObjectPeek] = []
            while !list.isAtEnd {
                guard let peek = try? list.decode(ObjectPeek.self) else { break }
                peeks.append(peek)
            }
            items = peeks
        }
    }
}

/// `items` of a list document, each decoded by its own or the list's implied kind.
struct ManifestList: Decodable {
    var items: [ManifestItem]

    enum CodingKeys: String, CodingKey { case items }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        items = try c.decodeList(forKey: .items)
    }
}

/// One object of a known or skipped kind.
enum ManifestItem: Decodable {
    case service(Service)
    case endpointSlice(EndpointSlice)
    case node(Node)
    case skipped(String)

    /// userInfo key carrying the kind of items of a typed list (`String?`).
    static let impliedKindKey = CodingUserInfoKey(rawValue: "swiftlane.impliedKind")!

    enum CodingKeys: String, CodingKey { case kind }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let own = try c.decodeIfPresent(String.self, forKey: .kind)
        let implied = decoder.userInfo[ManifestItem.impliedKindKey] as? String
        guard let kind = own.flatMap({ $0.isEmpty ? nil : $0 }) ?? implied else {
            throw DecodingError.keyNotFound(
                CodingKeys.kind, .init(codingPath: c.codingPath, debugDescription: "List items must carry kind"))
        }
        switch kind {
        case "Service":
            var service = try Service(from: decoder)
            if service.metadata.namespace.isEmpty { service.metadata.namespace = "default" }
            self = .service(service)
        case "EndpointSlice":
            var slice = try EndpointSlice(from: decoder)
            if slice.metadata.namespace.isEmpty { slice.metadata.namespace = "default" }
            self = .endpointSlice(slice)
        case "Node":
            self = .node(try Node(from: decoder))
        default:
            let peek = try ObjectPeek(from: decoder)
            self = .skipped(ManifestItem.describe(kind: kind, name: peek.name ?? "", namespace: peek.namespace ?? ""))
        }
    }

    func add(to objects: inout ManifestObjects) {
        switch self {
        case .service(let service): objects.services.append(service)
        case .endpointSlice(let slice): objects.endpointSlices.append(slice)
        case .node(let node): objects.nodes.append(node)
        case .skipped(let text): objects.skipped.append(text)
        }
    }

    /// Kinds without a namespace; everything else defaults to `default` like kubectl does.
    static let clusterScopedKinds: Set<String> = [
        "Node", "Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
        "CustomResourceDefinition", "PriorityClass", "IngressClass", "RuntimeClass", "ServiceCIDR", "IPAddress",
        "APIService", "CSIDriver", "CSINode", "VolumeAttachment", "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    ]

    static func describe(kind: String, name: String, namespace: String) -> String {
        if clusterScopedKinds.contains(kind) { return "\(kind) \(name)" }
        return "\(kind) \(namespace.isEmpty ? "default" : namespace)/\(name)"
    }
}

/// Any JSON/YAML value, to say what was found where a decode failed.
indirect enum ManifestValue: Decodable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([ManifestValue])
    case object([String: ManifestValue])

    init(from decoder: Decoder) throws {
        if let keyed = try? decoder.container(keyedBy: AnyKey.self) {
            var object: [String: ManifestValue] = [:]
            for key in keyed.allKeys { object[key.stringValue] = try keyed.decode(ManifestValue.self, forKey: key) }
            self = .object(object)
            return
        }
        if var unkeyed = try? decoder.unkeyedContainer() {
            var array: [ManifestValue] = []
            while !unkeyed.isAtEnd { array.append(try unkeyed.decode(ManifestValue.self)) }
            self = .array(array)
            return
        }
        let single = try decoder.singleValueContainer()
        if single.decodeNil() {
            self = .null
        } else if let value = try? single.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? single.decode(Int.self) {
            self = .int(value)
        } else if let value = try? single.decode(Double.self) {
            self = .double(value)
        } else {
            self = .string(try single.decode(String.self))
        }
    }

    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "Bool"
        case .int: return "Int"
        case .double: return "Double"
        case .string: return "String"
        case .array: return "Array"
        case .object: return "Object"
        }
    }

    func value(at path: [CodingKey]) -> ManifestValue? {
        var current = self
        for key in path {
            switch current {
            case .object(let object):
                guard let next = object[key.stringValue] else { return nil }
                current = next
            case .array(let array):
                guard let index = key.intValue, index < array.count else { return nil }
                current = array[index]
            default:
                return nil
            }
        }
        return current
    }
}

struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?

    init(stringValue: String) {
        self.stringValue = stringValue
    }

    init?(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}
