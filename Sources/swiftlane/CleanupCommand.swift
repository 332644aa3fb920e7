import ArgumentParser
import Controller
import Datapath

struct CleanupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup",
        abstract: "Remove the datapath: detach every program and remove every pin.",
        discussion: "Service traffic is no longer translated afterwards. Use it to uninstall, or to start over after an incompatible upgrade."
    )

    @Option(name: .long, help: "Configuration file whose bpfPinPath to clean.")
    var config: String?

    @Option(name: .long, help: "bpffs directory to clean (overrides --config).")
    var pinPath: String?

    func run() throws {
        let path = try pinPath ?? config.map { try SwiftlaneConfiguration.load(path: $0).bpfPinPath } ?? DatapathOptions.defaultPinPath
        let removed = SocketLoadBalancer.uninstall(pinPath: path)
        print(removed.isEmpty ? "nothing installed under \(path)" : "removed under \(path): " + removed.joined(separator: " "))
    }
}
