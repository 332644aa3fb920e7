import ArgumentParser
import Datapath
import Foundation
import Glibc
import Logging
import NetLab
import Reconciler
import ServiceModel

/// ClusterIP connect() latency and programming time of Swiftlane against kube-proxy's own
/// datapaths, measured on the same lab in the same run: the iptables layout loaded with
/// iptables-restore (nft and legacy backends) and the nftables layout loaded with nft -f.
struct ClusterIPPeersBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clusterip-peers",
        abstract: "ClusterIP TCP connect() and UDP request/reply latency, connections/s and programming time: Swiftlane vs kube-proxy's iptables and nftables rules.",
        discussion: """
            For each service count N (one TCP port, --endpoints endpoints each, all served by \
            the lab's pods; the measured service, in the middle of the list, also has a UDP \
            port): Swiftlane programs its maps and is measured from the lab's cgroup; then \
            each peer loads kube-proxy's rule layout into the client namespace and is \
            measured from outside the cgroup. Every latency figure is measured interleaved \
            with a direct exchange with the backends in rotation (same thread, turn by turn), --rounds \
            times. Programming is from empty and for one endpoint change (iptables: the \
            partial `--noflush` restore kube-proxy does; nftables: the changed chains); a \
            peer's load from empty is repeated each round only while it takes under \
            --reload-below seconds. A peer load that would exceed --load-budget seconds \
            (predicted from the previous count, or killed at the budget) is reported as not \
            measured instead of holding up the run.
            """
    )

    @Option(name: .long, parsing: .upToNextOption, help: "Service counts.")
    var services: [Int] = [10, 1_000, 10_000]

    @Option(name: .long, help: "Endpoints per service (the lab gets this many pods).")
    var endpoints: Int = 4

    @Option(name: .long, help: "Exchanges (TCP connects, UDP request/replies) per target per round.")
    var iterations: Int = 500

    @Option(name: .long, help: "Measurement rounds per datapath and service count.")
    var rounds: Int = 3

    @Option(name: .long, parsing: .upToNextOption, help: "Peers: iptables-nft, iptables-legacy, nftables.")
    var peers: [String] = ["iptables-nft", "iptables-legacy", "nftables"]

    @Option(name: .long, help: "Seconds a peer's rule load may take; longer is reported as not measured.")
    var loadBudget: Double = 60

    @Option(name: .long, help: "Repeat a peer's load from empty each round only while it takes less than this (s).")
    var reloadBelow: Double = 5

    @Option(name: .long, help: "Write the figures as JSON to this file as well.")
    var json: String?

    /// One round: the datapath's figure and the direct exchange interleaved with it.
    struct Round: Codable {
        var via: HookCostProbe.InterleavedFigures
        var direct: HookCostProbe.InterleavedFigures
    }

    struct Measurement: Codable {
        var datapath: String
        var services: Int
        /// Why there are no figures (a peer over its load budget, a tool missing).
        var notMeasured: String?
        var programSeconds: [Double] = []
        var oneChangeSeconds: [Double] = []
        var tcp: [Round] = []
        var udp: [Round] = []
    }

    func run() throws {
        guard geteuid() == 0 else { throw ValidationError("needs root (namespaces, BPF, iptables)") }
        guard rounds > 0, iterations > 0, endpoints > 1 else { throw ValidationError("--rounds, --iterations > 0, --endpoints > 1") }
        var logger = Logger(label: "swiftlane.bench")
        logger.logLevel = .error
        ClusterLab.removeOrphans()
        let lab = try ClusterLab(backends: endpoints)
        let pinPath = "/sys/fs/bpf/swiftlane-bench-\(getpid())"
        defer {
            lab.teardown()
            SocketLoadBalancer.uninstall(pinPath: pinPath)
        }
        try lab.startProbeServers(tcpPort: 8080, udpPort: 8053)
        let datapath = try SocketLoadBalancer.install(DatapathOptions(pinPath: pinPath, cgroupPath: lab.clientCgroup.path), logger: logger)
        var reconciler = Reconciler(adopting: try datapath.maps.readState(), slotCapacity: datapath.maps.slotCapacity)
        let clusterCIDR = "198.18.0.0/16"
        // Direct turns go to every backend in rotation, as the service's do at random.
        let directTCP = lab.backends.map { "\($0.ipv4):8080" }, directUDP = lab.backends.map { "\($0.ipv4):8053" }
        var results: [Measurement] = []
        /// Each peer's last load from empty (services, seconds), to predict the next one.
        var lastLoad: [String: (services: Int, seconds: Double)] = [:]

        print("ClusterIP through each datapath vs a direct exchange (interleaved), \(rounds) rounds, medians; programming time")
        print("datapath         services  program(s)  1 change(s)  TCP connect p50/p99 µs (direct p50)  conn/s   UDP p50/p99 µs (direct p50)")
        for count in services {
            var peerServices = (0..<count).map { index in
                PeerService(namespace: "bench", name: "svc-\(index)", portName: "http",
                            clusterIP: IPAddress(v4: 0xC613_0000 | UInt32(index + 1)).description, port: 80, proto: "tcp",
                            endpoints: lab.backends.map { (ip: $0.ipv4, port: UInt16(8080)) })
            }
            let target = peerServices[count / 2]
            var targetUDP = target
            (targetUDP.portName, targetUDP.port, targetUDP.proto) = ("dns", 53, "udp")
            targetUDP.endpoints = lab.backends.map { (ip: $0.ipv4, port: UInt16(8053)) }
            // Right after its TCP port: iptables walks KUBE-SERVICES in order.
            peerServices.insert(targetUDP, at: count / 2 + 1)
            var changed = target
            changed.endpoints.removeLast()
            let measureTraffic = { (cgroup: String?) throws -> (Round, Round) in
                let tcp = try HookCostProbe.interleavedTCP(
                    netns: lab.clientNetns, cgroup: cgroup, first: ["\(target.clusterIP):80"], second: directTCP, iterations: iterations)
                let udp = try HookCostProbe.interleavedUDP(
                    netns: lab.clientNetns, cgroup: cgroup, first: ["\(target.clusterIP):53"], second: directUDP, iterations: iterations)
                return (Round(via: tcp.first, direct: tcp.second), Round(via: udp.first, direct: udp.second))
            }

            // Swiftlane: the maps, and traffic from the hooked cgroup.
            let desired = peerServices.map(desiredFrontend)
            var own = Measurement(datapath: "swiftlane", services: count)
            for round in 0..<rounds {
                if round > 0 {
                    _ = reconciler.reconcile([], prune: true, maps: datapath.maps)
                    Thread.sleep(forTimeInterval: 1.1)  // the released slot ranges leave quarantine
                }
                own.programSeconds.append(try timed {
                    let report = reconciler.reconcile(desired, prune: true, maps: datapath.maps)
                    if !report.failed.isEmpty { throw ValidationError("\(report.failed.first!.error)") }
                })
                own.oneChangeSeconds.append(try timed {
                    _ = reconciler.reconcile(.only(upserting: [desiredFrontend(changed)], removing: []), maps: datapath.maps)
                })
                _ = reconciler.reconcile(.only(upserting: [desiredFrontend(target)], removing: []), maps: datapath.maps)
                let (tcp, udp) = try measureTraffic(lab.clientCgroup.path)
                own.tcp.append(tcp)
                own.udp.append(udp)
            }
            results.append(report(own))
            _ = reconciler.reconcile([], prune: true, maps: datapath.maps)

            // kube-proxy's rules in the client namespace, traffic from outside the cgroup.
            // netfilter rewrites the destination after the socket's route lookup, so the
            // service range needs a route as it has on a real node: on-link on the lab
            // bridge (an untranslated packet only ARPs inside the lab). Removed afterwards:
            // the lab's client has no route out otherwise.
            try Shell.run(["ip", "-n", lab.clientNetns, "route", "add", "198.19.0.0/16", "dev", lab.bridge])
            defer { _ = try? Shell.run(["ip", "-n", lab.clientNetns, "route", "del", "198.19.0.0/16"], allowFailure: true) }
            for peer in peers {
                var measurement = Measurement(datapath: peer, services: count)
                defer { results.append(report(measurement)) }
                if let missing = missingTool(peer) {
                    measurement.notMeasured = "not measured: \(missing) not installed"
                    continue
                }
                if let last = lastLoad[peer], last.seconds * Double(count) / Double(max(1, last.services)) > loadBudget {
                    measurement.notMeasured = String(
                        format: "not measured: load > %.0f s (%.1f s at %d services, linear %.0f s)", loadBudget, last.seconds,
                        last.services, last.seconds * Double(count) / Double(max(1, last.services)))
                    continue
                }
                defer { try? peerFlush(peer, lab: lab) }
                for round in 0..<rounds {
                    if round == 0 || measurement.programSeconds.last! < reloadBelow {
                        if round > 0 { try peerFlush(peer, lab: lab) }
                        guard let seconds = try peerLoad(peer, lab: lab, services: peerServices, clusterCIDR: clusterCIDR) else {
                            measurement.notMeasured = String(format: "not measured: load > %.0f s (stopped at the budget)", loadBudget)
                            lastLoad[peer] = (count, loadBudget * 1.01)
                            break
                        }
                        measurement.programSeconds.append(seconds)
                        lastLoad[peer] = (count, seconds)
                    }
                    measurement.oneChangeSeconds.append(try peerUpdate(peer, lab: lab, service: changed, clusterCIDR: clusterCIDR))
                    _ = try peerUpdate(peer, lab: lab, service: target, clusterCIDR: clusterCIDR)
                    let (tcp, udp) = try measureTraffic(nil)
                    measurement.tcp.append(tcp)
                    measurement.udp.append(udp)
                }
            }
        }
        printRatios(results)
        try BenchOutput.writeJSON(results, to: json)
    }

    /// Swiftlane's medians relative to each peer's (same count), and each to its direct.
    private func printRatios(_ results: [Measurement]) {
        print("\nmedians over rounds: TCP connect p50 relative to the direct connect measured with it, and Swiftlane / peer:")
        for count in services {
            guard let own = results.first(where: { $0.datapath == "swiftlane" && $0.services == count }) else { continue }
            var line = String(format: "  %6d services: swiftlane %.2f× direct", count, median(own.tcp.map(Self.tcpRatio)))
            for peer in results where peer.services == count && peer.datapath != "swiftlane" {
                guard peer.notMeasured == nil, !peer.tcp.isEmpty else {
                    line += "; \(peer.datapath) \(peer.notMeasured ?? "no figures")"
                    continue
                }
                line += String(format: "; %@ %.2f× direct, swiftlane/it: connect %.3f×, program %.4f×, one change %.5f×",
                               peer.datapath, median(peer.tcp.map(Self.tcpRatio)),
                               median(own.tcp.map { Double($0.via.latency.p50Ns) }) / max(1, median(peer.tcp.map { Double($0.via.latency.p50Ns) })),
                               median(own.programSeconds) / max(median(peer.programSeconds), 1e-9),
                               median(own.oneChangeSeconds) / max(median(peer.oneChangeSeconds), 1e-9))
            }
            print(line)
        }
    }

    private static func tcpRatio(_ round: Round) -> Double {
        Double(round.via.latency.p50Ns) / Double(max(1, round.direct.latency.p50Ns))
    }

    private func median(_ values: [Double]) -> Double { values.isEmpty ? .nan : values.sorted()[values.count / 2] }

    private func desiredFrontend(_ service: PeerService) -> DesiredFrontend {
        let proto: TransportProtocol = service.proto == "udp" ? .udp : .tcp
        return DesiredFrontend(
            key: FrontendKey(address: IPAddress(sloppy: service.clusterIP)!, port: service.port, proto: proto),
            service: "\(service.namespace)/\(service.name)", portName: service.portName, kind: .clusterIP,
            backends: service.endpoints.map { BackendAddress(address: IPAddress(sloppy: $0.ip)!, port: $0.port, proto: proto) })
    }

    private func report(_ measurement: Measurement) -> Measurement {
        if let reason = measurement.notMeasured, measurement.tcp.isEmpty {
            print(measurement.datapath.padding(toLength: 16, withPad: " ", startingAt: 0)
                  + String(format: " %8d  ", measurement.services) + reason)
            return measurement
        }
        let micros: (Double) -> Double = { $0 / 1000 }
        let p50 = { (rounds: [Round], direct: Bool) in self.median(rounds.map { Double((direct ? $0.direct : $0.via).latency.p50Ns) }) }
        print(measurement.datapath.padding(toLength: 16, withPad: " ", startingAt: 0) + String(
              format: " %8d  %10.4f  %11.5f  %8.1f / %-8.1f (%6.1f)  %7.0f  %8.1f / %-8.1f (%6.1f)", measurement.services, median(measurement.programSeconds),
                     median(measurement.oneChangeSeconds),
                     micros(p50(measurement.tcp, false)), micros(median(measurement.tcp.map { Double($0.via.latency.p99Ns) })),
                     micros(p50(measurement.tcp, true)), median(measurement.tcp.map { $0.via.cyclesPerSecond }),
                     micros(p50(measurement.udp, false)), micros(median(measurement.udp.map { Double($0.via.latency.p99Ns) })),
                     micros(p50(measurement.udp, true))))
        return measurement
    }

    private func timed(_ body: () throws -> Void) throws -> Double {
        let start = ContinuousClock.now
        try body()
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    private func missingTool(_ peer: String) -> String? {
        let tool = peer == "nftables" ? "nft" : "\(peer)-restore"
        let found = ["/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"].contains { FileManager.default.isExecutableFile(atPath: $0 + tool) }
        return found ? nil : tool
    }

    // MARK: - Peers

    /// Seconds the load from empty took, nil when it was stopped at --load-budget (both
    /// tools apply a file as one transaction: a stopped load leaves nothing behind).
    private func peerLoad(_ peer: String, lab: ClusterLab, services: [PeerService], clusterCIDR: String) throws -> Double? {
        switch peer {
        case "iptables-nft", "iptables-legacy":
            return try runTimed(["ip", "netns", "exec", lab.clientNetns, "\(peer)-restore"],
                                input: IptablesRules.restoreInput(services, clusterCIDR: clusterCIDR), timeout: loadBudget)
        case "nftables":
            return try runTimed(["ip", "netns", "exec", lab.clientNetns, "nft", "-f", "-"],
                                input: NftablesRules.script(services, clusterCIDR: clusterCIDR), timeout: loadBudget)
        default:
            throw ValidationError("unknown peer \(peer)")
        }
    }

    private func peerUpdate(_ peer: String, lab: ClusterLab, service: PeerService, clusterCIDR: String) throws -> Double {
        switch peer {
        case "iptables-nft", "iptables-legacy":
            return try runTimed(["ip", "netns", "exec", lab.clientNetns, "\(peer)-restore", "--noflush"],
                                input: IptablesRules.update(service, clusterCIDR: clusterCIDR))
        default:
            return try runTimed(["ip", "netns", "exec", lab.clientNetns, "nft", "-f", "-"],
                                input: NftablesRules.update(service, clusterCIDR: clusterCIDR))
        }
    }

    private func peerFlush(_ peer: String, lab: ClusterLab) throws {
        switch peer {
        case "iptables-nft", "iptables-legacy":
            _ = try runTimed(["ip", "netns", "exec", lab.clientNetns, "\(peer)-restore"], input: "*nat\nCOMMIT\n")
        default:
            _ = try runTimed(["ip", "netns", "exec", lab.clientNetns, "nft", "delete", "table", "ip", "kube-proxy"], input: "")
        }
    }

    /// Runs a command with `input` on stdin; returns its wall time, throws on failure.
    private func runTimed(_ argv: [String], input: String) throws -> Double {
        try runTimed(argv, input: input, timeout: nil)!
    }

    /// As runTimed, but the command is stopped (SIGTERM) after `timeout` seconds and nil
    /// returned. `env`, `ip netns exec` and the tools exec each other: one process.
    private func runTimed(_ argv: [String], input: String, timeout: Double?) throws -> Double? {
        let directory = NSTemporaryDirectory() + "swiftlane-peer-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let inputPath = directory + "/input"
        try input.write(toFile: inputPath, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = argv
        process.standardInput = FileHandle(forReadingAtPath: inputPath)
        let errors = Pipe()
        process.standardError = errors
        let start = ContinuousClock.now
        try process.run()
        final class Flag: @unchecked Sendable {
            private let lock = NSLock()
            private var value = false
            var isSet: Bool { lock.withLock { value } }
            func set() { lock.withLock { value = true } }
        }
        let stopped = Flag()
        if let timeout {
            nonisolated(unsafe) let running = process
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout) {
                if running.isRunning {
                    stopped.set()
                    running.terminate()
                }
            }
        }
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let elapsed = ContinuousClock.now - start
        if stopped.isSet { return nil }
        guard process.terminationStatus == 0 else {
            throw ValidationError("\(argv.joined(separator: " ")) failed: \(String(decoding: message.prefix(2000), as: UTF8.self))")
        }
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}
