package raft

import (
	"errors"
	"testing"
)

func newStorageWith(terms ...uint64) *MemoryStorage {
	s := NewMemoryStorage()
	if err := s.Append(entsWithTerms(terms...)); err != nil {
		panic(err)
	}
	return s
}

func TestMemoryStorageTermAndIndexes(t *testing.T) {
	s := newStorageWith(1, 1, 2)
	if fi, _ := s.FirstIndex(); fi != 1 {
		t.Fatalf("FirstIndex = %d", fi)
	}
	if li, _ := s.LastIndex(); li != 3 {
		t.Fatalf("LastIndex = %d", li)
	}
	tests := []struct {
		i    uint64
		term uint64
		werr error
	}{
		{0, 0, nil}, {1, 1, nil}, {3, 2, nil}, {4, 0, ErrUnavailable},
	}
	for _, tt := range tests {
		got, err := s.Term(tt.i)
		if got != tt.term || !errors.Is(err, tt.werr) {
			t.Errorf("Term(%d) = %d, %v; want %d, %v", tt.i, got, err, tt.term, tt.werr)
		}
	}
}

func TestMemoryStorageEntries(t *testing.T) {
	s := newStorageWith(1, 1, 2, 2, 3)
	if err := s.Compact(2); err != nil {
		t.Fatal(err)
	}
	one := entsWithTerms(1)[0].Size()
	tests := []struct {
		lo, hi, max uint64
		wn          int
		werr        error
	}{
		{2, 4, noLimit, 0, ErrCompacted},
		{3, 6, noLimit, 3, nil},
		{3, 7, noLimit, 0, ErrUnavailable},
		{3, 6, 0, 1, nil}, // at least one entry
		{3, 6, 2 * one, 2, nil},
		{3, 6, 2*one + 1, 2, nil},
		{4, 4, noLimit, 0, nil},
	}
	for _, tt := range tests {
		ents, err := s.Entries(tt.lo, tt.hi, tt.max)
		if len(ents) != tt.wn || !errors.Is(err, tt.werr) {
			t.Errorf("Entries(%d, %d, %d) = %d entries, %v; want %d, %v", tt.lo, tt.hi, tt.max, len(ents), err, tt.wn, tt.werr)
		}
		for i, e := range ents {
			if e.Index != tt.lo+uint64(i) {
				t.Errorf("entry %d has index %d", i, e.Index)
			}
		}
	}
}

func TestMemoryStorageAppend(t *testing.T) {
	tests := []struct {
		name   string
		ents   []Entry
		wterms []uint64
		werr   bool
	}{
		{"extend", []Entry{{Index: 4, Term: 3}}, []uint64{1, 2, 2, 3}, false},
		{"replace suffix", []Entry{{Index: 2, Term: 3}, {Index: 3, Term: 3}}, []uint64{1, 3, 3}, false},
		{"same", []Entry{{Index: 2, Term: 2}}, []uint64{1, 2}, false},
		{"gap", []Entry{{Index: 6, Term: 3}}, []uint64{1, 2, 2}, true},
		{"not consecutive", []Entry{{Index: 4, Term: 3}, {Index: 6, Term: 3}}, []uint64{1, 2, 2}, true},
		{"all compacted", []Entry{{Index: 1, Term: 1}}, []uint64{1, 2, 2}, false},
	}
	for _, tt := range tests {
		s := newStorageWith(1, 2, 2)
		old, _ := s.Entries(1, 4, noLimit)
		err := s.Append(tt.ents)
		if (err != nil) != tt.werr {
			t.Errorf("%s: err = %v", tt.name, err)
		}
		if tt.name == "all compacted" {
			continue
		}
		var got []uint64
		li, _ := s.LastIndex()
		for i := uint64(1); i <= li; i++ {
			tm, _ := s.Term(i)
			got = append(got, tm)
		}
		if len(got) != len(tt.wterms) {
			t.Errorf("%s: terms %v, want %v", tt.name, got, tt.wterms)
			continue
		}
		for i := range got {
			if got[i] != tt.wterms[i] {
				t.Errorf("%s: terms %v, want %v", tt.name, got, tt.wterms)
			}
		}
		// Slices handed out before a suffix replacement are unchanged.
		if old[1].Term != 2 || old[2].Term != 2 {
			t.Errorf("%s: an earlier Entries result was overwritten: %+v", tt.name, old)
		}
	}
}

func TestMemoryStorageSnapshots(t *testing.T) {
	s := newStorageWith(1, 1, 2, 2, 3)
	cs := ConfState{Voters: []uint64{1, 2}}
	snap, err := s.CreateSnapshot(4, &cs, []byte("d"))
	if err != nil || snap.Metadata.Index != 4 || snap.Metadata.Term != 2 || string(snap.Data) != "d" {
		t.Fatalf("CreateSnapshot = %+v, %v", snap, err)
	}
	if _, err := s.CreateSnapshot(3, nil, nil); !errors.Is(err, ErrSnapOutOfDate) {
		t.Fatalf("older snapshot: %v", err)
	}
	if _, err := s.CreateSnapshot(9, nil, nil); err == nil {
		t.Fatalf("snapshot beyond the log accepted")
	}
	if err := s.Compact(4); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(4); !errors.Is(err, ErrCompacted) {
		t.Fatalf("second Compact(4): %v", err)
	}
	if err := s.Compact(9); err == nil {
		t.Fatalf("Compact beyond the log accepted")
	}
	_, gotCS, _ := s.InitialState()
	if !gotCS.Equal(cs) {
		t.Fatalf("InitialState ConfState = %+v", gotCS)
	}
	if err := s.ApplySnapshot(Snapshot{Metadata: SnapshotMetadata{Index: 3, Term: 2}}); !errors.Is(err, ErrSnapOutOfDate) {
		t.Fatalf("older ApplySnapshot: %v", err)
	}
	if err := s.ApplySnapshot(Snapshot{Metadata: SnapshotMetadata{Index: 10, Term: 4, ConfState: cs}}); err != nil {
		t.Fatal(err)
	}
	fi, _ := s.FirstIndex()
	li, _ := s.LastIndex()
	tm, _ := s.Term(10)
	if fi != 11 || li != 10 || tm != 4 {
		t.Fatalf("after ApplySnapshot first=%d last=%d term(10)=%d", fi, li, tm)
	}
	if hs, _, _ := s.InitialState(); hs.Commit != 10 {
		t.Fatalf("commit %d after ApplySnapshot, want 10", hs.Commit)
	}
	// Bootstrap: an index-0 snapshot on an empty storage sets the config.
	b := NewMemoryStorage()
	if err := b.ApplySnapshot(Snapshot{Metadata: SnapshotMetadata{ConfState: cs}}); err != nil {
		t.Fatalf("bootstrap snapshot: %v", err)
	}
	if _, got, _ := b.InitialState(); !got.Equal(cs) {
		t.Fatalf("bootstrap config %+v", got)
	}
}

func TestMemoryStorageSave(t *testing.T) {
	s := NewMemoryStorage()
	if err := s.Save(HardState{Term: 2, Vote: 1, Commit: 1}, entsWithTerms(1, 2), true); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(HardState{}, nil, false); err != nil {
		t.Fatal(err)
	}
	hs, _, _ := s.InitialState()
	if hs != (HardState{Term: 2, Vote: 1, Commit: 1}) {
		t.Fatalf("HardState = %+v (an empty HardState must not overwrite)", hs)
	}
	if li, _ := s.LastIndex(); li != 2 {
		t.Fatalf("LastIndex = %d", li)
	}
}

func TestConfChangeRoundTrip(t *testing.T) {
	for _, cc := range []ConfChange{
		{Type: ConfChangeAddNode, NodeID: 1},
		{Type: ConfChangeRemoveNode, NodeID: 1 << 60, Context: []byte("127.0.0.1:7001")},
		{Type: ConfChangeAddLearner, NodeID: 300, Context: make([]byte, 1000)},
	} {
		var got ConfChange
		if err := got.Unmarshal(cc.Marshal()); err != nil {
			t.Fatalf("%+v: %v", cc, err)
		}
		if got.Type != cc.Type || got.NodeID != cc.NodeID || string(got.Context) != string(cc.Context) {
			t.Fatalf("round trip %+v -> %+v", cc, got)
		}
	}
}

func TestConfChangeUnmarshalErrors(t *testing.T) {
	good := ConfChange{Type: ConfChangeAddNode, NodeID: 5, Context: []byte("ab")}.Marshal()
	for name, b := range map[string][]byte{
		"empty":         nil,
		"one byte":      {1},
		"bad version":   append([]byte{9}, good[1:]...),
		"bad type":      {1, 7, 5, 0},
		"truncated id":  {1, 0, 0x80},
		"missing len":   {1, 0, 5},
		"short context": good[:len(good)-1],
		"trailing":      append(append([]byte{}, good...), 0),
		"huge length":   {1, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x0f},
	} {
		cc := ConfChange{NodeID: 42}
		if err := cc.Unmarshal(b); err == nil {
			t.Errorf("%s: accepted %v", name, b)
		} else if cc.NodeID != 42 {
			t.Errorf("%s: modified the receiver on error", name)
		}
	}
}

func FuzzConfChangeUnmarshal(f *testing.F) {
	f.Add(ConfChange{Type: ConfChangeAddLearner, NodeID: 3, Context: []byte("x")}.Marshal())
	f.Add([]byte{1, 2, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var cc ConfChange
		if err := cc.Unmarshal(b); err != nil {
			return
		}
		var again ConfChange
		if err := again.Unmarshal(cc.Marshal()); err != nil || again.NodeID != cc.NodeID || again.Type != cc.Type || string(again.Context) != string(cc.Context) {
			t.Fatalf("re-encoding %+v failed: %v", cc, err)
		}
	})
}
