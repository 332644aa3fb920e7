import Datapath
import Foundation
import Glibc
import NetLab
import XCTest

/// A real `swiftlane run` process on a manifest folder, attached to a lab's client cgroup,
/// with its metrics and health servers on free loopback ports. Everything (process,
/// pins, files) is removed by `tearDown()`.
final class RunningController {
    let directory: String
    let pinPath: String
    let process: LabProcess
    let metricsPort: Int
    let healthPort: Int

    var configPath: String { directory + "/config.yaml" }
    var manifestPath: String { directory + "/manifests/services.yaml" }

    /// `extraConfig` is appended to the configuration file; `wrapper` runs before the
    /// binary (e.g. `setpriv` to restrict its capabilities).
    init(lab: ClusterLab, label: String, manifests: String, extraConfig: String = "", wrapper: [String] = []) throws {
        directory = NSTemporaryDirectory() + "swiftlane-\(label)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        pinPath = uniquePinPath(label)
        try FileManager.default.createDirectory(atPath: directory + "/manifests", withIntermediateDirectories: true)
        try manifests.write(toFile: directory + "/manifests/services.yaml", atomically: true, encoding: .utf8)
        try Self.config(lab: lab, pinPath: pinPath, extra: extraConfig).write(
            toFile: directory + "/config.yaml", atomically: true,
            encoding: .utf8)
        process = try LabProcess.start(
            argv: wrapper + [ProbeRunner.defaultBinary(), "run", "--config", directory + "/config.yaml"])
        do {
            metricsPort = try Self.waitForPort(of: "metrics", in: process)
            healthPort = try Self.waitForPort(of: "health", in: process)
        } catch {
            process.stop()
            SocketLoadBalancer.uninstall(pinPath: pinPath)
            throw error
        }
    }

    static func config(lab: ClusterLab, pinPath: String, extra: String) -> String {
        """
        nodeName: node-a
        source: {directory: {path: manifests, pollIntervalMilliseconds: 50}}
        cgroupPath: \(lab.clientCgroup.path)
        bpfPinPath: \(pinPath)
        metricsBindAddress: 127.0.0.1:0
        healthzBindAddress: 127.0.0.1:0
        \(extra)
        """
    }

    func tearDown() {
        process.stop()
        SocketLoadBalancer.uninstall(pinPath: pinPath)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Replaces the manifests the controller reads.
    func writeManifests(_ text: String) throws {
        try text.write(toFile: manifestPath, atomically: true, encoding: .utf8)
    }

    func get(_ path: String, port: Int? = nil) throws -> HTTPAnswer {
        try HTTPAnswer.get(port: port ?? healthPort, path: path)
    }

    /// `/metrics`, parsed by the Python `prometheus_client` parser.
    func scrape() throws -> PrometheusSamples {
        let answer = try get("/metrics", port: metricsPort)
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        return try PrometheusSamples.parse(answer.body)
    }

    /// Waits (bounded) until `condition` holds, re-evaluating it.
    func waitUntil(_ what: String, timeout: TimeInterval = 30, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            guard process.isRunning else {
                throw Failure("controller exited while waiting for \(what): \(process.stderrText)")
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw Failure("\(what) did not happen within \(timeout)s; controller log:\n\(process.stderrText.suffix(4000))")
    }

    /// The port a server logged (`address=127.0.0.1:PORT server=NAME … listening`).
    private static func waitForPort(of server: String, in process: LabProcess) throws -> Int {
        let deadline = Date().addingTimeInterval(60)
        let pattern = try NSRegularExpression(pattern: #"address=127\.0\.0\.1:([0-9]+) server=\#(server) .*listening"#)
        while Date() < deadline {
            let text = process.stderrText
            if let match = pattern.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
                let range = Range(match.range(at: 1), in: text), let port = Int(text[range])
            {
                return port
            }
            guard process.isRunning else { throw Failure("controller exited: \(text)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw Failure("the \(server) server never listened: \(process.stderrText)")
    }
}

struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One plain HTTP/1.0 exchange over loopback (no client library between the test and the
/// server's bytes).
struct HTTPAnswer {
    var status: Int
    /// Lower-cased names.
    var headers: [String: String]
    var body: String

    static func get(port: Int, path: String) throws -> HTTPAnswer {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket: \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw Failure("connect to 127.0.0.1:\(port): errno \(errno)") }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard write(fd, request, request.count) == request.count else { throw Failure("write: \(errno)") }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 { throw Failure("read: errno \(errno)") }
            if count == 0 { break }
            response += buffer[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw Failure("no header end in \(text)") }
        let lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
        guard let status = lines.first?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw Failure("bad status line \(lines.first ?? "")")
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                in: .whitespaces)
        }
        return HTTPAnswer(status: status, headers: headers, body: String(text[split.upperBound...]))
    }
}

/// Samples of a Prometheus text exposition as the reference parser (Python's
/// `prometheus_client`, Debian's python3-prometheus-client) reads them: if Swiftlane's
/// output were malformed, that parser would fail the test.
struct PrometheusSamples {
    struct Sample: Decodable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// Family name → type, as declared by `# TYPE`.
    var types: [String: String]
    var samples: [Sample]

    static let parserScript = """
        import json, sys
        from prometheus_client.parser import text_string_to_metric_families
        families = list(text_string_to_metric_families(sys.stdin.read()))
        json.dump({"types": {f.name: f.type for f in families},
                   "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for f in families for s in f.samples]},
                  sys.stdout)
        """

    static func parse(_ text: String) throws -> PrometheusSamples {
        let (status, output, errors) = try runCommand(["/usr/bin/python3", "-c", parserScript], input: text)
        guard status == 0 else {
            throw Failure("prometheus_client rejected the exposition: \(errors)\n\(text.prefix(2000))")
        }
        struct Parsed: Decodable {
            var types: [String: String]
            var samples: [Sample]
        }
        let parsed = try JSONDecoder().decode(Parsed.self, from: Data(output.utf8))
        return PrometheusSamples(types: parsed.types, samples: parsed.samples)
    }

    /// The one sample with this name whose labels include `labels`.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matching = samples.filter { sample in
            sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value }
        }
        return matching.count == 1 ? matching[0].value : nil
    }

    func all(_ name: String) -> [Sample] { samples.filter { $0.name == name } }
}

/// Runs a command to completion; returns its status, stdout and stderr. Output goes to
/// files, not pipes: a command that writes more than a pipe holds to one stream while the
/// reader waits on the other would never finish (a verifier log is that long).
func runCommand(_ argv: [String], input: String? = nil) throws -> (Int32, String, String) {
    let base = NSTemporaryDirectory() + "swiftlane-run-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    FileManager.default.createFile(atPath: base + ".out", contents: nil)
    FileManager.default.createFile(atPath: base + ".err", contents: nil)
    defer {
        try? FileManager.default.removeItem(atPath: base + ".out")
        try? FileManager.default.removeItem(atPath: base + ".err")
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try Shell.which(argv[0]))
    process.arguments = Array(argv.dropFirst())
    process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: base + ".out"))
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: base + ".err"))
    let stdin = Pipe()
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try stdin.fileHandleForWriting.close()
    process.waitUntilExit()
    return (process.terminationStatus, try String(contentsOfFile: base + ".out", encoding: .utf8),
            try String(contentsOfFile: base + ".err", encoding: .utf8))
}

/// `bpftool -j ARGS`, decoded.
func bpftool(_ arguments: [String]) throws -> Any {
    let (status, output, errors) = try runCommand(["bpftool", "-j"] + arguments)
    guard status == 0 else { throw Failure("bpftool \(arguments.joined(separator: " ")): \(errors)") }
    // bpftool prints a bare newline, not "[]", for a cgroup without programs.
    let json = output.trimmingCharacters(in: .whitespacesAndNewlines)
    return try JSONSerialization.jsonObject(with: Data((json.isEmpty ? "[]" : json).utf8))
}
