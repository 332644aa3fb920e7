import Foundation

/// An object, or one field of it, that Swiftlane refused, for the log line and the
/// `swiftlane_rejected_objects_total{kind, reason}` metric. Everything else keeps being
/// served: a refused field is skipped the way kube-proxy skips it (an invalid port, an
/// unparsable endpoint address), a refused object keeps its last good state.
public struct Rejection: Hashable, Sendable, CustomStringConvertible {
    /// `Service`, `EndpointSlice`, `Node`, or `Manifest` when the object is not known.
    public var kind: String
    /// `namespace/name` (or the file, for an unreadable manifest).
    public var object: String
    /// Field path inside the object, e.g. `spec.ports[3].port`; empty for the whole object.
    public var field: String
    /// The metric label: `size` (over the object size cap), `parse` (unreadable), or the
    /// field path with its indices removed (`spec.ports[].port`), which keeps the label
    /// set small whatever the objects hold.
    public var reason: String
    public var message: String

    public init(kind: String, object: String, field: String, reason: String, message: String) {
        self.kind = kind
        self.object = object
        self.field = field
        self.reason = reason
        self.message = message
    }

    /// A translator diagnostic about a field (its object is "Kind namespace/name").
    public init(_ diagnostic: Diagnostic) {
        let parts = diagnostic.object.split(separator: " ", maxSplits: 1).map(String.init)
        self.init(kind: parts.first ?? "", object: parts.count == 2 ? parts[1] : "", field: diagnostic.field,
                  reason: Self.reason(forField: diagnostic.field), message: diagnostic.message)
    }

    /// `spec.ports[3].port` → `spec.ports[].port`.
    public static func reason(forField field: String) -> String {
        var result = ""
        var inIndex = false
        for character in field {
            if character == "[" { inIndex = true; result.append(character) }
            else if character == "]" { inIndex = false; result.append(character) }
            else if !inIndex { result.append(character) }
        }
        return result.isEmpty ? "object" : result
    }

    public var description: String {
        "\(kind) \(object)\(field.isEmpty ? "" : ": " + field): \(message)"
    }
}
