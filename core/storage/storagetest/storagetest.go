// Package storagetest is the conformance suite every Raft log store must
// pass: raft.MemoryStorage and storage.Store run the same tests, so the
// core sees the same behaviour from both.
package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/raftd/raftd/core/raft"
)

// Store is the write side the driver uses plus the read side the core
// consumes (DESIGN "Storage write side").
type Store interface {
	raft.LogReader
	// Save persists hs (unless empty) and ents; an entry at an index
	// already present replaces it and everything after it.
	Save(hs raft.HardState, ents []raft.Entry, sync bool) error
	// ApplySnapshot replaces the whole log with snap.
	ApplySnapshot(snap raft.Snapshot) error
	// Compact discards the entries up to and including index.
	Compact(index uint64) error
}

// Reopener is implemented by stores whose state survives a restart: Reopen
// closes the store and opens it again from what it made durable. The suite
// then checks that nothing was lost or changed. Stores that do not
// implement it skip those checks.
type Reopener interface {
	Reopen(t *testing.T) Store
}

// Factory returns a new, empty store for one subtest. It registers its own
// cleanup with t.
type Factory func(t *testing.T) Store

// Run runs the whole suite against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"Empty", testEmpty},
		{"Append", testAppend},
		{"OverwriteSuffix", testOverwriteSuffix},
		{"Gap", testGap},
		{"ByteLimits", testByteLimits},
		{"Compact", testCompact},
		{"ApplySnapshot", testApplySnapshot},
		{"Bootstrap", testBootstrap},
		{"Reopen", testReopen},
		{"RandomOps", testRandomOps},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore) })
	}
}

// ents returns entries [lo, hi] with the given term and data derived from
// index and term, so that replaced entries are distinguishable.
func ents(lo, hi, term uint64) []raft.Entry {
	var es []raft.Entry
	for i := lo; i <= hi; i++ {
		es = append(es, raft.Entry{Index: i, Term: term, Data: []byte(fmt.Sprintf("e%d.t%d", i, term))})
	}
	return es
}

func mustSave(t *testing.T, s Store, hs raft.HardState, es []raft.Entry) {
	t.Helper()
	if err := s.Save(hs, es, true); err != nil {
		t.Fatalf("Save(%+v, %d entries): %v", hs, len(es), err)
	}
}

func equalEntries(a, b []raft.Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Index != b[i].Index || a[i].Term != b[i].Term || a[i].Type != b[i].Type || !bytes.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

func describe(es []raft.Entry) string {
	var b bytes.Buffer
	for _, e := range es {
		fmt.Fprintf(&b, "%d/%d:%q ", e.Index, e.Term, e.Data)
	}
	return b.String()
}

// checkLog asserts the bounds and every entry of s against want (the
// expected entries from FirstIndex to LastIndex) and the term of the entry
// before the first.
func checkLog(t *testing.T, s Store, want []raft.Entry, first, prevTerm uint64) {
	t.Helper()
	fi, err := s.FirstIndex()
	if err != nil || fi != first {
		t.Fatalf("FirstIndex() = %d, %v; want %d", fi, err, first)
	}
	last := first - 1 + uint64(len(want))
	li, err := s.LastIndex()
	if err != nil || li != last {
		t.Fatalf("LastIndex() = %d, %v; want %d", li, err, last)
	}
	if tm, err := s.Term(first - 1); err != nil || tm != prevTerm {
		t.Fatalf("Term(%d) = %d, %v; want %d", first-1, tm, err, prevTerm)
	}
	if first >= 2 {
		if _, err := s.Term(first - 2); !errors.Is(err, raft.ErrCompacted) {
			t.Fatalf("Term(%d) err = %v; want ErrCompacted", first-2, err)
		}
	}
	if _, err := s.Term(last + 1); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("Term(%d) err = %v; want ErrUnavailable", last+1, err)
	}
	for _, e := range want {
		if tm, err := s.Term(e.Index); err != nil || tm != e.Term {
			t.Fatalf("Term(%d) = %d, %v; want %d", e.Index, tm, err, e.Term)
		}
	}
	got, err := s.Entries(first, last+1, ^uint64(0))
	if err != nil {
		t.Fatalf("Entries(%d, %d): %v", first, last+1, err)
	}
	if !equalEntries(got, want) {
		t.Fatalf("Entries(%d, %d) =\n  %s\nwant\n  %s", first, last+1, describe(got), describe(want))
	}
	if _, err := s.Entries(first-1, last+1, ^uint64(0)); first > 1 && !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("Entries(%d, ...) err = %v; want ErrCompacted", first-1, err)
	}
	if _, err := s.Entries(first, last+2, ^uint64(0)); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("Entries(..., %d) err = %v; want ErrUnavailable", last+2, err)
	}
}

func checkHardState(t *testing.T, s Store, want raft.HardState) {
	t.Helper()
	hs, _, err := s.InitialState()
	if err != nil || hs != want {
		t.Fatalf("InitialState() hard state = %+v, %v; want %+v", hs, err, want)
	}
}

func testEmpty(t *testing.T, newStore Factory) {
	s := newStore(t)
	checkLog(t, s, nil, 1, 0)
	checkHardState(t, s, raft.HardState{})
	if es, err := s.Entries(1, 1, 100); err != nil || len(es) != 0 {
		t.Fatalf("Entries(1, 1) = %v, %v; want none", es, err)
	}
	snap, err := s.Snapshot()
	if err != nil || !snap.IsEmpty() {
		t.Fatalf("Snapshot() = %+v, %v; want empty", snap, err)
	}
}

func testAppend(t *testing.T, newStore Factory) {
	s := newStore(t)
	hs := raft.HardState{Term: 1, Vote: 1, Commit: 2}
	mustSave(t, s, hs, ents(1, 5, 1))
	checkLog(t, s, ents(1, 5, 1), 1, 0)
	checkHardState(t, s, hs)

	// Appending continues the log; an empty HardState leaves it unchanged.
	mustSave(t, s, raft.HardState{}, ents(6, 8, 2))
	checkLog(t, s, append(ents(1, 5, 1), ents(6, 8, 2)...), 1, 0)
	checkHardState(t, s, hs)

	// A HardState alone.
	hs2 := raft.HardState{Term: 3, Vote: 2, Commit: 8}
	mustSave(t, s, hs2, nil)
	checkHardState(t, s, hs2)

	// Entry types and empty data survive.
	cc := raft.Entry{Index: 9, Term: 3, Type: raft.EntryConfChange, Data: []byte{1, 2, 3}}
	noop := raft.Entry{Index: 10, Term: 3}
	mustSave(t, s, raft.HardState{}, []raft.Entry{cc, noop})
	got, err := s.Entries(9, 11, ^uint64(0))
	if err != nil || !equalEntries(got, []raft.Entry{cc, noop}) {
		t.Fatalf("Entries(9, 11) = %s, %v", describe(got), err)
	}
}

func testOverwriteSuffix(t *testing.T, newStore Factory) {
	s := newStore(t)
	mustSave(t, s, raft.HardState{Term: 1}, ents(1, 6, 1))

	// A shorter conflicting append truncates everything after it.
	mustSave(t, s, raft.HardState{Term: 2}, ents(3, 4, 2))
	want := append(ents(1, 2, 1), ents(3, 4, 2)...)
	checkLog(t, s, want, 1, 0)

	// A longer one replaces and extends.
	mustSave(t, s, raft.HardState{Term: 3}, ents(4, 9, 3))
	want = append(want[:3], ents(4, 9, 3)...)
	checkLog(t, s, want, 1, 0)

	// Re-appending identical entries changes nothing.
	mustSave(t, s, raft.HardState{}, ents(5, 7, 3))
	want = want[:7]
	checkLog(t, s, want, 1, 0)

	// Replacing from the very first entry.
	mustSave(t, s, raft.HardState{Term: 4}, ents(1, 2, 4))
	checkLog(t, s, ents(1, 2, 4), 1, 0)
}

func testGap(t *testing.T, newStore Factory) {
	s := newStore(t)
	mustSave(t, s, raft.HardState{Term: 1}, ents(1, 3, 1))
	if err := s.Save(raft.HardState{}, ents(5, 6, 1), true); err == nil {
		t.Fatal("Save with a gap after the last index succeeded")
	}
	bad := append(ents(4, 4, 1), ents(6, 6, 1)...)
	if err := s.Save(raft.HardState{}, bad, true); err == nil {
		t.Fatal("Save of non-consecutive entries succeeded")
	}
	checkLog(t, s, ents(1, 3, 1), 1, 0)
}

func testByteLimits(t *testing.T, newStore Factory) {
	s := newStore(t)
	var es []raft.Entry
	for i := uint64(1); i <= 20; i++ {
		es = append(es, raft.Entry{Index: i, Term: 1, Data: bytes.Repeat([]byte{byte(i)}, int(i*7%50))})
	}
	mustSave(t, s, raft.HardState{Term: 1}, es)
	for _, lo := range []uint64{1, 2, 7, 20} {
		for _, hi := range []uint64{lo + 1, lo + 3, 21} {
			if hi > 21 {
				continue
			}
			for _, maxBytes := range []uint64{0, 1, es[lo-1].Size(), es[lo-1].Size() + 1, 100, 150, 400, 1 << 20, ^uint64(0)} {
				// Expected: the longest prefix within maxBytes, at least one.
				n, size := 0, uint64(0)
				for i := lo; i < hi; i++ {
					size += es[i-1].Size()
					if n > 0 && size > maxBytes {
						break
					}
					n++
				}
				got, err := s.Entries(lo, hi, maxBytes)
				if err != nil {
					t.Fatalf("Entries(%d, %d, %d): %v", lo, hi, maxBytes, err)
				}
				if !equalEntries(got, es[lo-1:lo-1+uint64(n)]) {
					t.Fatalf("Entries(%d, %d, %d) returned %d entries %s; want %d", lo, hi, maxBytes, len(got), describe(got), n)
				}
			}
		}
	}
}

func testCompact(t *testing.T, newStore Factory) {
	s := newStore(t)
	mustSave(t, s, raft.HardState{Term: 2, Commit: 10}, append(ents(1, 5, 1), ents(6, 10, 2)...))
	if err := s.Compact(5); err != nil {
		t.Fatalf("Compact(5): %v", err)
	}
	checkLog(t, s, ents(6, 10, 2), 6, 1)
	for _, i := range []uint64{3, 5} {
		if err := s.Compact(i); !errors.Is(err, raft.ErrCompacted) {
			t.Fatalf("Compact(%d) after Compact(5) = %v; want ErrCompacted", i, err)
		}
	}
	if err := s.Compact(11); err == nil {
		t.Fatal("Compact(11) beyond the last index succeeded")
	}
	checkLog(t, s, ents(6, 10, 2), 6, 1)

	// Entries at or below the compacted index are skipped on append; the
	// rest is appended (the overlap 6..10 is identical).
	mustSave(t, s, raft.HardState{Term: 2, Commit: 12}, append(ents(4, 5, 1), ents(6, 12, 2)...))
	checkLog(t, s, ents(6, 12, 2), 6, 1)

	// Compacting everything leaves an empty log that still knows the term
	// of its last index.
	if err := s.Compact(12); err != nil {
		t.Fatalf("Compact(12): %v", err)
	}
	checkLog(t, s, nil, 13, 2)
	mustSave(t, s, raft.HardState{Term: 3, Commit: 12}, ents(13, 14, 3))
	checkLog(t, s, ents(13, 14, 3), 13, 2)
}

func testApplySnapshot(t *testing.T, newStore Factory) {
	s := newStore(t)
	mustSave(t, s, raft.HardState{Term: 3, Vote: 1, Commit: 5}, ents(1, 8, 3))
	cs := raft.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}
	snap := raft.Snapshot{Metadata: raft.SnapshotMetadata{Index: 20, Term: 3, ConfState: cs}, Data: []byte("descriptor")}
	if err := s.ApplySnapshot(snap); err != nil {
		t.Fatalf("ApplySnapshot: %v", err)
	}
	checkLog(t, s, nil, 21, 3)
	got, err := s.Snapshot()
	if err != nil || got.Metadata.Index != 20 || got.Metadata.Term != 3 || !got.Metadata.ConfState.Equal(cs) || !bytes.Equal(got.Data, snap.Data) {
		t.Fatalf("Snapshot() = %+v, %v; want %+v", got, err, snap)
	}
	hs, gotCS, err := s.InitialState()
	if err != nil || !gotCS.Equal(cs) {
		t.Fatalf("InitialState() conf state = %+v, %v; want %+v", gotCS, err, cs)
	}
	if hs.Commit < 20 || hs.Term != 3 || hs.Vote != 1 {
		t.Fatalf("InitialState() hard state = %+v; want commit raised to 20, term 3, vote 1", hs)
	}
	for _, idx := range []uint64{10, 20} {
		old := raft.Snapshot{Metadata: raft.SnapshotMetadata{Index: idx, Term: 3, ConfState: cs}}
		if err := s.ApplySnapshot(old); !errors.Is(err, raft.ErrSnapOutOfDate) {
			t.Fatalf("ApplySnapshot(index %d) after 20 = %v; want ErrSnapOutOfDate", idx, err)
		}
	}
	mustSave(t, s, raft.HardState{Term: 4, Commit: 21}, ents(21, 23, 4))
	checkLog(t, s, ents(21, 23, 4), 21, 3)

	// A snapshot inside the current log also discards the whole log.
	snap2 := raft.Snapshot{Metadata: raft.SnapshotMetadata{Index: 22, Term: 4, ConfState: cs}}
	if err := s.ApplySnapshot(snap2); err != nil {
		t.Fatalf("ApplySnapshot(22): %v", err)
	}
	checkLog(t, s, nil, 23, 4)
}

func testBootstrap(t *testing.T, newStore Factory) {
	s := newStore(t)
	cs := raft.ConfState{Voters: []uint64{1, 2, 3}}
	if err := s.ApplySnapshot(raft.Snapshot{Metadata: raft.SnapshotMetadata{ConfState: cs}}); err != nil {
		t.Fatalf("ApplySnapshot(index 0) on an empty store: %v", err)
	}
	_, got, err := s.InitialState()
	if err != nil || !got.Equal(cs) {
		t.Fatalf("InitialState() conf state = %+v, %v; want %+v", got, err, cs)
	}
	checkLog(t, s, nil, 1, 0)
	mustSave(t, s, raft.HardState{Term: 1, Commit: 1}, ents(1, 1, 1))
	checkLog(t, s, ents(1, 1, 1), 1, 0)
}

func testReopen(t *testing.T, newStore Factory) {
	s := newStore(t)
	if _, ok := s.(Reopener); !ok {
		t.Skip("store does not survive a restart")
	}
	reopen := func() {
		t.Helper()
		s = s.(Reopener).Reopen(t)
	}
	cs := raft.ConfState{Voters: []uint64{1, 2}}
	if err := s.ApplySnapshot(raft.Snapshot{Metadata: raft.SnapshotMetadata{ConfState: cs}}); err != nil {
		t.Fatal(err)
	}
	hs := raft.HardState{Term: 2, Vote: 1, Commit: 7}
	want := append(ents(1, 4, 1), ents(5, 9, 2)...)
	mustSave(t, s, hs, want)
	reopen()
	checkLog(t, s, want, 1, 0)
	checkHardState(t, s, hs)
	if _, got, _ := s.InitialState(); !got.Equal(cs) {
		t.Fatalf("conf state after reopen = %+v; want %+v", got, cs)
	}

	// Overwrite, compact, reopen.
	mustSave(t, s, raft.HardState{Term: 3, Vote: 2, Commit: 7}, ents(8, 8, 3))
	if err := s.Compact(6); err != nil {
		t.Fatal(err)
	}
	reopen()
	checkLog(t, s, append(append([]raft.Entry(nil), want[6:7]...), ents(8, 8, 3)...), 7, 2)
	checkHardState(t, s, raft.HardState{Term: 3, Vote: 2, Commit: 7})

	// Snapshot, reopen.
	cs2 := raft.ConfState{Voters: []uint64{1, 2, 3}}
	snap := raft.Snapshot{Metadata: raft.SnapshotMetadata{Index: 30, Term: 5, ConfState: cs2}, Data: []byte("d")}
	if err := s.ApplySnapshot(snap); err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, raft.HardState{Term: 5, Vote: 3, Commit: 31}, ents(31, 32, 5))
	reopen()
	checkLog(t, s, ents(31, 32, 5), 31, 5)
	got, err := s.Snapshot()
	if err != nil || got.Metadata.Index != 30 || got.Metadata.Term != 5 || !got.Metadata.ConfState.Equal(cs2) || string(got.Data) != "d" {
		t.Fatalf("Snapshot() after reopen = %+v, %v", got, err)
	}
	checkHardState(t, s, raft.HardState{Term: 5, Vote: 3, Commit: 31})
}

// model is the obviously-correct reference the random test compares with.
type model struct {
	first    uint64 // first index
	prevTerm uint64 // term of first-1
	ents     []raft.Entry
	hs       raft.HardState
}

func (m *model) last() uint64 { return m.first - 1 + uint64(len(m.ents)) }

func (m *model) term(i uint64) uint64 {
	if i == m.first-1 {
		return m.prevTerm
	}
	return m.ents[i-m.first].Term
}

// testRandomOps drives a store and the model with the same seeded random
// operations (appends, conflicting overwrites, compactions, snapshots,
// reopens) and compares them after every step.
func testRandomOps(t *testing.T, newStore Factory) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			s := newStore(t)
			m := &model{first: 1}
			term := uint64(1)
			for step := 0; step < 300; step++ {
				switch op := rng.IntN(20); {
				case op < 12: // append, sometimes overwriting a suffix
					lo := m.last() + 1
					if from := max(m.first, m.hs.Commit+1); op < 3 && m.last() >= from {
						// Raft never replaces a committed entry.
						lo = from + uint64(rng.IntN(int(m.last()-from+1)))
						term++
					}
					n := uint64(1 + rng.IntN(8))
					var es []raft.Entry
					for i := lo; i < lo+n; i++ {
						es = append(es, raft.Entry{Index: i, Term: term, Data: randData(rng)})
					}
					commit := m.hs.Commit
					if c := lo + n - 1; commit > c {
						commit = c
					}
					if rng.IntN(2) == 0 {
						commit = lo + n - 1 // raise commit to the end now and then
					}
					hs := raft.HardState{Term: term, Vote: 1, Commit: commit}
					if err := s.Save(hs, es, rng.IntN(2) == 0); err != nil {
						t.Fatalf("step %d: Save: %v", step, err)
					}
					m.ents = append(m.ents[:lo-m.first], es...)
					m.hs = hs
				case op < 15: // compact up to the commit index
					if m.hs.Commit < m.first {
						continue
					}
					i := m.first + uint64(rng.IntN(int(m.hs.Commit-m.first+1)))
					if err := s.Compact(i); err != nil {
						t.Fatalf("step %d: Compact(%d): %v", step, i, err)
					}
					m.prevTerm = m.term(i)
					m.ents = m.ents[i+1-m.first:]
					m.first = i + 1
				case op < 16: // install a snapshot ahead of the log
					term++
					idx := m.last() + uint64(1+rng.IntN(5))
					snap := raft.Snapshot{Metadata: raft.SnapshotMetadata{Index: idx, Term: term, ConfState: raft.ConfState{Voters: []uint64{1}}}}
					// Persist the new term first, as the driver does.
					hs := raft.HardState{Term: term, Commit: m.hs.Commit}
					if err := s.Save(hs, nil, true); err != nil {
						t.Fatalf("step %d: Save(hs): %v", step, err)
					}
					if err := s.ApplySnapshot(snap); err != nil {
						t.Fatalf("step %d: ApplySnapshot(%d): %v", step, idx, err)
					}
					m.first, m.prevTerm, m.ents = idx+1, term, nil
					m.hs = raft.HardState{Term: term, Commit: idx}
				case op < 17:
					if r, ok := s.(Reopener); ok {
						s = r.Reopen(t)
					}
				default: // random reads
					if len(m.ents) == 0 {
						continue
					}
					lo := m.first + uint64(rng.IntN(len(m.ents)))
					hi := lo + 1 + uint64(rng.IntN(int(m.last()-lo+1)))
					got, err := s.Entries(lo, hi, ^uint64(0))
					if err != nil || !equalEntries(got, m.ents[lo-m.first:hi-m.first]) {
						t.Fatalf("step %d: Entries(%d, %d) = %s, %v", step, lo, hi, describe(got), err)
					}
				}
				checkBounds(t, s, m, step)
			}
			checkLog(t, s, m.ents, m.first, m.prevTerm)
			checkHardState(t, s, m.hs)
		})
	}
}

func checkBounds(t *testing.T, s Store, m *model, step int) {
	t.Helper()
	fi, err1 := s.FirstIndex()
	li, err2 := s.LastIndex()
	if err1 != nil || err2 != nil || fi != m.first || li != m.last() {
		t.Fatalf("step %d: FirstIndex, LastIndex = %d, %d (%v, %v); want %d, %d", step, fi, li, err1, err2, m.first, m.last())
	}
	if tm, err := s.Term(li); err != nil || tm != m.term(li) {
		t.Fatalf("step %d: Term(%d) = %d, %v; want %d", step, li, tm, err, m.term(li))
	}
}

func randData(rng *rand.Rand) []byte {
	n := rng.IntN(40)
	if n < 5 {
		return nil
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}
