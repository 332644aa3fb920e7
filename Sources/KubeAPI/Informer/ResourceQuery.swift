import Foundation
import ServiceModel

/// A collection to list and watch: its path and selectors.
public struct ResourceQuery: Sendable, Equatable, CustomStringConvertible {
    /// e.g. `/api/v1/services`.
    public var path: String
    public var labelSelector: String?
    public var fieldSelector: String?

    public init(path: String, labelSelector: String? = nil, fieldSelector: String? = nil) {
        self.path = path
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
    }

    public var description: String {
        path + (labelSelector.map { " labels \($0)" } ?? "") + (fieldSelector.map { " fields \($0)" } ?? "")
    }

    /// kube-proxy's label selector for Services and EndpointSlices (A.1(1)): objects of
    /// headless Services and objects owned by another proxy are never seen. With
    /// `serviceProxyName`, only objects labelled as owned by that proxy are seen instead.
    public static func proxyLabelSelector(serviceProxyName: String?) -> String {
        let headless = "!" + WellKnown.headlessLabel
        guard let serviceProxyName else { return headless + ",!" + WellKnown.serviceProxyNameLabel }
        return headless + "," + WellKnown.serviceProxyNameLabel + "=" + serviceProxyName
    }

    public static func services(serviceProxyName: String? = nil) -> ResourceQuery {
        ResourceQuery(path: "/api/v1/services", labelSelector: proxyLabelSelector(serviceProxyName: serviceProxyName))
    }

    public static func endpointSlices(serviceProxyName: String? = nil) -> ResourceQuery {
        ResourceQuery(
            path: "/apis/discovery.k8s.io/v1/endpointslices",
            labelSelector: proxyLabelSelector(serviceProxyName: serviceProxyName))
    }

    /// Only the node named `name` (for its zone label and addresses).
    public static func node(named name: String) -> ResourceQuery {
        ResourceQuery(path: "/api/v1/nodes", fieldSelector: "metadata.name=" + name)
    }

    /// `path?query` for `parameters` plus the selectors, percent-encoded, sorted by name.
    public func pathAndQuery(_ parameters: [(String, String)]) -> String {
        var all = parameters
        if let labelSelector { all.append(("labelSelector", labelSelector)) }
        if let fieldSelector { all.append(("fieldSelector", fieldSelector)) }
        all.sort { $0.0 < $1.0 }
        return path + "?" + all.map { "\($0.0)=\(Self.encode($0.1))" }.joined(separator: "&")
    }

    /// RFC 3986 unreserved characters stay; everything else is %XX (so `!`, `/`, `,`, `=`
    /// in selectors are encoded as the API server's own clients encode them).
    static func encode(_ value: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
    }
}
