import Foundation
import KubeAPI
import XCTest

final class KubeConfigTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "kubeconfig-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory + "/certs", withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func write(_ name: String, _ text: String) throws -> String {
        let path = directory + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testTheKubeProxyTokenFileKubeconfigNamesTheRealServerTheCAAndTheTokenFile() throws {
        let path = try write("kube-proxy.conf", String(decoding: try fixture("kubeconfig-kube-proxy-tokenfile.yaml"), as: UTF8.self))
        let configuration = try KubeConfig.load(paths: [path]).clientConfiguration()
        XCTAssertEqual(configuration.server, ServerURL(host: "control-plane.example.internal", port: 6443))
        XCTAssertEqual(configuration.tls.certificateAuthority, .file("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"))
        XCTAssertEqual(configuration.credentials, .tokenFile("/var/run/secrets/kubernetes.io/serviceaccount/token"))
        XCTAssertEqual(configuration.namespace, "default")
        XCTAssertFalse(configuration.tls.insecureSkipVerify)
    }

    func testEverySupportedFieldOfTheInlineFixture() throws {
        let path = try write("inline.yaml", String(decoding: try fixture("kubeconfig-client-cert-inline.yaml"), as: UTF8.self))
        let config = try KubeConfig.load(paths: [path])

        let admin = try config.clientConfiguration()
        XCTAssertEqual(admin.server, ServerURL(host: "2001:db8::10", port: 6443), "IPv6 literal in brackets")
        XCTAssertEqual(admin.server.description, "https://[2001:db8::10]:6443")
        XCTAssertEqual(admin.tls.serverName, "kubernetes")
        guard case .data(let ca)? = admin.tls.certificateAuthority else { return XCTFail("certificate-authority-data") }
        XCTAssertTrue(String(decoding: ca, as: UTF8.self).hasPrefix("-----BEGIN CERTIFICATE-----"))
        guard case .data(let cert)? = admin.tls.clientCertificate, case .data(let key)? = admin.tls.clientKey else {
            return XCTFail("client-certificate-data and client-key-data")
        }
        XCTAssertTrue(String(decoding: cert, as: UTF8.self).contains("CERTIFICATE"))
        XCTAssertTrue(String(decoding: key, as: UTF8.self).contains("PRIVATE KEY"))
        XCTAssertEqual(admin.credentials, .none)

        let robot = try config.clientConfiguration(context: "lab-robot")
        XCTAssertEqual(robot.server, ServerURL(host: "192.0.2.10", port: 6443))
        XCTAssertTrue(robot.tls.insecureSkipVerify)
        XCTAssertNil(robot.tls.certificateAuthority)
        XCTAssertEqual(robot.credentials, .token("eyJhbGciOiJSUzI1NiIsImtpZCI6ImV4YW1wbGUifQ.e30.c2lnbmF0dXJl"))
        XCTAssertEqual(robot.namespace, "kube-system")
    }

    func testRelativePathsResolveAgainstTheFolderOfTheFileThatHoldsThem() throws {
        let nested = directory + "/nested"
        try FileManager.default.createDirectory(atPath: nested, withIntermediateDirectories: true)
        let first = try write("nested/a.yaml", """
            clusters: [{name: c, cluster: {server: "https://10.0.0.1:6443", certificate-authority: certs/ca.crt}}]
            users: [{name: u, user: {client-certificate: certs/client.crt, client-key: /abs/client.key, tokenFile: token}}]
            contexts: [{name: ctx, context: {cluster: c, user: u}}]
            current-context: ctx
            """)
        let configuration = try KubeConfig.load(paths: [first]).clientConfiguration()
        XCTAssertEqual(configuration.tls.certificateAuthority, .file(nested + "/certs/ca.crt"))
        XCTAssertEqual(configuration.tls.clientCertificate, .file(nested + "/certs/client.crt"))
        XCTAssertEqual(configuration.tls.clientKey, .file("/abs/client.key"))
        XCTAssertEqual(configuration.credentials, .tokenFile(nested + "/token"))
    }

    func testSeveralFilesMergeWithTheFirstDefinitionWinning() throws {
        let first = try write("first.yaml", """
            clusters: [{name: shared, cluster: {server: "https://first:6443"}}]
            users: [{name: me, user: {token: first-token}}]
            contexts: [{name: dev, context: {cluster: shared, user: me}}]
            """)
        let second = try write("second.yaml", """
            clusters:
            - {name: shared, cluster: {server: "https://second:6443"}}
            - {name: other, cluster: {server: "https://other:6443"}}
            users: [{name: me, user: {token: second-token}}]
            contexts: [{name: prod, context: {cluster: other, user: me}}]
            current-context: prod
            """)
        let merged = try KubeConfig.load(paths: [first, directory + "/missing.yaml", second])
        XCTAssertEqual(merged.currentContext, "prod", "the first file to set current-context wins; the first had none")
        let prod = try merged.clientConfiguration()
        XCTAssertEqual(prod.server.host, "other")
        XCTAssertEqual(prod.credentials, .token("first-token"), "user `me` comes from the first file")
        XCTAssertEqual(try merged.clientConfiguration(context: "dev").server.host, "first")
        XCTAssertEqual(ClientConfigurationProbe.resolveKubeconfigList("\(first):\(second)"), "other")
    }

    func testDataWinsOverPathsAndTokenWinsOverTokenFile() throws {
        let pem = Data("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".utf8).base64EncodedString()
        let path = try write("both.yaml", """
            clusters: [{name: c, cluster: {server: "https://h", certificate-authority: ca.crt, certificate-authority-data: \(pem)}}]
            users: [{name: u, user: {token: inline, tokenFile: /t, client-certificate: c.crt, client-certificate-data: \(pem), client-key: k.key, client-key-data: \(pem)}}]
            contexts: [{name: x, context: {cluster: c, user: u}}]
            current-context: x
            """)
        let configuration = try KubeConfig.load(paths: [path]).clientConfiguration()
        XCTAssertEqual(configuration.server.port, 443)
        XCTAssertEqual(configuration.credentials, .token("inline"))
        guard case .data? = configuration.tls.certificateAuthority, case .data? = configuration.tls.clientCertificate,
            case .data? = configuration.tls.clientKey
        else { return XCTFail("\(configuration.tls)") }
    }

    func testUnusableKubeconfigsNameTheProblem() throws {
        let cases: [(String, String)] = [
            ("clusters: [{name: c, cluster: {server: https://h, insecure-skip-tls-verify: true, certificate-authority: /ca}}]\ncontexts: [{name: x, context: {cluster: c}}]\ncurrent-context: x",
             "insecure-skip-tls-verify cannot be combined"),
            ("clusters: [{name: c, cluster: {server: https://h}}]\ncontexts: [{name: x, context: {cluster: c}}]", "no current-context"),
            ("contexts: [{name: x, context: {cluster: nope}}]\ncurrent-context: x", "cluster \"nope\", which is not defined"),
            ("clusters: [{name: c, cluster: {}}]\ncontexts: [{name: x, context: {cluster: c}}]\ncurrent-context: x", "has no server"),
            ("clusters: [{name: c, cluster: {server: ftp://h}}]\ncontexts: [{name: x, context: {cluster: c}}]\ncurrent-context: x", "scheme must be https or http"),
            ("clusters: [{name: c, cluster: {server: https://h, certificate-authority-data: '%%%'}}]", "certificate-authority-data is not valid base64"),
            ("clusters: [{name: c, cluster: {server: https://h}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x",
             "exec, which is not supported"),
            ("clusters: [{name: c, cluster: {server: https://h}}]\nusers: [{name: u, user: {client-certificate: /c}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x",
             "without the other"),
            ("clusters: {name: c}", "clusters: expected"),
        ]
        for (index, (yaml, expected)) in cases.enumerated() {
            let path = try write("bad-\(index).yaml", yaml)
            XCTAssertThrowsError(try KubeConfig.load(paths: [path]).clientConfiguration(), yaml) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(error) should say \(expected)")
                XCTAssertTrue("\(error)".contains(path), "\(error) should name the file")
            }
        }
        XCTAssertThrowsError(try KubeConfig.load(paths: [directory + "/absent.yaml"]))
    }

    // MARK: - Choosing the configuration

    func testInClusterUsesTheServiceAccountAndBracketsIPv6() throws {
        let account = directory + "/sa"
        try FileManager.default.createDirectory(atPath: account, withIntermediateDirectories: true)
        try "tok".write(toFile: account + "/token", atomically: true, encoding: .utf8)
        try "CA".write(toFile: account + "/ca.crt", atomically: true, encoding: .utf8)
        try "kube-system\n".write(toFile: account + "/namespace", atomically: true, encoding: .utf8)
        let configuration = try ClientConfiguration.inCluster(
            environment: ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"],
            serviceAccountDirectory: account)
        XCTAssertEqual(configuration.server.description, "https://[fd00::1]:443")
        XCTAssertEqual(configuration.credentials, .tokenFile(account + "/token"))
        XCTAssertEqual(configuration.tls.certificateAuthority, .file(account + "/ca.crt"))
        XCTAssertEqual(configuration.namespace, "kube-system")
        XCTAssertThrowsError(try ClientConfiguration.inCluster(environment: ["KUBERNETES_SERVICE_HOST": "10.0.0.1"],
                                                                serviceAccountDirectory: account))

        let explicit = try ClientConfiguration.resolve(
            kubeconfig: nil, apiServer: "https://192.0.2.1:6443", environment: [:], serviceAccountDirectory: account,
            homeDirectory: directory)
        XCTAssertEqual(explicit.server.host, "192.0.2.1", "apiServer with the service account, no VIP needed")
        XCTAssertEqual(explicit.credentials, .tokenFile(account + "/token"))

        let overridden = try ClientConfiguration.resolve(
            kubeconfig: nil, apiServer: "https://192.0.2.1:6443",
            environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"],
            serviceAccountDirectory: account, homeDirectory: directory)
        XCTAssertEqual(overridden.server.host, "192.0.2.1", "apiServer replaces the kubernetes Service VIP")
    }

    func testAKubeconfigPathWinsAndApiServerOverridesItsServer() throws {
        let path = try write("k.yaml", String(decoding: try fixture("kubeconfig-kube-proxy-tokenfile.yaml"), as: UTF8.self))
        let configuration = try ClientConfiguration.resolve(
            kubeconfig: path, apiServer: "http://127.0.0.1:8001",
            environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"])
        XCTAssertEqual(configuration.server, ServerURL(scheme: "http", host: "127.0.0.1", port: 8001))
        XCTAssertEqual(configuration.credentials, .tokenFile("/var/run/secrets/kubernetes.io/serviceaccount/token"))
    }

    func testNothingConfiguredIsAClearError() {
        XCTAssertThrowsError(try ClientConfiguration.resolve(
            kubeconfig: nil, apiServer: nil, environment: [:], serviceAccountDirectory: directory + "/none",
            homeDirectory: directory)) { error in
            XCTAssertTrue("\(error)".contains("source.kubernetes.kubeconfig"), "\(error)")
        }
        let proxy = try? ClientConfiguration.resolve(
            kubeconfig: nil, apiServer: "http://127.0.0.1:8001", environment: [:],
            serviceAccountDirectory: directory + "/none", homeDirectory: directory)
        XCTAssertEqual(proxy?.credentials, Credentials.none, "kubectl proxy needs no credentials")
    }

    func testServerURLsParseAndRejectClearly() throws {
        XCTAssertEqual(try ServerURL(parsing: "https://h.example:6443/prefix/").basePath, "/prefix")
        XCTAssertEqual(try ServerURL(parsing: "10.0.0.1:6443").scheme, "https")
        XCTAssertEqual(try ServerURL(parsing: "http://[::1]").port, 80)
        XCTAssertEqual(try ServerURL(parsing: "https://[::1]").url(for: "/api"), "https://[::1]:443/api")
        for bad in ["", "https://", "https://h:0", "https://h:99999", "https://[::1", "gopher://h"] {
            XCTAssertThrowsError(try ServerURL(parsing: bad), bad)
        }
    }
}

/// `ClientConfiguration.resolve` with `$KUBECONFIG` naming several files.
enum ClientConfigurationProbe {
    static func resolveKubeconfigList(_ list: String) -> String? {
        try? ClientConfiguration.resolve(
            kubeconfig: nil, apiServer: nil, environment: ["KUBECONFIG": list],
            serviceAccountDirectory: "/nonexistent").server.host
    }
}

final class TokenSourceTests: XCTestCase {
    func testATokenFileIsReReadEveryMinuteAndAfterARejection() throws {
        let path = NSTemporaryDirectory() + "token-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "first\n".write(toFile: path, atomically: true, encoding: .utf8)
        let clock = ManualClock()
        let tokens = TokenSource(credentials: .tokenFile(path), clock: clock, logger: testLogger)
        XCTAssertEqual(tokens.token(), "first", "trailing newline trimmed")
        try "second".write(toFile: path, atomically: true, encoding: .utf8)
        clock.advance(by: .seconds(59))
        XCTAssertEqual(tokens.token(), "first", "cached for up to a minute")
        clock.advance(by: .seconds(1))
        XCTAssertEqual(tokens.token(), "second", "re-read after a minute")
        try "third".write(toFile: path, atomically: true, encoding: .utf8)
        tokens.invalidate()
        XCTAssertEqual(tokens.token(), "third", "re-read at once after a 401")
        try FileManager.default.removeItem(atPath: path)
        tokens.invalidate()
        XCTAssertEqual(tokens.token(), "third", "a vanished file keeps the last good token")
        XCTAssertEqual(tokens.reads, 4)
    }

    func testInlineTokensAndNoCredentials() {
        let clock = ManualClock()
        XCTAssertEqual(TokenSource(credentials: .token("t"), clock: clock, logger: testLogger).token(), "t")
        XCTAssertNil(TokenSource(credentials: .none, clock: clock, logger: testLogger).token())
    }
}

final class ResourceQueryTests: XCTestCase {
    func testKubeProxySelectorsAreEncodedAsTheSpecShows() {
        let services = ResourceQuery.services()
        XCTAssertEqual(services.labelSelector, "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name")
        let url = services.pathAndQuery([("limit", "500"), ("resourceVersion", "0")])
        XCTAssertEqual(url, "/api/v1/services?labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name&limit=500&resourceVersion=0")
        XCTAssertEqual(ResourceQuery.endpointSlices(serviceProxyName: "lane").labelSelector,
                       "!service.kubernetes.io/headless,service.kubernetes.io/service-proxy-name=lane")
        XCTAssertEqual(ResourceQuery.node(named: "node-a").pathAndQuery([]), "/api/v1/nodes?fieldSelector=metadata.name%3Dnode-a")
    }
}
