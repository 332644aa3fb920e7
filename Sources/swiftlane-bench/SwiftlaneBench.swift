import ArgumentParser
import Datapath
import Foundation
import Glibc
import Logging
import NetLab
import Reconciler
import ServiceModel

/// Benchmarks that print figures (never pass/fail: this machine is shared and noisy, so
/// every figure is compared with a peer measured in the same run).
@main
struct SwiftlaneBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftlane-bench",
        abstract: "Swiftlane benchmarks: figures compared with a peer measured in the same run.",
        subcommands: [SocketLBBench.self]
    )
}

struct SocketLBBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "socket-lb",
        abstract: "connect() latency through a ClusterIP with 1, 1,000 and 10,000 services in the maps, against a direct connect.",
        discussion: """
            For each service count: TCP connect()+close() latency through a ClusterIP and \
            directly to the same backend (p50/p99, ratio), and the hook's own cost: a \
            connected-UDP connect() loop on one socket (no network round trip) through the \
            ClusterIP inside the cgroup, minus the same loop to the backend outside it. Each \
            measurement is repeated --rounds times, interleaved with its peer; the median \
            round is reported.
            """
    )

    @Option(name: .long, parsing: .upToNextOption, help: "Service counts to measure.")
    var services: [Int] = [1, 1_000, 10_000]

    @Option(name: .long, help: "connect() calls per TCP measurement.")
    var tcpIterations: Int = 3_000

    @Option(name: .long, help: "connect() calls per UDP measurement.")
    var udpIterations: Int = 200_000

    @Option(name: .long, help: "Interleaved rounds per figure (the median is reported).")
    var rounds: Int = 5

    @Option(name: .long, help: "Write the figures as JSON to this file as well.")
    var json: String?

    struct Row: Codable {
        var services: Int
        var programmingSeconds: Double
        var tcpViaClusterIP: LatencyStats
        var tcpDirect: LatencyStats
        var p50Ratio: Double
        var p99Ratio: Double
        var udpConnectViaHookNs: Double
        var udpConnectNoHookNs: Double
        /// The same loop inside the cgroup to a non-service address: the kernel's fixed
        /// cost of running a cgroup hook plus the program's miss path.
        var udpConnectMissNs: Double
        var hookCostNs: Double
        /// The connect4 program's own time per run as the kernel measures it
        /// (BPF_ENABLE_STATS), during the connected-UDP loop through the ClusterIP.
        var connectProgramNsPerRun: Double
        /// The same for the loop to a non-service address (the program's miss path).
        var connectProgramMissNsPerRun: Double
    }

    func run() throws {
        guard geteuid() == 0 else { throw ValidationError("needs root (namespaces, BPF)") }
        var logger = Logger(label: "swiftlane.bench")
        logger.logLevel = .warning
        ClusterLab.removeOrphans()
        let lab = try ClusterLab(backends: 1)
        let pinPath = "/sys/fs/bpf/swiftlane-bench-\(getpid())"
        defer {
            lab.teardown()
            SocketLoadBalancer.uninstall(pinPath: pinPath)
        }
        let backend = lab.backends[0]
        try lab.startProbeServers(tcpPort: 8080, udpPort: 8053)
        let datapath = try SocketLoadBalancer.install(DatapathOptions(pinPath: pinPath, cgroupPath: lab.clientCgroup.path), logger: logger)
        let statisticsFD = try SocketLoadBalancer.enableRunTimeStatistics()
        defer { close(statisticsFD) }
        var reconciler = Reconciler(adopting: try datapath.maps.readState())
        let inCgroup = lab.probeRunner()
        let outsideCgroup = lab.probeRunner(inCgroup: false)
        let backendAddress = IPAddress(sloppy: backend.ipv4)!
        var rows: [Row] = []

        print("socket LB connect() latency; backend \(backend.ipv4):8080 in another netns over veth; \(rounds) rounds, median shown")
        print("services  program(s)  via-VIP p50/p99 µs   direct p50/p99 µs   p50×   p99×   UDP connect VIP/no-hook/miss ns   hook ns  prog ns/run hit/miss")
        for count in services {
            let desired = (0..<count).flatMap { index in serviceFrontends(index: index, backend: backendAddress) }
            let start = ContinuousClock.now
            let report = reconciler.reconcile(desired, prune: true, maps: datapath.maps)
            let programming = ContinuousClock.now - start
            guard report.failed.isEmpty else { throw ValidationError("programming failed: \(report.failed.first!.error)") }

            let vip = IPAddress(v4: 0xC613_0000 | UInt32(count / 2 + 1)).description
            var viaVIP: [LatencyStats] = [], direct: [LatencyStats] = []
            var udpVIP: [Double] = [], udpNoHook: [Double] = [], udpMiss: [Double] = [], programNs: [Double] = [], missProgramNs: [Double] = []
            for _ in 0..<rounds {
                viaVIP.append(try tcpLatency(inCgroup, "\(vip):80"))
                direct.append(try tcpLatency(inCgroup, "\(backend.ipv4):8080"))
                let before = SocketLoadBalancer.programStatistics(pinPath: pinPath)["sl_connect4"]
                udpVIP.append(try udpConnectCost(inCgroup, "\(vip):53"))
                if let before, let after = SocketLoadBalancer.programStatistics(pinPath: pinPath)["sl_connect4"],
                   after.runCount > before.runCount {
                    programNs.append(Double(after.runTimeNs - before.runTimeNs) / Double(after.runCount - before.runCount))
                }
                udpNoHook.append(try udpConnectCost(outsideCgroup, "\(backend.ipv4):8053"))
                let missBefore = SocketLoadBalancer.programStatistics(pinPath: pinPath)["sl_connect4"]
                udpMiss.append(try udpConnectCost(inCgroup, "\(backend.ipv4):8053"))
                if let missBefore, let after = SocketLoadBalancer.programStatistics(pinPath: pinPath)["sl_connect4"],
                   after.runCount > missBefore.runCount {
                    missProgramNs.append(Double(after.runTimeNs - missBefore.runTimeNs) / Double(after.runCount - missBefore.runCount))
                }
            }
            let viaStats = median(viaVIP), directStats = median(direct)
            let udpVia = medianValue(udpVIP), udpPlain = medianValue(udpNoHook)
            let seconds = Double(programming.components.seconds) + Double(programming.components.attoseconds) / 1e18
            let p50Ratio = Double(viaStats.p50Ns) / Double(max(1, directStats.p50Ns))
            let p99Ratio = Double(viaStats.p99Ns) / Double(max(1, directStats.p99Ns))
            let row = Row(
                services: count, programmingSeconds: seconds, tcpViaClusterIP: viaStats, tcpDirect: directStats,
                p50Ratio: p50Ratio, p99Ratio: p99Ratio, udpConnectViaHookNs: udpVia, udpConnectNoHookNs: udpPlain,
                udpConnectMissNs: medianValue(udpMiss), hookCostNs: udpVia - udpPlain,
                connectProgramNsPerRun: programNs.isEmpty ? 0 : medianValue(programNs),
                connectProgramMissNsPerRun: missProgramNs.isEmpty ? 0 : medianValue(missProgramNs))
            rows.append(row)
            let micros: (UInt64) -> Double = { Double($0) / 1000 }
            let line = String(
                format: "%8d  %10.3f  %8.1f / %-8.1f  %8.1f / %-8.1f  %5.2f  %5.2f   %6.0f / %6.0f / %-6.0f     %6.0f  %6.0f / %-6.0f",
                row.services, row.programmingSeconds, micros(viaStats.p50Ns), micros(viaStats.p99Ns),
                micros(directStats.p50Ns), micros(directStats.p99Ns), p50Ratio, p99Ratio, udpVia, udpPlain,
                row.udpConnectMissNs, row.hookCostNs, row.connectProgramNsPerRun, row.connectProgramMissNsPerRun)
            print(line)
        }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(rows).write(to: URL(fileURLWithPath: json))
        }
    }

    /// Service number `index`: a ClusterIP in 198.19.0.0/16 with TCP 80 and UDP 53 (like a
    /// DNS Service), both served by the one lab backend.
    private func serviceFrontends(index: Int, backend: IPAddress) -> [DesiredFrontend] {
        let vip = IPAddress(v4: 0xC613_0000 | UInt32(index + 1))
        let ports: [(UInt16, UInt16, TransportProtocol)] = [(80, 8080, .tcp), (53, 8053, .udp)]
        return ports.map { port, backendPort, proto in
            DesiredFrontend(
                key: FrontendKey(address: vip, port: port, proto: proto), service: "bench/svc-\(index)", kind: .clusterIP,
                backends: [BackendAddress(address: backend, port: backendPort, proto: proto)])
        }
    }

    private func tcpLatency(_ runner: ProbeRunner, _ target: String) throws -> LatencyStats {
        let report = try runner.latency(target: target, proto: .tcp, iterations: tcpIterations, warmup: 200)
        guard report.failures.isEmpty else { throw ValidationError("connect to \(target) failed: \(report.failures)") }
        return report.latency
    }

    /// Mean ns per connect() of one connected UDP socket re-connected in a loop.
    private func udpConnectCost(_ runner: ProbeRunner, _ target: String) throws -> Double {
        let report = try runner.latency(target: target, proto: .udp, iterations: udpIterations, warmup: 1000)
        guard report.failures.isEmpty else { throw ValidationError("UDP connect to \(target) failed: \(report.failures)") }
        return Double(report.totalNs) / Double(max(1, report.ok))
    }

    private func median(_ stats: [LatencyStats]) -> LatencyStats {
        stats.sorted { $0.p50Ns < $1.p50Ns }[stats.count / 2]
    }

    private func medianValue(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
}
