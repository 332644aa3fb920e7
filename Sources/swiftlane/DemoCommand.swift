import ArgumentParser
import Controller
import Datapath
import Foundation
import Glibc
import Logging
import NetLab
import Reconciler

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Show Swiftlane balancing ClusterIP traffic on this machine, without a cluster.",
        discussion: """
            Creates network namespaces for a client and three backend pods (TCP, UDP and DNS \
            servers), installs the socket load balancer on a cgroup of its own, runs the \
            controller on the sample manifests in examples/demo, and sends requests through \
            the ClusterIPs, printing which backend answered each one. Then it marks one pod \
            as terminating and shows the traffic move. With --external (the default) it then \
            builds a two-node lab (an external client, node A with the tc programs on its \
            devices, node B) and sends TCP through NodePorts: eTP=Cluster to pods on both \
            nodes (those on node B source-NATed to node A) and eTP=Local (node A's pod only, \
            the client's address kept). It removes everything it created. Needs root; touches \
            nothing outside its own namespaces, cgroup and pins.
            """
    )

    @Option(name: .long, help: "Directory with the sample Service and EndpointSlice manifests.")
    var manifests: String = "examples/demo"

    @Option(name: .long, help: "Requests to send per step.")
    var requests: Int = 9

    @Flag(inversion: .prefixedNo, help: "Also show traffic from outside the node through NodePorts (a two-node lab, tc programs).")
    var external: Bool = true

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        guard geteuid() == 0 else { throw ValidationError("the demo creates namespaces and loads BPF programs: run it as root") }
        let logger = Logger(label: "swiftlane.demo")
        ClusterLab.removeOrphans()
        DemoPins.removeOrphans()

        let source = URL(fileURLWithPath: manifests)
        let work = NSTemporaryDirectory() + "swiftlane-demo-\(getpid())"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: source.path) where name.hasSuffix(".yaml") {
            try FileManager.default.copyItem(atPath: source.appendingPathComponent(name).path, toPath: work + "/" + name)
        }
        let pinPath = DemoPins.path(for: getpid())
        let lab = try ClusterLab(backends: 3, subnet: 0)
        let cleanup = DemoCleanup(lab: lab, pinPath: pinPath, work: work)
        cleanup.installSignalHandlers()
        defer { cleanup.run() }

        print("▶ lab: client namespace \(lab.clientNetns) (no route out), pods " +
              lab.backends.map { "\($0.name)=\($0.ipv4)" }.joined(separator: " "))
        try lab.startProbeServers(tcpPort: 8080, udpPort: 8053)
        for backend in lab.backends {
            try lab.track(Dnsmasq.start(netns: backend.netns, listen: [backend.ipv4],
                                        records: ["whoami.demo.swiftlane.test": backend.ipv4]))
        }

        let datapath = try SocketLoadBalancer.install(
            DatapathOptions(pinPath: pinPath, cgroupPath: lab.clientCgroup.path), logger: logger)
        print("▶ datapath: 8 socket programs on cgroup \(lab.clientCgroup.path), maps pinned in \(pinPath) (\(datapath.features))")
        let syncer = try ProxySyncer(nodeName: "node-a", maps: datapath.maps, logger: logger)
        let sync = DirectorySyncService(source: DirectorySource(path: work, logger: logger), syncer: syncer,
                                        pollInterval: .milliseconds(100), logger: logger)
        let controller = Task { try await sync.run() }
        defer { controller.cancel() }
        let programmed = try await waitFor(datapath) { $0.masters.count == 5 }
        print("▶ controller: \(programmed.masters.count) frontends, \(programmed.backends.count) backends programmed from \(manifests)")

        let probe = lab.probeRunner()
        var summary: [(String, String)] = []
        print("\n● TCP to web ClusterIP 198.19.0.10:80")
        let tcp = try probe.tcp(target: "198.19.0.10:80", count: requests)
        printSequence(tcp.sequence)
        summary.append(("TCP 198.19.0.10:80", "\(tcp.ok)/\(tcp.attempts) ok, \(shares(tcp.backends)), getpeername()=VIP on \(tcp.ok - tcp.peerNameMismatches)"))

        print("\n● TCP to web's IPv6 ClusterIP [fd00:198:18:f000::10]:80")
        let tcp6 = try probe.tcp(target: "[fd00:198:18:f000::10]:80", count: requests)
        printSequence(tcp6.sequence)
        summary.append(("TCP [fd00:198:18:f000::10]:80", "\(tcp6.ok)/\(tcp6.attempts) ok, \(shares(tcp6.backends))"))

        print("\n● UDP to echo ClusterIP 198.19.0.11:7 (replies must come from the ClusterIP)")
        let udp = try probe.udp(target: "198.19.0.11:7", count: requests)
        printSequence(udp.sequence)
        summary.append(("UDP 198.19.0.11:7", "\(udp.ok)/\(udp.attempts) ok, \(shares(udp.backends)), replies from VIP: \(udp.ok - udp.replySourceMismatches)"))

        print("\n● dig @198.19.0.53 whoami.demo.swiftlane.test (dnsmasq in each pod answers with its own IP)")
        var dnsAnswers: [String: Int] = [:]
        for index in 1...max(3, requests / 3) {
            let answer = try Dig.query(netns: lab.clientNetns, cgroup: lab.clientCgroup.path, server: "198.19.0.53",
                                       name: "whoami.demo.swiftlane.test").first ?? "no answer"
            let name = lab.backends.first { $0.ipv4 == answer }?.name ?? answer
            dnsAnswers[name, default: 0] += 1
            print(String(format: "  query %2d → %@", index, name))
        }
        summary.append(("DNS 198.19.0.53:53", shares(dnsAnswers)))

        print("\n● TCP to not-ready ClusterIP 198.19.0.12:80 (no ready endpoint: refused at connect())")
        let refused = try probe.tcp(target: "198.19.0.12:80", count: 3, connectTimeoutMs: 3000)
        printSequence(refused.sequence)
        summary.append(("TCP 198.19.0.12:80", "\(refused.failures["ECONNREFUSED"] ?? 0)/\(refused.attempts) refused at connect() (ECONNREFUSED)"))

        print("\n● pod web-3 starts terminating: the EndpointSlice file changes, the controller re-programs")
        let slices = work + "/endpointslices.yaml"
        let original = try String(contentsOfFile: slices, encoding: .utf8)
        try original.replacingOccurrences(
            of: "{addresses: [198.18.0.13], conditions: {ready: true}, nodeName: node-a, targetRef: {kind: Pod, name: web-3}}",
            with: "{addresses: [198.18.0.13], conditions: {ready: false, serving: true, terminating: true}, nodeName: node-a}"
        ).write(toFile: slices, atomically: true, encoding: .utf8)
        _ = try await waitFor(datapath) { state in
            state.masters.keys.contains { $0.port == 80 && $0.address.description == "198.19.0.10" && state.activeBackends(of: $0).count == 2 }
        }
        let after = try probe.tcp(target: "198.19.0.10:80", count: requests)
        printSequence(after.sequence)
        summary.append(("TCP 198.19.0.10:80 after", "\(after.ok)/\(after.attempts) ok, \(shares(after.backends))"))

        print("\n■ what the maps serve now (`swiftlane dump -o table`)")
        print(try datapath.maps.readState().servedPlan.tableString())
        let counters = datapath.maps.outcomeCounters().filter { $0.value > 0 }.sorted { $0.key < $1.key }
        var ok = tcp.ok == tcp.attempts && tcp6.ok == tcp6.attempts && udp.ok == udp.attempts
            && refused.failures["ECONNREFUSED"] == refused.attempts && after.backends["b3"] == nil && after.ok == after.attempts
        summary.append(("socket datapath counters", counters.map { "\($0.key)=\($0.value)" }.joined(separator: " ")))

        if external {
            let act = try ExternalTrafficDemo(pinPath: pinPath + "-external", logger: logger)
            cleanup.external = act
            let (rows, externalOK) = try act.run(requests: requests)
            summary += rows
            ok = ok && externalOK
        }

        print("\n■ summary")
        for (what, result) in summary { print("  " + what.padding(toLength: 36, withPad: " ", startingAt: 0) + result) }
        print(ok ? "\n✔ demo passed; cleaning up" : "\n✘ demo saw unexpected results; cleaning up")
        if !ok { throw ExitCode.failure }
    }

    private func waitFor(_ datapath: SocketLoadBalancer, until done: (MapState) -> Bool) async throws -> MapState {
        for _ in 0..<300 {
            if let state = try? datapath.maps.readState(), done(state) { return state }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ValidationError("the controller did not program the expected state within 15 s")
    }

    private func printSequence(_ sequence: [String]) {
        for (index, outcome) in sequence.enumerated() {
            print(String(format: "  request %2d → %@", index + 1, outcome))
        }
    }

    private func shares(_ counts: [String: Int]) -> String {
        counts.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
    }
}

/// Pin directories of demos, named by pid so a demo killed midway is cleaned next time.
enum DemoPins {
    static let prefix = "/sys/fs/bpf/swiftlane-demo-"

    static func path(for pid: pid_t) -> String { prefix + "\(pid)" }

    static func removeOrphans() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/bpf")) ?? []
        for name in names where name.hasPrefix("swiftlane-demo-") {
            // swiftlane-demo-PID, or swiftlane-demo-PID-external for the external act.
            let pidText = name.dropFirst("swiftlane-demo-".count).prefix { $0 != "-" }
            guard let pid = pid_t(pidText), kill(pid, 0) != 0, errno == ESRCH else { continue }
            SocketLoadBalancer.uninstall(pinPath: "/sys/fs/bpf/" + name)
        }
    }
}

/// Removes what the demo created, once, on normal exit or on SIGINT/SIGTERM.
final class DemoCleanup: @unchecked Sendable {
    private let lab: ClusterLab
    private let pinPath: String
    private let work: String
    private let lock = NSLock()
    private var done = false
    /// The external-traffic act, once it started.
    var external: ExternalTrafficDemo? {
        get { lock.withLock { externalAct } }
        set { lock.withLock { externalAct = newValue } }
    }
    private var externalAct: ExternalTrafficDemo?
    private var sources: [DispatchSourceSignal] = []

    init(lab: ClusterLab, pinPath: String, work: String) {
        self.lab = lab
        self.pinPath = pinPath
        self.work = work
    }

    func run() {
        lock.lock()
        defer { lock.unlock() }
        guard !done else { return }
        done = true
        externalAct?.teardown()
        lab.teardown()
        SocketLoadBalancer.uninstall(pinPath: pinPath)
        try? FileManager.default.removeItem(atPath: work)
    }

    func installSignalHandlers() {
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { [self] in
                run()
                exit(130)
            }
            source.resume()
            sources.append(source)
        }
    }
}
