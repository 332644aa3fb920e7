import ArgumentParser
import Controller
import Datapath
import Foundation
import Glibc
import Logging
import NetLab
import ServiceModel

/// How fast Swiftlane programs the maps: from empty to N services with M endpoints each,
/// a no-op resync, and single endpoint changes at that scale (the whole controller path:
/// translation with kube-proxy's rules, diff, map writes).
struct ProgrammingBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "programming",
        abstract: "Programming time and controller cost: from empty to N services / N×M endpoints, a no-op resync, single endpoint changes, and a bounded stream of endpoint changes.",
        discussion: """
            Installs the datapath on a throwaway child cgroup with its own pins, then times \
            ProxySyncer.sync (translation + diff + BPF map writes) and counts the map writes \
            and the bpf() calls that carry them (a run of slot or of backend writes goes in \
            one batched call). From empty is repeated --rounds times (the maps emptied \
            by a sync of nothing in between). With --churn-seconds, endpoint changes arrive \
            at --churn-rate per second for that long and the sync loop absorbs them as the \
            controller's does: each sync takes every change that arrived since the last. \
            CPU seconds (getrusage) and peak RSS (VmHWM, reset per phase through \
            /proc/self/clear_refs) are the whole process's, per phase.
            """
    )

    @Option(name: .long, help: "Services (one TCP port each).")
    var services: Int = 10_000

    @Option(name: .long, help: "Endpoints per service (one EndpointSlice each).")
    var endpoints: Int = 10

    @Option(name: .long, help: "Single endpoint changes to time.")
    var changes: Int = 200

    @Option(name: .long, help: "Syncs from empty to time (min/median/max).")
    var rounds: Int = 1

    @Option(name: .long, help: "Endpoint changes per second in the churn phase.")
    var churnRate: Int = 1_000

    @Option(name: .long, help: "Seconds of churn (0: no churn phase).")
    var churnSeconds: Double = 0

    @Option(name: .long, help: "Write the figures as JSON to this file as well.")
    var json: String?

    /// CPU and memory of one phase of the process.
    struct PhaseCost: Codable {
        var wallSeconds: Double
        var cpuSeconds: Double
        var peakRSSMiB: Double
    }

    struct Churn: Codable {
        var ratePerSecond: Int
        var changesApplied: Int
        var syncs: Int
        var syncP50Milliseconds: Double
        var syncP99Milliseconds: Double
        /// The longest a change waited from its due time until a sync had programmed it.
        var maxLagMilliseconds: Double
        var mapWrites: Int
        var cost: PhaseCost
    }

    struct Figures: Codable {
        var services: Int
        var endpoints: Int
        var fromEmptySeconds: Double
        /// Every round's from-empty time (the first is fromEmptySeconds).
        var fromEmptyRounds: [Double]
        var fromEmptyMapWrites: Int
        var fromEmptySyscalls: Int
        /// The first sync from empty.
        var fromEmptyCost: PhaseCost
        var noopResyncSeconds: Double
        var noopResyncMapWrites: Int
        var changeP50Milliseconds: Double
        var changeP99Milliseconds: Double
        var changeMinMilliseconds: Double
        var changeMaxMilliseconds: Double
        var changeMapWritesMedian: Int
        var changeSyscallsMedian: Int
        var churn: Churn?
        var peakRSSMiB: Double
        var cpuSeconds: Double
    }

    func run() throws {
        guard geteuid() == 0 else { throw ValidationError("needs root (BPF)") }
        guard rounds > 0, changes > 0, services > 0, endpoints > 0 else {
            throw ValidationError("--rounds, --changes, --services and --endpoints must be > 0")
        }
        var logger = Logger(label: "swiftlane.bench")
        logger.logLevel = .error
        let cgroup = try Cgroup2.create(name: "swiftlane-bench-\(getpid())")
        let pinPath = "/sys/fs/bpf/swiftlane-bench-\(getpid())"
        defer {
            SocketLoadBalancer.uninstall(pinPath: pinPath)
            try? cgroup.destroy()
        }
        let datapath = try SocketLoadBalancer.install(DatapathOptions(pinPath: pinPath, cgroupPath: cgroup.path), logger: logger)
        let syncer = try ProxySyncer(nodeName: "bench-node", maps: datapath.maps, logger: logger)
        var objects = makeObjects()

        let phase = PhaseMeter()
        let fromEmpty = syncer.sync(objects)
        let fromEmptyCost = phase.finish()
        let fromEmptySyscalls = datapath.maps.syscalls
        guard fromEmpty.failures.isEmpty else { throw ValidationError("programming failed: \(fromEmpty.failures.first!)") }
        var fromEmptyRounds = [fromEmpty.duration.milliseconds / 1000]
        for _ in 1..<rounds {
            syncer.sync(ManifestObjects())
            Thread.sleep(forTimeInterval: 1.1)  // the released slot ranges leave quarantine
            let again = syncer.sync(objects)
            guard again.failures.isEmpty else { throw ValidationError("programming failed: \(again.failures.first!)") }
            fromEmptyRounds.append(again.duration.milliseconds / 1000)
        }
        let noop = syncer.sync(objects)

        var latencies: [Double] = [], writes: [Int] = [], syscalls: [Int] = []
        for change in 0..<changes {
            replaceEndpoint(change, in: &objects)
            let before = datapath.maps.syscalls
            let report = syncer.sync(objects)
            latencies.append(report.duration.milliseconds)
            writes.append(report.ops)
            syscalls.append(datapath.maps.syscalls - before)
        }
        let churn = churnSeconds > 0 ? absorbChurn(syncer: syncer, objects: &objects, firstChange: changes) : nil
        let whole = PhaseMeter.processTotals()
        let figures = Figures(
            services: services, endpoints: services * endpoints,
            fromEmptySeconds: fromEmptyRounds[0], fromEmptyRounds: fromEmptyRounds, fromEmptyMapWrites: fromEmpty.ops,
            fromEmptySyscalls: fromEmptySyscalls, fromEmptyCost: fromEmptyCost,
            noopResyncSeconds: noop.duration.milliseconds / 1000, noopResyncMapWrites: noop.ops,
            changeP50Milliseconds: percentile(latencies, 50), changeP99Milliseconds: percentile(latencies, 99),
            changeMinMilliseconds: latencies.min()!, changeMaxMilliseconds: latencies.max()!,
            changeMapWritesMedian: writes.sorted()[writes.count / 2], changeSyscallsMedian: syscalls.sorted()[syscalls.count / 2],
            churn: churn, peakRSSMiB: whole.peakRSSMiB, cpuSeconds: whole.cpuSeconds)
        print("programming \(figures.services) services / \(figures.endpoints) endpoints (translation + diff + map writes)")
        print(String(format: "  from empty:        %8.3f s   %7d map writes in %d bpf() calls; CPU %.2f s, peak RSS %.0f MiB",
                     figures.fromEmptySeconds, figures.fromEmptyMapWrites, figures.fromEmptySyscalls,
                     fromEmptyCost.cpuSeconds, fromEmptyCost.peakRSSMiB))
        if rounds > 1 {
            print(String(format: "  from empty, %d rounds: min %.3f s  median %.3f s  max %.3f s", rounds, fromEmptyRounds.min()!,
                         fromEmptyRounds.sorted()[rounds / 2], fromEmptyRounds.max()!))
        }
        print(String(format: "  no-op resync:      %8.3f ms  %7d map writes", figures.noopResyncSeconds * 1000, figures.noopResyncMapWrites))
        print(String(format: "  one endpoint change (n=%d): p50 %.2f ms  p99 %.2f ms  median %d map writes in %d bpf() calls",
                     changes, figures.changeP50Milliseconds, figures.changeP99Milliseconds, figures.changeMapWritesMedian,
                     figures.changeSyscallsMedian))
        if let churn {
            print(String(format: "  churn %d changes/s for %.0f s: %d changes in %d syncs (p50 %.2f ms, p99 %.2f ms, max lag %.1f ms); CPU %.2f s (%.0f%% of one core), peak RSS %.0f MiB",
                         churn.ratePerSecond, churn.cost.wallSeconds, churn.changesApplied, churn.syncs, churn.syncP50Milliseconds,
                         churn.syncP99Milliseconds, churn.maxLagMilliseconds, churn.cost.cpuSeconds,
                         100 * churn.cost.cpuSeconds / churn.cost.wallSeconds, churn.cost.peakRSSMiB))
        }
        print(String(format: "  process: peak RSS %.0f MiB, CPU %.2f s", figures.peakRSSMiB, figures.cpuSeconds))
        try BenchOutput.writeJSON(figures, to: json)
    }

    /// Replaces one endpoint of one slice: a pod rescheduled with a new IP.
    private func replaceEndpoint(_ change: Int, in objects: inout ManifestObjects) {
        let slice = (change * 7919) % services
        let endpoint = change % endpoints
        objects.endpointSlices[slice].endpoints[endpoint].addresses = [Self.podAddress(slice, 100 + change % 50_000)]
        objects.endpointSlices[slice].metadata.resourceVersion = "\(2_000_000 + change)"
    }

    /// Changes fall due at churnRate per second; each sync takes all that are due (the
    /// controller collapses changes that arrive during a sync into the next one), and the
    /// loop sleeps until the next is due when it has caught up.
    private func absorbChurn(syncer: ProxySyncer, objects: inout ManifestObjects, firstChange: Int) -> Churn {
        let phase = PhaseMeter()
        let clock = ContinuousClock()
        let start = clock.now
        let interval = Duration.seconds(1) / churnRate
        let total = Int(churnSeconds * Double(churnRate))
        var applied = 0, syncs = 0, mapWrites = 0
        var durations: [Double] = [], maxLag = Duration.zero
        while applied < total {
            let due = min(total, Int((clock.now - start) / interval) + 1)
            if due <= applied {
                Thread.sleep(forTimeInterval: Double((start + interval * applied - clock.now).milliseconds) / 1000)
                continue
            }
            for change in applied..<due { replaceEndpoint(firstChange + change, in: &objects) }
            let report = syncer.sync(objects)
            // The oldest change of this batch fell due at start + applied × interval.
            maxLag = max(maxLag, clock.now - (start + interval * applied))
            applied = due
            syncs += 1
            mapWrites += report.ops
            durations.append(report.duration.milliseconds)
        }
        return Churn(ratePerSecond: churnRate, changesApplied: applied, syncs: syncs,
                     syncP50Milliseconds: percentile(durations, 50), syncP99Milliseconds: percentile(durations, 99),
                     maxLagMilliseconds: maxLag.milliseconds, mapWrites: mapWrites, cost: phase.finish())
    }

    static func podAddress(_ service: Int, _ index: Int) -> String {
        let value = 0xC612_0000 | UInt32((service * 37 + index * 131) & 0xFFFF)
        return IPAddress(v4: value).description
    }

    private func makeObjects() -> ManifestObjects {
        var objects = ManifestObjects()
        for index in 0..<services {
            let name = "svc-\(index)"
            let vip = IPAddress(v4: 0xC613_0000 | UInt32(index + 1)).description
            objects.services.append(Service(
                metadata: ObjectMeta(name: name, namespace: "bench", resourceVersion: "\(index + 1)"),
                spec: ServiceSpec(type: "ClusterIP", clusterIP: vip, clusterIPs: [vip], ipFamilies: ["IPv4"],
                                  ports: [ServicePort(name: "http", port: 80, targetPort: .int(8080))])))
            objects.endpointSlices.append(EndpointSlice(
                metadata: ObjectMeta(name: name + "-1", namespace: "bench", resourceVersion: "\(1_000_000 + index)",
                                     labels: [WellKnown.serviceNameLabel: name]),
                addressType: "IPv4",
                endpoints: (0..<endpoints).map { Endpoint(addresses: [Self.podAddress(index, $0)], nodeName: "node-\($0 % 5)") },
                ports: [EndpointPort(name: "http", port: 8080)]))
        }
        return objects
    }

    private func percentile(_ values: [Double], _ p: Int) -> Double {
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, max(0, (sorted.count * p + 99) / 100 - 1))]
    }
}

extension Duration {
    var milliseconds: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15 }
}

/// CPU seconds and peak RSS of this process from when it was made to `finish()`: the
/// kernel's peak (VmHWM) is reset at the start through /proc/self/clear_refs, so the peak
/// is this phase's own.
struct PhaseMeter {
    private let clock = ContinuousClock()
    private let start: ContinuousClock.Instant
    private let cpuAtStart: Double

    init() {
        // "5" resets the peak resident set size to the current one (proc(5)).
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
        start = clock.now
        cpuAtStart = Self.processTotals().cpuSeconds
    }

    func finish() -> ProgrammingBench.PhaseCost {
        let now = Self.processTotals()
        return ProgrammingBench.PhaseCost(wallSeconds: (clock.now - start).milliseconds / 1000,
                                          cpuSeconds: now.cpuSeconds - cpuAtStart, peakRSSMiB: Self.peakRSSMiB())
    }

    /// User + system CPU seconds since the process started, and its peak RSS.
    static func processTotals() -> (cpuSeconds: Double, peakRSSMiB: Double) {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let cpu = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        return (cpu, max(peakRSSMiB(), Double(usage.ru_maxrss) / 1024))
    }

    /// VmHWM from /proc/self/status (kB), in MiB.
    private static func peakRSSMiB() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kB = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kB / 1024
    }
}
