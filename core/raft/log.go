package raft

import (
	"errors"
	"fmt"
	"math"
)

// raftLog is the node's view of the log: durable entries in storage
// followed by unstable ones.
//
// Invariants: snapshot index <= applied <= applying <= committed <=
// lastIndex; committed and applied never decrease.
type raftLog struct {
	storage  LogReader
	unstable unstable

	// committed is the highest index known to be committed.
	committed uint64
	// applying is the highest index handed out in Ready.CommittedEntries.
	applying uint64
	// applied is the highest index the driver reported applied (Advance).
	applied uint64

	// maxApplyingBytes bounds the CommittedEntries of one Ready.
	maxApplyingBytes uint64

	logger Logger
}

// newLog builds the log from storage. Storage errors are returned. (Later
// storage failures inside Step panic: the LogReader contract allows only
// ErrCompacted and ErrUnavailable, anything else means the node cannot go
// on.)
func newLog(storage LogReader, logger Logger, maxApplyingBytes uint64) (*raftLog, error) {
	first, err := storage.FirstIndex()
	if err != nil {
		return nil, fmt.Errorf("raft: storage FirstIndex: %w", err)
	}
	last, err := storage.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("raft: storage LastIndex: %w", err)
	}
	if first == 0 || last+1 < first {
		return nil, fmt.Errorf("raft: storage reports first index %d and last index %d", first, last)
	}
	l := &raftLog{storage: storage, logger: logger, maxApplyingBytes: maxApplyingBytes}
	l.unstable.offset = last + 1
	l.unstable.offsetInProgress = last + 1
	l.committed = first - 1
	l.applying = first - 1
	l.applied = first - 1
	return l, nil
}

func (l *raftLog) String() string {
	return fmt.Sprintf("committed=%d applied=%d applying=%d unstable.offset=%d len(unstable)=%d",
		l.committed, l.applied, l.applying, l.unstable.offset, len(l.unstable.entries))
}

func (l *raftLog) firstIndex() uint64 {
	if i, ok := l.unstable.maybeFirstIndex(); ok {
		return i
	}
	i, err := l.storage.FirstIndex()
	if err != nil {
		panic(fmt.Errorf("raft: storage FirstIndex failed: %w", err))
	}
	return i
}

func (l *raftLog) lastIndex() uint64 {
	if i, ok := l.unstable.maybeLastIndex(); ok {
		return i
	}
	i, err := l.storage.LastIndex()
	if err != nil {
		panic(fmt.Errorf("raft: storage LastIndex failed: %w", err))
	}
	return i
}

// lastStableIndex is the highest index known durable in this node's log
// (0 while an incoming snapshot is not yet durable).
func (l *raftLog) lastStableIndex() uint64 {
	if l.unstable.snapshot != nil {
		return 0
	}
	return l.unstable.offset - 1
}

// term returns the term of entry i, ErrCompacted below firstIndex-1 and
// ErrUnavailable above lastIndex.
func (l *raftLog) term(i uint64) (uint64, error) {
	if t, ok := l.unstable.maybeTerm(i); ok {
		return t, nil
	}
	if i+1 < l.firstIndex() {
		return 0, ErrCompacted
	}
	if i > l.lastIndex() {
		return 0, ErrUnavailable
	}
	t, err := l.storage.Term(i)
	if err == nil {
		return t, nil
	}
	if errors.Is(err, ErrCompacted) || errors.Is(err, ErrUnavailable) {
		return 0, err
	}
	panic(fmt.Errorf("raft: storage Term(%d) failed: %w", i, err))
}

func (l *raftLog) lastTerm() uint64 {
	t, err := l.term(l.lastIndex())
	if err != nil {
		panic(fmt.Errorf("raft: term of the last index %d: %w", l.lastIndex(), err))
	}
	return t
}

func (l *raftLog) matchTerm(i, t uint64) bool {
	gt, err := l.term(i)
	return err == nil && gt == t
}

// isUpToDate reports whether a log ending at (lasti, term) is at least as
// up to date as ours (Raft §5.4.1: compare last term, then last index).
func (l *raftLog) isUpToDate(lasti, term uint64) bool {
	lt := l.lastTerm()
	return term > lt || (term == lt && lasti >= l.lastIndex())
}

// findConflict returns the index of the first entry of ents (consecutive)
// that is not in our log with the same term, or 0 if all match.
func (l *raftLog) findConflict(ents []Entry) uint64 {
	for i := range ents {
		if !l.matchTerm(ents[i].Index, ents[i].Term) {
			return ents[i].Index
		}
	}
	return 0
}

// errConflictBelowCommit is returned by maybeAppend when the leader's
// entries disagree with an entry this node already knows is committed.
var errConflictBelowCommit = errors.New("raft: append conflicts with a committed entry")

// maybeAppend implements the follower side of AppendEntries (Raft §5.3):
// if entry prevIndex has term prevTerm, it appends ents, truncating our
// log only at the first conflicting entry, and advances commit to
// min(leaderCommit, prevIndex+len(ents)). ok is false on a mismatch.
func (l *raftLog) maybeAppend(prevIndex, prevTerm, leaderCommit uint64, ents []Entry) (lastNew uint64, ok bool, err error) {
	if !l.matchTerm(prevIndex, prevTerm) {
		return 0, false, nil
	}
	lastNew = prevIndex + uint64(len(ents))
	if ci := l.findConflict(ents); ci != 0 {
		if ci <= l.committed {
			return 0, false, fmt.Errorf("%w: entry %d (committed %d)", errConflictBelowCommit, ci, l.committed)
		}
		l.append(ents[ci-(prevIndex+1):]...)
	}
	l.commitTo(min(leaderCommit, lastNew))
	return lastNew, true, nil
}

// append adds ents (consecutive, non-empty or empty) after truncating
// everything from ents[0].Index on. It returns the new last index.
func (l *raftLog) append(ents ...Entry) uint64 {
	if len(ents) == 0 {
		return l.lastIndex()
	}
	if after := ents[0].Index - 1; after < l.committed {
		panic(fmt.Sprintf("raft: append after %d would truncate committed entries (committed %d)", after, l.committed))
	}
	l.unstable.truncateAndAppend(ents)
	return l.lastIndex()
}

// commitTo raises the commit index. The caller guarantees tocommit <=
// lastIndex and that entries up to tocommit match the leader's.
func (l *raftLog) commitTo(tocommit uint64) {
	if l.committed < tocommit {
		if tocommit > l.lastIndex() {
			panic(fmt.Sprintf("raft: commit %d is beyond the last index %d", tocommit, l.lastIndex()))
		}
		l.committed = tocommit
	}
}

// appliedTo records that the driver applied everything up to i.
func (l *raftLog) appliedTo(i uint64) {
	if i > l.applied {
		l.applied = i
	}
	if i > l.applying {
		l.applying = i
	}
}

// slice returns entries in [lo, hi) limited to maxBytes (at least one).
func (l *raftLog) slice(lo, hi, maxBytes uint64) ([]Entry, error) {
	if lo >= hi {
		return nil, nil
	}
	if lo < l.firstIndex() {
		return nil, ErrCompacted
	}
	if hi > l.lastIndex()+1 {
		return nil, ErrUnavailable
	}
	uoff := l.unstable.offset
	if lo >= uoff {
		ents := l.unstable.entries[lo-uoff : hi-uoff : hi-uoff]
		return limitSize(ents, maxBytes), nil
	}
	stored, err := l.storage.Entries(lo, min(hi, uoff), maxBytes)
	if err != nil {
		if errors.Is(err, ErrCompacted) {
			return nil, err
		}
		if errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		panic(fmt.Errorf("raft: storage Entries(%d, %d) failed: %w", lo, min(hi, uoff), err))
	}
	if hi <= uoff || uint64(len(stored)) < uoff-lo {
		return stored, nil
	}
	size := uint64(0)
	for i := range stored {
		size += stored[i].Size()
	}
	if size >= maxBytes {
		return stored, nil
	}
	ents := make([]Entry, 0, uint64(len(stored))+hi-uoff)
	ents = append(ents, stored...)
	ents = append(ents, l.unstable.entries[:hi-uoff]...)
	return limitSize(ents, maxBytes), nil
}

// entries returns the entries from i on, limited to maxBytes.
func (l *raftLog) entries(i, maxBytes uint64) ([]Entry, error) {
	if i > l.lastIndex() {
		return nil, nil
	}
	return l.slice(i, l.lastIndex()+1, maxBytes)
}

// snapshot returns the snapshot to send to a follower that needs
// compacted entries.
func (l *raftLog) snapshot() (Snapshot, error) {
	if l.unstable.snapshot != nil {
		return *l.unstable.snapshot, nil
	}
	return l.storage.Snapshot()
}

// nextCommittedEnts returns the committed entries not yet handed out.
func (l *raftLog) nextCommittedEnts() []Entry {
	lo := max(l.applying+1, l.firstIndex())
	hi := l.committed + 1
	if lo >= hi {
		return nil
	}
	ents, err := l.slice(lo, hi, l.maxApplyingBytes)
	if err != nil {
		panic(fmt.Errorf("raft: committed entries [%d, %d) unavailable (%s): %w", lo, hi, l, err))
	}
	return ents
}

func (l *raftLog) hasNextCommittedEnts() bool {
	return l.committed >= max(l.applying+1, l.firstIndex())
}

// restore replaces the log with snapshot s and commits up to it.
func (l *raftLog) restore(s Snapshot) {
	l.committed = s.Metadata.Index
	l.unstable.restore(s)
}

// findConflictByTerm returns the largest index j <= index whose term is
// <= term (or the first index - 1 if the log does not go back far enough),
// and the term of j. It stops early at floor.
func (l *raftLog) findConflictByTerm(index, term, floor uint64) (uint64, uint64) {
	for ; index > floor; index-- {
		t, err := l.term(index)
		if err != nil {
			return index, 0
		}
		if t <= term {
			return index, t
		}
	}
	t, _ := l.term(index)
	return index, t
}

const noLimit = math.MaxUint64
