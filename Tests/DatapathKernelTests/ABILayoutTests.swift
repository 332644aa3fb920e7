import CLibBPF
import Datapath
import Reconciler
import XCTest

/// The Swift importer and the C compiler must agree on every shared struct, field by
/// field: the maps are raw bytes to the kernel, so a disagreement would corrupt them
/// silently. (The header also `_Static_assert`s each size for the BPF side.)
final class ABILayoutTests: XCTestCase {
    /// Swift's view of each field: (type, field) → (offset, size), and each type's size.
    private let swiftLayout: [String: (offset: Int?, size: Int)] = [
        "sl_service_key.addr": (MemoryLayout<sl_service_key>.offset(of: \.addr), MemoryLayout.size(ofValue: sl_service_key().addr)),
        "sl_service_key.port": (MemoryLayout<sl_service_key>.offset(of: \.port), 2),
        "sl_service_key.proto": (MemoryLayout<sl_service_key>.offset(of: \.proto), 1),
        "sl_service_key.scope": (MemoryLayout<sl_service_key>.offset(of: \.scope), 1),
        "sl_service_value.slot_base": (MemoryLayout<sl_service_value>.offset(of: \.slot_base), 4),
        "sl_service_value.count": (MemoryLayout<sl_service_value>.offset(of: \.count), 2),
        "sl_service_value.revision": (MemoryLayout<sl_service_value>.offset(of: \.revision), 2),
        "sl_service_value.rev_nat_id": (MemoryLayout<sl_service_value>.offset(of: \.rev_nat_id), 4),
        "sl_service_value.flags": (MemoryLayout<sl_service_value>.offset(of: \.flags), 2),
        "sl_service_value.kind": (MemoryLayout<sl_service_value>.offset(of: \.kind), 1),
        "sl_service_value.pad0": (MemoryLayout<sl_service_value>.offset(of: \.pad0), 1),
        "sl_service_value.affinity_timeout": (MemoryLayout<sl_service_value>.offset(of: \.affinity_timeout), 4),
        "sl_backend_slot.addr": (MemoryLayout<sl_backend_slot>.offset(of: \.addr), 16),
        "sl_backend_slot.port": (MemoryLayout<sl_backend_slot>.offset(of: \.port), 2),
        "sl_backend_slot.proto": (MemoryLayout<sl_backend_slot>.offset(of: \.proto), 1),
        "sl_backend_slot.pad": (MemoryLayout<sl_backend_slot>.offset(of: \.pad), 1),
        "sl_backend_slot.backend_id": (MemoryLayout<sl_backend_slot>.offset(of: \.backend_id), 4),
        "sl_backend.addr": (MemoryLayout<sl_backend>.offset(of: \.addr), 16),
        "sl_backend.port": (MemoryLayout<sl_backend>.offset(of: \.port), 2),
        "sl_backend.proto": (MemoryLayout<sl_backend>.offset(of: \.proto), 1),
        "sl_backend.flags": (MemoryLayout<sl_backend>.offset(of: \.flags), 1),
        "sl_revnat.addr": (MemoryLayout<sl_revnat>.offset(of: \.addr), 16),
        "sl_revnat.port": (MemoryLayout<sl_revnat>.offset(of: \.port), 2),
        "sl_revnat.pad": (MemoryLayout<sl_revnat>.offset(of: \.pad), 2),
        "sl_sock_revnat_key.cookie": (MemoryLayout<sl_sock_revnat_key>.offset(of: \.cookie), 8),
        "sl_sock_revnat_key.addr": (MemoryLayout<sl_sock_revnat_key>.offset(of: \.addr), 16),
        "sl_sock_revnat_key.port": (MemoryLayout<sl_sock_revnat_key>.offset(of: \.port), 2),
        "sl_sock_revnat_key.pad": (MemoryLayout<sl_sock_revnat_key>.offset(of: \.pad), MemoryLayout.size(ofValue: sl_sock_revnat_key().pad)),
        "sl_sock_revnat_value.addr": (MemoryLayout<sl_sock_revnat_value>.offset(of: \.addr), 16),
        "sl_sock_revnat_value.port": (MemoryLayout<sl_sock_revnat_value>.offset(of: \.port), 2),
        "sl_sock_revnat_value.pad": (MemoryLayout<sl_sock_revnat_value>.offset(of: \.pad), 2),
        "sl_sock_revnat_value.rev_nat_id": (MemoryLayout<sl_sock_revnat_value>.offset(of: \.rev_nat_id), 4),
        "sl_sock_frontend.frontend_addr": (MemoryLayout<sl_sock_frontend>.offset(of: \.frontend_addr), 16),
        "sl_sock_frontend.backend_addr": (MemoryLayout<sl_sock_frontend>.offset(of: \.backend_addr), 16),
        "sl_sock_frontend.frontend_port": (MemoryLayout<sl_sock_frontend>.offset(of: \.frontend_port), 2),
        "sl_sock_frontend.backend_port": (MemoryLayout<sl_sock_frontend>.offset(of: \.backend_port), 2),
        "sl_sock_frontend.rev_nat_id": (MemoryLayout<sl_sock_frontend>.offset(of: \.rev_nat_id), 4),
        "sl_affinity_key.client": (MemoryLayout<sl_affinity_key>.offset(of: \.client), 8),
        "sl_affinity_key.rev_nat_id": (MemoryLayout<sl_affinity_key>.offset(of: \.rev_nat_id), 4),
        "sl_affinity_key.proto": (MemoryLayout<sl_affinity_key>.offset(of: \.proto), 1),
        "sl_affinity_key.pad": (MemoryLayout<sl_affinity_key>.offset(of: \.pad), 3),
        "sl_affinity_value.last_used_ns": (MemoryLayout<sl_affinity_value>.offset(of: \.last_used_ns), 8),
        "sl_affinity_value.backend_id": (MemoryLayout<sl_affinity_value>.offset(of: \.backend_id), 4),
        "sl_affinity_value.revision": (MemoryLayout<sl_affinity_value>.offset(of: \.revision), 2),
        "sl_affinity_value.slot_offset": (MemoryLayout<sl_affinity_value>.offset(of: \.slot_offset), 2),
        "sl_frontend_meta.service": (MemoryLayout<sl_frontend_meta>.offset(of: \.service), 128),
        "sl_frontend_meta.port_name": (MemoryLayout<sl_frontend_meta>.offset(of: \.port_name), 64),
        "sl_source_range_key.prefixlen": (MemoryLayout<sl_source_range_key>.offset(of: \.prefixlen), 4),
        "sl_source_range_key.rev_nat_id": (MemoryLayout<sl_source_range_key>.offset(of: \.rev_nat_id), 4),
        "sl_source_range_key.addr": (MemoryLayout<sl_source_range_key>.offset(of: \.addr), 16),
        "sl_health_check.service": (MemoryLayout<sl_health_check>.offset(of: \.service), 128),
        "sl_health_check.local_endpoints": (MemoryLayout<sl_health_check>.offset(of: \.local_endpoints), 4),
        "sl_health_check.pad": (MemoryLayout<sl_health_check>.offset(of: \.pad), 4),
        "sl_nat_key.saddr": (MemoryLayout<sl_nat_key>.offset(of: \.saddr), 16),
        "sl_nat_key.daddr": (MemoryLayout<sl_nat_key>.offset(of: \.daddr), 16),
        "sl_nat_key.sport": (MemoryLayout<sl_nat_key>.offset(of: \.sport), 2),
        "sl_nat_key.dport": (MemoryLayout<sl_nat_key>.offset(of: \.dport), 2),
        "sl_nat_key.proto": (MemoryLayout<sl_nat_key>.offset(of: \.proto), 1),
        "sl_nat_key.dir": (MemoryLayout<sl_nat_key>.offset(of: \.dir), 1),
        "sl_nat_key.pad": (MemoryLayout<sl_nat_key>.offset(of: \.pad), 2),
        "sl_nat_entry.to_addr": (MemoryLayout<sl_nat_entry>.offset(of: \.to_addr), 16),
        "sl_nat_entry.nat_addr": (MemoryLayout<sl_nat_entry>.offset(of: \.nat_addr), 16),
        "sl_nat_entry.to_port": (MemoryLayout<sl_nat_entry>.offset(of: \.to_port), 2),
        "sl_nat_entry.nat_port": (MemoryLayout<sl_nat_entry>.offset(of: \.nat_port), 2),
        "sl_nat_entry.rev_nat_id": (MemoryLayout<sl_nat_entry>.offset(of: \.rev_nat_id), 4),
        "sl_nat_entry.last_seen_ns": (MemoryLayout<sl_nat_entry>.offset(of: \.last_seen_ns), 8),
        "sl_nat_entry.flags": (MemoryLayout<sl_nat_entry>.offset(of: \.flags), 2),
        "sl_nat_entry.pad": (MemoryLayout<sl_nat_entry>.offset(of: \.pad), 6),
        "sl_nat_entry.route": (MemoryLayout<sl_nat_entry>.offset(of: \.route), 32),
        "sl_nat_route.checked_ns": (MemoryLayout<sl_nat_route>.offset(of: \.checked_ns), 8),
        "sl_nat_route.ifindex": (MemoryLayout<sl_nat_route>.offset(of: \.ifindex), 4),
        "sl_nat_route.in_ifindex": (MemoryLayout<sl_nat_route>.offset(of: \.in_ifindex), 4),
        "sl_nat_route.dmac": (MemoryLayout<sl_nat_route>.offset(of: \.dmac), 6),
        "sl_nat_route.smac": (MemoryLayout<sl_nat_route>.offset(of: \.smac), 6),
        "sl_nat_route.max_tot_len": (MemoryLayout<sl_nat_route>.offset(of: \.max_tot_len), 2),
        "sl_nat_route.tos": (MemoryLayout<sl_nat_route>.offset(of: \.tos), 1),
        "sl_nat_route.pad": (MemoryLayout<sl_nat_route>.offset(of: \.pad), 1),
        "sl_node_addr_key.addr": (MemoryLayout<sl_node_addr_key>.offset(of: \.addr), 16),
        "sl_node_addr.flags": (MemoryLayout<sl_node_addr>.offset(of: \.flags), 4),
        "sl_node_addr.ifindex": (MemoryLayout<sl_node_addr>.offset(of: \.ifindex), 4),
        "sl_device.snat_addr": (MemoryLayout<sl_device>.offset(of: \.snat_addr), 16),
        "sl_device.snat_addr6": (MemoryLayout<sl_device>.offset(of: \.snat_addr6), 16),
        "sl_device.flags": (MemoryLayout<sl_device>.offset(of: \.flags), 4),
        "sl_device.pad": (MemoryLayout<sl_device>.offset(of: \.pad), 4),
        "sl_dsr_key.backend_addr": (MemoryLayout<sl_dsr_key>.offset(of: \.backend_addr), 16),
        "sl_dsr_key.client_addr": (MemoryLayout<sl_dsr_key>.offset(of: \.client_addr), 16),
        "sl_dsr_key.backend_port": (MemoryLayout<sl_dsr_key>.offset(of: \.backend_port), 2),
        "sl_dsr_key.client_port": (MemoryLayout<sl_dsr_key>.offset(of: \.client_port), 2),
        "sl_dsr_key.proto": (MemoryLayout<sl_dsr_key>.offset(of: \.proto), 1),
        "sl_dsr_key.pad": (MemoryLayout<sl_dsr_key>.offset(of: \.pad), 3),
        "sl_dsr_entry.frontend_addr": (MemoryLayout<sl_dsr_entry>.offset(of: \.frontend_addr), 16),
        "sl_dsr_entry.frontend_port": (MemoryLayout<sl_dsr_entry>.offset(of: \.frontend_port), 2),
        "sl_dsr_entry.flags": (MemoryLayout<sl_dsr_entry>.offset(of: \.flags), 2),
        "sl_dsr_entry.pad": (MemoryLayout<sl_dsr_entry>.offset(of: \.pad), 4),
        "sl_dsr_entry.last_seen_ns": (MemoryLayout<sl_dsr_entry>.offset(of: \.last_seen_ns), 8),
        "sl_frag_key.saddr": (MemoryLayout<sl_frag_key>.offset(of: \.saddr), 16),
        "sl_frag_key.daddr": (MemoryLayout<sl_frag_key>.offset(of: \.daddr), 16),
        "sl_frag_key.id": (MemoryLayout<sl_frag_key>.offset(of: \.id), 4),
        "sl_frag_key.proto": (MemoryLayout<sl_frag_key>.offset(of: \.proto), 1),
        "sl_frag_key.pad": (MemoryLayout<sl_frag_key>.offset(of: \.pad), 3),
        "sl_frag_entry.sport": (MemoryLayout<sl_frag_entry>.offset(of: \.sport), 2),
        "sl_frag_entry.dport": (MemoryLayout<sl_frag_entry>.offset(of: \.dport), 2),
    ]

    private let swiftSizes: [String: (size: Int, stride: Int)] = [
        "sl_service_key": (MemoryLayout<sl_service_key>.size, MemoryLayout<sl_service_key>.stride),
        "sl_service_value": (MemoryLayout<sl_service_value>.size, MemoryLayout<sl_service_value>.stride),
        "sl_backend_slot": (MemoryLayout<sl_backend_slot>.size, MemoryLayout<sl_backend_slot>.stride),
        "sl_backend": (MemoryLayout<sl_backend>.size, MemoryLayout<sl_backend>.stride),
        "sl_revnat": (MemoryLayout<sl_revnat>.size, MemoryLayout<sl_revnat>.stride),
        "sl_sock_revnat_key": (MemoryLayout<sl_sock_revnat_key>.size, MemoryLayout<sl_sock_revnat_key>.stride),
        "sl_sock_revnat_value": (MemoryLayout<sl_sock_revnat_value>.size, MemoryLayout<sl_sock_revnat_value>.stride),
        "sl_sock_frontend": (MemoryLayout<sl_sock_frontend>.size, MemoryLayout<sl_sock_frontend>.stride),
        "sl_affinity_key": (MemoryLayout<sl_affinity_key>.size, MemoryLayout<sl_affinity_key>.stride),
        "sl_affinity_value": (MemoryLayout<sl_affinity_value>.size, MemoryLayout<sl_affinity_value>.stride),
        "sl_frontend_meta": (MemoryLayout<sl_frontend_meta>.size, MemoryLayout<sl_frontend_meta>.stride),
        "sl_source_range_key": (MemoryLayout<sl_source_range_key>.size, MemoryLayout<sl_source_range_key>.stride),
        "sl_health_check": (MemoryLayout<sl_health_check>.size, MemoryLayout<sl_health_check>.stride),
        "sl_nat_key": (MemoryLayout<sl_nat_key>.size, MemoryLayout<sl_nat_key>.stride),
        "sl_nat_entry": (MemoryLayout<sl_nat_entry>.size, MemoryLayout<sl_nat_entry>.stride),
        "sl_nat_route": (MemoryLayout<sl_nat_route>.size, MemoryLayout<sl_nat_route>.stride),
        "sl_node_addr_key": (MemoryLayout<sl_node_addr_key>.size, MemoryLayout<sl_node_addr_key>.stride),
        "sl_node_addr": (MemoryLayout<sl_node_addr>.size, MemoryLayout<sl_node_addr>.stride),
        "sl_device": (MemoryLayout<sl_device>.size, MemoryLayout<sl_device>.stride),
        "sl_dsr_key": (MemoryLayout<sl_dsr_key>.size, MemoryLayout<sl_dsr_key>.stride),
        "sl_dsr_entry": (MemoryLayout<sl_dsr_entry>.size, MemoryLayout<sl_dsr_entry>.stride),
        "sl_frag_key": (MemoryLayout<sl_frag_key>.size, MemoryLayout<sl_frag_key>.stride),
        "sl_frag_entry": (MemoryLayout<sl_frag_entry>.size, MemoryLayout<sl_frag_entry>.stride),
    ]

    func testEverySharedStructHasTheSameLayoutInSwiftAndC() {
        var index = 0
        var checked = Set<String>()
        while let field = clb_abi_field_at(index) {
            let type = String(cString: field.pointee.type), name = String(cString: field.pointee.field)
            let key = "\(type).\(name)"
            guard let swift = swiftLayout[key] else {
                XCTFail("\(key) is in the C table but not checked from Swift")
                index += 1
                continue
            }
            XCTAssertEqual(swift.offset, Int(field.pointee.offset), "offset of \(key)")
            XCTAssertEqual(swift.size, Int(field.pointee.size), "size of \(key)")
            let sizes = swiftSizes[type]
            XCTAssertEqual(sizes?.size, Int(field.pointee.type_size), "size of \(type)")
            XCTAssertEqual(sizes?.stride, Int(field.pointee.type_size), "stride of \(type): arrays of it must pack like C")
            checked.insert(key)
            index += 1
        }
        XCTAssertEqual(checked, Set(swiftLayout.keys), "every Swift-checked field is in the C table")
    }

    func testStructSizesMatchTheHeadersStaticAsserts() {
        XCTAssertEqual(MemoryLayout<sl_service_key>.size, 20)
        XCTAssertEqual(MemoryLayout<sl_service_value>.size, 20)
        XCTAssertEqual(MemoryLayout<sl_backend_slot>.size, 24)
        XCTAssertEqual(MemoryLayout<sl_backend>.size, 20)
        XCTAssertEqual(MemoryLayout<sl_revnat>.size, 20)
        XCTAssertEqual(MemoryLayout<sl_sock_revnat_key>.size, 32)
        XCTAssertEqual(MemoryLayout<sl_sock_revnat_value>.size, 24)
        XCTAssertEqual(MemoryLayout<sl_sock_frontend>.size, 40)
        XCTAssertEqual(MemoryLayout<sl_nat_key>.size, 40)
        XCTAssertEqual(MemoryLayout<sl_nat_entry>.size, 88)
        XCTAssertEqual(MemoryLayout<sl_nat_route>.size, 32)
        XCTAssertEqual(MemoryLayout<sl_nat_entry_v1>.size, 56)
        XCTAssertEqual(MemoryLayout<sl_node_addr_key>.size, 16)
        XCTAssertEqual(MemoryLayout<sl_node_addr>.size, 8)
        XCTAssertEqual(MemoryLayout<sl_device>.size, 40)
        XCTAssertEqual(MemoryLayout<sl_dsr_key>.size, 40)
        XCTAssertEqual(MemoryLayout<sl_dsr_entry>.size, 32)
        XCTAssertEqual(MemoryLayout<sl_frag_key>.size, 40)
        XCTAssertEqual(MemoryLayout<sl_frag_entry>.size, 4)
    }

    /// The metrics label each per-CPU counter with `OutcomeReason.names[reason]`: a name
    /// list out of step with `enum sl_reason` would mislabel every counter after the gap.
    func testEveryOutcomeReasonOfTheBPFSideHasItsName() {
        XCTAssertEqual(OutcomeReason.names.count, OutcomeReason.count)
        XCTAssertEqual(Set(OutcomeReason.names).count, OutcomeReason.names.count, "names are unique")
    }

    func testTheReconcilersServiceFlagsAreTheBPFSidesFlags() {
        let pairs: [(ServiceFlags, sl_service_flags)] = [
            (.reject, SL_SVC_F_REJECT), (.drop, SL_SVC_F_DROP), (.affinity, SL_SVC_F_AFFINITY),
            (.nodeScope, SL_SVC_F_NODE_SCOPE), (.sourceRanges, SL_SVC_F_SOURCE_RANGES),
        ]
        for (swift, c) in pairs { XCTAssertEqual(UInt32(swift.rawValue), c.rawValue, "\(c)") }
    }
}
