import Foundation
import KubeAPI
import ServiceModel
import XCTest

/// The libcurl transport: HTTP versions, TLS verification, client certificates.
final class TransportTests: XCTestCase {
    private var server: FakeAPIServer!
    private var clients: [KubeClient] = []

    override func tearDown() {
        for client in clients { client.shutdown() }
        clients = []
        server?.stop()
        server = nil
    }

    private func client(_ configuration: ClientConfiguration, httpVersion: TransportOptions.HTTPVersion = .http2OverTLS) throws -> KubeClient {
        var options = TransportOptions()
        options.httpVersion = httpVersion
        let client = try KubeClient(configuration: configuration, limits: .init(qps: 1000, burst: 1000),
                                    transportOptions: options, logger: testLogger)
        clients.append(client)
        return client
    }

    /// GETs the Service list and returns the head and the decoded page.
    private func list(_ client: KubeClient) async throws -> (HTTPResponseHead, [Service]) {
        let response = try await client.get("/api/v1/services?limit=10")
        let body = try await response.collect(limit: 1 << 20)
        guard response.head.status == 200 else { return (response.head, []) }
        return (response.head, try JSONDecoder().decode(ObjectList<Service>.self, from: body).items)
    }

    private func assertRefused(_ client: KubeClient, _ message: String, peerVerification: Bool = false,
                               file: StaticString = #filePath, line: UInt = #line) async {
        do {
            let (head, _) = try await list(client)
            XCTFail("\(message): got HTTP \(head.status)", file: file, line: line)
        } catch let error as CurlError {
            XCTAssertTrue(error.description.contains("GET https://"), "the error names the request: \(error)", file: file, line: line)
            if peerVerification {
                XCTAssertTrue(error.isPeerVerificationFailure, "\(message): \(error)", file: file, line: line)
            }
        } catch {
            XCTFail("\(message): unexpected \(error)", file: file, line: line)
        }
    }

    func testHTTP2IsNegotiatedOverTLSAndTheListDecodes() async throws {
        server = try FakeAPIServer()
        try server.upsert("services", TestObjects.service("web"))
        let (head, page) = try await list(try client(try server.clientConfiguration()))
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(head.httpVersion, "HTTP/2")
        XCTAssertEqual(page.map(\.cacheKey), ["default/web"])
        XCTAssertEqual(try server.requests().first?.http, "HTTP/2")
    }

    func testAServerOfferingOnlyHTTP1IsServedOverHTTP1() async throws {
        server = try FakeAPIServer(mode: .tls(alpn: "http/1.1"))
        try server.upsert("services", TestObjects.service("web"))
        let (head, page) = try await list(try client(try server.clientConfiguration()))
        XCTAssertEqual(head.httpVersion, "HTTP/1.1")
        XCTAssertEqual(page.count, 1)
        XCTAssertEqual(try server.requests().first?.http, "HTTP/1.1")
    }

    func testPlainHTTPWorksForALoopbackProxy() async throws {
        server = try FakeAPIServer(mode: .plain)
        try server.upsert("services", TestObjects.service("web"))
        let (head, page) = try await list(try client(try server.clientConfiguration()))
        XCTAssertEqual(head.httpVersion, "HTTP/1.1")
        XCTAssertEqual(page.count, 1)
    }

    func testManyRequestsShareOneHTTP2Connection() async throws {
        server = try FakeAPIServer()
        try server.upsert("services", TestObjects.service("web"))
        let client = try client(try server.clientConfiguration())
        for _ in 0..<5 { _ = try await list(client) }
        let peers = Set(try server.requestPeers())
        XCTAssertEqual(peers.count, 1, "one connection: \(peers)")
    }

    func testAServerSignedByAnotherCAIsRefused() async throws {
        server = try FakeAPIServer()
        var configuration = try server.clientConfiguration()
        configuration.tls.certificateAuthority = .file(server.certificates.otherCACertificate)
        await assertRefused(try client(configuration), "a certificate from an unrelated CA", peerVerification: true)
        let inline = try Data(contentsOf: URL(fileURLWithPath: server.certificates.otherCACertificate))
        configuration.tls.certificateAuthority = .data(inline)
        await assertRefused(try client(configuration), "the same CA given inline", peerVerification: true)
        XCTAssertEqual(try server.requests().count, 0, "no request was sent")
    }

    func testTheSystemRootsAreNotTrustedWhenACAIsConfigured() async throws {
        server = try FakeAPIServer()
        var configuration = try server.clientConfiguration()
        configuration.tls.certificateAuthority = nil
        await assertRefused(try client(configuration), "the test CA is not a system root", peerVerification: true)
    }

    func testInsecureSkipVerifyIsTheOnlyWayToSkipVerification() async throws {
        server = try FakeAPIServer()
        var configuration = try server.clientConfiguration()
        configuration.tls = TLSOptions(insecureSkipVerify: true)
        let (head, _) = try await list(try client(configuration))
        XCTAssertEqual(head.status, 200)
    }

    func testTLSServerNameIsCheckedInsteadOfTheAddress() async throws {
        server = try FakeAPIServer(mode: .tls(namedCertificate: true))
        let configuration = try server.clientConfiguration()
        XCTAssertEqual(configuration.tls.serverName, TestCertificates.serverName)
        let (head, _) = try await list(try client(configuration))
        XCTAssertEqual(head.status, 200, "the certificate names \(TestCertificates.serverName) only")
        XCTAssertEqual(try server.requests().first?.host, "127.0.0.1:\(server.port)", "the Host is still the real server")
        var withoutName = configuration
        withoutName.tls.serverName = nil
        await assertRefused(try client(withoutName), "127.0.0.1 is not in the certificate", peerVerification: true)
    }

    func testClientCertificatesFromFilesAndInlineData() async throws {
        server = try FakeAPIServer(requireClientCertificate: true)
        try server.upsert("services", TestObjects.service("web"))
        await assertRefused(try client(try server.clientConfiguration()), "no client certificate")

        var files = try server.clientConfiguration()
        files.tls.clientCertificate = .file(server.certificates.clientCertificate)
        files.tls.clientKey = .file(server.certificates.clientKey)
        let withFiles = try await list(try client(files))
        XCTAssertEqual(withFiles.0.status, 200)

        var inline = try server.clientConfiguration()
        inline.tls.clientCertificate = .data(try Data(contentsOf: URL(fileURLWithPath: server.certificates.clientCertificate)))
        inline.tls.clientKey = .data(try Data(contentsOf: URL(fileURLWithPath: server.certificates.clientKey)))
        let withData = try await list(try client(inline))
        XCTAssertEqual(withData.0.status, 200)
        XCTAssertEqual(try server.requests().compactMap(\.peerCertificate), ["system:kube-proxy", "system:kube-proxy"])
    }

    func testAMissingClientKeyFileFailsWithTheRequestNamed() async throws {
        server = try FakeAPIServer(clientCertificates: true)
        var configuration = try server.clientConfiguration()
        configuration.tls.clientCertificate = .file(server.certificates.clientCertificate)
        configuration.tls.clientKey = .file("/nonexistent/client.key")
        await assertRefused(try client(configuration), "an unreadable key")
    }

    func testACancelledResponseEndsItsTransfer() async throws {
        server = try FakeAPIServer()
        let client = try client(try server.clientConfiguration())
        let response = try await client.get("/api/v1/services?watch=true&resourceVersion=0&timeoutSeconds=300")
        XCTAssertEqual(response.head.status, 200)
        try server.waitForWatchers("services")
        response.cancel()
        do {
            while try await response.nextChunk() != nil {}
            XCTFail("a cancelled transfer does not end cleanly")
        } catch {
            XCTAssertTrue(error is CancellationError, "\(error)")
        }
    }
}

extension FakeAPIServer {
    /// The client address of every request (one per connection).
    func requestPeers() throws -> [String] {
        let list = try command("requests")["requests"] as? [[String: Any]] ?? []
        return list.compactMap { ($0["peer"] as? [String: Any])?["address"] as? String }
    }
}
