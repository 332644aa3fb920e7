import Foundation
import Glibc

/// The backend side of the lab: a TCP greeter/echo server and a UDP responder in one
/// poll() loop.
///
/// TCP: on accept it writes `"<name> <peer-ip>\n"`, then echoes everything it reads until
/// the client closes. UDP: each datagram is answered with `"<name> <peer-ip>"`; one longer
/// than `fullSizeReplyThreshold` bytes with a reply of its own length, `"<name> <peer-ip>\n"`
/// followed by the datagram's bytes from that offset on (so large replies fragment like
/// large requests, and the client can check both arrived whole). `<peer-ip>`
/// is the client address as the backend sees it (IPv4 clients of a dual-stack socket are
/// shown as plain IPv4), which lets tests check that no address translation touched the
/// client side.
public enum ProbeServer {
    /// UDP datagrams longer than this get a reply of the same length.
    public static let fullSizeReplyThreshold = 512

    /// What the server actually bound, handed to `onReady`.
    public struct Listening: Codable, Sendable {
        public var name: String
        public var tcpPort: UInt16?
        public var udpPort: UInt16?
        public var bindAddress: String
        public var pid: Int32
    }

    /// Serves until `shouldStop` returns true (checked at least every 200 ms) or a signal
    /// ends the process. `nil` ports disable that protocol; port 0 picks a free one.
    /// With `bindAddress` "::" the sockets are dual-stack (IPV6_V6ONLY=0), so IPv4 clients
    /// are served too. `onReady` runs once both sockets listen.
    public static func serve(
        name: String,
        tcpPort: UInt16?,
        udpPort: UInt16?,
        bindAddress: String = "::",
        onReady: (Listening) -> Void = { _ in },
        shouldStop: () -> Bool = { false }
    ) throws {
        let bindEndpointTCP = try LabEndpoint(ip: bindAddress, port: tcpPort ?? 0)
        let bindEndpointUDP = try LabEndpoint(ip: bindAddress, port: udpPort ?? 0)
        var listenFD: Int32 = -1
        var udpFD: Int32 = -1
        var connections: [Int32: Connection] = [:]
        defer {
            if listenFD >= 0 { close(listenFD) }
            if udpFD >= 0 { close(udpFD) }
            for fd in connections.keys { close(fd) }
        }
        Sock.ensureDescriptors(65536)
        var listening = Listening(name: name, bindAddress: bindAddress, pid: getpid())
        if tcpPort != nil {
            listenFD = try openBound(bindEndpointTCP, type: Sock.stream)
            if listen(listenFD, 1024) != 0 { throw NetLabError.system(what: "listen", errno: errno) }
            listening.tcpPort = Sock.local(listenFD)?.port
        }
        if udpPort != nil {
            udpFD = try openBound(bindEndpointUDP, type: Sock.dgram)
            listening.udpPort = Sock.local(udpFD)?.port
        }
        onReady(listening)

        var datagram = [UInt8](repeating: 0, count: 65536)
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !shouldStop() {
            var fds: [pollfd] = []
            if listenFD >= 0 { fds.append(pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)) }
            if udpFD >= 0 { fds.append(pollfd(fd: udpFD, events: Int16(POLLIN), revents: 0)) }
            for (fd, connection) in connections {
                var events: Int16 = 0
                // Stop reading from a client that does not read its echo (bounded memory).
                if !connection.peerClosed && connection.pending.count < 1 << 20 { events |= Int16(POLLIN) }
                if !connection.pending.isEmpty { events |= Int16(POLLOUT) }
                fds.append(pollfd(fd: fd, events: events, revents: 0))
            }
            let ready = poll(&fds, nfds_t(fds.count), 200)
            if ready < 0 {
                if errno == EINTR { continue }
                throw NetLabError.system(what: "poll", errno: errno)
            }
            if ready == 0 { continue }
            for entry in fds where entry.revents != 0 {
                if entry.fd == listenFD {
                    acceptAll(listenFD, name: name, into: &connections)
                } else if entry.fd == udpFD {
                    answerAll(udpFD, name: name, buffer: &datagram)
                } else if var connection = connections[entry.fd] {
                    let keep = service(entry.fd, &connection, revents: entry.revents, chunk: &chunk)
                    if keep {
                        connections[entry.fd] = connection
                    } else {
                        connections[entry.fd] = nil
                        close(entry.fd)
                    }
                }
            }
        }
    }

    // MARK: - Internals

    private struct Connection {
        var pending: [UInt8]
        var peerClosed = false
    }

    private static func openBound(_ endpoint: LabEndpoint, type: Int32) throws -> Int32 {
        let family = endpoint.isIPv6 ? AF_INET6 : AF_INET
        let fd = socket(family, type | Sock.cloexec | Sock.nonblock, 0)
        if fd < 0 { throw NetLabError.system(what: "socket", errno: errno) }
        do {
            try Sock.setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            if family == AF_INET6 { try Sock.setInt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 0) }
            let address = SockAddr(endpoint)
            if address.withSockaddr({ bind(fd, $0, $1) }) != 0 {
                throw NetLabError.system(what: "bind \(endpoint)", errno: errno)
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    private static func acceptAll(_ listenFD: Int32, name: String, into connections: inout [Int32: Connection]) {
        while true {
            // accept4() is not exported by the Glibc module (it needs _GNU_SOURCE).
            let (fd, peer) = SockAddr.fill { accept(listenFD, $0, $1) }
            if fd < 0 { return }  // EAGAIN (drained) or a connection reset before accept.
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            Sock.setNonBlocking(fd, true)
            let peerIP = peer.endpoint?.ip ?? "?"
            var connection = Connection(pending: Array("\(name) \(peerIP)\n".utf8))
            if flush(fd, &connection) {
                connections[fd] = connection
            } else {
                close(fd)
            }
        }
    }

    private static func answerAll(_ udpFD: Int32, name: String, buffer: inout [UInt8]) {
        while true {
            let (count, peer) = SockAddr.fill { recvfrom(udpFD, &buffer, buffer.count, 0, $0, $1) }
            if count < 0 { return }
            var reply = Array("\(name) \(peer.endpoint?.ip ?? "?")".utf8)
            if count > fullSizeReplyThreshold && count > reply.count + 1 {
                reply.append(0x0a)
                reply += buffer[reply.count..<count]
            }
            _ = reply.withUnsafeBytes { bytes in
                peer.withSockaddr { sendto(udpFD, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), $0, $1) }
            }
        }
    }

    /// Reads and echoes; returns false when the connection should be closed.
    private static func service(_ fd: Int32, _ connection: inout Connection, revents: Int16, chunk: inout [UInt8])
        -> Bool
    {
        if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 && !connection.peerClosed {
            while connection.pending.count < 1 << 20 {
                let count = recv(fd, &chunk, chunk.count, 0)
                if count > 0 {
                    connection.pending.append(contentsOf: chunk[0..<count])
                } else if count == 0 {
                    connection.peerClosed = true
                    break
                } else if errno == EINTR {
                    continue
                } else if errno == EAGAIN {
                    break
                } else {
                    return false
                }
            }
        }
        if !flush(fd, &connection) { return false }
        // Client closed its side and everything it sent has been echoed: done.
        return !(connection.peerClosed && connection.pending.isEmpty)
    }

    /// Sends as much of `pending` as the socket takes; false on a hard error.
    private static func flush(_ fd: Int32, _ connection: inout Connection) -> Bool {
        while !connection.pending.isEmpty {
            let sent = connection.pending.withUnsafeBytes {
                send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if sent > 0 {
                connection.pending.removeFirst(sent)
            } else if sent < 0 && errno == EINTR {
                continue
            } else if sent < 0 && errno == EAGAIN {
                return true
            } else {
                return false
            }
        }
        return true
    }
}
