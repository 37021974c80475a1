package raft

import "fmt"

// MemoryStorage is an in-memory LogReader with the write side the driver
// uses (Save, Append, SetHardState, ApplySnapshot, CreateSnapshot,
// Compact). It backs tests and the simulator.
//
// MemoryStorage is not safe for concurrent use: callers that share it
// between goroutines must serialise access themselves.
//
// Slices returned by Entries alias internal storage and must not be
// modified; they stay valid after later writes (writes that replace a
// suffix or compact copy into a new array).
type MemoryStorage struct {
	hs   HardState
	snap Snapshot
	// ents[0] is a dummy entry holding the snapshot's index and term;
	// ents[i] has log index ents[0].Index+i.
	// Invariant: len(ents) >= 1.
	ents []Entry
}

var _ LogReader = (*MemoryStorage)(nil)

// NewMemoryStorage returns an empty storage: no entries, no snapshot, an
// empty HardState and an empty ConfState.
func NewMemoryStorage() *MemoryStorage {
	return &MemoryStorage{ents: make([]Entry, 1)}
}

// InitialState returns the saved HardState and the ConfState of the
// snapshot (or the one set by SetConfState).
func (ms *MemoryStorage) InitialState() (HardState, ConfState, error) {
	return ms.hs, ms.snap.Metadata.ConfState, nil
}

// SetHardState replaces the saved HardState.
func (ms *MemoryStorage) SetHardState(hs HardState) error {
	ms.hs = hs
	return nil
}

// SetConfState sets the membership reported by InitialState without
// touching the log. It is meant for bootstrapping a new cluster: every
// founding member's storage gets the same ConfState before NewRawNode,
// which then writes it into the empty log as committed ConfChange entries
// at term 1 (indexes 1..n), so that members added later learn it by
// replication. A node that joins an existing cluster starts with an empty
// ConfState.
func (ms *MemoryStorage) SetConfState(cs ConfState) {
	ms.snap.Metadata.ConfState = ConfState{
		Voters:   append([]uint64(nil), cs.Voters...),
		Learners: append([]uint64(nil), cs.Learners...),
	}
}

func (ms *MemoryStorage) offset() uint64    { return ms.ents[0].Index }
func (ms *MemoryStorage) lastIndex() uint64 { return ms.ents[0].Index + uint64(len(ms.ents)) - 1 }

// Entries returns the entries in [lo, hi), at most maxBytes in total
// (Entry.Size) but at least one if the range is not empty.
func (ms *MemoryStorage) Entries(lo, hi, maxBytes uint64) ([]Entry, error) {
	off := ms.offset()
	if lo <= off {
		return nil, ErrCompacted
	}
	if hi > ms.lastIndex()+1 {
		return nil, ErrUnavailable
	}
	if lo >= hi {
		return nil, nil
	}
	ents := ms.ents[lo-off : hi-off : hi-off]
	return limitSize(ents, maxBytes), nil
}

// Term returns the term of entry i; for i = FirstIndex()-1 it is the
// snapshot's term.
func (ms *MemoryStorage) Term(i uint64) (uint64, error) {
	off := ms.offset()
	if i < off {
		return 0, ErrCompacted
	}
	if i-off >= uint64(len(ms.ents)) {
		return 0, ErrUnavailable
	}
	return ms.ents[i-off].Term, nil
}

// LastIndex returns the index of the last entry (the snapshot index when
// the log is empty).
func (ms *MemoryStorage) LastIndex() (uint64, error) { return ms.lastIndex(), nil }

// FirstIndex returns the snapshot index + 1.
func (ms *MemoryStorage) FirstIndex() (uint64, error) { return ms.offset() + 1, nil }

// Snapshot returns the most recent snapshot.
func (ms *MemoryStorage) Snapshot() (Snapshot, error) { return ms.snap, nil }

// ApplySnapshot replaces the whole log with snap. It returns
// ErrSnapOutOfDate if snap is not newer than the current snapshot, except
// that a snapshot at index 0 is accepted on a storage that has never held
// one (it only sets the ConfState, for bootstrapping).
func (ms *MemoryStorage) ApplySnapshot(snap Snapshot) error {
	cur := ms.snap.Metadata.Index
	idx := snap.Metadata.Index
	if idx <= cur && !(idx == 0 && cur == 0 && len(ms.ents) == 1) {
		return ErrSnapOutOfDate
	}
	ms.snap = snap
	ms.ents = []Entry{{Index: idx, Term: snap.Metadata.Term}}
	if ms.hs.Commit < idx {
		ms.hs.Commit = idx
	}
	return nil
}

// CreateSnapshot records a snapshot at index i (which must be in the log
// and above the current snapshot) with ConfState cs (if cs is nil the
// previous ConfState is kept) and the driver descriptor data. It does not
// compact; call Compact separately.
func (ms *MemoryStorage) CreateSnapshot(i uint64, cs *ConfState, data []byte) (Snapshot, error) {
	if i <= ms.snap.Metadata.Index {
		return Snapshot{}, ErrSnapOutOfDate
	}
	if i > ms.lastIndex() {
		return Snapshot{}, fmt.Errorf("raft: snapshot index %d is beyond the last index %d: %w", i, ms.lastIndex(), ErrUnavailable)
	}
	if i < ms.offset() {
		return Snapshot{}, ErrCompacted
	}
	ms.snap.Metadata.Index = i
	ms.snap.Metadata.Term = ms.ents[i-ms.offset()].Term
	if cs != nil {
		ms.snap.Metadata.ConfState = ConfState{
			Voters:   append([]uint64(nil), cs.Voters...),
			Learners: append([]uint64(nil), cs.Learners...),
		}
	}
	ms.snap.Data = data
	return ms.snap, nil
}

// Compact discards the entries before compactIndex; compactIndex becomes
// the dummy entry whose term still answers Term(compactIndex). The caller
// must not compact past the applied index. It returns ErrCompacted if
// compactIndex is not above the current first index - 1.
func (ms *MemoryStorage) Compact(compactIndex uint64) error {
	off := ms.offset()
	if compactIndex <= off {
		return ErrCompacted
	}
	if compactIndex > ms.lastIndex() {
		return fmt.Errorf("raft: compact %d is beyond the last index %d: %w", compactIndex, ms.lastIndex(), ErrUnavailable)
	}
	i := compactIndex - off
	ents := make([]Entry, 1, uint64(len(ms.ents))-i)
	ents[0] = Entry{Index: ms.ents[i].Index, Term: ms.ents[i].Term}
	ms.ents = append(ents, ms.ents[i+1:]...)
	return nil
}

// Append adds entries to the log. Entries must be consecutive. Entries at
// or below the snapshot index are skipped; an entry at an index already in
// the log replaces it and everything after it. A gap after the last index
// is an error.
func (ms *MemoryStorage) Append(entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	for i := 1; i < len(entries); i++ {
		if entries[i].Index != entries[i-1].Index+1 {
			return fmt.Errorf("raft: append: entries are not consecutive at %d", entries[i].Index)
		}
	}
	first := ms.offset() + 1
	last := entries[0].Index + uint64(len(entries)) - 1
	if last < first {
		return nil
	}
	if first > entries[0].Index {
		entries = entries[first-entries[0].Index:]
	}
	at := entries[0].Index - ms.offset()
	switch {
	case uint64(len(ms.ents)) > at:
		// Replace a suffix: copy the kept prefix into a new array so slices
		// handed out earlier are not overwritten.
		kept := make([]Entry, at, at+uint64(len(entries)))
		copy(kept, ms.ents[:at])
		ms.ents = append(kept, entries...)
	case uint64(len(ms.ents)) == at:
		ms.ents = append(ms.ents, entries...)
	default:
		return fmt.Errorf("raft: append: missing log entries (last index %d, appending at %d)", ms.lastIndex(), entries[0].Index)
	}
	return nil
}

// Save appends ents and, unless hs is empty, replaces the HardState. sync
// is ignored (memory is never durable).
func (ms *MemoryStorage) Save(hs HardState, ents []Entry, sync bool) error {
	if err := ms.Append(ents); err != nil {
		return err
	}
	if !hs.IsEmpty() {
		ms.hs = hs
	}
	return nil
}

// limitSize returns the longest prefix of ents whose total Size is at most
// maxBytes, but at least one entry.
func limitSize(ents []Entry, maxBytes uint64) []Entry {
	if len(ents) <= 1 {
		return ents
	}
	size := ents[0].Size()
	for i := 1; i < len(ents); i++ {
		size += ents[i].Size()
		if size > maxBytes {
			return ents[:i:i]
		}
	}
	return ents
}
