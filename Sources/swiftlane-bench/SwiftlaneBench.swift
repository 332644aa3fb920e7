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
        subcommands: [SocketLBBench.self, ProgrammingBench.self, KubeAPIBench.self, ClusterIPPeersBench.self, NodePortBench.self, ForwardingBench.self]
    )
}

struct SocketLBBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "socket-lb",
        abstract: "connect() latency through a ClusterIP with 1, 1,000 and 10,000 services in the maps, against a direct connect.",
        discussion: """
            For each service count, --rounds times: (1) TCP connect() latency through a \
            ClusterIP and directly to the same backend, measured pair by pair in one process \
            (p50/p99; the ratio is the median of the rounds' ratios); (2) the hook's own cost: \
            connected-UDP connect() loops (no network round trip) on a socket of the hooked \
            cgroup to the ClusterIP and on a socket outside it to the backend, batches \
            interleaved in one process, median difference; (3) the connect4 program's own \
            ns per run from the kernel's run-time statistics, on a hit and on a miss. The \
            one backend sits in another network namespace behind a veth.
            """
    )

    @Option(name: .long, parsing: .upToNextOption, help: "Service counts to measure.")
    var services: [Int] = [1, 1_000, 10_000]

    @Option(name: .long, help: "connect() pairs (ClusterIP, direct) per TCP round.")
    var tcpIterations: Int = 1_000

    @Option(name: .long, help: "connect() calls per program-time measurement.")
    var udpIterations: Int = 100_000

    @Option(name: .long, help: "Interleaved rounds per figure (the median is reported).")
    var rounds: Int = 5

    @Option(name: .long, help: "Write the figures as JSON to this file as well.")
    var json: String?

    struct Row: Codable {
        var services: Int
        var programmingSeconds: Double
        /// TCP connect() through the ClusterIP and directly to the backend, interleaved
        /// pair by pair in one process (median round by p50).
        var tcpViaClusterIP: LatencyStats
        var tcpDirect: LatencyStats
        /// Median over rounds of each round's ratio.
        var p50Ratio: Double
        var p99Ratio: Double
        /// What the hook adds to one connect() (connected UDP, no round trip), measured in
        /// one process with batches interleaved (NetLab.HookCostProbe): median, min, max
        /// over rounds.
        var hookNs: Double
        var hookNsMin: Double
        var hookNsMax: Double
        /// The connect4 program's own time per run as the kernel measures it
        /// (BPF_ENABLE_STATS), on a hit (ClusterIP) and on a miss (any other address).
        var programNsPerHit: Double
        var programNsPerMiss: Double
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
        var reconciler = Reconciler(adopting: try datapath.maps.readState())
        let inCgroup = lab.probeRunner()
        let backendAddress = IPAddress(sloppy: backend.ipv4)!
        var rows: [Row] = []

        print("socket LB connect() latency; backend \(backend.ipv4):8080 in another netns over veth; \(rounds) rounds, median shown")
        print("services  program(s)  ClusterIP p50/p99 µs  direct p50/p99 µs   p50×   p99×   hook ns med (min–max)  prog ns/run hit/miss")
        for count in services {
            let desired = (0..<count).flatMap { index in serviceFrontends(index: index, backend: backendAddress) }
            let start = ContinuousClock.now
            let report = reconciler.reconcile(desired, prune: true, maps: datapath.maps)
            let programming = ContinuousClock.now - start
            guard report.failed.isEmpty else { throw ValidationError("programming failed: \(report.failed.first!.error)") }

            let vip = IPAddress(v4: 0xC613_0000 | UInt32(count / 2 + 1)).description
            var viaVIP: [LatencyStats] = [], direct: [LatencyStats] = []
            var hook: [Double] = [], programHit: [Double] = [], programMiss: [Double] = []
            for _ in 0..<rounds {
                let (throughVIP, toBackend) = try HookCostProbe.interleavedTCPConnect(
                    netns: lab.clientNetns, cgroup: lab.clientCgroup.path, first: "\(vip):80",
                    second: "\(backend.ipv4):8080", iterations: tcpIterations)
                viaVIP.append(throughVIP)
                direct.append(toBackend)
                hook.append(try HookCostProbe.measure(
                    netns: lab.clientNetns, cgroup: lab.clientCgroup.path, hookedTarget: "\(vip):53",
                    plainTarget: "\(backend.ipv4):8053").hookNs)
                // Run-time statistics cost two clock reads per program run: on only while
                // the program's own time is measured.
                let statisticsFD = try SocketLoadBalancer.enableRunTimeStatistics()
                defer { close(statisticsFD) }
                programHit.append(try programNsPerRun(pinPath: pinPath) { try udpConnectLoop(inCgroup, "\(vip):53") })
                programMiss.append(try programNsPerRun(pinPath: pinPath) { try udpConnectLoop(inCgroup, "\(backend.ipv4):8053") })
            }
            let row = Row(
                services: count,
                programmingSeconds: Double(programming.components.seconds) + Double(programming.components.attoseconds) / 1e18,
                tcpViaClusterIP: median(viaVIP), tcpDirect: median(direct),
                p50Ratio: medianValue(zip(viaVIP, direct).map { Double($0.p50Ns) / Double(max(1, $1.p50Ns)) }),
                p99Ratio: medianValue(zip(viaVIP, direct).map { Double($0.p99Ns) / Double(max(1, $1.p99Ns)) }),
                hookNs: medianValue(hook), hookNsMin: hook.min() ?? 0, hookNsMax: hook.max() ?? 0,
                programNsPerHit: medianValue(programHit), programNsPerMiss: medianValue(programMiss))
            rows.append(row)
            let micros: (UInt64) -> Double = { Double($0) / 1000 }
            print(String(
                format: "%8d  %10.3f  %8.1f / %-8.1f  %8.1f / %-8.1f  %5.2f  %5.2f   %5.0f (%3.0f–%3.0f)   %5.0f / %-5.0f",
                row.services, row.programmingSeconds, micros(row.tcpViaClusterIP.p50Ns), micros(row.tcpViaClusterIP.p99Ns),
                micros(row.tcpDirect.p50Ns), micros(row.tcpDirect.p99Ns), row.p50Ratio, row.p99Ratio,
                row.hookNs, row.hookNsMin, row.hookNsMax, row.programNsPerHit, row.programNsPerMiss))
        }
        try BenchOutput.writeJSON(rows, to: json)
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

    /// A connected-UDP connect() loop on one socket (in a probe process in the cgroup).
    private func udpConnectLoop(_ runner: ProbeRunner, _ target: String) throws {
        let report = try runner.latency(target: target, proto: .udp, iterations: udpIterations, warmup: 1000)
        guard report.failures.isEmpty else { throw ValidationError("UDP connect to \(target) failed: \(report.failures)") }
    }

    /// ns per run of the connect4 program while `body` runs (kernel run-time statistics).
    private func programNsPerRun(pinPath: String, _ body: () throws -> Void) throws -> Double {
        let before = SocketLoadBalancer.programStatistics(pinPath: pinPath)["sl_connect4"]
        try body()
        guard let before, let after = SocketLoadBalancer.programStatistics(pinPath: pinPath)["sl_connect4"],
              after.runCount > before.runCount else { return 0 }
        return Double(after.runTimeNs - before.runTimeNs) / Double(after.runCount - before.runCount)
    }

    private func median(_ stats: [LatencyStats]) -> LatencyStats {
        stats.sorted { $0.p50Ns < $1.p50Ns }[stats.count / 2]
    }

    private func medianValue(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
}
