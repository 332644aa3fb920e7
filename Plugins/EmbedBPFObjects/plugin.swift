import Foundation
import PackagePlugin

/// Compiles every `bpf/*.c` with clang's BPF target and embeds each object into the
/// target it is applied to, so the `swiftlane` binary carries its datapath and no
/// compiled object is ever committed. Headers under `bpf/include` are declared as
/// inputs, so editing the shared ABI header rebuilds every object.
@main
struct EmbedBPFObjects: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let bpfDirectory = context.package.directoryURL.appending(path: "bpf")
        let includeDirectory = bpfDirectory.appending(path: "include")
        let fileManager = FileManager.default
        let sources = try fileManager.contentsOfDirectory(at: bpfDirectory, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "c" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        var headers: [URL] = []
        if let walker = fileManager.enumerator(at: includeDirectory, includingPropertiesForKeys: nil) {
            for case let url as URL in walker where url.pathExtension == "h" { headers.append(url) }
        }
        let embedder = try context.tool(named: "bpf-embed")
        // The Swift toolchain ships a clang with the BPF backend; Debian's clang works too.
        let clang = (try? context.tool(named: "clang").url.path) ?? "/usr/bin/clang"
        return sources.map { source in
            let stem = source.deletingPathExtension().lastPathComponent
            let output = context.pluginWorkDirectoryURL.appending(path: "BPFObject+\(stem).swift")
            return .buildCommand(
                displayName: "Compiling BPF object \(stem).o",
                executable: embedder.url,
                arguments: [clang, source.path, includeDirectory.path, output.path, stem],
                inputFiles: [source] + headers,
                outputFiles: [output]
            )
        }
    }
}
