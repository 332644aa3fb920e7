import ArgumentParser
import Controller
import Datapath
import Foundation

/// What `dump` shows.
enum DumpView: String, ExpressibleByArgument, CaseIterable {
    case services, backends, affinity, conntrack, dsr
}

struct DumpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Print what the live BPF maps hold: services, backends, affinity, conntrack or dsr.",
        discussion: """
            Reads the pinned maps (no controller needed).

            services (the default): every frontend rebuilt from the maps, in the same \
            schema as `plan`: verdict, backends of the active set, the node's own set for \
            externalTrafficPolicy=Local, affinity, source ranges, and the health-check \
            listeners. After a sync it equals `swiftlane plan` for the same objects.

            backends: every backend entry (id, address, protocol) with the frontends whose \
            active set uses it.

            affinity: the ClientIP session-affinity records: client network namespace \
            (cookie), frontend, backend, seconds since the last new connection, and \
            whether the record has expired.

            conntrack: the socket path keeps no per-packet connection tracking. A \
            connect()ed socket carries its translation in its own socket storage, which \
            dies with the socket and cannot be listed from outside. What can be listed is \
            the socket reverse-NAT table of unconnected UDP sockets (socket cookie, \
            backend, frontend): this view prints it.

            dsr: the direct-server-return flows whose backend lives on this node \
            (nodePort.mode: dsr on the node that received them): backend, client, the \
            frontend the replies leave with, seconds since the last packet, closing.

            --counters adds the datapath's outcome counters.
            """
    )

    @Argument(help: "What to print: services, backends, affinity, conntrack or dsr.")
    var view: DumpView = .services

    @Option(name: .long, help: "Configuration file whose bpfPinPath to read.")
    var config: String?

    @Option(name: .long, help: "bpffs directory of the maps (overrides --config).")
    var pinPath: String?

    @Option(name: [.customShort("o"), .long], help: "Output format: json or table.")
    var output: OutputFormat = .json

    @Flag(name: .long, help: "Also print the datapath outcome counters.")
    var counters = false

    func run() throws {
        let path =
            try pinPath ?? config.map { try SwiftlaneConfiguration.load(path: $0).bpfPinPath }
            ?? DatapathOptions.defaultPinPath
        let maps: KernelLoadBalancerMaps
        do {
            maps = try KernelLoadBalancerMaps(pinPath: path)
        } catch {
            throw ValidationError("no Swiftlane datapath under \(path): \(error)")
        }
        switch view {
        case .services:
            print(try maps.readState().servedPlan.rendered(output))
        case .backends:
            let rows = try maps.backendViews()
            print(
                output == .json
                    ? try Self.json(rows)
                    : Self.table(
                        ["ID", "BACKEND", "PROTO", "FRONTENDS"],
                        rows.map {
                            [
                                "\($0.id)", $0.address, $0.protocol,
                                $0.frontends.isEmpty ? "-" : $0.frontends.joined(separator: "; "),
                            ]
                        }))
        case .affinity:
            let rows = try maps.affinityViews()
            print(
                output == .json
                    ? try Self.json(rows)
                    : Self.table(
                        ["CLIENT NETNS", "FRONTEND", "PROTO", "BACKEND", "LAST USED", "TIMEOUT", "STATE"],
                        rows.map { row in
                            [
                                "\(row.clientNetnsCookie)", row.frontend ?? "(rev-NAT id gone)", row.protocol,
                                row.backend ?? "id \(row.backendID) (gone)",
                                String(format: "%.1fs ago", row.lastUsedSecondsAgo),
                                row.timeoutSeconds.map { "\($0)s" } ?? "-", row.expired ? "expired" : "active",
                            ]
                        }))
        case .conntrack:
            let rows = maps.socketReverseNATViews()
            if output == .json {
                print(try Self.json(SocketReverseNATDump(entries: rows)))
            } else {
                print(
                    "# socket reverse-NAT of unconnected UDP sockets; connect()ed sockets keep theirs in socket storage"
                )
                print(
                    Self.table(
                        ["SOCKET COOKIE", "BACKEND", "FRONTEND", "REV-NAT ID"],
                        rows.map { ["\($0.socketCookie)", $0.backend, $0.frontend, "\($0.revNatID)"] }))
            }
        case .dsr:
            let rows = try KernelLoadBalancerMaps.dsrFlowViews(pinPath: path)
            print(
                output == .json
                    ? try Self.json(rows)
                    : Self.table(
                        ["BACKEND", "CLIENT", "FRONTEND", "PROTO", "LAST SEEN", "STATE"],
                        rows.map {
                            [$0.backend, $0.client, $0.frontend, $0.protocol, String(format: "%.1fs ago", $0.lastSeenSecondsAgo),
                             $0.closing ? "closing" : "open"]
                        }))
        }
        if counters {
            let lines = maps.outcomeCounters().sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            print(lines.joined(separator: "\n"))
        }
    }

    /// The conntrack view as JSON: says what the entries are, since the name promises more.
    struct SocketReverseNATDump: Encodable {
        var table = "socket-reverse-nat"
        var note = "unconnected UDP sockets only; connect()ed sockets keep their translation in socket storage"
        var entries: [SocketReverseNATView]
    }

    static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let text = String(decoding: try encoder.encode(value), as: UTF8.self)
        return text == "[\n\n]" ? "[]" : text  // Foundation pretty-prints an empty array on three lines
    }

    /// Columns padded to their widest cell.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
