import Controller
import Datapath
import Foundation
import Logging
import NetLab
import ServiceModel

/// The demo's second act: traffic from outside the node (`bpf/nodeport.c`) through NodePorts
/// of a two-node lab whose client, node A and node B share one segment. (1) SNAT mode on tc,
/// Swiftlane on node A: a pod on the same node and pods on node B (source-NATed), and an
/// externalTrafficPolicy=Local Service (client address kept, local pods only). (2) DSR mode,
/// Swiftlane on both nodes: node B's pods see the client and answer it directly. (3) The
/// same with XDP (native) in front of tc. Everything it creates is removed by `teardown()`.
final class ExternalTrafficDemo {
    let lab: NodeLab
    let pinPath: String
    private let logger: Logger

    init(pinPath: String, logger: Logger) throws {
        self.pinPath = pinPath
        self.logger = logger
        lab = try NodeLab(podsOnA: 1, podsOnB: 2, sharedFabric: true)
    }

    /// Node B's maps (its own pins, as on a real node).
    private var nodeBPinPath: String { pinPath + "-b" }

    func teardown() {
        lab.teardown()
        SocketLoadBalancer.uninstall(pinPath: pinPath)
        SocketLoadBalancer.uninstall(pinPath: nodeBPinPath)
    }

    /// Installs (or replaces in place) node A's, and with `nodeB` also node B's, datapath.
    private func install(mode: NodePortOptions.Mode, acceleration: NodePortOptions.Acceleration, nodeB: Bool)
        throws -> (a: NodePortDatapath, b: NodePortDatapath?)
    {
        let a = try NodePortDatapath.install(
            NodePortOptions(pinPath: pinPath, devices: [lab.externalDevice, lab.interNodeDevice], mode: mode,
                            acceleration: acceleration, networkNamespace: "/run/netns/" + lab.nodeA.netns),
            logger: logger)
        let b = nodeB
            ? try NodePortDatapath.install(
                NodePortOptions(pinPath: nodeBPinPath, devices: [lab.nodeBExternalDevice!, lab.nodeBDevice], mode: mode,
                                acceleration: acceleration, networkNamespace: "/run/netns/" + lab.nodeB.netns),
                logger: logger)
            : nil
        return (a, b)
    }

    /// The two Services: `web` (eTP=Cluster) on every pod, `local` (eTP=Local) on one pod
    /// per node.
    private func manifests() -> String {
        func endpoints(_ pods: [NodeLabPod]) -> String {
            pods.map { "{addresses: [\($0.ipv4)], conditions: {ready: true}, nodeName: node-\($0.name.prefix(1))}" }
                .joined(separator: ", ")
        }
        func service(_ name: String, nodePort: Int, policy: String, pods: [NodeLabPod]) -> String {
            """
            apiVersion: v1
            kind: Service
            metadata: {name: \(name), namespace: shop}
            spec:
              type: NodePort
              clusterIP: 10.96.7.\(nodePort - 30000)
              externalTrafficPolicy: \(policy)
              ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: \(nodePort)}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: \(name)-1, namespace: shop, labels: {kubernetes.io/service-name: \(name)}}
            addressType: IPv4
            endpoints: [\(endpoints(pods))]
            ports: [{name: http, port: 8080, protocol: TCP}]
            """
        }
        let a1 = lab.podsOnA[0]
        return service("web", nodePort: 30080, policy: "Cluster", pods: lab.pods)
            + "\n---\n" + service("local", nodePort: 30081, policy: "Local", pods: [a1, lab.podsOnB[0]])
    }

    /// Runs the act; returns summary rows and whether every result was as expected.
    func run(requests: Int) throws -> (rows: [(String, String)], ok: Bool) {
        for pod in lab.pods { try lab.startProbeServer(on: pod, tcpPort: 8080, udpPort: 8053) }
        print("\n▶ lab: external client \(lab.clientIPv4), node A \(lab.externalIPv4) and node B \(lab.nodeBExternalIPv4!) on one segment; pods "
              + lab.pods.map { "\($0.name)=\($0.ipv4)" }.joined(separator: " "))
        let objects = try ManifestDecoder.decode(Data(manifests().utf8), source: "external-demo.yaml")
        var ok = true
        var rows: [(String, String)] = []
        let client = lab.clientProbe()
        let clusterTarget = "\(lab.externalIPv4):30080"
        let remote = Set(lab.podsOnB.map(\.name))

        // 1. SNAT mode, tc, Swiftlane on node A only.
        var (a, _) = try install(mode: .snat, acceleration: .none, nodeB: false)
        print("▶ datapath: tc ingress/egress on node A's \(a.devices.map(\.name).joined(separator: ", ")), SNAT mode")
        let syncA = try ProxySyncer(nodeName: "node-a", maps: try KernelLoadBalancerMaps(pinPath: pinPath), logger: logger)
        guard syncA.sync(objects).failures.isEmpty else { throw DemoFailure("programming node A failed") }
        print("\n● TCP from the external client to NodePort \(clusterTarget) (eTP=Cluster: pods on both nodes; those on node B see node A's \(lab.nodeAIPv4))")
        let cluster = try client.tcp(target: clusterTarget, count: requests)
        printSequence(cluster.sequence, seen: cluster.seenClientAddresses)
        rows.append(("NodePort \(clusterTarget) SNAT", "\(cluster.ok)/\(cluster.attempts) ok, \(shares(cluster.backends)), pods saw \(cluster.seenClientAddresses.joined(separator: " "))"))
        ok = ok && cluster.ok == cluster.attempts && !Set(cluster.backends.keys).isDisjoint(with: remote)
            && cluster.seenClientAddresses.contains(lab.nodeAIPv4)

        let localTarget = "\(lab.externalIPv4):30081"
        print("\n● TCP to NodePort \(localTarget) (eTP=Local: only node A's pod, the client address kept)")
        let local = try client.tcp(target: localTarget, count: requests)
        printSequence(local.sequence, seen: local.seenClientAddresses)
        rows.append(("NodePort \(localTarget) Local", "\(local.ok)/\(local.attempts) ok, \(shares(local.backends)), pods saw \(local.seenClientAddresses.joined(separator: " "))"))
        ok = ok && local.ok == local.attempts && local.backends.keys.allSatisfy { $0 == lab.podsOnA[0].name }
            && Set(local.seenClientAddresses) == [lab.clientIPv4]

        // 2. DSR: node A's programs replaced in place; node B gets its own datapath and maps.
        var b: NodePortDatapath?
        (a, b) = try install(mode: .dsr, acceleration: .none, nodeB: true)
        let syncB = try ProxySyncer(nodeName: "node-b", maps: try KernelLoadBalancerMaps(pinPath: nodeBPinPath), logger: logger)
        guard syncB.sync(objects).failures.isEmpty else { throw DemoFailure("programming node B failed") }
        let repliesBefore = a.outcomeCounters()["np_reply"] ?? 0
        print("\n● DSR mode (Swiftlane on both nodes): TCP to \(clusterTarget); node B's pods see the client and answer it directly")
        let dsr = try client.tcp(target: clusterTarget, count: requests)
        printSequence(dsr.sequence, seen: dsr.seenClientAddresses)
        let dsrA = a.outcomeCounters(), dsrB = b?.outcomeCounters() ?? [:]
        let remoteAnswers = dsr.backends.filter { remote.contains($0.key) }.values.reduce(0, +)
        rows.append(("NodePort \(clusterTarget) DSR", "\(dsr.ok)/\(dsr.attempts) ok, \(shares(dsr.backends)), pods saw \(dsr.seenClientAddresses.joined(separator: " ")), node B answered \(dsrB["np_dsr_reply"] ?? 0) segments directly"))
        ok = ok && dsr.ok == dsr.attempts && dsr.peerNameMismatches == 0 && Set(dsr.seenClientAddresses) == [lab.clientIPv4]
            && remoteAnswers > 0 && (dsrA["np_dsr_carried"] ?? 0) >= UInt64(remoteAnswers)

        // 3. The same with XDP (native) in front of tc on both nodes. Veth frames must carry
        // complete checksums for native XDP, as a NIC delivers them.
        try lab.sendCompleteChecksums()
        (a, b) = try install(mode: .dsr, acceleration: .native, nodeB: true)
        let redirectsBefore = a.outcomeCounters()["np_xdp_redirect"] ?? 0
        print("\n● the same with XDP (native) in front of tc on both nodes")
        let xdp = try client.tcp(target: clusterTarget, count: requests)
        printSequence(xdp.sequence, seen: xdp.seenClientAddresses)
        let redirected = (a.outcomeCounters()["np_xdp_redirect"] ?? 0) - redirectsBefore
        rows.append(("NodePort \(clusterTarget) DSR+XDP", "\(xdp.ok)/\(xdp.attempts) ok, \(shares(xdp.backends)), \(redirected) packets forwarded by XDP on node A"))
        ok = ok && xdp.ok == xdp.attempts && Set(xdp.seenClientAddresses) == [lab.clientIPv4] && redirected > 0

        let counters = a.outcomeCounters().filter { $0.value > 0 && $0.key.hasPrefix("np_") }.sorted { $0.key < $1.key }
        rows.append(("node A external counters", counters.map { "\($0.key)=\($0.value)" }.joined(separator: " ")))
        ok = ok && (a.outcomeCounters()["np_reply"] ?? 0) >= repliesBefore
        return (rows, ok)
    }

    private func printSequence(_ sequence: [String], seen: [String]) {
        for (index, outcome) in sequence.enumerated() {
            print(String(format: "  request %2d → %@", index + 1, outcome))
        }
        print("  the pods saw the connections come from: " + seen.joined(separator: ", "))
    }

    private func shares(_ counts: [String: Int]) -> String {
        counts.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
    }
}

struct DemoFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
