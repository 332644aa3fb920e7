import ArgumentParser
import Foundation
import Glibc
import KubeAPI
import Logging
import ServiceModel

/// Initial sync of a large cluster from the fake API server, then event-to-callback latency
/// under a steady stream of changes. The server is the KubeAPI tests' fake API server (a
/// separate Python process, so its CPU and memory are not counted), over TLS with HTTP/2.
struct KubeAPIBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kube-api",
        abstract: "Informer initial sync (time, peak RSS, CPU) and event-to-callback latency against a local API server.",
        discussion: """
            The server holds --services Services, each with one EndpointSlice of \
            --endpoints-per-slice endpoints. Two informers (Services, EndpointSlices) start \
            together; "synced" is when both delivered their initial state. Then the server \
            modifies Services at --rate per second, stamping each with its send time \
            (CLOCK_MONOTONIC), and the Service informer's callback measures the delay. \
            --mode streaming uses WatchList (sendInitialEvents); --mode list uses paged LIST \
            (limit 500) then WATCH. Targets: synced < 5 s, peak RSS < 300 MiB, p99 < 10 ms.
            """
    )

    enum Mode: String, ExpressibleByArgument, CaseIterable {
        case streaming
        case list
    }

    @Option(help: "Services (each with one EndpointSlice).")
    var services = 10_000

    @Option(help: "Endpoints per EndpointSlice.")
    var endpointsPerSlice = 10

    @Option(help: "streaming (WatchList) or list (paged LIST then WATCH).")
    var mode: Mode = .streaming

    @Option(help: "Changes per second in the latency phase.")
    var rate = 1_000

    @Option(help: "Changes in the latency phase.")
    var changes = 5_000

    @Option(help: "Client QPS limit (kube-proxy's default is 5; paged lists need more to measure the client, not the limiter).")
    var qps: Double = 100

    @Option(help: "Client burst limit.")
    var burst = 100

    @Option(help: "The fake API server script (default: the one in Tests/KubeAPITests).")
    var serverScript: String?

    @Option(help: "Write the figures as JSON to this file as well.")
    var json: String?

    struct Figures: Codable {
        var mode: String
        var services: Int
        var endpointSlices: Int
        var endpoints: Int
        var secondsToSynced: Double
        var cpuSecondsToSynced: Double
        var peakRSSMiB: Double
        var rssBeforeMiB: Double
        var changesSent: Int
        var changesSeen: Int
        var latencyP50Milliseconds: Double
        var latencyP99Milliseconds: Double
        var latencyMaxMilliseconds: Double
        var peakRSSAfterChangesMiB: Double
    }

    func run() throws {
        let script = serverScript ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Tests/KubeAPITests/FakeAPIServer/fake_apiserver.py").path
        let pki = try BenchPKI.make()
        defer { try? FileManager.default.removeItem(atPath: pki.directory) }
        let server = try BenchServer(script: script, pki: pki)
        defer { server.stop() }
        let generated = try server.command(["op": "generate", "services": services, "endpointsPerSlice": endpointsPerSlice])
        print("server: \(generated["services"] ?? "?") services, \(generated["endpointslices"] ?? "?") EndpointSlices, \(services * endpointsPerSlice) endpoints")

        let outcome = Outcome()
        let semaphore = DispatchSemaphore(value: 0)
        let settings = self
        Task {
            do {
                outcome.figures = try await settings.measure(server: server, pki: pki)
            } catch {
                outcome.error = error
            }
            semaphore.signal()
        }
        semaphore.wait()
        if let error = outcome.error { throw error }
        guard let figures = outcome.figures else { return }
        print(String(format: "synced in %.2f s (target < 5 s), %.2f CPU s, peak RSS %.1f MiB (target < 300 MiB; %.1f MiB before)",
                     figures.secondsToSynced, figures.cpuSecondsToSynced, figures.peakRSSMiB, figures.rssBeforeMiB))
        print(String(format: "%d changes at %d/s: %d seen, callback latency p50 %.2f ms, p99 %.2f ms (target < 10 ms), max %.2f ms; peak RSS %.1f MiB",
                     figures.changesSent, rate, figures.changesSeen, figures.latencyP50Milliseconds,
                     figures.latencyP99Milliseconds, figures.latencyMaxMilliseconds, figures.peakRSSAfterChangesMiB))
        try BenchOutput.writeJSON(figures, to: json)
    }

    private final class Outcome: @unchecked Sendable {
        var figures: Figures?
        var error: Error?
    }

    private func measure(server: BenchServer, pki: BenchPKI) async throws -> Figures {
        var logger = Logger(label: "swiftlane.bench")
        logger.logLevel = .warning
        let configuration = ClientConfiguration(
            server: try ServerURL(parsing: "https://127.0.0.1:\(server.port)"),
            tls: TLSOptions(certificateAuthority: .file(pki.directory + "/ca.crt")))
        let client = try KubeClient(configuration: configuration, limits: .init(qps: qps, burst: burst), logger: logger)
        defer { client.shutdown() }
        var options = InformerOptions()
        options.lifecycle.streamingList = mode == .streaming

        let probe = SyncProbe()
        let rssBefore = Self.peakRSSMiB()
        let cpuBefore = Self.cpuSeconds()
        let start = ContinuousClock.now
        let serviceInformer = Informer<ServiceModel.Service>(client: client, query: .services(), options: options) { event in
            switch event {
            case .synced: probe.synced(at: ContinuousClock.now)
            case .updated(_, let new): probe.change(new)
            default: break
            }
        }
        let sliceInformer = Informer<EndpointSlice>(client: client, query: .endpointSlices(), options: options) { event in
            if case .synced = event { probe.synced(at: ContinuousClock.now) }
        }
        let tasks = [Task { await serviceInformer.run() }, Task { await sliceInformer.run() }]
        defer { for task in tasks { task.cancel() } }
        while probe.syncedCount < 2 {
            try await Task.sleep(for: .milliseconds(5))
            if ContinuousClock.now - start > .seconds(300) { throw ValidationError("no sync within 300 s") }
        }
        let syncedAt = probe.lastSynced!
        let cpuSynced = Self.cpuSeconds() - cpuBefore
        let rssSynced = Self.peakRSSMiB()
        guard serviceInformer.objects().count == services, sliceInformer.objects().count == services else {
            throw ValidationError("synced with \(serviceInformer.objects().count) services and \(sliceInformer.objects().count) slices")
        }

        try server.command(["op": "churn", "rate": rate, "count": changes])
        _ = try server.waitForEvent("churn-done")
        let deadline = ContinuousClock.now + .seconds(30)
        while probe.latencies.count < changes && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        let latencies = probe.latencies.sorted()
        func percentile(_ p: Double) -> Double {
            guard !latencies.isEmpty else { return .nan }
            return latencies[min(latencies.count - 1, Int((Double(latencies.count) * p).rounded(.up)) - 1)]
        }
        return Figures(
            mode: mode.rawValue, services: services, endpointSlices: services, endpoints: services * endpointsPerSlice,
            secondsToSynced: (syncedAt - start).benchSeconds, cpuSecondsToSynced: cpuSynced, peakRSSMiB: rssSynced,
            rssBeforeMiB: rssBefore, changesSent: changes, changesSeen: latencies.count,
            latencyP50Milliseconds: percentile(0.5), latencyP99Milliseconds: percentile(0.99),
            latencyMaxMilliseconds: latencies.last ?? .nan, peakRSSAfterChangesMiB: Self.peakRSSMiB())
    }

    static func peakRSSMiB() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
    }

    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}

/// Sync times and per-change latencies, written from the informers' tasks.
private final class SyncProbe: @unchecked Sendable {
    private let lock = NSLock()
    private var syncs: [ContinuousClock.Instant] = []
    private var measured: [Double] = []

    func synced(at instant: ContinuousClock.Instant) { lock.withLock { syncs.append(instant) } }
    var syncedCount: Int { lock.withLock { syncs.count } }
    var lastSynced: ContinuousClock.Instant? { lock.withLock { syncs.max() } }
    var latencies: [Double] { lock.withLock { measured } }

    /// A changed Service stamped by the server: how long since it was sent.
    func change(_ service: ServiceModel.Service) {
        guard let sent = service.metadata.annotations["bench.swiftlane/sent-ns"].flatMap(UInt64.init) else { return }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let nanoseconds = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
        let milliseconds = Double(Int64(bitPattern: nanoseconds &- sent)) / 1e6
        lock.withLock { measured.append(milliseconds) }
    }
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
private struct BenchPKI {
    let directory: String

    static func make() throws -> BenchPKI {
        let directory = NSTemporaryDirectory() + "kubeapi-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n".write(
            toFile: directory + "/server.ext", atomically: true, encoding: .utf8)
        for argv in [
            ["openssl", "req", "-x509"] + key + ["-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=bench-ca",
                                                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
            ["openssl", "req"] + key + ["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=kube-apiserver"],
            ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "server.ext"],
        ] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = argv
            process.currentDirectoryURL = URL(fileURLWithPath: directory)
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw ValidationError("\(argv.joined(separator: " ")) failed") }
        }
        return BenchPKI(directory: directory)
    }
}

/// The fake API server process, driven by JSON lines.
private final class BenchServer: @unchecked Sendable {
    private(set) var port = 0
    private let process = Process()
    private let input: FileHandle
    private let reader: FileHandle
    private var buffer = Data()
    private var nextID = 0

    init(script: String, pki: BenchPKI) throws {
        let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3"
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, script, "--cert", pki.directory + "/server.crt", "--key", pki.directory + "/server.key"]
        let stdin = Pipe()
        let stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        input = stdin.fileHandleForWriting
        reader = stdout.fileHandleForReading
        try process.run()
        var listening: [String: Any] = [:]
        while listening["listening"] == nil { listening = try nextLine() }
        guard let port = listening["listening"] as? Int else { throw ValidationError("the fake API server did not start") }
        self.port = port
    }

    func stop() {
        try? input.close()
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    private func nextLine() throws -> [String: Any] {
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = buffer[buffer.startIndex..<newline]
                buffer.removeSubrange(buffer.startIndex...newline)
                if let object = try JSONSerialization.jsonObject(with: line) as? [String: Any] { return object }
                continue
            }
            let data = reader.availableData
            guard !data.isEmpty else { throw ValidationError("the fake API server exited") }
            buffer.append(data)
        }
    }

    @discardableResult
    func command(_ command: [String: Any]) throws -> [String: Any] {
        nextID += 1
        var command = command
        command["id"] = nextID
        var data = try JSONSerialization.data(withJSONObject: command)
        data.append(0x0A)
        try input.write(contentsOf: data)
        while true {
            let line = try nextLine()
            if (line["id"] as? Int) == nextID { return line }
        }
    }

    func waitForEvent(_ name: String) throws -> [String: Any] {
        while true {
            let line = try nextLine()
            if (line["event"] as? String) == name { return line }
        }
    }
}

extension Duration {
    fileprivate var benchSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
