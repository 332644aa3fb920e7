import ArgumentParser
import Controller
import Datapath
import Foundation
import Glibc
import Logging
import NetLab
import ServiceModel

/// Connections/s and UDP round trips/s from an external client through node A's NodePort
/// to a pod on node A (local) and on node B (remote, source-NATed), through Swiftlane's tc
/// datapath and through kube-proxy-style iptables DNAT (+ MASQUERADE) on the same lab.
struct NodePortBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodeport",
        abstract: "NodePort connections/s and UDP round trips/s: Swiftlane tc (SNAT mode) vs iptables DNAT, local and remote pod.",
        discussion: """
            A NetLab.NodeLab: external client -- node A -- node B, one pod behind each node. \
            For each backend (local, remote) and each round, Swiftlane's tc programs and then \
            kube-proxy-style iptables rules (nat PREROUTING DNAT to the pod, POSTROUTING \
            MASQUERADE as kube-proxy does for externalTrafficPolicy=Cluster) serve the same \
            NodePort in turn; the client measures a TCP connect() loop (connect until \
            established, close) and sequential UDP request/reply exchanges. Medians over \
            rounds. One flow at a time: these are latency-bound rates on a shared 2-core \
            machine, for comparison within one run only. XDP and DSR are not implemented yet. \
            Remote flows are source-NATed to one node address and one backend, so a round \
            needs that many free SNAT ports (4536 by default; a closed flow's port is reused \
            after 1 s idle): keep --connections below that.
            """
    )

    @Option(name: .long, help: "TCP connects per round.")
    var connections: Int = 1_000

    @Option(name: .long, help: "UDP exchanges per round.")
    var exchanges: Int = 1_000

    @Option(name: .long, help: "Rounds (each datapath once per round, alternating).")
    var rounds: Int = 3

    @Option(name: .long, help: "Write the figures as JSON to this file as well.")
    var json: String?

    struct Measurement: Codable {
        var datapath: String
        var backend: String
        var connectionsPerSecond: Double
        var connect: LatencyStats
        var udpRoundTripsPerSecond: Double
        var udpRoundTrip: LatencyStats
    }

    func run() throws {
        guard geteuid() == 0 else { throw ValidationError("needs root (namespaces, BPF, iptables)") }
        var logger = Logger(label: "swiftlane.bench")
        logger.logLevel = .error
        ClusterLab.removeOrphans()
        let lab = try NodeLab(podsOnA: 1, podsOnB: 1)
        let pinPath = "/sys/fs/bpf/swiftlane-bench-np-\(getpid())"
        let devices = [lab.externalDevice, lab.interNodeDevice]
        let options = NodePortOptions(pinPath: pinPath, devices: devices, networkNamespace: "/run/netns/" + lab.nodeA.netns)
        defer {
            lab.teardown()
            SocketLoadBalancer.uninstall(pinPath: pinPath)
        }
        for pod in lab.podsOnA + lab.podsOnB { try lab.startProbeServer(on: pod, tcpPort: 8080, udpPort: 8053) }
        _ = try NodePortDatapath.install(options, logger: logger)
        let syncer = try ProxySyncer(nodeName: "node-a", maps: try KernelLoadBalancerMaps(pinPath: pinPath), logger: logger)
        let client = lab.clientProbe()
        let tcpTarget = "\(lab.externalIPv4):30080", udpTarget = "\(lab.externalIPv4):30053"
        var results: [Measurement] = []

        print("NodePort from an external client: Swiftlane tc (SNAT mode) vs iptables DNAT, medians over \(rounds) rounds")
        print("datapath    backend  conn/s    connect p50/p99 µs   UDP rt/s  UDP rt p50/p99 µs")
        for (label, pod) in [("local", lab.podsOnA[0]), ("remote", lab.podsOnB[0])] {
            let report = syncer.sync(try ManifestDecoder.decode(Data(Self.manifest(pod: pod).utf8), source: "bench.yaml"))
            guard report.failures.isEmpty else { throw ValidationError("sync failed: \(report.failures)") }
            var perDatapath: [String: [Measurement]] = [:]
            for _ in 0..<rounds {
                perDatapath["swiftlane", default: []].append(
                    try measure("swiftlane", label, client: client, tcpTarget: tcpTarget, udpTarget: udpTarget))
                NodePortDatapath.uninstall(devices: devices, networkNamespace: options.networkNamespace)
                try iptables(lab, pod: pod, add: true)
                let iptablesResult = Result(catching: {
                    try measure("iptables", label, client: client, tcpTarget: tcpTarget, udpTarget: udpTarget) })
                try iptables(lab, pod: pod, add: false)
                perDatapath["iptables", default: []].append(try iptablesResult.get())
                _ = try NodePortDatapath.install(options, logger: logger)
            }
            for name in ["swiftlane", "iptables"] {
                let sorted = (perDatapath[name] ?? []).sorted { $0.connectionsPerSecond < $1.connectionsPerSecond }
                guard !sorted.isEmpty else { continue }
                let median = sorted[sorted.count / 2]
                results.append(median)
                print(String(format: "%-11@ %-7@ %8.0f  %8.1f / %-8.1f  %8.0f  %8.1f / %-8.1f", name, label,
                             median.connectionsPerSecond, Double(median.connect.p50Ns) / 1000, Double(median.connect.p99Ns) / 1000,
                             median.udpRoundTripsPerSecond, Double(median.udpRoundTrip.p50Ns) / 1000,
                             Double(median.udpRoundTrip.p99Ns) / 1000))
            }
        }
        try BenchOutput.writeJSON(results, to: json)
    }

    private func measure(_ datapath: String, _ backend: String, client: ProbeRunner, tcpTarget: String, udpTarget: String) throws
        -> Measurement
    {
        let tcp = try client.latency(target: tcpTarget, proto: .tcp, iterations: connections, warmup: 50)
        guard tcp.ok == connections else { throw ValidationError("\(datapath) \(backend): TCP failures \(tcp.failures)") }
        let start = ContinuousClock.now
        let udp = try client.udp(target: udpTarget, count: exchanges)
        let elapsed = ContinuousClock.now - start
        guard udp.ok == exchanges else { throw ValidationError("\(datapath) \(backend): UDP errors \(udp.errors) timeouts \(udp.timeouts)") }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Measurement(datapath: datapath, backend: backend,
                           connectionsPerSecond: Double(tcp.ok) / (Double(tcp.totalNs) / 1e9), connect: tcp.latency,
                           udpRoundTripsPerSecond: Double(udp.ok) / seconds, udpRoundTrip: udp.roundTripLatency)
    }

    /// kube-proxy's shape for an eTP=Cluster NodePort, reduced to one endpoint.
    private func iptables(_ lab: NodeLab, pod: NodeLabPod, add: Bool) throws {
        if !add {
            try lab.exec(["iptables", "-t", "nat", "-F"], netns: lab.nodeA.netns)
            return
        }
        for (proto, port, target) in [("tcp", "30080", "8080"), ("udp", "30053", "8053")] {
            try lab.exec(["iptables", "-t", "nat", "-A", "PREROUTING", "-d", lab.externalIPv4, "-p", proto, "--dport", port,
                          "-j", "DNAT", "--to-destination", "\(pod.ipv4):\(target)"], netns: lab.nodeA.netns)
        }
        try lab.exec(["iptables", "-t", "nat", "-A", "POSTROUTING", "-d", pod.ipv4, "-j", "MASQUERADE", "--random-fully"],
                     netns: lab.nodeA.netns)
    }

    private static func manifest(pod: NodeLabPod) -> String {
        """
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: bench}
        spec:
          type: NodePort
          clusterIP: 10.96.0.10
          ports:
          - {name: http, port: 80, protocol: TCP, nodePort: 30080}
          - {name: dns, port: 53, protocol: UDP, nodePort: 30053}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-1, namespace: bench, labels: {kubernetes.io/service-name: web}}
        addressType: IPv4
        endpoints:
        - {addresses: ["\(pod.ipv4)"], conditions: {ready: true}, nodeName: \(pod.name.hasPrefix("a") ? "node-a" : "node-b")}
        ports:
        - {name: http, port: 8080, protocol: TCP}
        - {name: dns, port: 8053, protocol: UDP}
        """
    }
}
