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
        abstract: "ClusterIP connect() latency and programming time: Swiftlane vs kube-proxy's iptables and nftables rules.",
        discussion: """
            For each service count N (one TCP port, --endpoints endpoints each, all served by \
            the lab's pods): Swiftlane programs its maps and connects through its socket LB \
            from the lab's cgroup; then each peer loads kube-proxy's rule layout into the \
            client namespace and connects from outside the cgroup. Every latency figure is \
            measured interleaved with a direct connect to a backend (same process, pair by \
            pair); programming is from empty and for one endpoint change (iptables: the \
            partial `--noflush` restore kube-proxy does; nftables: the changed chains).
            """
    )

    @Option(name: .long, parsing: .upToNextOption, help: "Service counts.")
    var services: [Int] = [10, 1_000, 10_000]

    @Option(name: .long, help: "Endpoints per service (the lab gets this many pods).")
    var endpoints: Int = 4

    @Option(name: .long, help: "connect() pairs per measurement.")
    var iterations: Int = 500

    @Option(name: .long, parsing: .upToNextOption, help: "Peers: iptables-nft, iptables-legacy, nftables.")
    var peers: [String] = ["iptables-nft", "iptables-legacy", "nftables"]

    @Option(name: .long, help: "Write the figures as JSON to this file as well.")
    var json: String?

    struct Measurement: Codable {
        var datapath: String
        var services: Int
        var programSeconds: Double
        var oneChangeSeconds: Double
        var connect: LatencyStats
        var direct: LatencyStats
    }

    func run() throws {
        guard geteuid() == 0 else { throw ValidationError("needs root (namespaces, BPF, iptables)") }
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
        let direct = "\(lab.backends[0].ipv4):8080"
        var results: [Measurement] = []

        print("ClusterIP connect() through each datapath vs a direct connect (interleaved), and programming time")
        print("datapath         services  program(s)  1 change(s)  connect p50/p99 µs   direct p50/p99 µs   p50×direct")
        for count in services {
            let peerServices = (0..<count).map { index in
                PeerService(namespace: "bench", name: "svc-\(index)", portName: "http",
                            clusterIP: IPAddress(v4: 0xC613_0000 | UInt32(index + 1)).description, port: 80, proto: "tcp",
                            endpoints: lab.backends.map { (ip: $0.ipv4, port: UInt16(8080)) })
            }
            let target = peerServices[count / 2]
            var changed = target
            changed.endpoints.removeLast()

            // Swiftlane: the maps, and connections from the hooked cgroup.
            let desired = peerServices.map(desiredFrontend)
            let programmed = try timed { let report = reconciler.reconcile(desired, prune: true, maps: datapath.maps)
                                         if !report.failed.isEmpty { throw ValidationError("\(report.failed.first!.error)") } }
            let oneChange = try timed {
                _ = reconciler.reconcile(.only(upserting: [desiredFrontend(changed)], removing: []), maps: datapath.maps)
            }
            _ = reconciler.reconcile(.only(upserting: [desiredFrontend(target)], removing: []), maps: datapath.maps)
            let (viaSwiftlane, directFromCgroup) = try HookCostProbe.interleavedTCPConnect(
                netns: lab.clientNetns, cgroup: lab.clientCgroup.path, first: "\(target.clusterIP):80", second: direct,
                iterations: iterations)
            results.append(report(Measurement(datapath: "swiftlane", services: count, programSeconds: programmed,
                                              oneChangeSeconds: oneChange, connect: viaSwiftlane, direct: directFromCgroup)))

            // kube-proxy's rules in the client namespace, connections from outside the cgroup.
            // netfilter rewrites the destination after the socket's route lookup, so the
            // service range needs a route as it has on a real node: on-link on the lab
            // bridge (an untranslated packet only ARPs inside the lab). Removed afterwards:
            // the lab's client has no route out otherwise.
            try Shell.run(["ip", "-n", lab.clientNetns, "route", "add", "198.19.0.0/16", "dev", lab.bridge])
            defer { _ = try? Shell.run(["ip", "-n", lab.clientNetns, "route", "del", "198.19.0.0/16"], allowFailure: true) }
            for peer in peers {
                let load = try peerLoad(peer, lab: lab, services: peerServices, clusterCIDR: clusterCIDR)
                let change = try peerUpdate(peer, lab: lab, service: changed, clusterCIDR: clusterCIDR)
                let (viaPeer, directPlain) = try HookCostProbe.interleavedTCPConnect(
                    netns: lab.clientNetns, cgroup: nil, first: "\(target.clusterIP):80", second: direct, iterations: iterations)
                try peerFlush(peer, lab: lab)
                results.append(report(Measurement(datapath: peer, services: count, programSeconds: load,
                                                  oneChangeSeconds: change, connect: viaPeer, direct: directPlain)))
            }
            _ = reconciler.reconcile([], prune: true, maps: datapath.maps)
        }
        // The floor is the direct connect measured with Swiftlane, when no rule is loaded:
        // a peer's own "direct" is slowed by its rules (iptables' OUTPUT chain is walked
        // by every new local connection, service or not), which is part of its cost.
        print("\nconnect p50 relative to the rule-free direct connect; Swiftlane's p50 and programming time relative to each peer's:")
        for count in services {
            guard let own = results.first(where: { $0.datapath == "swiftlane" && $0.services == count }) else { continue }
            let floor = Double(max(1, own.direct.p50Ns))
            var line = String(format: "  %6d services: swiftlane %.2f× floor", count, Double(own.connect.p50Ns) / floor)
            for peer in results where peer.services == count && peer.datapath != "swiftlane" {
                line += String(format: "; %@ %.2f× floor (its direct %.2f×), swiftlane/it: connect %.3f×, program %.4f×, one change %.5f×",
                               peer.datapath, Double(peer.connect.p50Ns) / floor, Double(peer.direct.p50Ns) / floor,
                               Double(own.connect.p50Ns) / Double(max(1, peer.connect.p50Ns)),
                               own.programSeconds / max(peer.programSeconds, 1e-9), own.oneChangeSeconds / max(peer.oneChangeSeconds, 1e-9))
            }
            print(line)
        }
        try BenchOutput.writeJSON(results, to: json)
    }

    private func desiredFrontend(_ service: PeerService) -> DesiredFrontend {
        DesiredFrontend(
            key: FrontendKey(address: IPAddress(sloppy: service.clusterIP)!, port: service.port, proto: .tcp),
            service: "\(service.namespace)/\(service.name)", portName: service.portName, kind: .clusterIP,
            backends: service.endpoints.map { BackendAddress(address: IPAddress(sloppy: $0.ip)!, port: $0.port, proto: .tcp) })
    }

    private func report(_ measurement: Measurement) -> Measurement {
        let micros: (UInt64) -> Double = { Double($0) / 1000 }
        print(String(format: "%-16@ %8d  %10.4f  %11.5f  %8.1f / %-8.1f  %8.1f / %-8.1f  %6.2f",
                     measurement.datapath, measurement.services, measurement.programSeconds, measurement.oneChangeSeconds,
                     micros(measurement.connect.p50Ns), micros(measurement.connect.p99Ns),
                     micros(measurement.direct.p50Ns), micros(measurement.direct.p99Ns),
                     Double(measurement.connect.p50Ns) / Double(max(1, measurement.direct.p50Ns))))
        return measurement
    }

    private func timed(_ body: () throws -> Void) throws -> Double {
        let start = ContinuousClock.now
        try body()
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    // MARK: - Peers

    private func peerLoad(_ peer: String, lab: ClusterLab, services: [PeerService], clusterCIDR: String) throws -> Double {
        switch peer {
        case "iptables-nft", "iptables-legacy":
            return try runTimed(["ip", "netns", "exec", lab.clientNetns, "\(peer)-restore"],
                                input: IptablesRules.restoreInput(services, clusterCIDR: clusterCIDR))
        case "nftables":
            return try runTimed(["ip", "netns", "exec", lab.clientNetns, "nft", "-f", "-"],
                                input: NftablesRules.script(services, clusterCIDR: clusterCIDR))
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
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let elapsed = ContinuousClock.now - start
        guard process.terminationStatus == 0 else {
            throw ValidationError("\(argv.joined(separator: " ")) failed: \(String(decoding: message.prefix(2000), as: UTF8.self))")
        }
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}
