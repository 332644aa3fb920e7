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
        abstract: "Programming time: from empty to N services / N×M endpoints, a no-op resync, and single endpoint changes.",
        discussion: """
            Installs the datapath on a throwaway child cgroup with its own pins, then times \
            ProxySyncer.sync (translation + diff + BPF map writes) and counts the map writes \
            (one bpf() syscall each). Peak RSS and CPU seconds are the whole process's.
            """
    )

    @Option(name: .long, help: "Services (one TCP port each).")
    var services: Int = 10_000

    @Option(name: .long, help: "Endpoints per service (one EndpointSlice each).")
    var endpoints: Int = 10

    @Option(name: .long, help: "Single endpoint changes to time.")
    var changes: Int = 200

    @Option(name: .long, help: "Write the figures as JSON to this file as well.")
    var json: String?

    struct Figures: Codable {
        var services: Int
        var endpoints: Int
        var fromEmptySeconds: Double
        var fromEmptyMapWrites: Int
        var fromEmptySyscalls: Int
        var noopResyncSeconds: Double
        var noopResyncMapWrites: Int
        var changeP50Milliseconds: Double
        var changeP99Milliseconds: Double
        var changeMapWritesMedian: Int
        var changeSyscallsMedian: Int
        var peakRSSMiB: Double
        var cpuSeconds: Double
    }

    func run() throws {
        guard geteuid() == 0 else { throw ValidationError("needs root (BPF)") }
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

        let fromEmpty = syncer.sync(objects)
        let fromEmptySyscalls = datapath.maps.syscalls
        guard fromEmpty.failures.isEmpty else { throw ValidationError("programming failed: \(fromEmpty.failures.first!)") }
        let noop = syncer.sync(objects)

        var latencies: [Double] = [], writes: [Int] = [], syscalls: [Int] = []
        for change in 0..<changes {
            // Replace one endpoint of one slice: a pod rescheduled with a new IP.
            let slice = (change * 7919) % services
            let endpoint = change % endpoints
            objects.endpointSlices[slice].endpoints[endpoint].addresses = [Self.podAddress(slice, 100 + change)]
            objects.endpointSlices[slice].metadata.resourceVersion = "\(2_000_000 + change)"
            let before = datapath.maps.syscalls
            let report = syncer.sync(objects)
            latencies.append(report.duration.milliseconds)
            writes.append(report.ops)
            syscalls.append(datapath.maps.syscalls - before)
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let figures = Figures(
            services: services, endpoints: services * endpoints,
            fromEmptySeconds: fromEmpty.duration.milliseconds / 1000, fromEmptyMapWrites: fromEmpty.ops,
            fromEmptySyscalls: fromEmptySyscalls,
            noopResyncSeconds: noop.duration.milliseconds / 1000, noopResyncMapWrites: noop.ops,
            changeP50Milliseconds: percentile(latencies, 50), changeP99Milliseconds: percentile(latencies, 99),
            changeMapWritesMedian: writes.sorted()[writes.count / 2], changeSyscallsMedian: syscalls.sorted()[syscalls.count / 2],
            peakRSSMiB: Double(usage.ru_maxrss) / 1024,
            cpuSeconds: Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6)
        print("programming \(figures.services) services / \(figures.endpoints) endpoints (translation + diff + map writes)")
        print(String(format: "  from empty:        %8.3f s   %7d map writes in %d bpf() calls", figures.fromEmptySeconds,
                     figures.fromEmptyMapWrites, figures.fromEmptySyscalls))
        print(String(format: "  no-op resync:      %8.3f s   %7d map writes", figures.noopResyncSeconds, figures.noopResyncMapWrites))
        print(String(format: "  one endpoint change (n=%d): p50 %.2f ms  p99 %.2f ms  median %d map writes in %d bpf() calls",
                     changes, figures.changeP50Milliseconds, figures.changeP99Milliseconds, figures.changeMapWritesMedian,
                     figures.changeSyscallsMedian))
        print(String(format: "  process: peak RSS %.0f MiB, CPU %.2f s", figures.peakRSSMiB, figures.cpuSeconds))
        try BenchOutput.writeJSON(figures, to: json)
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
