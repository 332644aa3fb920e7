import Foundation
import KubeAPI
import Logging
import XCTest

/// The folder of this test target (for the fake server script and the fixtures).
let testTargetDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()

/// A fixture file's bytes.
func fixture(_ name: String) throws -> Data {
    try Data(contentsOf: testTargetDirectory.appendingPathComponent("Fixtures/" + name))
}

let testLogger: Logger = {
    var logger = Logger(label: "kubeapi.test")
    logger.logLevel = ProcessInfo.processInfo.environment["SWIFTLANE_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}()

/// Runs a command and returns its standard output; throws with its standard error on failure.
@discardableResult
func runTool(_ argv: [String], in directory: String? = nil) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = argv
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let outData = output.fileHandleForReading.readDataToEndOfFile()
    let errData = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw ToolFailed(argv: argv, status: process.terminationStatus, stderr: String(decoding: errData, as: UTF8.self))
    }
    return String(decoding: outData, as: UTF8.self)
}

struct ToolFailed: Error, CustomStringConvertible {
    var argv: [String]
    var status: Int32
    var stderr: String
    var description: String { "\(argv.joined(separator: " ")) exited \(status): \(stderr)" }
}

/// A test PKI made with the openssl CLI once per test run: a CA, a server certificate
/// for 127.0.0.1/::1/localhost, a server certificate valid only for
/// `apiserver.swiftlane.test`, a client certificate, and an unrelated CA.
struct TestCertificates {
    static let serverName = "apiserver.swiftlane.test"
    let directory: String
    var caCertificate: String { directory + "/ca.crt" }
    var serverCertificate: String { directory + "/server.crt" }
    var serverKey: String { directory + "/server.key" }
    var namedServerCertificate: String { directory + "/named.crt" }
    var namedServerKey: String { directory + "/named.key" }
    var clientCertificate: String { directory + "/client.crt" }
    var clientKey: String { directory + "/client.key" }
    var otherCACertificate: String { directory + "/other-ca.crt" }

    static let shared: Result<TestCertificates, Error> = Result { try TestCertificates.make() }

    static func get() throws -> TestCertificates { try shared.get() }

    private static func make() throws -> TestCertificates {
        let directory = NSTemporaryDirectory() + "kubeapi-pki-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for ca in ["ca", "other-ca"] {
            try runTool(["openssl", "req", "-x509"] + key + [
                "-keyout", "\(ca).key", "-out", "\(ca).crt", "-days", "3", "-subj", "/CN=swiftlane \(ca)",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ], in: directory)
        }
        let leaves: [(name: String, subject: String, extensions: String)] = [
            ("server", "/CN=kube-apiserver", "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
            ("named", "/CN=kube-apiserver", "subjectAltName=DNS:\(serverName)\nextendedKeyUsage=serverAuth\n"),
            ("client", "/CN=system:kube-proxy", "extendedKeyUsage=clientAuth\n"),
        ]
        for leaf in leaves {
            try leaf.extensions.write(toFile: directory + "/\(leaf.name).ext", atomically: true, encoding: .utf8)
            try runTool(["openssl", "req"] + key + [
                "-keyout", "\(leaf.name).key", "-out", "\(leaf.name).csr", "-subj", leaf.subject,
            ], in: directory)
            try runTool([
                "openssl", "x509", "-req", "-in", "\(leaf.name).csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", "\(leaf.name).crt", "-days", "3", "-extfile", "\(leaf.name).ext",
            ], in: directory)
        }
        return TestCertificates(directory: directory)
    }
}

/// The fake API server (FakeAPIServer/fake_apiserver.py) as a child process on
/// 127.0.0.1 with an ephemeral port, controlled through JSON lines on its stdin.
final class FakeAPIServer: @unchecked Sendable {
    enum Mode {
        /// TLS with these ALPN protocols offered.
        case tls(alpn: String = "h2,http/1.1", namedCertificate: Bool = false)
        case plain
    }

    let port: Int
    let mode: Mode
    let certificates: TestCertificates
    private let process: Process
    private let input: FileHandle
    private let inbox = LineInbox()
    private let lock = NSLock()
    private var nextID = 0

    /// The Python with h2 installed: Debian's, whatever else comes first in PATH.
    static let python: String = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3"

    /// The address the server listens on.
    let host: String

    /// `netns`: run the server inside that network namespace, listening on `host`.
    init(mode: Mode = .tls(), tokens: [String] = [], clientCertificates: Bool = false,
         requireClientCertificate: Bool = false, watchList: String = "supported",
         host: String = "127.0.0.1", netns: String? = nil) throws {
        self.host = host
        self.mode = mode
        certificates = try TestCertificates.get()
        var arguments = [testTargetDirectory.appendingPathComponent("FakeAPIServer/fake_apiserver.py").path,
                         "--watchlist", watchList, "--host", host]
        if case .tls(let alpn, let named) = mode {
            arguments += [
                "--cert", named ? certificates.namedServerCertificate : certificates.serverCertificate,
                "--key", named ? certificates.namedServerKey : certificates.serverKey, "--alpn", alpn,
            ]
            if clientCertificates || requireClientCertificate { arguments += ["--client-ca", certificates.caCertificate] }
            if requireClientCertificate { arguments.append("--require-client-cert") }
        }
        for token in tokens { arguments += ["--token", token] }
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = (netns.map { ["ip", "netns", "exec", $0] } ?? []) + [Self.python] + arguments
        let stdin = Pipe()
        let stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        input = stdin.fileHandleForWriting
        try process.run()
        let reader = stdout.fileHandleForReading
        let inbox = self.inbox
        let thread = Thread {
            var buffer = Data()
            while true {
                let data = reader.availableData
                if data.isEmpty { break }
                buffer.append(data)
                while let newline = buffer.firstIndex(of: 0x0A) {
                    let line = buffer[buffer.startIndex..<newline]
                    buffer.removeSubrange(buffer.startIndex...newline)
                    if let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] { inbox.add(object) }
                }
            }
        }
        thread.start()
        do {
            let listening = try inbox.wait(timeout: 30) { $0["listening"] != nil }
            guard let port = listening["listening"] as? Int else { throw TestTimeout(what: "the fake API server to listen") }
            self.port = port
        } catch {
            process.terminate()
            throw error
        }
    }

    deinit {
        stop()
    }

    func stop() {
        guard process.isRunning else { return }
        try? input.close()
        process.terminate()
        process.waitUntilExit()
    }

    var url: String {
        if case .plain = mode { return "http://\(host):\(port)" }
        return "https://\(host):\(port)"
    }

    /// A client configuration trusting the test CA.
    func clientConfiguration(token: String? = nil, tokenFile: String? = nil) throws -> ClientConfiguration {
        var tls = TLSOptions(certificateAuthority: .file(certificates.caCertificate))
        if case .tls(_, true) = mode { tls.serverName = TestCertificates.serverName }
        let credentials: Credentials = token.map { .token($0) } ?? tokenFile.map { .tokenFile($0) } ?? .none
        return ClientConfiguration(server: try ServerURL(parsing: url), tls: tls, credentials: credentials)
    }

    private func waitForLine(timeout: TimeInterval, _ matches: ([String: Any]) -> Bool) throws -> [String: Any] {
        try inbox.wait(timeout: timeout, matches)
    }

    /// Sends one command and returns its reply (throws when the server reports an error).
    @discardableResult
    func command(_ op: String, _ arguments: [String: Any] = [:], timeout: TimeInterval = 60) throws -> [String: Any] {
        lock.lock()
        nextID += 1
        let id = nextID
        lock.unlock()
        var command = arguments
        command["op"] = op
        command["id"] = id
        var data = try JSONSerialization.data(withJSONObject: command)
        data.append(0x0A)
        try input.write(contentsOf: data)
        let reply = try waitForLine(timeout: timeout) { ($0["id"] as? Int) == id }
        guard reply["ok"] as? Bool == true else {
            throw ToolFailed(argv: ["fake-apiserver", op], status: 1, stderr: "\(reply["error"] ?? "?")")
        }
        return reply
    }

    /// Creates or replaces an object; returns its new resourceVersion.
    @discardableResult
    func upsert(_ resource: String, _ object: [String: Any]) throws -> String {
        try command("upsert", ["resource": resource, "object": object])["rv"] as? String ?? ""
    }

    @discardableResult
    func delete(_ resource: String, key: String, silently: Bool = false) throws -> String? {
        try command("delete", ["resource": resource, "key": key, "silent": silently])["rv"] as? String
    }

    /// Queues a fault for the next matching request(s).
    func fault(_ arguments: [String: Any]) throws {
        try command("fault", arguments)
    }

    /// Waits until `count` watches of `resource` are open.
    func waitForWatchers(_ resource: String, count: Int = 1) throws {
        let reply = try command("wait_watchers", ["resource": resource, "count": count, "timeout": 30])
        if reply["timedOut"] as? Bool == true { throw TestTimeout(what: "\(count) watch(es) of \(resource)") }
    }

    /// The requests served so far, oldest first.
    @discardableResult
    func requests(clear: Bool = false) throws -> [ServedRequest] {
        let list = try command("requests", ["clear": clear])["requests"] as? [[String: Any]] ?? []
        return list.map(ServedRequest.init)
    }

    /// Waits for an unsolicited line (e.g. `{"event": "churn-done"}`).
    func waitForEvent(_ name: String, timeout: TimeInterval) throws -> [String: Any] {
        try waitForLine(timeout: timeout) { ($0["event"] as? String) == name }
    }
}

/// Lines printed by the fake server, waiting to be claimed.
private final class LineInbox: @unchecked Sendable {
    private let condition = NSCondition()
    private var lines: [[String: Any]] = []

    func add(_ line: [String: Any]) {
        condition.lock()
        lines.append(line)
        condition.broadcast()
        condition.unlock()
    }

    func wait(timeout: TimeInterval, _ matches: ([String: Any]) -> Bool) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let index = lines.firstIndex(where: matches) { return lines.remove(at: index) }
            guard condition.wait(until: deadline) else { throw TestTimeout(what: "a line from the fake API server") }
        }
    }
}

/// One request as the fake server logged it.
struct ServedRequest {
    var path: String
    var query: [String: String]
    var http: String
    var authorization: String?
    var verb: String?
    var status: Int?
    var peerCertificate: String?
    var host: String?
    var method: String

    init(_ entry: [String: Any]) {
        method = entry["method"] as? String ?? "GET"
        path = entry["path"] as? String ?? ""
        query = entry["query"] as? [String: String] ?? [:]
        http = entry["http"] as? String ?? ""
        authorization = entry["authorization"] as? String
        verb = entry["verb"] as? String
        status = entry["status"] as? Int
        peerCertificate = (entry["peer"] as? [String: Any])?["cert"] as? String
        host = entry["host"] as? String
    }

    var isWatch: Bool { verb == "watch" }
    var isList: Bool { verb == "list" }
}

/// Objects for the fake server.
enum TestObjects {
    static func service(_ name: String, namespace: String = "default", clusterIP: String = "10.96.0.10",
                        labels: [String: String] = [:], port: Int = 80) -> [String: Any] {
        [
            "metadata": ["name": name, "namespace": namespace, "labels": labels],
            "spec": [
                "type": "ClusterIP", "clusterIP": clusterIP, "clusterIPs": [clusterIP], "ipFamilies": ["IPv4"],
                "ports": [["name": "http", "protocol": "TCP", "port": port, "targetPort": "http"]],
            ],
            "status": ["loadBalancer": [:]],
        ]
    }

    static func slice(_ name: String, service: String, namespace: String = "default", addresses: [String],
                      port: Int = 8080, labels: [String: String] = [:]) -> [String: Any] {
        [
            "metadata": [
                "name": name, "namespace": namespace,
                "labels": labels.merging(["kubernetes.io/service-name": service]) { a, _ in a },
            ],
            "addressType": "IPv4",
            "endpoints": addresses.isEmpty ? NSNull() : addresses.map {
                ["addresses": [$0], "conditions": ["ready": true], "nodeName": "node-a"] as [String: Any]
            },
            "ports": [["name": "http", "protocol": "TCP", "port": port]],
        ]
    }

    static func node(_ name: String, zone: String) -> [String: Any] {
        [
            "metadata": ["name": name, "labels": ["topology.kubernetes.io/zone": zone]],
            "status": ["addresses": [["type": "InternalIP", "address": "192.0.2.10"]]],
        ]
    }
}
