package raft

import (
	"encoding/binary"
	"testing"
)

// fuzzReader hands out fuzz bytes as small integers; it returns zeros
// once the input is exhausted.
type fuzzReader struct{ b []byte }

func (f *fuzzReader) byte() byte {
	if len(f.b) == 0 {
		return 0
	}
	v := f.b[0]
	f.b = f.b[1:]
	return v
}

func (f *fuzzReader) u64() uint64 {
	if len(f.b) < 8 {
		return uint64(f.byte())
	}
	v := binary.LittleEndian.Uint64(f.b)
	f.b = f.b[8:]
	return v
}

// near returns a value close to base most of the time (so messages hit
// interesting paths), sometimes an arbitrary one.
func (f *fuzzReader) near(base uint64) uint64 {
	switch k := f.byte(); {
	case k < 200:
		return base + uint64(k%8) - min(base, 4)
	default:
		return f.u64()
	}
}

func (f *fuzzReader) message(r *raft) Message {
	m := Message{
		Type: MessageType(f.byte() % (uint8(numMessageTypes) + 2)),
		To:   r.id,
		From: uint64(f.byte() % 6),
	}
	if f.byte()%16 == 0 {
		m.To = uint64(f.byte())
	}
	m.Term = f.near(r.Term)
	m.Index = f.near(r.raftLog.lastIndex())
	m.LogTerm = f.near(r.Term)
	m.Commit = f.near(r.raftLog.committed)
	m.Reject = f.byte()%2 == 1
	m.RejectHint = f.near(r.raftLog.lastIndex())
	if f.byte()%4 == 0 {
		m.Context = []byte{f.byte()}
	}
	if f.byte()%3 == 0 {
		m.Context = transferContext
	}
	n := int(f.byte() % 5)
	idx := m.Index
	term := m.LogTerm
	for i := 0; i < n; i++ {
		if f.byte()%8 != 0 {
			idx++
		} else {
			idx = f.near(idx)
		}
		if f.byte()%4 == 0 {
			term = f.near(term)
		}
		m.Entries = append(m.Entries, Entry{Index: idx, Term: term, Type: EntryType(f.byte() % 3), Data: []byte{f.byte()}})
	}
	if f.byte()%4 == 0 {
		s := &Snapshot{Metadata: SnapshotMetadata{Index: f.near(r.raftLog.committed + 2), Term: f.near(r.Term)}}
		for i := f.byte() % 4; i > 0; i-- {
			s.Metadata.ConfState.Voters = append(s.Metadata.ConfState.Voters, uint64(f.byte()%5))
		}
		if f.byte()%2 == 0 {
			s.Metadata.ConfState.Learners = []uint64{uint64(f.byte() % 5)}
		}
		m.Snapshot = s
	}
	return m
}

// FuzzStep feeds arbitrary messages (and some local operations) to a node
// that starts in each role. Step must never panic, and after every input
// the basic invariants hold: commit <= last index, applied <= commit,
// term and commit never decrease.
//
// The fuzzing engine writes new failing inputs under testdata/fuzz; turn
// them into f.Add seeds here instead of committing them.
func FuzzStep(f *testing.F) {
	f.Add(byte(0), []byte{})
	f.Add(byte(1), []byte{3, 2, 1, 1, 1, 1, 0, 0, 0, 2})
	f.Add(byte(2), []byte{4, 2, 0, 200, 200, 200, 200, 1, 200, 0, 0, 1, 1, 1, 9})
	f.Add(byte(3), []byte{9, 2, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 3, 2, 1})
	f.Add(byte(3), []byte{17, 3, 0, 201, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0})
	f.Add(byte('A'), []byte("0B2")) // MsgApp with term 0 once lowered a candidate's term
	f.Fuzz(func(t *testing.T, role byte, data []byte) {
		s := NewMemoryStorage()
		s.SetConfState(ConfState{Voters: ids(3), Learners: []uint64{4}})
		cfg := newTestConfig(1, s)
		cfg.MaxInflightMsgs = 4
		cfg.MaxUncommittedEntriesSize = 64
		if role&8 != 0 {
			cfg.ReadOnlyOption = ReadOnlyLeaseBased
		}
		if role&16 != 0 {
			cfg.DisablePreVote = true
		}
		rn, err := NewRawNode(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := rn.r
		drain := func() {
			if !rn.HasReady() {
				return
			}
			rd := rn.Ready()
			if !rd.Snapshot.IsEmpty() {
				_ = s.ApplySnapshot(rd.Snapshot)
			}
			if err := s.Save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
				t.Fatalf("save: %v", err)
			}
			for _, e := range rd.CommittedEntries {
				if e.Type == EntryConfChange {
					var cc ConfChange
					if cc.Unmarshal(e.Data) == nil {
						rn.ApplyConfChange(cc)
					}
				}
			}
			rn.Advance(rd)
		}
		drain()
		switch role % 4 {
		case 1:
			_ = rn.Campaign()
		case 2:
			r.becomeCandidate()
		case 3:
			r.becomeCandidate()
			r.becomeLeader()
		}
		drain()
		fr := &fuzzReader{b: data}
		term, commit := r.Term, r.raftLog.committed
		for steps := 0; len(fr.b) > 0 && steps < 200; steps++ {
			switch op := fr.byte(); op % 10 {
			case 0:
				rn.Tick()
			case 1:
				_ = rn.Propose([]byte{fr.byte()})
			case 2:
				rn.ReadIndex([]byte{fr.byte(), 1})
			case 3:
				rn.ReportSnapshot(uint64(fr.byte()%5), SnapshotStatus(fr.byte()%2))
			case 4:
				rn.TransferLeader(uint64(fr.byte() % 5))
			case 5:
				drain()
			case 6:
				rn.ReportUnreachable(uint64(fr.byte() % 5))
			default:
				_ = rn.Step(fr.message(r))
			}
			if r.raftLog.committed > r.raftLog.lastIndex() {
				t.Fatalf("commit %d > last index %d", r.raftLog.committed, r.raftLog.lastIndex())
			}
			if r.raftLog.applied > r.raftLog.committed {
				t.Fatalf("applied %d > commit %d", r.raftLog.applied, r.raftLog.committed)
			}
			if r.Term < term {
				t.Fatalf("term went back from %d to %d", term, r.Term)
			}
			if r.raftLog.committed < commit {
				t.Fatalf("commit went back from %d to %d", commit, r.raftLog.committed)
			}
			term, commit = r.Term, r.raftLog.committed
			for _, pr := range r.prs {
				if pr.match >= pr.next {
					t.Fatalf("progress %d: match %d >= next %d", pr.id, pr.match, pr.next)
				}
			}
		}
	})
}
