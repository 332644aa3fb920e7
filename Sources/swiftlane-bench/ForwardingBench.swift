import ArgumentParser
import Controller
import Datapath
import Foundation
import Glibc
import Logging
import NetLab
import ServiceModel

/// What one node can forward through a NodePort, measured without sockets on either end:
/// the kernel generates the frames (an XDP loop) and a native XDP sink counts what
/// reaches the backends, so the node in between is what limits the rate. Swiftlane's tc and
/// XDP datapaths (SNAT and DSR) against kube-proxy's iptables rules, each on a fresh copy of
/// the same topology, in the same run.
struct ForwardingBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forwarding",
        abstract: "One node's NodePort forwarding rate (packets/s, new flows/s): Swiftlane tc, XDP generic/native, DSR vs iptables.",
        discussion: """
            A NetLab.ForwardingLab: generator -- node -- sink, the NodePort's --backends \
            backends routed by the node to the sink, all remote (the node source-NATs them, \
            or in DSR mode adds its option). The load is a closed loop of frames in XDP \
            programs: the generator writes each frame from a template and sends it to the \
            node, a native XDP sink counts those that reach the backends and sends them back \
            to the generator. No socket, skb or page allocation on either end; all stages \
            share one core (NAPI in softirq), so the node's cost per packet sets the rate, \
            plus the loop's own: "direct" (generator straight to the sink) measures that, \
            and a second table subtracts it, giving the node's own ns/packet and the \
            packets/s one core of the node would forward. \
            Per datapath and round, on a fresh lab: (1) established flows: 64-byte UDP \
            frames over --flows 5-tuples, after a warm-up that creates their NAT state, \
            for --seconds; (2) new flows: TCP SYNs, every one a new 5-tuple (so each makes \
            the node create conntrack and SNAT state), for --new-flow-seconds. Reported: \
            frames/s reaching the backends (min/median/max over rounds), what was offered, \
            and ratios of medians. kube-proxy's peer: its nat-table layout for a NodePort \
            (KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXT, KUBE-SVC with random probabilities, \
            KUBE-SEP DNAT, KUBE-POSTROUTING MASQUERADE --random-fully), loaded with \
            iptables-restore. Everything shares this machine's cores with whatever else \
            runs: compare figures within one run only.
            """
    )

    @Option(name: .long, help: "Seconds of established-flow load per datapath and round.")
    var seconds: Double = 2

    @Option(name: .long, help: "Seconds of new-flow load (TCP SYNs) per datapath and round; keep the flows below conntrack's capacity (nf_conntrack_max).")
    var newFlowSeconds: Double = 0.25

    @Option(name: .long, help: "Established UDP flows (source ports).")
    var flows: Int = 64

    @Option(name: .long, help: "Backends of the NodePort (1-62).")
    var backends: Int = 16

    @Option(name: .long, help: "Rounds (each datapath once per round, in turn).")
    var rounds: Int = 3

    @Option(name: .long, parsing: .upToNextOption, help: "Datapaths to measure (default: all).")
    var datapaths: [String] = Contender.allCases.map(\.rawValue)

    @Option(name: .long, help: "Write the figures as JSON to this file as well.")
    var json: String?

    enum Contender: String, CaseIterable {
        case tc = "swiftlane-tc"
        case xdpGeneric = "swiftlane-xdp-generic"
        case xdpNative = "swiftlane-xdp-native"
        case dsr = "swiftlane-tc-dsr"
        case iptables
        /// The loop without a node: generator straight to the sink. Its cost per packet is
        /// subtracted from every other's to give the node's own.
        case direct

        var acceleration: NodePortOptions.Acceleration? {
            switch self {
            case .tc, .dsr: NodePortOptions.Acceleration.none
            case .xdpGeneric: .generic
            case .xdpNative: .native
            case .iptables, .direct: nil
            }
        }
    }

    struct Sample: Codable {
        var datapath: String
        var round: Int
        /// Established UDP flows: frames/s that reached the backends, and frames/s offered.
        var packetsPerSecond: Double
        var packetsOfferedPerSecond: Double
        /// New flows (TCP SYNs, each a new 5-tuple): first packets/s that reached the backends.
        var newFlowsPerSecond: Double
        var newFlowsOfferedPerSecond: Double
        /// Frames the sink saw that were not addressed to a backend (untranslated): should be 0.
        var untranslated: UInt64
        /// Swiftlane outcome counters that moved during the round (empty for iptables).
        var counters: [String: UInt64] = [:]
    }

    struct Summary: Codable {
        var datapath: String
        var packetsPerSecond: NodePortBench.Spread
        var newFlowsPerSecond: NodePortBench.Spread
    }

    struct Figures: Codable {
        var samples: [Sample]
        var summaries: [Summary]
        /// "xdp-native/iptables" → ratio of medians.
        var packetsPerSecondRatios: [String: Double]
        var newFlowsPerSecondRatios: [String: Double]
        /// With the direct floor measured: the node's own nanoseconds per packet (median
        /// of the datapath minus median of direct), and ratios of those (the peer's cost
        /// over the datapath's: how many times as many packets/s one core of the node
        /// forwards).
        var nodeNanosecondsPerPacket: [String: Double]?
        var nodeNanosecondsPerNewFlow: [String: Double]?
        var nodePacketsPerSecondRatios: [String: Double]?
        var nodeNewFlowsPerSecondRatios: [String: Double]?
        var backends: Int
        var flows: Int
    }

    static let udpNodePort = ForwardingLab.udpNodePort
    static let tcpNodePort = ForwardingLab.tcpNodePort

    func run() throws {
        guard geteuid() == 0 else { throw ValidationError("needs root (namespaces, BPF, iptables)") }
        guard flows > 0, (1...62).contains(backends), rounds > 0, seconds > 0, newFlowSeconds > 0 else {
            throw ValidationError("--flows, --rounds, --seconds, --new-flow-seconds must be positive, --backends 1...62")
        }
        let contenders = try datapaths.map { name in
            guard let contender = Contender(rawValue: name) else {
                throw ValidationError("--datapaths: unknown '\(name)' (known: \(Contender.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return contender
        }
        var logger = Logger(label: "swiftlane.bench")
        logger.logLevel = .error
        ClusterLab.removeOrphans()
        let subnet = Int.random(in: 1...250)
        let generator = try XDPTrafficGenerator(sinkCIDR: "198.18.\(subnet).128/26")

        print("NodePort forwarding through one node: XDP generator -> node -> XDP sink, \(backends) remote backends; \(rounds) rounds")
        var samples: [Sample] = []
        for round in 1...rounds {
            for contender in contenders {
                let sample = try measure(contender, round: round, subnet: subnet, generator: generator, logger: logger)
                samples.append(sample)
                print(String(format: "  round %d %@ %10.0f pkt/s (offered %10.0f)   %9.0f new flows/s (offered %10.0f)",
                             round, NodePortBench.column(contender.rawValue, 22), sample.packetsPerSecond,
                             sample.packetsOfferedPerSecond, sample.newFlowsPerSecond, sample.newFlowsOfferedPerSecond))
                let notable = sample.counters.filter { !Self.expectedReasons.contains($0.key) }
                if sample.untranslated > 0 || !notable.isEmpty {
                    print("    untranslated at the sink \(sample.untranslated); other outcomes \(notable.sorted { $0.key < $1.key })")
                }
            }
        }

        let summaries = contenders.map { contender in
            let mine = samples.filter { $0.datapath == contender.rawValue }
            return Summary(datapath: contender.rawValue, packetsPerSecond: .init(mine.map(\.packetsPerSecond)),
                           newFlowsPerSecond: .init(mine.map(\.newFlowsPerSecond)))
        }
        print("")
        print("datapath                  packets/s min / median / max          new flows/s min / median / max")
        for summary in summaries {
            let p = summary.packetsPerSecond, c = summary.newFlowsPerSecond
            print(String(format: "%@ %10.0f / %10.0f / %10.0f     %9.0f / %9.0f / %9.0f", NodePortBench.column(summary.datapath, 24),
                         p.min, p.median, p.max, c.min, c.median, c.max))
        }
        func median(_ contender: Contender, _ value: (Summary) -> NodePortBench.Spread) -> Double? {
            summaries.first { $0.datapath == contender.rawValue }.map { value($0).median }
        }
        let pairs: [(String, Contender, Contender)] = [
            ("xdp-native/iptables", .xdpNative, .iptables), ("xdp-generic/iptables", .xdpGeneric, .iptables),
            ("tc/iptables", .tc, .iptables), ("dsr/iptables", .dsr, .iptables), ("xdp-native/tc", .xdpNative, .tc),
            ("xdp-generic/tc", .xdpGeneric, .tc),
        ]
        var packetRatios: [String: Double] = [:], flowRatios: [String: Double] = [:]
        print("")
        print("ratio of medians          packets/s   new flows/s")
        for (name, top, bottom) in pairs {
            guard let pTop = median(top, \.packetsPerSecond), let pBottom = median(bottom, \.packetsPerSecond),
                  let cTop = median(top, \.newFlowsPerSecond), let cBottom = median(bottom, \.newFlowsPerSecond) else { continue }
            packetRatios[name] = pTop / max(pBottom, 1)
            flowRatios[name] = cTop / max(cBottom, 1)
            print(String(format: "%@ %9.2fx  %10.2fx", NodePortBench.column(name, 24), packetRatios[name]!, flowRatios[name]!))
        }
        var figures = Figures(samples: samples, summaries: summaries, packetsPerSecondRatios: packetRatios,
                              newFlowsPerSecondRatios: flowRatios, backends: backends, flows: flows)
        // The loop's stages share one core: what the generator and the sink cost per packet
        // is in every datapath's time. Measured alone (direct), it comes off.
        if let floor = median(.direct, \.packetsPerSecond), let floorFlows = median(.direct, \.newFlowsPerSecond), floor > 0, floorFlows > 0 {
            var perPacket: [String: Double] = [:], perFlow: [String: Double] = [:]
            print("")
            print(String(format: "the node alone (the direct loop's %.0f ns/packet, %.0f ns/new flow subtracted)", 1e9 / floor, 1e9 / floorFlows))
            print("datapath                  ns/packet   packets/s     ns/new flow   new flows/s")
            for summary in summaries where summary.datapath != Contender.direct.rawValue {
                let packet = 1e9 / max(summary.packetsPerSecond.median, 1) - 1e9 / floor
                let flow = 1e9 / max(summary.newFlowsPerSecond.median, 1) - 1e9 / floorFlows
                perPacket[summary.datapath] = packet
                perFlow[summary.datapath] = flow
                print(String(format: "%@ %9.0f  %10.0f   %11.0f  %12.0f", NodePortBench.column(summary.datapath, 24), packet,
                             1e9 / max(packet, 1), flow, 1e9 / max(flow, 1)))
            }
            var nodeRatios: [String: Double] = [:], nodeFlowRatios: [String: Double] = [:]
            print("")
            print("ratio, the node alone      packets/s   new flows/s")
            for (name, top, bottom) in pairs {
                guard let pTop = perPacket[top.rawValue], let pBottom = perPacket[bottom.rawValue], pTop > 0,
                      let cTop = perFlow[top.rawValue], let cBottom = perFlow[bottom.rawValue], cTop > 0 else { continue }
                nodeRatios[name] = pBottom / pTop
                nodeFlowRatios[name] = cBottom / cTop
                print(String(format: "%@ %9.2fx  %10.2fx", NodePortBench.column(name, 24), nodeRatios[name]!, nodeFlowRatios[name]!))
            }
            figures.nodeNanosecondsPerPacket = perPacket
            figures.nodeNanosecondsPerNewFlow = perFlow
            figures.nodePacketsPerSecondRatios = nodeRatios
            figures.nodeNewFlowsPerSecondRatios = nodeFlowRatios
        }
        print("targets (issue 5): xdp/iptables >= 4x, tc/iptables >= 1.5x, xdp/tc >= 2x")
        try BenchOutput.writeJSON(figures, to: json)
    }

    /// Outcomes every datapath's round is expected to count (the rest are printed).
    static let expectedReasons: Set<String> = [
        "np_forward_new", "np_forward", "np_dsr_carried", "np_xdp_pass_to_tc", "np_xdp_redirect",
    ]

    /// The SNAT ports: those MASQUERADE picks from on the iptables path (the default
    /// ip_local_port_range), so a SYN flood meets the same port space on both. (Swiftlane's
    /// default, 61000-65535, leaves the node's ephemeral ports alone; a few thousand flows
    /// per backend would exhaust it within a round.)
    static let masqueradePorts: ClosedRange<UInt16> = 32768...60999

    /// Room for as many flows as conntrack holds on the iptables path (nf_conntrack_max;
    /// two entries per flow), so that a SYN flood meets the same table size on both.
    static let flowEntries: UInt32 = {
        let text = try? String(contentsOfFile: "/proc/sys/net/netfilter/nf_conntrack_max", encoding: .utf8)
        let flows = text.flatMap { UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 262_144
        return max(2 * flows, 1024)
    }()

    /// One datapath in one round, on a lab of its own (no state left from another datapath).
    private func measure(_ contender: Contender, round: Int, subnet: Int, generator: XDPTrafficGenerator, logger: Logger) throws
        -> Sample
    {
        let lab = try ForwardingLab(subnet: subnet)
        let pinPath = "/sys/fs/bpf/swiftlane-bench-fwd-\(getpid())-\(round)-\(contender.rawValue)"
        defer {
            lab.teardown()
            SocketLoadBalancer.uninstall(pinPath: pinPath)
        }
        try generator.attach(to: lab, direct: contender == .direct)
        var datapath: NodePortDatapath?
        if contender == .direct {
            // Nothing on the node: the frames never reach it.
        } else if let acceleration = contender.acceleration {
            let options = NodePortOptions(pinPath: pinPath, devices: [lab.nodeExternalDevice, lab.nodeInternalDevice],
                                          mode: contender == .dsr ? .dsr : .snat, acceleration: acceleration,
                                          snatPorts: Self.masqueradePorts, conntrackMaxEntries: Self.flowEntries,
                                          networkNamespace: "/run/netns/" + lab.nodeNetns)
            datapath = try NodePortDatapath.install(options, logger: logger)
            let syncer = try ProxySyncer(nodeName: "node-a", maps: try KernelLoadBalancerMaps(pinPath: pinPath), logger: logger)
            let report = syncer.sync(try ManifestDecoder.decode(Data(lab.nodePortManifest(backends: backends, namespace: "bench").utf8), source: "bench.yaml"))
            guard report.failures.isEmpty else { throw ValidationError("sync failed: \(report.failures)") }
        } else {
            let input = kubeProxyRules(lab)
            let path = NSTemporaryDirectory() + "swiftlane-bench-fwd-\(getpid()).rules"
            try input.write(toFile: path, atomically: true, encoding: .utf8)
            defer { unlink(path) }
            try lab.exec(["sh", "-c", "iptables-restore < \(path)"], netns: lab.nodeNetns)
        }
        let before = datapath?.outcomeCounters() ?? [:]
        // Direct: to a backend's address and port, which the sink counts as it is.
        let (destination, udpPort, tcpPort): (String, UInt16, UInt16) =
            contender == .direct ? (lab.backendIPv4(0), 9000, 8080) : (lab.nodeExternalIPv4, Self.udpNodePort, Self.tcpNodePort)

        try generator.configure(.init(
            frame: try lab.udpFrame(to: destination, destinationPort: udpPort),
            l4ChecksumOffset: 0, flows: flows, newFlows: false))
        let established = try generator.measure(warmUp: 0.5, seconds: seconds)
        try generator.configure(.init(
            frame: try lab.tcpSYNFrame(to: destination, destinationPort: tcpPort),
            l4ChecksumOffset: XDPTrafficGenerator.tcpChecksumOffset, flows: 1, newFlows: true))
        let newFlows = try generator.measure(warmUp: 0.02, seconds: newFlowSeconds)
        var sample = Sample(datapath: contender.rawValue, round: round, packetsPerSecond: established.sunkPerSecond,
                            packetsOfferedPerSecond: established.sentPerSecond, newFlowsPerSecond: newFlows.sunkPerSecond,
                            newFlowsOfferedPerSecond: newFlows.sentPerSecond, untranslated: established.passed + newFlows.passed)
        for (reason, count) in datapath?.outcomeCounters() ?? [:] where count != before[reason] {
            sample.counters[reason] = count - (before[reason] ?? 0)
        }
        return sample
    }

    /// kube-proxy's nat table for this NodePort (pkg/proxy/iptables/proxier.go, eTP=Cluster):
    /// PREROUTING → KUBE-SERVICES (cluster IP rule, then local destinations → KUBE-NODEPORTS)
    /// → KUBE-EXT-* (mark for masquerade) → KUBE-SVC-* (random pick) → KUBE-SEP-* (DNAT);
    /// KUBE-POSTROUTING masquerades what was marked.
    private func kubeProxyRules(_ lab: ForwardingLab) -> String {
        var chains = [":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]"]
        var rules = [
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
        ]
        var last: [String] = []
        for (name, proto, port, nodePort, target) in [("http", "tcp", 80, Self.tcpNodePort, 8080), ("flood", "udp", 54, Self.udpNodePort, 9000)] {
            let portName = "bench/web:\(name)"
            let svc = "KUBE-SVC-" + IptablesRules.chainSuffix(portName + proto)
            let ext = "KUBE-EXT-" + IptablesRules.chainSuffix(portName + proto)
            chains += [":\(svc) - [0:0]", ":\(ext) - [0:0]"]
            rules.append("-A KUBE-SERVICES -d 10.96.0.10/32 -p \(proto) -m comment --comment \"\(portName) cluster IP\" -m \(proto) --dport \(port) -j \(svc)")
            rules.append("-A KUBE-NODEPORTS -p \(proto) -m comment --comment \"\(portName)\" -m \(proto) --dport \(nodePort) -j \(ext)")
            rules.append("-A \(ext) -m comment --comment \"masquerade traffic for \(portName) external destinations\" -j KUBE-MARK-MASQ")
            rules.append("-A \(ext) -j \(svc)")
            for index in 0..<backends {
                let ip = lab.backendIPv4(index)
                let sep = "KUBE-SEP-" + IptablesRules.chainSuffix(portName + proto + "\(ip):\(target)")
                chains.append(":\(sep) - [0:0]")
                let remaining = backends - index
                let pick = remaining > 1 ? " -m statistic --mode random --probability \(String(format: "%.10f", 1.0 / Double(remaining)))" : ""
                rules.append("-A \(svc) -m comment --comment \"\(portName) -> \(ip):\(target)\"\(pick) -j \(sep)")
                rules.append("-A \(sep) -m comment --comment \"\(portName)\" -s \(ip)/32 -j KUBE-MARK-MASQ")
                rules.append("-A \(sep) -m comment --comment \"\(portName)\" -m \(proto) -p \(proto) -j DNAT --to-destination \(ip):\(target)")
            }
        }
        // kube-proxy's last KUBE-SERVICES rule: local destinations go on to the NodePorts.
        last.append("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
        return (["*nat"] + chains + rules + last + ["COMMIT", ""]).joined(separator: "\n")
    }
}
