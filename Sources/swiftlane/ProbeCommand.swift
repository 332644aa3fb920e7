import ArgumentParser
import Foundation
import NetLab

/// `swiftlane probe …`: the internal traffic probe that the demo, the kernel tests and the
/// benchmarks launch inside lab namespaces (`ip netns exec NS swiftlane probe …`). Hidden
/// from help. Client subcommands print one JSON report on stdout (see NetLab's
/// `TCPProbeReport`, `UDPProbeReport`, `HoldReport`, `UDPHoldReport`, `ConnectLoopReport`).
struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Internal traffic probe used by the demo, the kernel tests and the benchmarks.",
        shouldDisplay: false,
        subcommands: [Serve.self, TCP.self, UDP.self, Hold.self, UDPHold.self, Latency.self]
    )
}

extension ProbeCommand {
    /// Options every client subcommand shares.
    struct ClientOptions: ParsableArguments {
        @Option(help: "Target as ip:port or [v6]:port.")
        var target: String

        @Option(
            help: ArgumentHelp(
                "Cgroup v2 directory to join before any socket is created.",
                discussion: "Socket hooks apply to sockets created while the process is in the cgroup.",
                valueName: "path"))
        var cgroup: String?

        /// Joins the cgroup; must run before the first socket() call.
        func joinCgroup() throws {
            if let cgroup { try Cgroup2.join(path: cgroup) }
        }
    }
}

/// Prints a report as one JSON line and flushes, so a parent reading the pipe sees it now.
private func emit<T: Encodable>(_ value: T) throws {
    print(try ProbeJSON.encode(value))
    fflush(stdout)
}

extension ProbeCommand {
    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a backend: TCP greeting + echo and UDP responder on dual-stack sockets.")

        @Option(help: "Backend name announced in greetings and replies.")
        var name: String

        @Option(help: "TCP port (0 picks one).")
        var tcpPort: UInt16 = 8080

        @Option(help: "UDP port (0 picks one).")
        var udpPort: UInt16 = 8053

        @Flag(help: "Do not serve TCP.")
        var noTCP = false

        @Flag(help: "Do not serve UDP.")
        var noUDP = false

        @Option(name: .customLong("bind"), help: "Bind address; \"::\" is dual-stack.")
        var bindAddress: String = "::"

        func run() throws {
            signal(SIGPIPE, SIG_IGN)
            try ProbeServer.serve(
                name: name,
                tcpPort: noTCP ? nil : tcpPort,
                udpPort: noUDP ? nil : udpPort,
                bindAddress: bindAddress,
                onReady: { listening in try? emit(listening) }
            )
        }
    }

    struct TCP: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sequential TCP connections; prints a TCPProbeReport.")

        @OptionGroup var options: ClientOptions

        @Option(help: "Connections to make (with --duration-seconds: an upper bound, 0 = none).")
        var count: Int = 10

        @Option(help: "Pause between connections, milliseconds.")
        var intervalMs: Int = 0

        @Option(help: "Keep connecting for this many seconds.")
        var durationSeconds: Double?

        @Option(help: "Bound on connect() and on the greeting, milliseconds.")
        var connectTimeoutMs: Int = 1000

        func run() throws {
            try options.joinCgroup()
            try emit(
                ProbeClient.tcp(
                    target: options.target, count: count, intervalMs: intervalMs,
                    durationSeconds: durationSeconds, connectTimeoutMs: connectTimeoutMs))
        }
    }

    struct UDP: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "UDP request/reply exchanges; prints a UDPProbeReport.")

        @OptionGroup var options: ClientOptions

        @Option(help: "Exchanges to make, one new socket each.")
        var count: Int = 10

        @Flag(help: "connect() the socket and use send(), instead of sendto().")
        var connected = false

        @Option(help: "Wait for each reply at most this long, milliseconds.")
        var timeoutMs: Int = 1000

        @Option(help: "Pause between exchanges, milliseconds.")
        var intervalMs: Int = 0

        @Option(help: """
            Pad each request to this many bytes; above 512 the server answers with a reply of the \
            same length, checked byte for byte (damagedReplies).
            """)
        var payloadBytes: Int = 0

        func run() throws {
            try options.joinCgroup()
            try emit(
                ProbeClient.udp(
                    target: options.target, count: count, connected: connected, timeoutMs: timeoutMs,
                    intervalMs: intervalMs, payloadBytes: payloadBytes))
        }
    }

    struct Hold: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Open N connections, print them, wait for a line on stdin, then ping them all.",
            discussion: "Prints two HoldReport lines: after establishing, and after the pings.")

        @OptionGroup var options: ClientOptions

        @Option(help: "Connections to hold open.")
        var connections: Int = 10

        @Option(help: "Bound on each connect() and greeting, milliseconds.")
        var connectTimeoutMs: Int = 1000

        @Option(help: "Bound on collecting all echoes, milliseconds.")
        var echoTimeoutMs: Int = 2000

        func run() throws {
            try options.joinCgroup()
            let report = try ProbeClient.hold(
                target: options.target, connections: connections, connectTimeoutMs: connectTimeoutMs,
                echoTimeoutMs: echoTimeoutMs)
            try emit(report)
        }
    }

    struct UDPHold: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "udp-hold",
            abstract: "Hold connected UDP sockets: exchange once, wait for a line on stdin, exchange again.",
            discussion: """
                Prints two UDPHoldReport lines: after the first exchange (the backend each socket \
                reached), and after the second (the outcome and errno names; a destroyed socket \
                yields ECONNABORTED), including a reconnect of each socket that failed.
                """)

        @OptionGroup var options: ClientOptions

        @Option(help: "Connected sockets to hold.")
        var sockets: Int = 1

        @Option(help: "Wait for each reply at most this long, milliseconds.")
        var timeoutMs: Int = 1000

        func run() throws {
            try options.joinCgroup()
            try emit(ProbeClient.udpHold(target: options.target, sockets: sockets, timeoutMs: timeoutMs))
        }
    }

    struct Latency: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Tight connect() loop; prints a ConnectLoopReport with ns per connect().",
            discussion: "tcp: connect+close (RST) per iteration. udp: one socket connect()ed repeatedly, no packets.")

        @OptionGroup var options: ClientOptions

        @Option(help: "tcp or udp.")
        var proto: ConnectLoopReport.Proto = .tcp

        @Option(help: "Measured iterations.")
        var iterations: Int = 1000

        @Option(help: "Unmeasured iterations first.")
        var warmup: Int = 100

        @Option(help: "Bound on each TCP connect(), milliseconds.")
        var connectTimeoutMs: Int = 1000

        func run() throws {
            try options.joinCgroup()
            try emit(
                ProbeClient.connectLoopLatency(
                    target: options.target, proto: proto, iterations: iterations, warmup: warmup,
                    connectTimeoutMs: connectTimeoutMs))
        }
    }
}

extension ConnectLoopReport.Proto: ExpressibleByArgument {}
