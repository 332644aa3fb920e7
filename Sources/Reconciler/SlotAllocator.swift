/// Hands out contiguous ranges of the slot array, one per backend set.
///
/// A range released by a flip (or a removal) is quarantined before it can be handed out
/// again: a BPF program that loaded the frontend's old entry just before the flip still
/// reads slots of the old range a moment later, and must find the old backends there,
/// not another service's. Readers hold an entry for well under a microsecond, so a
/// quarantine of a second is a wide margin.
public struct SlotAllocator: Equatable, Sendable {
    /// Usable slots are 1 ..< capacity (slot 0 means "no set").
    public let capacity: UInt32
    public let quarantineNanoseconds: UInt64
    /// Free ranges, sorted and coalesced.
    private(set) var free: [Range<UInt32>]
    private(set) var quarantined: [(range: Range<UInt32>, until: UInt64)] = []

    public static func == (lhs: SlotAllocator, rhs: SlotAllocator) -> Bool {
        lhs.capacity == rhs.capacity && lhs.free == rhs.free
            && lhs.quarantined.map(\.range) == rhs.quarantined.map(\.range)
    }

    /// An allocator whose ranges `inUse` are taken and everything else is free.
    public init(capacity: UInt32, inUse: [Range<UInt32>] = [], quarantineNanoseconds: UInt64 = 1_000_000_000) {
        self.capacity = capacity
        self.quarantineNanoseconds = quarantineNanoseconds
        var gaps: [Range<UInt32>] = []
        var cursor: UInt32 = 1
        for range in inUse.filter({ !$0.isEmpty }).sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if range.lowerBound > cursor { gaps.append(cursor..<min(range.lowerBound, capacity)) }
            cursor = max(cursor, range.upperBound)
        }
        if cursor < capacity { gaps.append(cursor..<capacity) }
        free = gaps.filter { !$0.isEmpty }
    }

    /// Free slots now (quarantined ones not counted).
    public var freeCount: Int { free.reduce(0) { $0 + $1.count } }
    public var quarantinedCount: Int { quarantined.reduce(0) { $0 + $1.range.count } }

    /// The first free range of `count` slots (first fit), or nil when none is large enough.
    public mutating func allocate(_ count: Int, now: UInt64) -> Range<UInt32>? {
        precondition(count > 0)
        releaseExpired(now: now)
        guard let index = free.firstIndex(where: { $0.count >= count }) else { return nil }
        let range = free[index].lowerBound..<(free[index].lowerBound + UInt32(count))
        claim(range)
        return range
    }

    /// Marks `range` taken (a no-op for slots already taken).
    public mutating func claim(_ range: Range<UInt32>) {
        guard !range.isEmpty else { return }
        // `free` is sorted and disjoint: only the gaps overlapping `range` change, found by
        // binary search and replaced in place (rebuilding the list cost an allocation and
        // a walk over every gap per frontend written).
        var low = 0, high = free.count
        while low < high {
            let middle = (low + high) / 2
            if free[middle].upperBound <= range.lowerBound { low = middle + 1 } else { high = middle }
        }
        var end = low
        var pieces: [Range<UInt32>] = []
        while end < free.count, free[end].lowerBound < range.upperBound {
            let gap = free[end]
            if gap.lowerBound < range.lowerBound { pieces.append(gap.lowerBound..<range.lowerBound) }
            if range.upperBound < gap.upperBound { pieces.append(range.upperBound..<gap.upperBound) }
            end += 1
        }
        if end > low { free.replaceSubrange(low..<end, with: pieces) }
        if !quarantined.isEmpty { quarantined.removeAll { $0.range.overlaps(range) } }
    }

    /// Gives `range` back; it becomes allocatable once the quarantine has passed.
    public mutating func release(_ range: Range<UInt32>, now: UInt64) {
        guard !range.isEmpty else { return }
        quarantined.append((range, now &+ quarantineNanoseconds))
    }

    /// Ranges still quarantined at `now`, to carry over when the allocator is rebuilt.
    public func stillQuarantined(at now: UInt64) -> [(range: Range<UInt32>, until: UInt64)] {
        quarantined.filter { $0.until > now }
    }

    /// Re-quarantines ranges carried over from a previous allocator (those not in use).
    public mutating func adoptQuarantine(_ entries: [(range: Range<UInt32>, until: UInt64)]) {
        for entry in entries where free.contains(where: { $0.lowerBound <= entry.range.lowerBound && entry.range.upperBound <= $0.upperBound }) {
            claim(entry.range)
            quarantined.append(entry)
        }
    }

    private mutating func releaseExpired(now: UInt64) {
        let expired = quarantined.filter { $0.until <= now }
        guard !expired.isEmpty else { return }
        quarantined.removeAll { $0.until <= now }
        var ranges = free + expired.map(\.range)
        ranges.sort { $0.lowerBound < $1.lowerBound }
        var merged: [Range<UInt32>] = []
        for range in ranges {
            if let last = merged.last, last.upperBound >= range.lowerBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        free = merged
    }
}
