import ArgumentParser
import Controller
import Foundation
import ServiceModel

/// `-o json|table`, shared by plan and dump.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case json, table
}

extension LoadBalancerPlan {
    func rendered(_ format: OutputFormat) -> String {
        switch format {
        case .json: return jsonString(pretty: true)
        case .table: return tableString()
        }
    }
}

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Compute offline what would be programmed for the objects in some files.",
        discussion: """
            Applies kube-proxy's rules to the Service, EndpointSlice and (optionally) Node \
            objects in the files, as the proxy on node --node would, and prints every \
            frontend with its verdict and backends, and the health-check listeners. No \
            kernel and no cluster are involved. `swiftlane dump` prints the same schema from \
            the live maps. Problems kube-proxy would log are printed on stderr.
            """
    )

    @Option(name: .long, help: "The node this proxy runs as (endpoint locality; a Node object of this name supplies labels and addresses).")
    var node: String

    @Option(name: .long, help: "Node labels as k=v,k=v (e.g. topology.kubernetes.io/zone=a); added to those of a Node object.")
    var nodeLabels: String?

    @Option(name: .long, help: "Configuration file for nodePortAddresses, clusterCIDR, masqueradeAll and featureGates.")
    var config: String?

    @Option(name: [.customShort("f"), .long], parsing: .upToNextOption, help: "Manifest files or directories (YAML, JSON, multi-document, List).")
    var file: [String]

    @Option(name: [.customShort("o"), .long], help: "Output format: json or table.")
    var output: OutputFormat = .json

    func run() throws {
        let options = try config.map { try SwiftlaneConfiguration.load(path: $0).translation } ?? TranslationOptions()
        var objects = ManifestObjects()
        for path in file {
            for source in try Self.manifestFiles(at: path) {
                let data = try Data(contentsOf: URL(fileURLWithPath: source))
                objects.append(contentsOf: try ManifestDecoder.decode(data, source: source))
            }
        }
        var proxyNode = objects.nodes.first { $0.metadata.name == node }.map(ProxyNode.init(node:))
            ?? ProxyNode(name: node, labels: [:], addresses: [], podCIDRs: [])
        for pair in (nodeLabels ?? "").split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--node-labels: \"\(pair)\" is not k=v") }
            proxyNode.labels[parts[0]] = parts[1]
        }
        let result = Translator.plan(services: objects.services, endpointSlices: objects.endpointSlices, node: proxyNode, options: options)
        for diagnostic in result.diagnostics {
            FileHandle.standardError.write(Data("warning: \(diagnostic)\n".utf8))
        }
        print(result.plan.rendered(output))
    }

    /// A file, or the manifest files of a directory (sorted).
    static func manifestFiles(at path: String) throws -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ValidationError("\(path): no such file or directory")
        }
        guard isDirectory.boolValue else { return [path] }
        return try FileManager.default.contentsOfDirectory(atPath: path).sorted()
            .filter(DirectorySource.isManifest).map { path + "/" + $0 }
    }
}
