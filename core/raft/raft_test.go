package raft

// Tests for the rules in RAFT-PITFALLS.md that apply to the core (one test
// per pitfall, named after it), and for the engine's own contracts.

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// ---- Votes and terms ----

// Pitfall: a node that crashes after voting must not forget the vote.
func TestPitfallVoteSurvivesRestart(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	for _, id := range nt.ids {
		nt.process(id)
	}
	r := nt.raft(1)
	term := r.Term + 1
	_ = nt.node(1).Step(Message{From: 2, To: 1, Type: MsgVote, Term: term, Index: r.raftLog.lastIndex(), LogTerm: r.raftLog.lastTerm()})
	nt.process(1) // persists the vote, queues the response
	nt.queue = nil
	nt.restart(1)
	r = nt.raft(1)
	if r.Term != term || r.Vote != 2 {
		t.Fatalf("after restart term=%d vote=%d, want %d/2", r.Term, r.Vote, term)
	}
	_ = nt.node(1).Step(Message{From: 3, To: 1, Type: MsgVote, Term: term, Index: r.raftLog.lastIndex(), LogTerm: r.raftLog.lastTerm()})
	msgs := readMessages(r)
	if len(msgs) != 1 || !msgs[0].Reject {
		t.Fatalf("voted twice in term %d: %+v", term, msgs)
	}
}

// Pitfall: a higher term in any message, request or response, makes the
// node adopt it and become follower — except pre-vote requests and granted
// pre-vote responses.
func TestPitfallHigherTermStepsDown(t *testing.T) {
	for _, mt := range []MessageType{MsgApp, MsgHeartbeat, MsgAppResp, MsgHeartbeatResp, MsgVoteResp, MsgSnap, MsgReadIndexResp} {
		r, _ := newLeader(t, 3, noCheckQuorum)
		term := r.Term
		_ = r.Step(Message{From: 2, To: 1, Type: mt, Term: term + 1, Snapshot: &Snapshot{}})
		if r.state != StateFollower || r.Term != term+1 {
			t.Errorf("%v: state=%v term=%d, want follower at %d", mt, r.state, r.Term, term+1)
		}
	}
	// Rejected pre-vote response with a higher term: step down to it.
	p := newTestRaft(t, 1, ids(3), 10, 1)
	_ = p.Step(Message{Type: MsgHup})
	_ = p.Step(Message{From: 2, To: 1, Type: MsgPreVoteResp, Term: p.Term + 3, Reject: true})
	if p.state != StateFollower || p.Term == 1 {
		t.Fatalf("rejected pre-vote with higher term: %v term %d", p.state, p.Term)
	}
}

// Pitfall: a pre-vote is granted only if the candidate's log is up to
// date (and, see TestFollowerIgnoresVoteWithinLease, no live leader).
func TestPitfallPreVoteNeedsUpToDateLog(t *testing.T) {
	s := storageWithLog(ids(3), 2, entsWithTerms(1, 2, 2)...)
	r := newTestRaftWith(t, 1, s, 10, 1)
	_ = r.Step(Message{From: 2, To: 1, Type: MsgPreVote, Term: 3, Index: 2, LogTerm: 2})
	msgs := readMessages(r)
	if len(msgs) != 1 || !msgs[0].Reject || r.Term != 2 {
		t.Fatalf("stale candidate's pre-vote: %+v term %d", msgs, r.Term)
	}
}

// Pitfall: reset the randomized election timer when becoming follower,
// granting a vote, or hearing from the current leader — not on messages
// from a stale leader.
func TestPitfallElectionTimerReset(t *testing.T) {
	r := newTestRaft(t, 1, ids(3), 10, 1)
	r.electionElapsed = 5
	_ = r.Step(Message{From: 2, To: 1, Type: MsgHeartbeat, Term: 2})
	if r.electionElapsed != 0 {
		t.Fatalf("heartbeat from the leader did not reset the timer")
	}
	r.electionElapsed = 5
	_ = r.Step(Message{From: 2, To: 1, Type: MsgApp, Term: 2, Index: r.raftLog.lastIndex(), LogTerm: r.raftLog.lastTerm()})
	if r.electionElapsed != 0 {
		t.Fatalf("append from the leader did not reset the timer")
	}
	r.electionElapsed = 5
	_ = r.Step(Message{From: 3, To: 1, Type: MsgHeartbeat, Term: 1})
	_ = r.Step(Message{From: 3, To: 1, Type: MsgApp, Term: 1})
	if r.electionElapsed != 5 {
		t.Fatalf("a stale leader's messages reset the timer to %d", r.electionElapsed)
	}
	// Granting a vote resets it (beyond the lease, so the vote is heard).
	r.electionElapsed = r.electionTimeout
	r.leaseTicks = r.electionTimeout
	_ = r.Step(Message{From: 3, To: 1, Type: MsgVote, Term: 3, Index: 100, LogTerm: 3})
	if r.Vote != 3 || r.electionElapsed != 0 {
		t.Fatalf("vote=%d elapsed=%d after granting", r.Vote, r.electionElapsed)
	}
	// Becoming follower redraws the timeout within [T, 2T).
	seen := map[int]bool{}
	for i := 0; i < 50; i++ {
		r.becomeFollower(r.Term, None)
		if r.randomizedElectionTimeout < 10 || r.randomizedElectionTimeout >= 20 {
			t.Fatalf("timeout %d outside [10, 20)", r.randomizedElectionTimeout)
		}
		seen[r.randomizedElectionTimeout] = true
	}
	if len(seen) < 2 {
		t.Fatalf("timeout not redrawn on becoming follower")
	}
}

// ---- Appending ----

// Pitfall: a late or duplicated append whose entries all match must not
// truncate anything after them.
func TestPitfallStaleAppendDoesNotTruncate(t *testing.T) {
	s := storageWithLog(ids(3), 2, entsWithTerms(1, 1, 2, 2)...)
	r := newTestRaftWith(t, 1, s, 10, 1)
	old := entsWithTerms(1, 1, 2)[1:] // entries 2..3, all matching
	_ = r.Step(Message{From: 2, To: 1, Type: MsgApp, Term: 2, Index: 1, LogTerm: 1, Entries: old})
	if r.raftLog.lastIndex() != 4 {
		t.Fatalf("last index %d after a stale append, want 4 (nothing truncated)", r.raftLog.lastIndex())
	}
	msgs := readMessages(r)
	if len(msgs) != 1 || msgs[0].Index != 3 || msgs[0].Reject {
		t.Fatalf("resp = %+v, want accept of index 3 (the last entry this append verified)", msgs)
	}
}

// Pitfall: a stale reply never moves Match backwards or Next below
// Match+1.
func TestPitfallStaleAppRespIgnored(t *testing.T) {
	r, s := newLeader(t, 3)
	for i := 0; i < 5; i++ {
		_ = r.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: []Entry{{Data: []byte("x")}}})
	}
	persist(r, s)
	last := r.raftLog.lastIndex()
	_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: last})
	pr := r.progress(2)
	if pr.match != last {
		t.Fatalf("match = %d", pr.match)
	}
	_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: last - 3})
	_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: last - 2, Reject: true, RejectHint: 1, LogTerm: 1})
	if pr.match != last || pr.next < pr.match+1 {
		t.Fatalf("after stale replies match=%d next=%d, want match %d, next > match", pr.match, pr.next, last)
	}
	// A reply for an index we never had is ignored too.
	_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: last + 100})
	if pr.match != last {
		t.Fatalf("match moved to %d beyond the leader's log", pr.match)
	}
}

// Pitfall: the leader counts itself only once its own entries are durable.
func TestPitfallLeaderCountsItselfWhenDurable(t *testing.T) {
	r, s := newLeader(t, 3)
	_ = r.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: []Entry{{Data: []byte("x")}}})
	idx := r.raftLog.lastIndex()
	if r.progress(1).match >= idx {
		t.Fatalf("leader's match advanced on append, before persisting")
	}
	_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: idx})
	if r.raftLog.committed >= idx {
		t.Fatalf("committed %d with one follower and a non-durable leader", r.raftLog.committed)
	}
	persist(r, s)
	if r.raftLog.committed != idx {
		t.Fatalf("committed %d after the leader's write, want %d", r.raftLog.committed, idx)
	}
}

// Pitfall: a follower's commit is min(leaderCommit, index of the last entry
// this message made it match) — never its own last index.
func TestPitfallFollowerCommitBoundedByVerifiedEntries(t *testing.T) {
	// The follower's log is 1/1 1/2 2/3 2/4 2/5: entries 3-5 are from a
	// deposed leader's term and unverified. The leader (term 3) holds
	// 1/1 1/2 and then entries of its own; its commit index is 6.
	for _, tc := range []struct {
		name        string
		prev        uint64 // prevIndex (its term is 1)
		ents        []Entry
		wantCommit  uint64
		wantLastIdx uint64
	}{
		{"empty append", 1, nil, 1, 5},
		{"append whose entries all match", 0, []Entry{{Index: 1, Term: 1}, {Index: 2, Term: 1}}, 2, 5},
		{"append that conflicts", 2, []Entry{{Index: 3, Term: 3}}, 3, 3},
	} {
		s := storageWithLog(ids(3), 3, entsWithTerms(1, 1, 2, 2, 2)...)
		r := newTestRaftWith(t, 1, s, 10, 1)
		prevTerm := uint64(1)
		if tc.prev == 0 {
			prevTerm = 0
		}
		_ = r.Step(Message{From: 2, To: 1, Type: MsgApp, Term: 3, Index: tc.prev, LogTerm: prevTerm, Entries: tc.ents, Commit: 6})
		if r.raftLog.committed != tc.wantCommit || r.raftLog.lastIndex() != tc.wantLastIdx {
			t.Fatalf("%s: committed %d last %d, want committed %d (the last entry this message verified) last %d",
				tc.name, r.raftLog.committed, r.raftLog.lastIndex(), tc.wantCommit, tc.wantLastIdx)
		}
		resp := filterMsgs(readMessages(r), MsgAppResp)
		if len(resp) != 1 || resp[0].Reject || resp[0].Index != tc.wantCommit {
			t.Fatalf("%s: response %+v, want an ack of index %d", tc.name, resp, tc.wantCommit)
		}
	}
	// The leader's heartbeat carries min(match, commit), so it cannot
	// push commit over unverified entries either.
	l, ls := newLeader(t, 3)
	for i := 0; i < 3; i++ {
		_ = l.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: []Entry{{Data: []byte("x")}}})
	}
	persist(l, ls)
	_ = l.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: l.Term, Index: l.raftLog.lastIndex()})
	readMessages(l)
	l.bcastHeartbeat()
	for _, m := range readMessages(l) {
		if m.To == 3 && m.Commit > l.progress(3).match {
			t.Fatalf("heartbeat to 3 carries commit %d beyond its match %d", m.Commit, l.progress(3).match)
		}
	}
}

// ---- Committing and applying ----

// Pitfall: committed entries are handed out exactly once, in order, even
// if Ready is called again before Advance, and paged by
// MaxCommittedSizePerReady.
func TestPitfallCommittedEntriesHandedOutOnce(t *testing.T) {
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: ids(1)})
	cfg := newTestConfig(1, s)
	cfg.MaxCommittedSizePerReady = 3 * (entryOverheadBytes + 1)
	rn, err := NewRawNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	handle := func(advance bool) {
		rd := rn.Ready()
		_ = s.Save(rd.HardState, rd.Entries, rd.MustSync)
		for _, e := range rd.CommittedEntries {
			got = append(got, e.Index)
		}
		if len(rd.CommittedEntries) > 3 {
			t.Fatalf("Ready carries %d committed entries, limit is 3", len(rd.CommittedEntries))
		}
		if advance {
			rn.Advance(rd)
		}
	}
	handle(true)
	_ = rn.Campaign()
	for i := 0; i < 3; i++ {
		handle(true)
	}
	for i := 0; i < 10; i++ {
		_ = rn.Propose([]byte{byte(i)})
	}
	handle(true) // persists the proposals; they commit on Advance
	handle(false)
	handle(false) // a second Ready before Advance must not repeat entries
	for rn.HasReady() {
		handle(true)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("committed indexes handed out %v: not once and in order", got)
		}
	}
	if got[0] != 1 || got[len(got)-1] != rn.Status().Commit {
		t.Fatalf("handed out %v, commit %d", got, rn.Status().Commit)
	}
}

// Pitfall: commit and applied never go backwards, not after a stale
// snapshot, not after a restart (commit is at least the snapshot index;
// applied starts at it).
func TestPitfallCommitNeverGoesBack(t *testing.T) {
	s := storageWithLog(ids(3), 2, entsWithTerms(1, 1, 2, 2, 2)...)
	s.SetHardState(HardState{Term: 2, Commit: 4})
	r := newTestRaftWith(t, 1, s, 10, 1)
	_ = r.Step(Message{From: 2, To: 1, Type: MsgSnap, Term: 2, Snapshot: &Snapshot{Metadata: SnapshotMetadata{Index: 2, Term: 3, ConfState: ConfState{Voters: ids(3)}}}})
	if r.raftLog.committed != 4 || r.raftLog.lastIndex() != 5 {
		t.Fatalf("stale snapshot moved commit to %d / last to %d", r.raftLog.committed, r.raftLog.lastIndex())
	}
	msgs := readMessages(r)
	if len(msgs) != 1 || msgs[0].Type != MsgAppResp || msgs[0].Index != 4 {
		t.Fatalf("stale snapshot answered with %+v, want MsgAppResp at the commit index", msgs)
	}
	// Restart with a HardState commit below the snapshot index (the
	// snapshot was installed, the HardState not yet rewritten).
	s2 := NewMemoryStorage()
	_ = s2.ApplySnapshot(Snapshot{Metadata: SnapshotMetadata{Index: 10, Term: 3, ConfState: ConfState{Voters: ids(3)}}})
	s2.SetHardState(HardState{Term: 3, Commit: 4})
	r2 := newTestRaftWith(t, 1, s2, 10, 1)
	if r2.raftLog.committed != 10 || r2.raftLog.applied != 10 {
		t.Fatalf("restart: commit=%d applied=%d, want both at the snapshot index 10", r2.raftLog.committed, r2.raftLog.applied)
	}
}

// ---- Snapshots and compaction ----

// Pitfall: compaction keeps the snapshot's (index, term) as the lower
// boundary, so an append with prevIndex = snapshot index is accepted.
func TestPitfallAppendAtCompactionBoundary(t *testing.T) {
	s := storageWithLog(ids(3), 3, entsWithTerms(1, 1, 2, 2, 3)...)
	if err := s.Compact(4); err != nil {
		t.Fatal(err)
	}
	if tm, err := s.Term(4); err != nil || tm != 2 {
		t.Fatalf("Term(4) after Compact(4) = %d, %v; want 2", tm, err)
	}
	if _, err := s.Term(3); !errors.Is(err, ErrCompacted) {
		t.Fatalf("Term(3) after Compact(4): %v, want ErrCompacted", err)
	}
	r := newTestRaftWith(t, 1, s, 10, 1)
	_ = r.Step(Message{From: 2, To: 1, Type: MsgApp, Term: 3, Index: 4, LogTerm: 2, Entries: []Entry{{Index: 5, Term: 3}, {Index: 6, Term: 3}}, Commit: 6})
	msgs := readMessages(r)
	if len(msgs) != 1 || msgs[0].Reject || msgs[0].Index != 6 {
		t.Fatalf("append at the boundary: %+v", msgs)
	}
}

// Pitfall: a snapshot newer than the log replaces it entirely (and carries
// the configuration); one inside the log with a matching term keeps the
// suffix.
func TestPitfallSnapshotInstall(t *testing.T) {
	t.Run("newer replaces", func(t *testing.T) {
		s := storageWithLog(ids(3), 2, entsWithTerms(1, 1, 2)...)
		r := newTestRaftWith(t, 1, s, 10, 1)
		cs := ConfState{Voters: []uint64{1, 2, 3, 4}, Learners: []uint64{5}}
		_ = r.Step(Message{From: 2, To: 1, Type: MsgSnap, Term: 3, Snapshot: &Snapshot{Metadata: SnapshotMetadata{Index: 10, Term: 3, ConfState: cs}}})
		if r.raftLog.lastIndex() != 10 || r.raftLog.committed != 10 || r.raftLog.firstIndex() != 11 {
			t.Fatalf("last=%d commit=%d first=%d", r.raftLog.lastIndex(), r.raftLog.committed, r.raftLog.firstIndex())
		}
		if got := r.confState(); !got.Equal(cs) {
			t.Fatalf("config %+v, want the snapshot's %+v", got, cs)
		}
		msgs := readMessages(r)
		if len(msgs) != 1 || msgs[0].Index != 10 {
			t.Fatalf("resp %+v", msgs)
		}
	})
	t.Run("matching keeps suffix", func(t *testing.T) {
		s := storageWithLog(ids(3), 2, entsWithTerms(1, 1, 2, 2, 2)...)
		r := newTestRaftWith(t, 1, s, 10, 1)
		_ = r.Step(Message{From: 2, To: 1, Type: MsgSnap, Term: 2, Snapshot: &Snapshot{Metadata: SnapshotMetadata{Index: 3, Term: 2, ConfState: ConfState{Voters: ids(3)}}}})
		if r.raftLog.lastIndex() != 5 || r.raftLog.committed != 3 || r.raftLog.unstable.snapshot != nil {
			t.Fatalf("last=%d commit=%d snapshot=%v; want the suffix kept and commit 3", r.raftLog.lastIndex(), r.raftLog.committed, r.raftLog.unstable.snapshot)
		}
	})
}

// Pitfall: while a follower receives a snapshot the leader sends it no
// appends; ReportSnapshot resumes replication.
func TestPitfallSnapshotPausesFollower(t *testing.T) {
	r, s := newLeader(t, 3)
	for i := 0; i < 5; i++ {
		_ = r.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: []Entry{{Data: []byte("x")}}})
	}
	persist(r, s)
	readMessages(r)
	last := r.raftLog.lastIndex()
	if _, err := s.CreateSnapshot(last, &ConfState{Voters: ids(3)}, []byte("snap")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(last); err != nil {
		t.Fatal(err)
	}
	// Follower 3 is far behind: it rejects a probe and needs the snapshot.
	pr := r.progress(3)
	pr.becomeProbe()
	pr.match, pr.next = 0, 2
	_ = r.Step(Message{From: 3, To: 1, Type: MsgAppResp, Term: r.Term, Index: 1, Reject: true, RejectHint: 1})
	msgs := readMessages(r)
	if len(msgs) != 1 || msgs[0].Type != MsgSnap || msgs[0].Snapshot.Metadata.Index != last || string(msgs[0].Snapshot.Data) != "snap" {
		t.Fatalf("msgs = %+v, want one MsgSnap at %d", msgs, last)
	}
	if pr.state != ProgressSnapshot {
		t.Fatalf("progress state %v", pr.state)
	}
	_ = r.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: []Entry{{Data: []byte("y")}}})
	_ = r.Step(Message{From: 3, To: 1, Type: MsgHeartbeatResp, Term: r.Term})
	for _, m := range readMessages(r) {
		if m.To == 3 && (m.Type == MsgApp || m.Type == MsgSnap) {
			t.Fatalf("sent %v to a follower that is receiving a snapshot", m.Type)
		}
	}
	r.Step(Message{From: 3, Type: MsgSnapStatus})
	if pr.state != ProgressProbe || pr.next != last+1 {
		t.Fatalf("after ReportSnapshot: %v next=%d, want probe from %d", pr.state, pr.next, last+1)
	}
	_ = r.Step(Message{From: 3, To: 1, Type: MsgHeartbeatResp, Term: r.Term})
	if apps := filterMsgs(readMessages(r), MsgApp); len(apps) != 1 || apps[0].Index != last {
		t.Fatalf("after the snapshot: %+v, want a MsgApp from %d", apps, last)
	}
	// A failed snapshot also resumes (probing again, a new snapshot later).
	pr.becomeSnapshot(last)
	r.Step(Message{From: 3, Type: MsgSnapStatus, Reject: true})
	if pr.state != ProgressProbe || pr.pendingSnapshot != 0 {
		t.Fatalf("after a failed snapshot: %v pending=%d", pr.state, pr.pendingSnapshot)
	}
}

// A follower that lagged behind compaction catches up through a snapshot
// end to end.
func TestSnapshotCatchUp(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	nt.down[3] = true
	for i := 0; i < 10; i++ {
		_ = nt.propose(1, "v")
	}
	commit := nt.raft(1).raftLog.committed
	if _, err := nt.stores[1].CreateSnapshot(commit, &ConfState{Voters: ids(3)}, nil); err != nil {
		t.Fatal(err)
	}
	_ = nt.stores[1].Compact(commit)
	nt.down[3] = false
	snaps := 0
	nt.filter = func(m Message) bool {
		if m.Type == MsgSnap {
			snaps++
		}
		return true
	}
	nt.ticks(3)
	if snaps == 0 {
		t.Fatalf("no snapshot sent")
	}
	nt.node(1).ReportSnapshot(3, SnapshotFinish)
	nt.ticks(3)
	if got := nt.raft(3).raftLog.committed; got != nt.raft(1).raftLog.committed {
		t.Fatalf("follower commit %d, leader %d", got, nt.raft(1).raftLog.committed)
	}
	if nt.stores[3].snap.Metadata.Index != commit {
		t.Fatalf("follower did not install the snapshot at %d", commit)
	}
}

// ---- Restart ----

// Pitfall: on restart, last >= commit >= applied >= snapshot index; any
// violation is an error naming what is wrong.
func TestPitfallRestartInvariants(t *testing.T) {
	snapStore := func() *MemoryStorage {
		s := NewMemoryStorage()
		_ = s.ApplySnapshot(Snapshot{Metadata: SnapshotMetadata{Index: 5, Term: 2, ConfState: ConfState{Voters: ids(3)}}})
		_ = s.Append([]Entry{{Index: 6, Term: 2}, {Index: 7, Term: 2}})
		return s
	}
	tests := []struct {
		name    string
		hs      HardState
		applied uint64
		werr    string
	}{
		{"ok", HardState{Term: 2, Commit: 7}, 6, ""},
		{"applied 0 means snapshot", HardState{Term: 2, Commit: 6}, 0, ""},
		{"commit beyond last", HardState{Term: 2, Commit: 9}, 0, "commit 9 is beyond the last log index 7"},
		{"applied above commit", HardState{Term: 2, Commit: 6}, 7, "Applied 7 is beyond the commit index 6"},
		{"applied below snapshot", HardState{Term: 2, Commit: 6}, 3, "Applied 3 is below the snapshot index 5"},
	}
	for _, tt := range tests {
		s := snapStore()
		s.SetHardState(tt.hs)
		cfg := newTestConfig(1, s)
		cfg.Applied = tt.applied
		_, err := NewRawNode(cfg)
		switch {
		case tt.werr == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.werr != "" && (err == nil || !strings.Contains(err.Error(), tt.werr)):
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.werr)
		}
	}
}

// Restart replays the membership changes in (snapshot, Applied], so the
// configuration is the one the driver had applied.
func TestRestartReplaysConfChanges(t *testing.T) {
	add := ConfChange{Type: ConfChangeAddNode, NodeID: 4}
	rm := ConfChange{Type: ConfChangeRemoveNode, NodeID: 2}
	s := storageWithLog(ids(3), 2,
		Entry{Index: 1, Term: 1},
		Entry{Index: 2, Term: 1, Type: EntryConfChange, Data: add.Marshal()},
		Entry{Index: 3, Term: 2, Type: EntryConfChange, Data: rm.Marshal()})
	s.SetHardState(HardState{Term: 2, Commit: 3})
	for _, tc := range []struct {
		applied uint64
		voters  []uint64
	}{{1, []uint64{1, 2, 3}}, {2, []uint64{1, 2, 3, 4}}, {3, []uint64{1, 3, 4}}} {
		cfg := newTestConfig(1, s)
		cfg.Applied = tc.applied
		rn, err := NewRawNode(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := rn.Status().ConfState.Voters; !slices.Equal(got, tc.voters) {
			t.Errorf("applied %d: voters %v, want %v", tc.applied, got, tc.voters)
		}
	}
}

// The membership changes at or below Storage's snapshot index are in the
// snapshot's ConfState: a restart does not read those entries again, also
// when the log still holds them (a snapshot taken without compacting, or
// trailing entries kept for slow followers), and replays only the ones
// after it.
func TestRestartSkipsConfChangesInSnapshot(t *testing.T) {
	add := ConfChange{Type: ConfChangeAddNode, NodeID: 4}
	rm := ConfChange{Type: ConfChangeRemoveNode, NodeID: 2}
	ms := storageWithLog(ids(3), 2,
		Entry{Index: 1, Term: 1},
		Entry{Index: 2, Term: 1, Type: EntryConfChange, Data: add.Marshal()},
		Entry{Index: 3, Term: 2, Data: []byte("x")},
		Entry{Index: 4, Term: 2, Type: EntryConfChange, Data: rm.Marshal()})
	ms.SetHardState(HardState{Term: 2, Commit: 4})
	if _, err := ms.CreateSnapshot(3, &ConfState{Voters: []uint64{1, 2, 3, 4}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		applied, lowestRead uint64
		voters              []uint64
	}{{3, 0, []uint64{1, 2, 3, 4}}, {4, 4, []uint64{1, 3, 4}}} {
		s := &readCounter{MemoryStorage: ms}
		cfg := newTestConfig(1, s)
		cfg.Applied = tc.applied
		rn, err := NewRawNode(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := rn.Status().ConfState.Voters; !slices.Equal(got, tc.voters) {
			t.Errorf("applied %d: voters %v, want %v", tc.applied, got, tc.voters)
		}
		if s.lowest != tc.lowestRead {
			t.Errorf("applied %d: lowest entry read %d, want %d (0: none)", tc.applied, s.lowest, tc.lowestRead)
		}
	}
}

// readCounter records the lowest index asked of Entries.
type readCounter struct {
	*MemoryStorage
	lowest uint64
}

func (s *readCounter) Entries(lo, hi, maxBytes uint64) ([]Entry, error) {
	if s.lowest == 0 || lo < s.lowest {
		s.lowest = lo
	}
	return s.MemoryStorage.Entries(lo, hi, maxBytes)
}

// A restarted cluster keeps its log and elects again.
func TestRestartCluster(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	_ = nt.propose(1, "a")
	for _, id := range nt.ids {
		nt.restart(id)
	}
	nt.ticks(40)
	l := nt.leader()
	if l == 0 {
		t.Fatalf("no leader after restart\n%s", nt)
	}
	_ = nt.propose(l, "b")
	for _, id := range nt.ids {
		got := nt.appliedData(id)
		if got[len(got)-1] != "b" {
			t.Fatalf("node %d applied %v", id, got)
		}
	}
	nt.checkLogsMatch()
}

// ---- Proposals ----

func TestProposalWithoutLeader(t *testing.T) {
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: ids(3)})
	rn, _ := NewRawNode(newTestConfig(1, s))
	err := rn.Propose([]byte("x"))
	if !errors.Is(err, ErrProposalDropped) || !errors.Is(err, ErrNoLeader) {
		t.Fatalf("err = %v, want ErrProposalDropped and ErrNoLeader", err)
	}
	_ = rn.Campaign()
	if err := rn.Propose([]byte("x")); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("pre-candidate: err = %v", err)
	}
}

func TestProposalForwarding(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	if err := nt.propose(2, "fwd"); err != nil {
		t.Fatal(err)
	}
	if got := nt.appliedData(1); !slices.Equal(got, []string{"fwd"}) {
		t.Fatalf("applied %v", got)
	}
	nt2 := newTestNet(t, 3, func(c *Config) { c.DisableProposalForwarding = true })
	nt2.elect(1)
	if err := nt2.node(2).Propose([]byte("x")); !errors.Is(err, ErrProposalDropped) || errors.Is(err, ErrNoLeader) {
		t.Fatalf("forwarding disabled: err = %v, want ErrProposalDropped only", err)
	}
}

func TestUncommittedSizeLimit(t *testing.T) {
	r, _ := newLeader(t, 3, func(c *Config) { c.MaxUncommittedEntriesSize = 100 })
	big := make([]byte, 60)
	prop := func() error {
		return r.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: []Entry{{Data: big}}})
	}
	if err := prop(); err != nil {
		t.Fatal(err)
	}
	if err := prop(); !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("over the limit: err = %v", err)
	}
	// Committing and handing out the entry frees the budget.
	r.reduceUncommittedSize([]Entry{{Data: big}})
	if err := prop(); err != nil {
		t.Fatalf("after the tail committed: %v", err)
	}
}

// ---- Flow control ----

func TestInflightWindowBounded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		msgs     int
		bytes    uint64
		wantMsgs int
	}{
		{"count", 3, 0, 3},
		{"bytes", 100, 3 * (entryOverheadBytes + 10), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newLeader(t, 2, func(c *Config) {
				c.MaxInflightMsgs = tc.msgs
				c.MaxInflightBytes = tc.bytes
				c.MaxSizePerMsg = 1 // one entry per message
			})
			for i := 0; i < 10; i++ {
				_ = r.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: []Entry{{Data: make([]byte, 10)}}})
			}
			apps := filterMsgs(readMessages(r), MsgApp)
			if len(apps) != tc.wantMsgs {
				t.Fatalf("sent %d MsgApp with the window full, want %d", len(apps), tc.wantMsgs)
			}
			for _, m := range apps {
				if len(m.Entries) != 1 {
					t.Fatalf("MaxSizePerMsg=1 but a MsgApp carries %d entries", len(m.Entries))
				}
			}
			// An ack frees the window.
			_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: apps[len(apps)-1].Entries[0].Index})
			if n := len(filterMsgs(readMessages(r), MsgApp)); n == 0 {
				t.Fatalf("no MsgApp after the window freed")
			}
		})
	}
}

func TestMaxSizePerMsgBatches(t *testing.T) {
	r, _ := newLeader(t, 2, func(c *Config) { c.MaxSizePerMsg = 4 * (entryOverheadBytes + 10) })
	var ents []Entry
	for i := 0; i < 10; i++ {
		ents = append(ents, Entry{Data: make([]byte, 10)})
	}
	_ = r.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: ents})
	apps := filterMsgs(readMessages(r), MsgApp)
	total := 0
	for _, m := range apps {
		if len(m.Entries) > 4 {
			t.Fatalf("MsgApp with %d entries exceeds MaxSizePerMsg", len(m.Entries))
		}
		total += len(m.Entries)
	}
	if total != 10 || len(apps) != 3 {
		t.Fatalf("sent %d entries in %d messages, want 10 in 3", total, len(apps))
	}
}

// ---- Bad input ----

func TestStepRejectsBadInput(t *testing.T) {
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: ids(3)})
	rn, _ := NewRawNode(newTestConfig(1, s))
	for _, m := range []Message{
		{Type: MsgHup, From: 2, Term: 1},
		{Type: MsgBeat, From: 2, Term: 1},
		{Type: numMessageTypes + 3, From: 2, Term: 1},
		{Type: MsgApp, From: 0, Term: 1},
		{Type: MsgApp, From: 2, To: 7, Term: 1},
		{Type: MsgApp, From: 2, Term: 0},
		{Type: MsgAppResp, From: 9, Term: 1},
	} {
		if err := rn.Step(m); err == nil {
			t.Errorf("Step(%v from %d to %d term %d) accepted", m.Type, m.From, m.To, m.Term)
		}
	}
	// Malformed appends are dropped without touching the log.
	last := rn.Status().LastIndex
	for _, m := range []Message{
		{Type: MsgApp, From: 2, Term: 2, Index: last, LogTerm: 1, Entries: []Entry{{Index: last + 2, Term: 2}}},
		{Type: MsgApp, From: 2, Term: 2, Index: last, LogTerm: 1, Entries: []Entry{{Index: last + 1, Term: 5}}},
		{Type: MsgApp, From: 2, Term: 2, Index: ^uint64(0), LogTerm: 1, Entries: []Entry{{Index: 0, Term: 2}}},
		{Type: MsgSnap, From: 2, Term: 2},
	} {
		_ = rn.Step(m)
		if got := rn.Status().LastIndex; got != last {
			t.Fatalf("malformed %v changed the log to %d", m.Type, got)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	s := NewMemoryStorage()
	for _, c := range []*Config{
		nil,
		{ElectionTick: 10, HeartbeatTick: 1, Storage: s},
		{ID: 1, ElectionTick: 1, HeartbeatTick: 1, Storage: s},
		{ID: 1, ElectionTick: 10, HeartbeatTick: 0, Storage: s},
		{ID: 1, ElectionTick: 10, HeartbeatTick: 1},
		{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: s, MaxInflightMsgs: -1},
	} {
		if _, err := NewRawNode(c); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}

// ---- Status ----

func TestStatus(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	st := nt.node(1).Status()
	if st.ID != 1 || st.RaftState != StateLeader || st.Lead != 1 || st.Commit != st.LastIndex || st.Applied != st.Commit {
		t.Fatalf("leader status %+v", st)
	}
	if len(st.Progress) != 3 || st.Progress[2].Match != st.LastIndex || st.Progress[2].State != ProgressReplicate {
		t.Fatalf("progress %+v", st.Progress)
	}
	if fs := nt.node(2).Status(); fs.Progress != nil || fs.Lead != 1 || fs.RaftState != StateFollower {
		t.Fatalf("follower status %+v", fs)
	}
}

func TestConfChangeProposalValidation(t *testing.T) {
	r, _ := newLeader(t, 1)
	r.raftLog.appliedTo(r.raftLog.committed)
	prop := func(ents ...Entry) error {
		return r.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: ents})
	}
	rm := ConfChange{Type: ConfChangeRemoveNode, NodeID: 1}
	if err := prop(Entry{Type: EntryConfChange, Data: rm.Marshal()}); !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("removing the last voter: err = %v", err)
	}
	if err := prop(Entry{Type: EntryConfChange, Data: []byte{9, 9}}); !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("undecodable conf change: err = %v", err)
	}
	if err := prop(Entry{Type: EntryType(7)}); !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("unknown entry type: err = %v", err)
	}
	if err := prop(); !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("empty proposal: err = %v", err)
	}
	// In a batch, a refused change becomes an empty normal entry; the
	// rest of the batch is kept.
	last := r.raftLog.lastIndex()
	if err := prop(Entry{Data: []byte("a")}, Entry{Type: EntryConfChange, Data: rm.Marshal()}, Entry{Data: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	ents, _ := r.raftLog.slice(last+1, last+4, noLimit)
	if len(ents) != 3 || ents[1].Type != EntryNormal || len(ents[1].Data) != 0 || string(ents[2].Data) != "b" {
		t.Fatalf("batch appended as %+v", ents)
	}
}

func TestProposeBatchAndUnreachable(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	if err := nt.node(1).ProposeBatch([][]byte{[]byte("a"), []byte("b"), []byte("c")}); err != nil {
		t.Fatal(err)
	}
	nt.stabilize()
	if got := nt.appliedData(3); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("applied %v", got)
	}
	nt.node(1).ReportUnreachable(2)
	if st := nt.node(1).Status().Progress[2].State; st != ProgressProbe {
		t.Fatalf("after ReportUnreachable state = %v, want probe", st)
	}
	_ = nt.propose(1, "d")
	if st := nt.node(1).Status().Progress[2].State; st != ProgressReplicate {
		t.Fatalf("did not recover from probe: %v", st)
	}
}

// A read whose heartbeat round was lost is retried by the periodic
// heartbeat, which carries the latest pending context.
func TestReadIndexRetriedAfterLostHeartbeats(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	lost := true
	nt.filter = func(m Message) bool { return !(lost && m.Type == MsgHeartbeat) }
	nt.node(1).ReadIndex([]byte("r1"))
	nt.stabilize()
	if rs := readStatesOf(nt, 1); len(rs) != 0 {
		t.Fatalf("answered without a quorum: %+v", rs)
	}
	lost = false
	nt.node(1).Tick()
	nt.stabilize()
	if rs := readStatesOf(nt, 1); len(rs) != 1 || string(rs[0].RequestCtx) != "r1" {
		t.Fatalf("read not retried: %+v", rs)
	}
}

// Pitfall: learners never count for quorum, in elections either.
func TestPitfallLearnerVoteDoesNotCount(t *testing.T) {
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: ids(3), Learners: []uint64{4}})
	r := newTestRaftWith(t, 1, s, 10, 1, noPreVote)
	_ = r.Step(Message{Type: MsgHup})
	for _, m := range readMessages(r) {
		if m.To == 4 {
			t.Fatalf("candidate asked the learner for a vote")
		}
	}
	_ = r.Step(Message{From: 4, To: 1, Type: MsgVoteResp, Term: r.Term})
	if r.state != StateCandidate {
		t.Fatalf("a learner's vote made the candidate %v", r.state)
	}
	_ = r.Step(Message{From: 2, To: 1, Type: MsgVoteResp, Term: r.Term})
	if r.state != StateLeader {
		t.Fatalf("state = %v with a voter majority", r.state)
	}
}

// Raft figure 2 (RequestVote reply "term, for candidate to update
// itself"): a vote request with a stale term is rejected with our term,
// and the candidate adopts it. Without the reply, a lagging candidate
// that nobody else contacts trails the others' terms forever (found by
// the simulator, seed 7249).
func TestStaleVoteRequestAnsweredWithTerm(t *testing.T) {
	r := newTestRaft(t, 1, ids(3), 10, 1, noPreVote)
	r.Term = 9
	_ = r.Step(Message{From: 2, To: 1, Type: MsgVote, Term: 5, Index: 100, LogTerm: 5})
	msgs := readMessages(r)
	if len(msgs) != 1 || msgs[0].Type != MsgVoteResp || !msgs[0].Reject || msgs[0].Term != 9 {
		t.Fatalf("stale vote request answered with %+v", msgs)
	}
	c := newTestRaft(t, 2, ids(3), 10, 1, noPreVote)
	_ = c.Step(Message{Type: MsgHup})
	_ = c.Step(msgs[0])
	if c.state != StateFollower || c.Term != 9 {
		t.Fatalf("candidate after the reply: %v at term %d, want follower at 9", c.state, c.Term)
	}
}

// After an election the followers are paused probes. When the first ack
// commits the new leader's empty entry, the second follower is still
// paused; its own ack must bring it the new commit index right away (an
// empty MsgApp), not at the next heartbeat. Once told, it is not told
// again.
func TestLaggingFollowerLearnsCommitOnAck(t *testing.T) {
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: ids(3)})
	r := newTestRaftWith(t, 1, s, 10, 1)
	persist(r, s)
	r.becomeCandidate()
	r.becomeLeader()
	r.bcastAppend()
	persist(r, s)
	sent := readMessages(r)
	last := r.raftLog.lastIndex()
	if len(filterMsgs(sent, MsgApp)) != 2 {
		t.Fatalf("setup: the new leader sent %s", msgTypes(sent))
	}
	for _, m := range filterMsgs(sent, MsgApp) {
		if m.Commit >= last {
			t.Fatalf("setup: the first MsgApp already carries commit %d", m.Commit)
		}
	}
	_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: last})
	if r.raftLog.committed != last {
		t.Fatalf("committed %d, want %d", r.raftLog.committed, last)
	}
	r.flushCommit() // as Ready does
	for _, m := range readMessages(r) {
		if m.To == 3 {
			t.Fatalf("setup: paused follower 3 was sent %+v", m)
		}
	}
	_ = r.Step(Message{From: 3, To: 1, Type: MsgAppResp, Term: r.Term, Index: last})
	r.flushCommit()
	msgs := filterMsgs(readMessages(r), MsgApp)
	if len(msgs) != 1 || msgs[0].To != 3 || msgs[0].Commit != last || msgs[0].Index != last || len(msgs[0].Entries) != 0 {
		t.Fatalf("after 3's ack got %+v, want one empty MsgApp to 3 at %d carrying commit %d", msgs, last, last)
	}
	// A duplicate ack must not repeat it: 3 was already told.
	_ = r.Step(Message{From: 3, To: 1, Type: MsgAppResp, Term: r.Term, Index: last})
	r.flushCommit()
	if msgs := readMessages(r); len(msgs) != 0 {
		t.Fatalf("duplicate ack produced %s", msgTypes(msgs))
	}
}

// Commit-only updates are coalesced until the next Ready: several commit
// advances between two Readys cost each follower at most one empty
// MsgApp, carrying the latest commit index, and none for a follower that
// is sent entries (which carry the commit index) in the meantime.
func TestCommitOnlyUpdatesCoalesced(t *testing.T) {
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: ids(3)})
	rn, err := NewRawNode(newTestConfig(1, s))
	if err != nil {
		t.Fatal(err)
	}
	r := rn.r
	persist(r, s)
	makeLeader(t, r, s)
	drain := func() []Message {
		var out []Message
		for rn.HasReady() {
			rd := rn.Ready()
			if err := s.Save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
				t.Fatal(err)
			}
			out = append(out, rd.Messages...)
			rn.Advance(rd)
		}
		return out
	}
	drain()
	for i := 0; i < 3; i++ {
		if err := rn.Propose([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(filterMsgs(drain(), MsgApp)); n == 0 {
		t.Fatalf("setup: no appends sent")
	}
	last := r.raftLog.lastIndex()
	// Follower 2 acknowledges entry by entry: three commit advances.
	for i := last - 2; i <= last; i++ {
		_ = rn.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: i})
	}
	if r.raftLog.committed != last {
		t.Fatalf("committed %d, want %d", r.raftLog.committed, last)
	}
	got := filterMsgs(drain(), MsgApp)
	per := map[uint64]int{}
	for _, m := range got {
		per[m.To]++
		if m.Commit != last || len(m.Entries) != 0 {
			t.Fatalf("got %+v, want only empty MsgApps carrying commit %d", m, last)
		}
	}
	if per[2] != 1 || per[3] != 1 {
		t.Fatalf("commit-only MsgApps per follower %v, want one each", per)
	}
	// A proposal made before the next Ready carries the commit index
	// itself: no separate commit-only message.
	if err := rn.Propose([]byte("y")); err != nil {
		t.Fatal(err)
	}
	drain()
	_ = rn.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: last + 1})
	if err := rn.Propose([]byte("z")); err != nil {
		t.Fatal(err)
	}
	for _, m := range filterMsgs(drain(), MsgApp) {
		if len(m.Entries) == 0 {
			t.Fatalf("sent a commit-only MsgApp %+v although entries carrying the commit went out", m)
		}
		if m.Commit != last+1 {
			t.Fatalf("append %+v carries commit %d, want %d", m, m.Commit, last+1)
		}
	}
}
