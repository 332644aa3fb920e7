import ArgumentParser
import Controller
import Datapath
import Foundation

struct DumpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Print what the live BPF maps serve, in the same schema as `plan`.",
        discussion: """
            Reads the pinned maps (no controller needed) and rebuilds every frontend: \
            verdict, backends of the active set, the node's own set for \
            externalTrafficPolicy=Local, affinity, source ranges, and the health-check \
            listeners. After a sync it equals `swiftlane plan` for the same objects. \
            --counters adds the datapath's outcome counters.
            """
    )

    @Option(name: .long, help: "Configuration file whose bpfPinPath to read.")
    var config: String?

    @Option(name: .long, help: "bpffs directory of the maps (overrides --config).")
    var pinPath: String?

    @Option(name: [.customShort("o"), .long], help: "Output format: json or table.")
    var output: OutputFormat = .json

    @Flag(name: .long, help: "Also print the datapath outcome counters.")
    var counters = false

    func run() throws {
        let path = try pinPath ?? config.map { try SwiftlaneConfiguration.load(path: $0).bpfPinPath } ?? DatapathOptions.defaultPinPath
        let maps: KernelLoadBalancerMaps
        do {
            maps = try KernelLoadBalancerMaps(pinPath: path)
        } catch {
            throw ValidationError("no Swiftlane datapath under \(path): \(error)")
        }
        print(try maps.readState().servedPlan.rendered(output))
        if counters {
            let lines = maps.outcomeCounters().sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            print(lines.joined(separator: "\n"))
        }
    }
}
