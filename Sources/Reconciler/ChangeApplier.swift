import Foundation

/// Writes the runs of changes a reconcile plans, in order, and stops at the first failure.
///
/// With `concurrent`, the writes happen on a thread of their own while the reconciler
/// plans the next run: from empty at 10,000 frontends the kernel's share of a sync (the
/// map updates themselves) then overlaps planning instead of following it. Each run goes
/// in one `applyTogether` when `merge` says its changes may be interleaved phase by phase,
/// otherwise change by change.
final class ChangeApplier: @unchecked Sendable {
    private let maps: LoadBalancerMaps
    /// Only when concurrent (nil: written on the caller's thread, so a small sync, one
    /// endpoint changed, pays for no lock).
    private let condition: NSCondition?
    // Guarded by `condition`.
    private var queue: [(changes: [FrontendChange], merge: Bool)] = []
    private var finished = false
    private var running = false
    // Written by the applying side only; read after `finish`.
    private(set) var applied: [FrontendChange] = []
    private(set) var failed = false

    init(maps: LoadBalancerMaps, concurrent: Bool) {
        self.maps = maps
        condition = concurrent ? NSCondition() : nil
        guard concurrent else { return }
        running = true
        let worker = Thread { self.drain() }  // holds the applier until `finish`
        worker.name = "swiftlane-map-writer"
        worker.start()
    }

    /// Queues a run (applied at once when not concurrent). Ignored after a failure: what
    /// comes later may rely on what failed.
    func submit(_ changes: [FrontendChange], merge: Bool) {
        guard !changes.isEmpty else { return }
        guard let condition else {
            apply(changes, merge: merge)
            return
        }
        condition.lock()
        queue.append((changes, merge))
        condition.signal()
        condition.unlock()
    }

    /// Waits until every queued run is written (or one failed). Must be called: the
    /// writing thread waits for it.
    func finish() {
        guard let condition else { return }
        condition.lock()
        finished = true
        condition.signal()
        while running { condition.wait() }
        condition.unlock()
    }

    private func drain() {
        guard let condition else { return }
        condition.lock()
        while true {
            while queue.isEmpty && !finished { condition.wait() }
            if queue.isEmpty { break }
            let next = queue.removeFirst()
            condition.unlock()
            apply(next.changes, merge: next.merge)
            condition.lock()
        }
        running = false
        condition.broadcast()
        condition.unlock()
    }

    private func apply(_ changes: [FrontendChange], merge: Bool) {
        guard !failed else { return }
        do {
            if merge && changes.count > 1 {
                try maps.applyTogether(changes.map(\.ops))
                applied += changes
            } else {
                for change in changes {
                    try maps.apply(change.ops)
                    applied.append(change)
                }
            }
        } catch {
            failed = true
        }
    }
}
