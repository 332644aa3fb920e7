import ArgumentParser

/// The `swiftlane` command line: wiring only; the work lives in the libraries.
@main
struct Swiftlane: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftlane",
        abstract: "A kube-proxy replacement with an eBPF datapath.",
        discussion: """
            Swiftlane translates Kubernetes Services and EndpointSlices, with kube-proxy's \
            semantics, into BPF maps read by socket-level load-balancing programs attached \
            to a cgroup. The datapath stays programmed when the controller stops; only \
            `swiftlane cleanup` removes it.
            """,
        version: SwiftlaneVersion.current,
        subcommands: [RunCommand.self, DemoCommand.self, PlanCommand.self, DumpCommand.self, CleanupCommand.self, VersionCommand.self, ProbeCommand.self]
    )
}

enum SwiftlaneVersion {
    static let current = "0.1.0"
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version.")

    func run() {
        print("swiftlane \(SwiftlaneVersion.current)")
    }
}
