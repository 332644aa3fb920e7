import Controller
import Datapath
import Logging
import struct ServiceModel.ManifestObjects

/// Keeps the external-traffic datapath's NodePort addresses in step with the syncer's
/// `nodePortAddresses` (reloaded with the configuration) and the Node's primary address
/// (`primary`), checked after every sync.
public final class NodePortAddressFollower: ProxySyncObserver, @unchecked Sendable {
    private let datapath: NodePortDatapath
    private let logger: Logger

    public init(datapath: NodePortDatapath, logger: Logger) {
        self.datapath = datapath
        self.logger = logger
    }

    public func proxySyncer(
        _ syncer: ProxySyncer, didSync report: ProxySyncer.Report, objects: ManifestObjects, prune: Bool
    ) {
        do {
            try datapath.followNodePortAddresses(syncer.options.nodePortAddresses, node: syncer.proxyNode(from: objects.nodes))
        } catch {
            logger.error("NodePort addresses not updated", metadata: ["error": "\(error)", "map": "sl_node_addrs_v1"])
        }
    }
}
