import ArgumentParser
import Controller
import Datapath
import Foundation
import Logging

struct CleanupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup",
        abstract: "Remove the datapath: detach every program, remove every pin, and check that nothing is left.",
        discussion: """
            Removes Swiftlane's tc filters from every device of the node, every pinned link \
            (which detaches its program from the cgroup) and every pinned map under the \
            pin path, then the directory. It then waits (at most \
            --wait seconds) until the kernel has released every program and map the pins \
            held, and fails, naming the processes that still hold them, if some remain: \
            a running `swiftlane run` keeps its maps until it exits, so stop the \
            controller (delete the DaemonSet) first. A clsact qdisc that Swiftlane created is \
            removed too, unless another tool has attached filters to it since; one that \
            existed before Swiftlane is left as it was. Service traffic is no longer \
            translated afterwards. Use it to uninstall, or to start over after an \
            incompatible upgrade.
            """
    )

    @Option(name: .long, help: "Configuration file whose bpfPinPath to clean.")
    var config: String?

    @Option(name: .long, help: "bpffs directory to clean (overrides --config).")
    var pinPath: String?

    @Option(name: .long, help: "Seconds to wait for the kernel to release the programs and maps.")
    var wait: Double = 10

    func run() throws {
        let path =
            try pinPath ?? config.map { try SwiftlaneConfiguration.load(path: $0).bpfPinPath }
            ?? DatapathOptions.defaultPinPath
        // Devices without a clsact qdisc answer the tc probes with an error libbpf would
        // print; only real failures, reported below, matter here.
        var quiet = Logger(label: "swiftlane.cleanup")
        quiet.logLevel = .critical
        DatapathInspection.forwardLibbpfOutput(to: quiet)
        let owned = DatapathInspection.ownedObjects(pinPath: path)
        // tc filters and XDP links first: they run programs that use the pinned maps. Then
        // the qdiscs Swiftlane created (the record of them is pinned under the path), then
        // the pins.
        let filters = NodePortDatapath.uninstall(devices: DatapathInspection.networkDevices(), pinPath: path)
            .map { ($0.hasSuffix("/xdp") ? "xdp:" : "tc:") + $0 }
        let qdiscs = QdiscOwnership.removeOwned(pinPath: path)
        for device in qdiscs.kept {
            print("kept the clsact qdisc Swiftlane created on \(device)")
        }
        let removed = filters + qdiscs.removed.map { "qdisc:" + $0 } + SocketLoadBalancer.uninstall(pinPath: path)
        print(
            removed.isEmpty
                ? "nothing installed under \(path)" : "removed under \(path): " + removed.joined(separator: " "))

        // Dropping the last pin of a link detaches it, but the kernel frees links (and so
        // programs and maps) in deferred work, a moment later.
        let deadline = Date().addingTimeInterval(wait)
        var left = DatapathInspection.stillLoaded(owned)
        while !left.isEmpty && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
            left = DatapathInspection.stillLoaded(owned)
        }
        var problems: [String] = []
        if !left.isEmpty {
            let holders = DatapathInspection.holders(of: left)
            problems.append(
                "still loaded after \(wait)s: program ids \(left.programIDs.sorted()), map ids \(left.mapIDs.sorted())"
                    + (holders.isEmpty ? "" : "; held open by " + holders.joined(separator: ", ")))
        }
        if FileManager.default.fileExists(atPath: path) {
            let rest = (try? FileManager.default.subpathsOfDirectory(atPath: path)) ?? []
            problems.append("\(path) is not empty: " + rest.joined(separator: " "))
        }
        guard problems.isEmpty else {
            throw CleanupIncomplete(problems: problems)
        }
        if !owned.isEmpty {
            print(
                "released: \(owned.programIDs.count) programs, \(owned.mapIDs.count) maps; nothing of Swiftlane is left under \(path)"
            )
        }
    }

    struct CleanupIncomplete: Error, CustomStringConvertible {
        var problems: [String]
        var description: String { "cleanup incomplete:\n" + problems.joined(separator: "\n") }
    }
}
