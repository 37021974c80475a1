package raft

// unstable holds the entries and the snapshot that have not been persisted
// yet. The leader's new entries and the entries or snapshot a follower
// receives live here until the driver reports them durable (Advance).
type unstable struct {
	// snapshot is the incoming snapshot, if any.
	snapshot *Snapshot
	// entries[i] has log index offset+i.
	entries []Entry
	offset  uint64
	// Entries with index < offsetInProgress were handed out in a Ready and
	// are being persisted. Invariant: offset <= offsetInProgress <=
	// offset+len(entries).
	offsetInProgress   uint64
	snapshotInProgress bool
}

// maybeFirstIndex returns the first index of the log if an unstable
// snapshot is pending.
func (u *unstable) maybeFirstIndex() (uint64, bool) {
	if u.snapshot != nil {
		return u.snapshot.Metadata.Index + 1, true
	}
	return 0, false
}

// maybeLastIndex returns the last index if there are unstable entries or
// an unstable snapshot.
func (u *unstable) maybeLastIndex() (uint64, bool) {
	if l := len(u.entries); l != 0 {
		return u.offset + uint64(l) - 1, true
	}
	if u.snapshot != nil {
		return u.snapshot.Metadata.Index, true
	}
	return 0, false
}

// maybeTerm returns the term of entry i if the unstable part knows it.
func (u *unstable) maybeTerm(i uint64) (uint64, bool) {
	if i < u.offset {
		if u.snapshot != nil && u.snapshot.Metadata.Index == i {
			return u.snapshot.Metadata.Term, true
		}
		return 0, false
	}
	last, ok := u.maybeLastIndex()
	if !ok || i > last {
		return 0, false
	}
	return u.entries[i-u.offset].Term, true
}

// nextEntries returns the entries not yet handed out in a Ready.
func (u *unstable) nextEntries() []Entry {
	i := u.offsetInProgress - u.offset
	if i >= uint64(len(u.entries)) {
		return nil
	}
	return u.entries[i:len(u.entries):len(u.entries)]
}

// nextSnapshot returns the snapshot not yet handed out in a Ready.
func (u *unstable) nextSnapshot() *Snapshot {
	if u.snapshot == nil || u.snapshotInProgress {
		return nil
	}
	return u.snapshot
}

// acceptInProgress marks everything currently unstable as handed out.
func (u *unstable) acceptInProgress() {
	u.offsetInProgress = u.offset + uint64(len(u.entries))
	if u.snapshot != nil {
		u.snapshotInProgress = true
	}
}

// stableTo marks entries up to (i, t) durable. It does nothing if entry i
// has been replaced by an entry of another term in the meantime.
func (u *unstable) stableTo(i, t uint64) {
	gt, ok := u.maybeTerm(i)
	if !ok || gt != t || i < u.offset {
		return
	}
	n := i + 1 - u.offset
	u.entries = u.entries[n:]
	u.offset = i + 1
	if u.offsetInProgress < u.offset {
		u.offsetInProgress = u.offset
	}
	u.shrink()
}

// shrink releases the backing array once most of it is unused, so a long
// run does not pin every entry ever appended.
func (u *unstable) shrink() {
	const lenMultiple = 2
	if len(u.entries) == 0 {
		u.entries = u.entries[:0:0]
		return
	}
	if len(u.entries)*lenMultiple < cap(u.entries) {
		ents := make([]Entry, len(u.entries))
		copy(ents, u.entries)
		u.entries = ents
	}
}

// stableSnapTo marks the snapshot at index i durable.
func (u *unstable) stableSnapTo(i uint64) {
	if u.snapshot != nil && u.snapshot.Metadata.Index == i {
		u.snapshot = nil
		u.snapshotInProgress = false
	}
}

// restore replaces everything with snapshot s.
func (u *unstable) restore(s Snapshot) {
	u.offset = s.Metadata.Index + 1
	u.offsetInProgress = u.offset
	u.entries = nil
	u.snapshot = &s
	u.snapshotInProgress = false
}

// truncateAndAppend appends ents (consecutive, non-empty), first dropping
// every unstable entry at or after ents[0].Index.
func (u *unstable) truncateAndAppend(ents []Entry) {
	from := ents[0].Index
	switch {
	case from == u.offset+uint64(len(u.entries)):
		u.entries = append(u.entries, ents...)
	case from <= u.offset:
		// Replace everything unstable; the storage part after from-1 will be
		// overwritten when these entries are persisted.
		u.entries = append([]Entry(nil), ents...)
		u.offset = from
		u.offsetInProgress = from
	default:
		// Keep a prefix. Copy into a new array: slices of the old one may be
		// referenced by messages that are still in flight.
		keep := from - u.offset
		next := make([]Entry, keep, keep+uint64(len(ents)))
		copy(next, u.entries[:keep])
		u.entries = append(next, ents...)
		if u.offsetInProgress > from {
			u.offsetInProgress = from
		}
	}
}
