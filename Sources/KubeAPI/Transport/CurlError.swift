import CLibCurl
import Foundation

/// A libcurl failure with its context. Every libcurl return code in KubeAPI goes through
/// `check` (easy) or `checkMulti` (multi) exactly once, so each error names the operation
/// that failed and carries libcurl's own explanation.
public struct CurlError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The `CURLcode` (or `CURLMcode` for multi operations) as a number.
    public var code: Int
    /// What was being done: `"setopt CURLOPT_URL"`, `"GET https://…/api/v1/services"`.
    public var operation: String
    /// libcurl's text for the code, plus the transfer's error buffer when it had one.
    public var message: String

    public init(code: Int, operation: String, message: String) {
        self.code = code
        self.operation = operation
        self.message = message
    }

    public var description: String { "\(operation): \(message) (curl code \(code))" }

    /// The failure is a TLS peer verification failure (wrong CA, wrong name).
    public var isPeerVerificationFailure: Bool {
        code == Int(CURLE_PEER_FAILED_VERIFICATION.rawValue) || code == Int(CURLE_SSL_CACERT_BADFILE.rawValue)
    }

    /// Throws for anything but `CURLE_OK`.
    static func check(_ code: CURLcode, _ operation: @autoclosure () -> String, detail: String? = nil) throws {
        guard code != CURLE_OK else { return }
        throw CurlError(easy: code, operation: operation(), detail: detail)
    }

    static func checkMulti(_ code: CURLMcode, _ operation: @autoclosure () -> String) throws {
        guard code != CURLM_OK else { return }
        let text = curl_multi_strerror(code).map { String(cString: $0) } ?? "unknown multi error"
        throw CurlError(code: Int(code.rawValue), operation: operation(), message: text)
    }

    init(easy code: CURLcode, operation: String, detail: String?) {
        var text = curl_easy_strerror(code).map { String(cString: $0) } ?? "unknown error"
        if let detail, !detail.isEmpty, detail != text { text += ": " + detail }
        self.init(code: Int(code.rawValue), operation: operation, message: text)
    }
}
