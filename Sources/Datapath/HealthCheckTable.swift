import Reconciler

extension KernelLoadBalancerMaps {
    /// The healthCheckNodePort table as the controller programmed it (`sl_health_v1`):
    /// port → Service and its count of local ready endpoints. One map walk, without the
    /// rest of the state (the health-check servers poll it).
    public func healthCheckTable() -> [UInt16: HealthCheckEntry] {
        var table: [UInt16: HealthCheckEntry] = [:]
        for (port, value) in healthChecks.entries() where port <= UInt32(UInt16.max) {
            table[UInt16(port)] = value.healthCheckEntry
        }
        return table
    }
}
