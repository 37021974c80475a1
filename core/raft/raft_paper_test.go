package raft

// Tests of the rules of the Raft paper (Ongaro & Ousterhout, "In Search of
// an Understandable Consensus Algorithm", extended version) and of
// Ongaro's thesis ("Consensus: Bridging Theory and Practice"), one rule per
// test. Each cites the section it checks.

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// makeLeader turns r (term unchanged + 1) into a leader whose empty entry
// is durable and acknowledged by every other voter, so all followers are
// in replicate state.
func makeLeader(t *testing.T, r *raft, s *MemoryStorage) {
	t.Helper()
	r.becomeCandidate()
	r.becomeLeader()
	persist(r, s)
	readMessages(r)
	last := r.raftLog.lastIndex()
	for _, pr := range r.prs {
		if pr.id != r.id {
			if err := r.Step(Message{From: pr.id, To: r.id, Type: MsgAppResp, Term: r.Term, Index: last}); err != nil {
				t.Fatal(err)
			}
		}
	}
	readMessages(r)
	if r.raftLog.committed != last {
		t.Fatalf("leader committed %d, want %d", r.raftLog.committed, last)
	}
}

func newLeader(t *testing.T, n int, mutate ...func(*Config)) (*raft, *MemoryStorage) {
	t.Helper()
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: ids(n)})
	r := newTestRaftWith(t, 1, s, 10, 1, mutate...)
	persist(r, s)
	makeLeader(t, r, s)
	return r, s
}

// ---- §5.2 Leader election ----

// Reference: §5.2 "When servers start up, they begin as followers."
func TestStartAsFollower(t *testing.T) {
	r := newTestRaft(t, 1, ids(3), 10, 1)
	if r.state != StateFollower {
		t.Fatalf("state = %v, want follower", r.state)
	}
	if r.lead != None {
		t.Fatalf("lead = %d, want none", r.lead)
	}
}

// Reference: §5.2 "Leaders send periodic heartbeats (AppendEntries RPCs
// that carry no log entries) to all followers."
func TestLeaderBcastBeat(t *testing.T) {
	const hb = 3
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: ids(3)})
	r := newTestRaftWith(t, 1, s, 10, hb)
	persist(r, s)
	makeLeader(t, r, s)
	for i := 0; i < hb-1; i++ {
		r.tick()
	}
	if msgs := readMessages(r); len(msgs) != 0 {
		t.Fatalf("heartbeat before %d ticks: %s", hb, msgTypes(msgs))
	}
	r.tick()
	msgs := readMessages(r)
	hbs := filterMsgs(msgs, MsgHeartbeat)
	if len(hbs) != 2 || hbs[0].To != 2 || hbs[1].To != 3 {
		t.Fatalf("msgs = %s, want heartbeats to 2 and 3", msgTypes(msgs))
	}
	for _, m := range hbs {
		if len(m.Entries) != 0 || m.Term != r.Term {
			t.Fatalf("heartbeat %+v carries entries or wrong term", m)
		}
	}
}

// Reference: §5.2 "If a follower receives no communication over a period
// of time called the election timeout, then it ... begins an election ...
// increments its current term and transitions to candidate state. It then
// votes for itself and issues RequestVote RPCs in parallel to each of the
// other servers."
func TestFollowerStartElection(t *testing.T) {
	for _, st := range []StateType{StateFollower, StateCandidate} {
		t.Run(st.String(), func(t *testing.T) {
			r := newTestRaft(t, 1, ids(3), 10, 1, noPreVote)
			if st == StateCandidate {
				r.becomeCandidate()
			}
			term := r.Term
			for i := 0; i < 2*r.electionTimeout; i++ {
				r.tick()
			}
			if r.state != StateCandidate || r.Term != term+1 || r.Vote != 1 {
				t.Fatalf("state=%v term=%d vote=%d, want candidate term %d vote 1", r.state, r.Term, r.Vote, term+1)
			}
			msgs := readMessages(r)
			votes := filterMsgs(msgs, MsgVote)
			if len(votes) != 2 {
				t.Fatalf("msgs = %s, want 2 MsgVote", msgTypes(msgs))
			}
			for _, m := range votes {
				if m.Term != term+1 || m.Index != r.raftLog.lastIndex() || m.LogTerm != r.raftLog.lastTerm() {
					t.Fatalf("bad vote request %+v", m)
				}
			}
		})
	}
}

// Reference: §5.2 A candidate wins if it receives votes from a majority;
// it loses (returns to follower) once a majority rejects it; otherwise it
// stays a candidate.
func TestLeaderElectionInOneRoundRPC(t *testing.T) {
	tests := []struct {
		size  int
		votes map[uint64]bool
		state StateType
	}{
		{1, map[uint64]bool{}, StateLeader},
		{3, map[uint64]bool{2: true, 3: true}, StateLeader},
		{3, map[uint64]bool{2: true}, StateLeader},
		{5, map[uint64]bool{2: true, 3: true, 4: true, 5: true}, StateLeader},
		{5, map[uint64]bool{2: true, 3: true}, StateLeader},
		{3, map[uint64]bool{}, StateCandidate},
		{5, map[uint64]bool{2: true}, StateCandidate},
		{5, map[uint64]bool{2: false, 3: false}, StateCandidate},
		{3, map[uint64]bool{2: false, 3: false}, StateFollower},
		{5, map[uint64]bool{2: false, 3: false, 4: false}, StateFollower},
	}
	for i, tt := range tests {
		r := newTestRaft(t, 1, ids(tt.size), 10, 1, noPreVote)
		_ = r.Step(Message{From: 1, To: 1, Type: MsgHup})
		for id, v := range tt.votes {
			_ = r.Step(Message{From: id, To: 1, Term: r.Term, Type: MsgVoteResp, Reject: !v})
		}
		if r.state != tt.state {
			t.Errorf("#%d: state = %v, want %v", i, r.state, tt.state)
		}
	}
}

// Reference: §5.2 "Each server will vote for at most one candidate in a
// given term, on a first-come-first-served basis."
func TestFollowerVote(t *testing.T) {
	tests := []struct {
		vote, nvote uint64
		reject      bool
	}{
		{None, 2, false},
		{None, 3, false},
		{2, 2, false},
		{3, 3, false},
		{2, 3, true},
		{3, 2, true},
	}
	for i, tt := range tests {
		r := newTestRaft(t, 1, ids(3), 10, 1)
		r.Vote = tt.vote
		last, lt := r.raftLog.lastIndex(), r.raftLog.lastTerm()
		_ = r.Step(Message{From: tt.nvote, To: 1, Term: r.Term, Type: MsgVote, Index: last, LogTerm: lt})
		msgs := readMessages(r)
		if len(msgs) != 1 || msgs[0].Type != MsgVoteResp || msgs[0].Reject != tt.reject || msgs[0].To != tt.nvote {
			t.Errorf("#%d: msgs = %+v, want one MsgVoteResp reject=%v", i, msgs, tt.reject)
		}
		if want := tt.vote; want == None && !tt.reject {
			if r.Vote != tt.nvote {
				t.Errorf("#%d: vote = %d, want %d", i, r.Vote, tt.nvote)
			}
		}
	}
}

// Reference: §5.2 "While waiting for votes, a candidate may receive an
// AppendEntries RPC from another server claiming to be leader. If the
// leader's term is at least as large as the candidate's current term, then
// the candidate recognizes the leader as legitimate and returns to
// follower state."
func TestCandidateFallback(t *testing.T) {
	for _, extra := range []uint64{0, 1} {
		r := newTestRaft(t, 1, ids(3), 10, 1, noPreVote)
		_ = r.Step(Message{From: 1, To: 1, Type: MsgHup})
		if r.state != StateCandidate {
			t.Fatalf("state = %v, want candidate", r.state)
		}
		term := r.Term + extra
		_ = r.Step(Message{From: 2, To: 1, Term: term, Type: MsgApp, Index: r.raftLog.lastIndex() - 0, LogTerm: r.raftLog.lastTerm()})
		if r.state != StateFollower || r.Term != term || r.lead != 2 {
			t.Fatalf("extra=%d: state=%v term=%d lead=%d, want follower of 2 at term %d", extra, r.state, r.Term, r.lead, term)
		}
	}
}

// Reference: §5.2 "Raft uses randomized election timeouts ... chosen
// randomly from a fixed interval" — here [T, 2T).
func TestElectionTimeoutRandomized(t *testing.T) {
	const et = 10
	r := newTestRaft(t, 1, ids(3), et, 1, noPreVote)
	seen := map[int]bool{}
	for i := 0; i < 500; i++ {
		term := r.Term
		r.becomeFollower(term, None)
		ticks := 0
		for r.state == StateFollower {
			r.tick()
			ticks++
			if ticks > 2*et {
				t.Fatalf("no election after %d ticks", ticks)
			}
		}
		if ticks < et || ticks >= 2*et {
			t.Fatalf("election after %d ticks, want in [%d, %d)", ticks, et, 2*et)
		}
		seen[ticks] = true
	}
	if len(seen) < et/2 {
		t.Fatalf("only %d distinct timeouts in 500 elections: %v", len(seen), seen)
	}
}

// Reference: §5.2 randomized timeouts differ between servers (the core's
// PRNG mixes the node id into the seed, so a shared seed still spreads).
func TestElectionTimeoutsDifferAcrossNodes(t *testing.T) {
	timeouts := map[int]bool{}
	for id := uint64(1); id <= 5; id++ {
		r := newTestRaft(t, id, ids(5), 10, 1, func(c *Config) { c.Seed = 42 })
		timeouts[r.randomizedElectionTimeout] = true
	}
	if len(timeouts) < 2 {
		t.Fatalf("all 5 nodes drew the same election timeout %v", timeouts)
	}
	// And the same seed reproduces the same draw.
	a := newTestRaft(t, 3, ids(5), 10, 1, func(c *Config) { c.Seed = 42 })
	b := newTestRaft(t, 3, ids(5), 10, 1, func(c *Config) { c.Seed = 42 })
	if a.randomizedElectionTimeout != b.randomizedElectionTimeout {
		t.Fatalf("same seed, different timeouts: %d vs %d", a.randomizedElectionTimeout, b.randomizedElectionTimeout)
	}
}

// Reference: §5.2 "if many followers become candidates at the same time,
// votes could be split so that no candidate obtains a majority. When this
// happens, each candidate will time out and start a new election."
func TestSplitVoteRetry(t *testing.T) {
	nt := newTestNet(t, 3, noPreVote)
	for _, id := range nt.ids {
		nt.process(id) // persist the bootstrap entries
	}
	for _, id := range nt.ids {
		_ = nt.node(id).Campaign()
	}
	nt.stabilize()
	term := nt.raft(1).Term
	for _, id := range nt.ids {
		if r := nt.raft(id); r.state == StateLeader || r.Term != term {
			t.Fatalf("split vote produced a leader or diverging terms:\n%s", nt)
		}
	}
	for i := 0; i < 40 && nt.leader() == 0; i++ {
		nt.tick()
	}
	l := nt.leader()
	if l == 0 {
		t.Fatalf("no leader after the split vote:\n%s", nt)
	}
	if nt.raft(l).Term <= term {
		t.Fatalf("leader elected in term %d, want a later term than the split %d", nt.raft(l).Term, term)
	}
}

// Reference: §5.2, figure 2 ("Persistent state ... updated on stable storage
// before responding to RPCs"): the vote is in the Ready's HardState that
// is persisted before the Ready's messages are sent.
func TestVotePersistedBeforeResponse(t *testing.T) {
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: ids(3)})
	rn, err := NewRawNode(newTestConfig(1, s))
	if err != nil {
		t.Fatal(err)
	}
	rd := rn.Ready()
	_ = s.Save(rd.HardState, rd.Entries, rd.MustSync)
	rn.Advance(rd)
	st := rn.Status()
	if err := rn.Step(Message{From: 2, To: 1, Term: st.Term + 1, Type: MsgVote, Index: st.LastIndex, LogTerm: 1}); err != nil {
		t.Fatal(err)
	}
	rd = rn.Ready()
	if len(rd.Messages) != 1 || rd.Messages[0].Type != MsgVoteResp || rd.Messages[0].Reject {
		t.Fatalf("messages = %+v, want a granted vote", rd.Messages)
	}
	if rd.HardState.Vote != 2 || rd.HardState.Term != st.Term+1 || !rd.MustSync {
		t.Fatalf("HardState = %+v MustSync=%v: the vote must be in the same Ready, synced", rd.HardState, rd.MustSync)
	}
}

// ---- §5.3 Log replication ----

// Reference: §5.3 "The leader appends the command to its log as a new
// entry, then issues AppendEntries RPCs in parallel to each of the other
// servers to replicate the entry" with the index and term of the
// preceding entry.
func TestLeaderStartReplication(t *testing.T) {
	r, _ := newLeader(t, 3)
	li := r.raftLog.lastIndex()
	if err := r.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: []Entry{{Data: []byte("some data")}}}); err != nil {
		t.Fatal(err)
	}
	if got := r.raftLog.lastIndex(); got != li+1 {
		t.Fatalf("last index = %d, want %d", got, li+1)
	}
	msgs := filterMsgs(readMessages(r), MsgApp)
	if len(msgs) != 2 {
		t.Fatalf("got %d MsgApp, want 2", len(msgs))
	}
	for _, m := range msgs {
		if m.Index != li || m.LogTerm != r.Term || len(m.Entries) != 1 || m.Entries[0].Index != li+1 ||
			m.Entries[0].Term != r.Term || string(m.Entries[0].Data) != "some data" || m.Commit != li {
			t.Fatalf("bad MsgApp %+v", m)
		}
	}
}

// Reference: §5.3 "A log entry is committed once the leader that created
// the entry has replicated it on a majority of the servers", and the
// leader includes the commit index in future AppendEntries.
func TestLeaderCommitEntry(t *testing.T) {
	tests := []struct {
		size   int
		acks   []uint64
		commit bool
	}{
		{1, nil, true},
		{3, nil, false},
		{3, []uint64{2}, true},
		{3, []uint64{2, 3}, true},
		{5, []uint64{2}, false},
		{5, []uint64{2, 3}, true},
		{5, []uint64{2, 3, 4, 5}, true},
	}
	for i, tt := range tests {
		r, s := newLeader(t, tt.size)
		li := r.raftLog.lastIndex()
		_ = r.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: []Entry{{Data: []byte("x")}}})
		persist(r, s)
		readMessages(r)
		for _, id := range tt.acks {
			_ = r.Step(Message{From: id, To: 1, Term: r.Term, Type: MsgAppResp, Index: li + 1})
		}
		if got := r.raftLog.committed == li+1; got != tt.commit {
			t.Errorf("#%d: committed=%d, want commit of %d = %v", i, r.raftLog.committed, li+1, tt.commit)
		}
		if tt.commit && tt.size > 1 {
			for _, m := range filterMsgs(readMessages(r), MsgApp) {
				if m.Commit != li+1 {
					t.Errorf("#%d: MsgApp after commit carries commit %d", i, m.Commit)
				}
			}
		}
	}
}

// Reference: §5.3 "Once a follower learns that a log entry is committed,
// it applies the entry" — the follower's commit index follows the
// leader's, bounded by the entries it verified in that message.
func TestFollowerCommitEntry(t *testing.T) {
	r := newTestRaftWith(t, 1, storageWithLog(ids(3), 1), 10, 1)
	ents := []Entry{{Term: 1, Index: 1, Data: []byte("a")}, {Term: 1, Index: 2, Data: []byte("b")}}
	_ = r.Step(Message{From: 2, To: 1, Type: MsgApp, Term: 1, Index: 0, LogTerm: 0, Entries: ents, Commit: 1})
	if r.raftLog.committed != 1 {
		t.Fatalf("committed = %d, want 1", r.raftLog.committed)
	}
	_ = r.Step(Message{From: 2, To: 1, Type: MsgApp, Term: 1, Index: 2, LogTerm: 1, Commit: 2})
	if r.raftLog.committed != 2 {
		t.Fatalf("committed = %d, want 2", r.raftLog.committed)
	}
	got := r.raftLog.nextCommittedEnts()
	if len(got) != 2 || string(got[0].Data) != "a" || string(got[1].Data) != "b" {
		t.Fatalf("committed entries = %+v", got)
	}
}

// Reference: §5.3 "If the follower does not find an entry in its log with
// the same index and term, then it refuses the new entries", and the
// rejection carries the conflict hint (term of the conflicting entry and
// the first index of that term, or the last index if the log is shorter).
func TestFollowerCheckMsgApp(t *testing.T) {
	tests := []struct {
		term, index uint64
		windex      uint64
		wreject     bool
		whint       uint64
		wlogterm    uint64
	}{
		{0, 0, 1, false, 0, 0}, // below commit: answered with the commit index
		{1, 1, 1, false, 0, 0},
		{2, 2, 2, false, 0, 0},
		{1, 2, 2, true, 2, 2}, // term mismatch at 2: our term 2 starts at 2
		{3, 3, 3, true, 2, 0}, // beyond our last index 2
	}
	for i, tt := range tests {
		s := storageWithLog(ids(3), 2, Entry{Term: 1, Index: 1}, Entry{Term: 2, Index: 2})
		s.SetHardState(HardState{Term: 2, Commit: 1})
		r := newTestRaftWith(t, 1, s, 10, 1)
		_ = r.Step(Message{From: 2, To: 1, Type: MsgApp, Term: 2, LogTerm: tt.term, Index: tt.index, Commit: 1})
		msgs := readMessages(r)
		if len(msgs) != 1 {
			t.Fatalf("#%d: msgs = %s", i, msgTypes(msgs))
		}
		m := msgs[0]
		if m.Type != MsgAppResp || m.Index != tt.windex || m.Reject != tt.wreject || m.RejectHint != tt.whint || m.LogTerm != tt.wlogterm {
			t.Errorf("#%d: resp = %+v, want index=%d reject=%v hint=%d logterm=%d", i, m, tt.windex, tt.wreject, tt.whint, tt.wlogterm)
		}
	}
}

// Reference: §5.3 "If an existing entry conflicts with a new one (same
// index but different terms), delete the existing entry and all that
// follow it; append any new entries not already in the log."
func TestFollowerAppendEntries(t *testing.T) {
	tests := []struct {
		index, term uint64
		ents        []Entry
		wterms      []uint64
	}{
		{2, 2, []Entry{{Term: 3, Index: 3}}, []uint64{1, 2, 3}},
		{1, 1, []Entry{{Term: 3, Index: 2}, {Term: 4, Index: 3}}, []uint64{1, 3, 4}},
		{0, 0, []Entry{{Term: 1, Index: 1}}, []uint64{1, 2}},
		{0, 0, []Entry{{Term: 3, Index: 1}}, []uint64{3}},
	}
	for i, tt := range tests {
		s := storageWithLog(ids(3), 2, Entry{Term: 1, Index: 1}, Entry{Term: 2, Index: 2})
		r := newTestRaftWith(t, 1, s, 10, 1)
		_ = r.Step(Message{From: 2, To: 1, Type: MsgApp, Term: 4, LogTerm: tt.term, Index: tt.index, Entries: tt.ents})
		var got []uint64
		for j := r.raftLog.firstIndex(); j <= r.raftLog.lastIndex(); j++ {
			tm, _ := r.raftLog.term(j)
			got = append(got, tm)
		}
		if !slices.Equal(got, tt.wterms) {
			t.Errorf("#%d: log terms = %v, want %v", i, got, tt.wterms)
		}
	}
}

// figure7Logs are the follower logs (a)-(f) of Raft figure 7, as terms of
// indexes 1..n, and the leader's log.
var figure7Leader = []uint64{1, 1, 1, 4, 4, 5, 5, 6, 6, 6}

var figure7Followers = map[string][]uint64{
	"a": {1, 1, 1, 4, 4, 5, 5, 6, 6},
	"b": {1, 1, 1, 4},
	"c": {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6},
	"d": {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7},
	"e": {1, 1, 1, 4, 4, 4, 4},
	"f": {1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3},
}

// Reference: §5.3, figure 7: "the leader handles inconsistencies by
// forcing the followers' logs to duplicate its own" — every follower of
// figure 7 ends up with the leader's log, and the conflict hint keeps the
// number of rejected round trips small (not one per index).
func TestLeaderSyncFollowerLog(t *testing.T) {
	for name, flog := range figure7Followers {
		t.Run(name, func(t *testing.T) {
			ls := storageWithLog(ids(3), 8, entsWithTerms(figure7Leader...)...)
			ls.SetHardState(HardState{Term: 8})
			fs := storageWithLog(ids(3), 8, entsWithTerms(flog...)...)
			nt := newTestNetWith(t, map[uint64]*MemoryStorage{1: ls, 2: fs}, nil)
			rejects := 0
			nt.filter = func(m Message) bool {
				if m.Type == MsgAppResp && m.Reject {
					rejects++
				}
				return m.To != 3
			}
			r := nt.raft(1)
			r.becomeCandidate()
			r.becomeLeader()
			r.bcastAppend()
			nt.stabilize()
			nt.ticks(3)
			l1, l2 := nt.raft(1).raftLog, nt.raft(2).raftLog
			if l1.lastIndex() != l2.lastIndex() {
				t.Fatalf("last index: leader %d follower %d", l1.lastIndex(), l2.lastIndex())
			}
			for i := uint64(1); i <= l1.lastIndex(); i++ {
				a, _ := l1.term(i)
				b, _ := l2.term(i)
				if a != b {
					t.Fatalf("index %d: leader term %d follower term %d", i, a, b)
				}
			}
			if rejects > 3 {
				t.Fatalf("%d rejected appends; the conflict hint should need at most 3", rejects)
			}
			if l2.committed != l1.lastIndex() {
				t.Fatalf("follower committed %d, want %d", l2.committed, l1.lastIndex())
			}
		})
	}
}

// Reference: §5.3 (the optimisation at the end of the section; thesis
// §5.3.1): with the conflict term in the rejection the leader skips the
// follower's whole conflicting term in one round trip, here 100 entries.
func TestFastBackoffHint(t *testing.T) {
	fterms := []uint64{1}
	for i := 0; i < 100; i++ {
		fterms = append(fterms, 2)
	}
	lterms := []uint64{1, 3, 3}
	ls := storageWithLog(ids(3), 3, entsWithTerms(lterms...)...)
	fs := storageWithLog(ids(3), 3, entsWithTerms(fterms...)...)
	nt := newTestNetWith(t, map[uint64]*MemoryStorage{1: ls, 2: fs}, nil)
	rejects := 0
	var hints []Message
	nt.filter = func(m Message) bool {
		if m.Type == MsgAppResp && m.Reject {
			rejects++
			hints = append(hints, m)
		}
		return m.To != 3
	}
	r := nt.raft(1)
	r.becomeCandidate()
	r.becomeLeader()
	r.bcastAppend()
	nt.stabilize()
	if rejects > 2 {
		t.Fatalf("%d rejections for a 100-entry conflicting term: %+v", rejects, hints)
	}
	if len(hints) == 0 || hints[0].LogTerm != 0 && hints[0].LogTerm != 2 {
		t.Fatalf("first rejection %+v does not carry the conflict hint", hints)
	}
	if got := nt.raft(2).raftLog.lastIndex(); got != 4 {
		t.Fatalf("follower last index %d, want 4 (its term-2 suffix replaced)", got)
	}
}

// ---- §5.4.1 Election restriction ----

// Reference: §5.4.1 "the voter denies its vote if its own log is more
// up-to-date than that of the candidate ... If the logs have last entries
// with different terms, then the log with the later term is more
// up-to-date. If the logs end with the same term, then whichever log is
// longer is more up-to-date."
func TestVoter(t *testing.T) {
	tests := []struct {
		ents    []uint64
		logterm uint64
		index   uint64
		reject  bool
	}{
		{[]uint64{1}, 1, 1, false},
		{[]uint64{1}, 1, 2, false},
		{[]uint64{1, 1}, 1, 1, true},
		{[]uint64{1}, 2, 1, false},
		{[]uint64{1}, 2, 2, false},
		{[]uint64{1, 1}, 2, 1, false},
		{[]uint64{2}, 1, 1, true},
		{[]uint64{2}, 1, 2, true},
		{[]uint64{1, 2}, 1, 1, true},
		{[]uint64{1, 2}, 1, 3, true}, // our last term 2 beats a longer log ending in term 1
	}
	for i, tt := range tests {
		s := storageWithLog(ids(2), 3, entsWithTerms(tt.ents...)...)
		r := newTestRaftWith(t, 1, s, 10, 1)
		_ = r.Step(Message{From: 2, To: 1, Type: MsgVote, Term: 3, LogTerm: tt.logterm, Index: tt.index})
		msgs := readMessages(r)
		if len(msgs) != 1 || msgs[0].Type != MsgVoteResp {
			t.Fatalf("#%d: msgs = %s", i, msgTypes(msgs))
		}
		if msgs[0].Reject != tt.reject {
			t.Errorf("#%d: reject = %v, want %v", i, msgs[0].Reject, tt.reject)
		}
	}
}

// Reference: §5.4.1 a candidate whose log lacks committed entries cannot
// be elected.
//
// Check-quorum is off: with it, node 3 and 2 would ignore each other's
// campaigns for an election timeout after hearing from node 1 (the lease),
// which is not what this test is about.
func TestLeaderElectionRestriction(t *testing.T) {
	nt := newTestNet(t, 3, noCheckQuorum)
	nt.elect(1)
	nt.isolate(3)
	for i := 0; i < 3; i++ {
		if err := nt.propose(1, fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	nt.heal()
	nt.isolate(1)
	nt.down[1] = true
	_ = nt.node(3).Campaign()
	nt.stabilize()
	if nt.raft(3).state == StateLeader {
		t.Fatalf("node 3 with a stale log became leader")
	}
	nt.elect(2)
}

// ---- §5.4.2 Committing entries from previous terms ----

// Reference: §5.4.2 "Raft never commits log entries from previous terms by
// counting replicas. Only log entries from the leader's current term are
// committed by counting replicas" (figure 8).
func TestLeaderOnlyCommitsLogFromCurrentTerm(t *testing.T) {
	tests := []struct {
		ack     uint64
		wcommit uint64
	}{
		{1, 0}, // entries of terms 1 and 2 replicated: not committed
		{2, 0},
		{3, 3}, // the new leader's own entry replicated: everything commits
	}
	for i, tt := range tests {
		s := storageWithLog(ids(2), 2, entsWithTerms(1, 2)...)
		r := newTestRaftWith(t, 1, s, 10, 1)
		r.Term = 2
		r.becomeCandidate()
		r.becomeLeader() // term 3, appends the empty entry at index 3
		persist(r, s)
		readMessages(r)
		_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: tt.ack})
		if r.raftLog.committed != tt.wcommit {
			t.Errorf("#%d: committed = %d, want %d", i, r.raftLog.committed, tt.wcommit)
		}
	}
}

// Reference: §5.4.2, figure 8 as a whole-cluster scenario: an entry of an
// old term that is on a majority is not committed by a new leader until
// an entry of its own term is; a later leader may overwrite it.
func TestFigure8(t *testing.T) {
	nt := newTestNet(t, 5, func(c *Config) { c.DisableCheckQuorum, c.DisablePreVote = true, true })
	nt.elect(1) // term 2
	// (a) S1 replicates an entry of term 2 only to S2.
	nt.filter = func(m Message) bool { return !(m.From == 1 && m.To > 2 && m.Type == MsgApp) }
	_ = nt.propose(1, "old")
	oldIdx := nt.raft(1).raftLog.lastIndex()
	if nt.raft(2).raftLog.lastIndex() != oldIdx {
		t.Fatalf("setup: S2 did not get the entry")
	}
	// (b) S1 crashes; S5 is elected (votes of S3, S4, S5) and appends an
	// entry of its term that reaches nobody.
	nt.filter = nil
	nt.down[1] = true
	nt.filter = func(m Message) bool { return !(m.From == 5 && m.Type == MsgApp) }
	_ = nt.node(5).Campaign()
	nt.stabilize()
	if nt.raft(5).state != StateLeader {
		t.Fatalf("setup: S5 not elected:\n%s", nt)
	}
	_ = nt.node(5).Propose([]byte("s5"))
	nt.stabilize()
	// (c) S5 crashes, S1 restarts and is elected; it replicates the term-2
	// entry to S3 (a majority S1, S2, S3 holds it) but its own new-term
	// entry reaches nobody. The term-2 entry must NOT be committed.
	nt.down[5] = true
	nt.restart(1)
	nt.rewrite = func(m *Message) {
		if m.From == 1 && m.Type == MsgApp {
			// S2 and S3 may receive entries up to oldIdx, nothing newer.
			var keep []Entry
			for _, e := range m.Entries {
				if e.Index <= oldIdx {
					keep = append(keep, e)
				}
			}
			m.Entries = keep
			m.Commit = min(m.Commit, nt.raft(1).raftLog.committed)
		}
	}
	nt.filter = func(m Message) bool { return !(m.From == 1 && m.Type == MsgApp && m.To == 4) }
	// S3 and S4 voted for S5 in its term: S1 may need a second term.
	for i := 0; i < 3 && nt.raft(1).state != StateLeader; i++ {
		_ = nt.node(1).Campaign()
		nt.stabilize()
	}
	if nt.raft(1).state != StateLeader {
		t.Fatalf("setup: S1 not re-elected:\n%s", nt)
	}
	if c := nt.raft(1).raftLog.committed; c >= oldIdx {
		t.Fatalf("S1 committed %d >= %d: an entry of an old term was committed by counting replicas", c, oldIdx)
	}
	if m := nt.node(1).Status().Progress; m[2].Match != oldIdx || m[3].Match != oldIdx {
		t.Fatalf("setup: S2/S3 should hold the term-2 entry: %+v", m)
	}
	// (d)/(e) Once S1's own entry reaches a majority, both commit.
	nt.rewrite, nt.filter = nil, nil
	nt.ticks(2)
	if c := nt.raft(1).raftLog.committed; c < oldIdx+1 {
		t.Fatalf("S1 committed %d, want >= %d once its own entry is on a majority", c, oldIdx+1)
	}
}

// Reference: §5.4.2 / §8: a new leader appends a no-op entry of its term
// at the start of its term.
func TestLeaderAppendsEmptyEntryOnElection(t *testing.T) {
	r := newTestRaft(t, 1, ids(3), 10, 1)
	li := r.raftLog.lastIndex()
	r.becomeCandidate()
	r.becomeLeader()
	if r.raftLog.lastIndex() != li+1 {
		t.Fatalf("last index %d, want %d", r.raftLog.lastIndex(), li+1)
	}
	e, _ := r.raftLog.slice(li+1, li+2, noLimit)
	if len(e) != 1 || e[0].Term != r.Term || len(e[0].Data) != 0 || e[0].Type != EntryNormal {
		t.Fatalf("entry = %+v, want an empty entry of term %d", e, r.Term)
	}
}

// ---- §6 Cluster membership changes ----

func proposeCC(t *testing.T, nt *testNet, id uint64, cc ConfChange) error {
	t.Helper()
	err := nt.node(id).ProposeConfChange(cc)
	nt.stabilize()
	return err
}

// Reference: §6 (thesis §4.2.1): a new server joins as a non-voting
// learner, catches up, and is then promoted to voter.
func TestAddLearnerThenPromote(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	_ = nt.propose(1, "before")
	nt.addNode(4, NewMemoryStorage(), nil)
	if err := proposeCC(t, nt, 1, ConfChange{Type: ConfChangeAddLearner, NodeID: 4}); err != nil {
		t.Fatal(err)
	}
	nt.ticks(2)
	if got := nt.appliedData(4); !slices.Equal(got, []string{"before"}) {
		t.Fatalf("learner applied %v, want [before]", got)
	}
	cs := nt.node(4).Status().ConfState
	if !slices.Equal(cs.Learners, []uint64{4}) || !slices.Equal(cs.Voters, []uint64{1, 2, 3}) {
		t.Fatalf("learner's config = %+v (it must learn the founding configuration from the log)", cs)
	}
	// Learners never count towards quorum: with 2 and 3 down the leader
	// cannot commit even though the learner acks.
	nt.down[2], nt.down[3] = true, true
	c := nt.raft(1).raftLog.committed
	_ = nt.propose(1, "x")
	if nt.raft(1).raftLog.committed != c {
		t.Fatalf("a learner's ack counted towards the quorum")
	}
	nt.down[2], nt.down[3] = false, false
	nt.ticks(2)
	if err := proposeCC(t, nt, 1, ConfChange{Type: ConfChangeAddNode, NodeID: 4}); err != nil {
		t.Fatal(err)
	}
	nt.ticks(2)
	for _, id := range nt.ids {
		cs := nt.node(id).Status().ConfState
		if !slices.Equal(cs.Voters, []uint64{1, 2, 3, 4}) || len(cs.Learners) != 0 {
			t.Fatalf("node %d config = %+v, want voters 1-4", id, cs)
		}
	}
	// Now 4 votes and counts: with 2 and 3 down, 1+4 are not a majority of 4.
	nt.down[3] = true
	_ = nt.propose(1, "y")
	if got := nt.appliedData(4); got[len(got)-1] != "y" {
		t.Fatalf("promoted voter did not apply the new entry: %v", got)
	}
}

// Reference: §6: removing a voter shrinks the quorum.
func TestRemoveNode(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	if err := proposeCC(t, nt, 1, ConfChange{Type: ConfChangeRemoveNode, NodeID: 3}); err != nil {
		t.Fatal(err)
	}
	if cs := nt.node(1).Status().ConfState; !slices.Equal(cs.Voters, []uint64{1, 2}) {
		t.Fatalf("config = %+v", cs)
	}
	nt.down[3] = true
	if err := nt.propose(1, "after"); err != nil {
		t.Fatal(err)
	}
	if got := nt.appliedData(2); !slices.Equal(got, []string{"after"}) {
		t.Fatalf("applied on 2: %v", got)
	}
	if st := nt.node(1).Status(); st.Progress[3].Match != 0 || len(st.Progress) != 2 {
		t.Fatalf("leader still tracks the removed node: %+v", st.Progress)
	}
}

// Reference: §6 "the leader ... steps down once the Cnew entry is
// committed"; it must not keep heartbeating the others.
func TestRemovedLeaderStepsDown(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	if err := proposeCC(t, nt, 1, ConfChange{Type: ConfChangeRemoveNode, NodeID: 1}); err != nil {
		t.Fatal(err)
	}
	if st := nt.raft(1).state; st == StateLeader {
		t.Fatalf("removed leader is still %v", st)
	}
	var fromOne []Message
	nt.filter = func(m Message) bool {
		if m.From == 1 {
			fromOne = append(fromOne, m)
		}
		return true
	}
	nt.ticks(30)
	l := nt.leader()
	if l != 2 && l != 3 {
		t.Fatalf("no leader among the remaining members:\n%s", nt)
	}
	for _, m := range fromOne {
		switch m.Type {
		case MsgHeartbeat, MsgApp, MsgVote, MsgPreVote:
			t.Fatalf("removed node sent %v to %d", m.Type, m.To)
		}
	}
	for _, id := range []uint64{2, 3} {
		if cs := nt.node(id).Status().ConfState; !slices.Equal(cs.Voters, []uint64{2, 3}) {
			t.Fatalf("node %d config = %+v", id, cs)
		}
	}
}

// Reference: §6 (thesis §4.2.3): a server that is not in the configuration
// (removed, or not yet added) and a learner never start elections.
func TestNonMemberDoesNotCampaign(t *testing.T) {
	for _, tc := range []struct {
		name string
		cs   ConfState
	}{
		{"not a member", ConfState{Voters: []uint64{2, 3}}},
		{"learner", ConfState{Voters: []uint64{2, 3}, Learners: []uint64{1}}},
		{"empty configuration", ConfState{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewMemoryStorage()
			s.SetConfState(tc.cs)
			r := newTestRaftWith(t, 1, s, 10, 1)
			for i := 0; i < 100; i++ {
				r.tick()
			}
			_ = r.Step(Message{Type: MsgHup})
			_ = r.Step(Message{From: 2, To: 1, Type: MsgTimeoutNow, Term: r.Term})
			if r.state != StateFollower {
				t.Fatalf("state = %v", r.state)
			}
			for _, m := range readMessages(r) {
				if m.Type == MsgVote || m.Type == MsgPreVote {
					t.Fatalf("sent %v", m.Type)
				}
			}
		})
	}
}

// Reference: §6 (thesis §4.1): one membership change at a time — the
// leader refuses a new change while an earlier one is not applied.
func TestOneConfChangeAtATime(t *testing.T) {
	r, s := newLeader(t, 3)
	r.raftLog.appliedTo(r.raftLog.committed)
	cc := ConfChange{Type: ConfChangeAddNode, NodeID: 4}
	prop := func() error {
		return r.Step(Message{From: 1, To: 1, Type: MsgProp, Entries: []Entry{{Type: EntryConfChange, Data: cc.Marshal()}}})
	}
	if err := prop(); err != nil {
		t.Fatal(err)
	}
	if err := prop(); !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("second change while the first is unapplied: err = %v, want ErrProposalDropped", err)
	}
	// Commit and apply the first one: a new change is accepted again.
	persist(r, s)
	_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: r.raftLog.lastIndex()})
	r.raftLog.appliedTo(r.raftLog.committed)
	if err := prop(); err != nil {
		t.Fatalf("change after the previous one applied: %v", err)
	}
}

// Reference: §6: a node must not campaign while committed changes to its
// configuration are unapplied (its configuration is about to change).
func TestNoCampaignWithUnappliedConfChange(t *testing.T) {
	cc := ConfChange{Type: ConfChangeRemoveNode, NodeID: 3}
	s := storageWithLog(ids(3), 1, Entry{Term: 1, Index: 1, Type: EntryConfChange, Data: cc.Marshal()})
	s.SetHardState(HardState{Term: 1, Commit: 1})
	r := newTestRaftWith(t, 1, s, 10, 1)
	_ = r.Step(Message{Type: MsgHup})
	if r.state != StateFollower {
		t.Fatalf("campaigned with an unapplied conf change: %v", r.state)
	}
	r.raftLog.appliedTo(1)
	r.applyConfChange(cc)
	_ = r.Step(Message{Type: MsgHup})
	if r.state != StatePreCandidate {
		t.Fatalf("state = %v after applying, want pre-candidate", r.state)
	}
}

// ---- thesis §9.6 Pre-vote and check-quorum ----

// Reference: thesis §9.6: a partitioned node does not increase its term
// (pre-vote fails), so when it returns it does not disrupt the leader.
func TestPreVotePartitionedNodeRejoins(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	term := nt.raft(1).Term
	nt.isolate(3)
	nt.ticks(100)
	if r := nt.raft(3); r.Term != term {
		t.Fatalf("isolated node's term went from %d to %d", term, r.Term)
	}
	nt.heal()
	nt.ticks(30)
	if l := nt.leader(); l != 1 || nt.raft(1).Term != term {
		t.Fatalf("leader %d at term %d, want 1 at %d (disrupted)\n%s", l, nt.raft(1).Term, term, nt)
	}
}

// Reference: thesis §9.6: a pre-vote carries the candidate's next term but
// changes neither the receiver's term nor its vote, and a granted
// pre-vote response (carrying that future term) does not make the
// pre-candidate step down.
func TestPreVoteDoesNotChangeTerm(t *testing.T) {
	r := newTestRaft(t, 1, ids(3), 10, 1)
	term := r.Term
	last := r.raftLog.lastIndex()
	_ = r.Step(Message{From: 2, To: 1, Type: MsgPreVote, Term: term + 5, Index: last, LogTerm: r.raftLog.lastTerm()})
	if r.Term != term || r.Vote != None {
		t.Fatalf("pre-vote changed term/vote to %d/%d", r.Term, r.Vote)
	}
	msgs := readMessages(r)
	if len(msgs) != 1 || msgs[0].Type != MsgPreVoteResp || msgs[0].Reject || msgs[0].Term != term+5 {
		t.Fatalf("resp = %+v, want granted MsgPreVoteResp at term %d", msgs, term+5)
	}

	p := newTestRaft(t, 1, ids(5), 10, 1)
	_ = p.Step(Message{Type: MsgHup})
	if p.state != StatePreCandidate {
		t.Fatalf("state = %v", p.state)
	}
	_ = p.Step(Message{From: 2, To: 1, Type: MsgPreVoteResp, Term: p.Term + 1})
	if p.state != StatePreCandidate || p.Term != term {
		t.Fatalf("granted pre-vote response moved the pre-candidate to %v at term %d", p.state, p.Term)
	}
	_ = p.Step(Message{From: 3, To: 1, Type: MsgPreVoteResp, Term: p.Term + 1})
	if p.state != StateCandidate || p.Term != term+1 {
		t.Fatalf("after a pre-vote quorum: %v at term %d, want candidate at %d", p.state, p.Term, term+1)
	}
}

// Reference: thesis §9.6 / §6.2: with check-quorum, a leader that has not
// heard from a quorum for an election timeout steps down.
func TestCheckQuorumLeaderStepsDown(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	nt.isolate(1)
	for i := 0; i < 2*nt.raft(1).electionTimeout+1; i++ {
		nt.node(1).Tick()
	}
	if st := nt.raft(1).state; st != StateFollower {
		t.Fatalf("isolated leader is %v, want follower", st)
	}
	// Without check-quorum it would stay leader.
	nt2 := newTestNet(t, 3, noCheckQuorum)
	nt2.elect(1)
	nt2.isolate(1)
	for i := 0; i < 3*nt2.raft(1).electionTimeout; i++ {
		nt2.node(1).Tick()
	}
	if st := nt2.raft(1).state; st != StateLeader {
		t.Fatalf("control: leader without check-quorum is %v", st)
	}
}

// Reference: thesis §9.6 / §4.2.3: a follower that heard from its leader
// within the minimum election timeout ignores RequestVote (and pre-vote)
// with a higher term: neither adopts the term nor grants.
func TestFollowerIgnoresVoteWithinLease(t *testing.T) {
	for _, mt := range []MessageType{MsgVote, MsgPreVote} {
		r := newTestRaft(t, 1, ids(3), 10, 1)
		_ = r.Step(Message{From: 2, To: 1, Type: MsgHeartbeat, Term: 2})
		readMessages(r)
		_ = r.Step(Message{From: 3, To: 1, Type: mt, Term: 5, Index: 100, LogTerm: 4})
		if r.Term != 2 || r.lead != 2 {
			t.Fatalf("%v: term=%d lead=%d, want 2/2", mt, r.Term, r.lead)
		}
		if msgs := readMessages(r); len(msgs) != 0 {
			t.Fatalf("%v: answered %s within the lease", mt, msgTypes(msgs))
		}
		// After an election timeout without the leader it votes.
		for i := 0; i < r.electionTimeout; i++ {
			r.electionElapsed++
			r.tickLease()
		}
		_ = r.Step(Message{From: 3, To: 1, Type: mt, Term: 5, Index: 100, LogTerm: 4})
		if msgs := readMessages(r); len(msgs) != 1 || msgs[0].Reject {
			t.Fatalf("%v: after the lease expired: %+v, want a granted vote", mt, msgs)
		}
	}
}

// Reference: thesis §3.10 + §9.6: a vote requested because of leadership
// transfer is let through the check-quorum lease.
func TestTransferVoteBypassesLease(t *testing.T) {
	r := newTestRaft(t, 1, ids(3), 10, 1)
	_ = r.Step(Message{From: 2, To: 1, Type: MsgHeartbeat, Term: 2})
	readMessages(r)
	_ = r.Step(Message{From: 3, To: 1, Type: MsgVote, Term: 3, Index: r.raftLog.lastIndex(), LogTerm: r.raftLog.lastTerm(), Context: transferContext})
	msgs := readMessages(r)
	if len(msgs) != 1 || msgs[0].Type != MsgVoteResp || msgs[0].Reject || r.Term != 3 || r.Vote != 3 {
		t.Fatalf("transfer vote: msgs=%+v term=%d vote=%d", msgs, r.Term, r.Vote)
	}
}

// Reference: thesis §9.6: a leader deposed while partitioned learns the new
// term from the MsgAppResp a follower sends to its stale append, and
// steps down (with pre-vote the follower never sends it a higher-term
// vote request).
func TestStaleLeaderStepsDownOnHigherTermResponse(t *testing.T) {
	r, _ := newLeader(t, 3)
	term := r.Term
	_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: term + 1})
	if r.state != StateFollower || r.Term != term+1 {
		t.Fatalf("state=%v term=%d", r.state, r.Term)
	}
	// The follower side: a stale MsgApp is answered with our term.
	f := newTestRaft(t, 2, ids(3), 10, 1)
	f.Term = 7
	_ = f.Step(Message{From: 1, To: 2, Type: MsgApp, Term: 5})
	msgs := readMessages(f)
	if len(msgs) != 1 || msgs[0].Type != MsgAppResp || msgs[0].Term != 7 {
		t.Fatalf("stale append answered with %+v", msgs)
	}
}

// ---- thesis §6.4 ReadIndex ----

// readStatesOf returns and clears the read states node id produced.
func readStatesOf(nt *testNet, id uint64) []ReadState {
	r := nt.raft(id)
	rs := append(nt.reads[id], r.readStates...)
	r.readStates = nil
	nt.reads[id] = nil
	return rs
}

// Reference: thesis §6.4: the leader records its commit index as the read
// index, confirms leadership with a heartbeat round answered by a quorum,
// and only then answers.
func TestReadIndexLeader(t *testing.T) {
	r, _ := newLeader(t, 3)
	r.readOnly.option = ReadOnlySafe
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("ctx1")})
	hbs := filterMsgs(readMessages(r), MsgHeartbeat)
	if len(hbs) != 2 || len(hbs[0].Context) == 0 || !bytes.Equal(hbs[0].Context, hbs[1].Context) {
		t.Fatalf("heartbeats = %+v, want two carrying the same read round", hbs)
	}
	if len(r.readStates) != 0 {
		t.Fatalf("answered before a quorum confirmed")
	}
	_ = r.Step(Message{From: 2, To: 1, Type: MsgHeartbeatResp, Term: r.Term, Context: hbs[0].Context})
	if len(r.readStates) != 1 || r.readStates[0].Index != r.raftLog.committed || string(r.readStates[0].RequestCtx) != "ctx1" {
		t.Fatalf("readStates = %+v", r.readStates)
	}
}

// Reference: thesis §6.4 step 1: "If the leader has not yet marked an
// entry from its current term committed, it waits until it has done so."
func TestReadIndexWaitsForCurrentTermCommit(t *testing.T) {
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: ids(3)})
	r := newTestRaftWith(t, 1, s, 10, 1)
	persist(r, s)
	r.becomeCandidate()
	r.becomeLeader()
	persist(r, s)
	readMessages(r)
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("early")})
	for _, m := range readMessages(r) {
		if m.Type == MsgHeartbeat && len(m.Context) > 0 {
			t.Fatalf("read confirmed before the leader committed an entry of its term")
		}
	}
	if len(r.readStates) != 0 {
		t.Fatalf("answered early: %+v", r.readStates)
	}
	_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: r.raftLog.lastIndex()})
	var hb []Message
	for _, m := range readMessages(r) {
		if m.Type == MsgHeartbeat && len(m.Context) > 0 {
			hb = append(hb, m)
		}
	}
	if len(hb) == 0 {
		t.Fatalf("queued read not released after the term's entry committed")
	}
	_ = r.Step(Message{From: 3, To: 1, Type: MsgHeartbeatResp, Term: r.Term, Context: hb[0].Context})
	if len(r.readStates) != 1 || r.readStates[0].Index != r.raftLog.committed {
		t.Fatalf("readStates = %+v", r.readStates)
	}
}

// Reference: thesis §6.4 step 3: the heartbeat round must start after the
// read arrived — a response to an older heartbeat (another read's context,
// or a plain heartbeat) confirms nothing for a newer read.
func TestReadIndexStaleHeartbeatResponse(t *testing.T) {
	r, _ := newLeader(t, 3)
	// A plain heartbeat, sent before the reads arrive.
	_ = r.Step(Message{From: 1, Type: MsgBeat})
	plain := filterMsgs(readMessages(r), MsgHeartbeat)[0]
	roundOf := func(ctx string) []byte {
		_ = r.Step(Message{Type: MsgReadIndex, Context: []byte(ctx)})
		return filterMsgs(readMessages(r), MsgHeartbeat)[0].Context
	}
	a, b := roundOf("a"), roundOf("b")
	_ = r.Step(Message{From: 2, To: 1, Type: MsgHeartbeatResp, Term: r.Term, Index: plain.Index, Context: plain.Context})
	if len(r.readStates) != 0 {
		t.Fatalf("a plain heartbeat response confirmed a read")
	}
	_ = r.Step(Message{From: 2, To: 1, Type: MsgHeartbeatResp, Term: r.Term, Context: a})
	if len(r.readStates) != 1 || string(r.readStates[0].RequestCtx) != "a" {
		t.Fatalf("readStates = %+v, want only a", r.readStates)
	}
	_ = r.Step(Message{From: 2, To: 1, Type: MsgHeartbeatResp, Term: r.Term, Context: b})
	if len(r.readStates) != 2 || string(r.readStates[1].RequestCtx) != "b" {
		t.Fatalf("readStates = %+v, want a then b", r.readStates)
	}
	// A response for an already-answered round does nothing.
	_ = r.Step(Message{From: 3, To: 1, Type: MsgHeartbeatResp, Term: r.Term, Context: a})
	if len(r.readStates) != 2 {
		t.Fatalf("duplicate confirmation produced %+v", r.readStates)
	}
}

// Reference: thesis §6.4: a follower forwards the read to the leader,
// receives the read index and serves it locally once applied.
func TestReadIndexFollower(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	_ = nt.propose(1, "x")
	nt.node(2).ReadIndex([]byte("f1"))
	nt.stabilize()
	rs := readStatesOf(nt, 2)
	if len(rs) != 1 || string(rs[0].RequestCtx) != "f1" || rs[0].Index != nt.raft(1).raftLog.committed {
		t.Fatalf("follower read states = %+v, want f1 at %d", rs, nt.raft(1).raftLog.committed)
	}
	// With no leader the read cannot be forwarded.
	r := newTestRaft(t, 2, ids(3), 10, 1)
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("x")})
	if msgs := readMessages(r); len(msgs) != 0 {
		t.Fatalf("forwarded without a leader: %s", msgTypes(msgs))
	}
}

// Reference: thesis §6.4.1: lease-based reads skip the heartbeat round
// while a quorum acknowledged a recent heartbeat; without such a lease,
// or during a leadership transfer, the leader falls back to a confirmed
// round.
func TestReadIndexLeaseBased(t *testing.T) {
	r, _ := newLeader(t, 3, func(c *Config) { c.ReadOnlyOption = ReadOnlyLeaseBased })
	ackHeartbeats := func() {
		for _, m := range filterMsgs(readMessages(r), MsgHeartbeat) {
			if m.To == 2 {
				_ = r.Step(Message{From: 2, To: 1, Type: MsgHeartbeatResp, Term: r.Term, Index: m.Index, Context: m.Context})
			}
		}
	}
	// No heartbeat acknowledged yet: no lease.
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("l0")})
	if len(r.readStates) != 0 {
		t.Fatalf("answered from a lease no quorum confirmed: %+v", r.readStates)
	}
	ackHeartbeats() // confirms l0 by the fallback round, and dates 2's lease
	if len(r.readStates) != 1 {
		t.Fatalf("fallback round did not answer: %+v", r.readStates)
	}
	r.readStates = nil
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("l1")})
	if len(r.readStates) != 1 || r.readStates[0].Index != r.raftLog.committed {
		t.Fatalf("valid lease: readStates = %+v", r.readStates)
	}
	if hbs := filterMsgs(readMessages(r), MsgHeartbeat); len(hbs) != 0 {
		t.Fatalf("lease read sent a heartbeat round")
	}
	// Followers stop answering: the lease (heartbeat sent at tick 0) runs
	// out (T-1)/1.1 ticks later, before a follower whose clock runs up to
	// 10% faster may vote (see TestLeaseAllowsForClockDrift).
	lease := int(r.leaderLeaseTicks())
	if lease != 8 {
		t.Fatalf("lease of %d ticks with T=10 and 10%% drift, want 8", lease)
	}
	r.readStates = nil
	for i := 0; i < lease-1; i++ {
		r.tick()
	}
	readMessages(r)
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("l1b")})
	if len(r.readStates) != 1 {
		t.Fatalf("lease expired early, after %d ticks", lease-1)
	}
	r.readStates = nil
	r.tick()
	readMessages(r)
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("l2")})
	if len(r.readStates) != 0 {
		t.Fatalf("answered from an expired lease after %d ticks", lease)
	}
	ackHeartbeats()
	r.readStates = nil
	// During a transfer, the lease is not trusted.
	r.leadTransferee = 3
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("l3")})
	if len(r.readStates) != 0 {
		t.Fatalf("answered from the lease during a leadership transfer")
	}
	if _, err := NewRawNode(&Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: NewMemoryStorage(),
		ReadOnlyOption: ReadOnlyLeaseBased, DisableCheckQuorum: true}); err == nil {
		t.Fatalf("lease-based reads without check-quorum were accepted")
	}
}

// Reference: thesis §6.4.1: with lease-based reads a restarted node has
// forgotten which leader it heard from, so it refuses votes for one
// election timeout after start.
func TestLeaseStartupRefusesVotes(t *testing.T) {
	r := newTestRaft(t, 1, ids(3), 10, 1, func(c *Config) { c.ReadOnlyOption = ReadOnlyLeaseBased })
	vote := Message{From: 2, To: 1, Type: MsgVote, Term: 5, Index: 100, LogTerm: 4}
	_ = r.Step(vote)
	if r.Term == 5 || len(readMessages(r)) != 0 {
		t.Fatalf("voted right after start")
	}
	for i := 0; i < r.electionTimeout; i++ {
		r.tick()
	}
	readMessages(r)
	_ = r.Step(vote)
	if r.Term != 5 || r.Vote != 2 {
		t.Fatalf("term=%d vote=%d after the startup lease, want 5/2", r.Term, r.Vote)
	}
}

// Reference: thesis §6.4: a single-voter leader answers at once (it is its
// own quorum), still only after committing an entry of its term.
func TestReadIndexSingleNode(t *testing.T) {
	r, _ := newLeader(t, 1)
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("s")})
	if len(r.readStates) != 1 || r.readStates[0].Index != r.raftLog.committed {
		t.Fatalf("readStates = %+v", r.readStates)
	}
}

// ---- thesis §3.10 Leadership transfer ----

// Reference: thesis §3.10: the leader makes sure the target is up to date,
// then sends TimeoutNow; the target starts an election at once and wins.
func TestLeaderTransfer(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	nt.isolate(3)
	_ = nt.propose(1, "a")
	_ = nt.propose(1, "b")
	nt.heal()
	var sawTimeoutNow bool
	var appendsBefore int
	nt.filter = func(m Message) bool {
		if m.To == 3 && m.Type == MsgApp && !sawTimeoutNow {
			appendsBefore++
		}
		if m.Type == MsgTimeoutNow {
			sawTimeoutNow = true
			if nt.raft(3).raftLog.lastIndex() != nt.raft(1).raftLog.lastIndex() {
				t.Errorf("TimeoutNow sent before the target caught up")
			}
		}
		return true
	}
	nt.node(1).TransferLeader(3)
	nt.stabilize()
	if nt.leader() != 3 {
		t.Fatalf("leader = %d, want 3\n%s", nt.leader(), nt)
	}
	if appendsBefore == 0 {
		t.Fatalf("the target was not caught up before TimeoutNow")
	}
	// A transfer requested on a follower is forwarded.
	nt.node(1).TransferLeader(2)
	nt.stabilize()
	if nt.leader() != 2 {
		t.Fatalf("forwarded transfer: leader = %d, want 2", nt.leader())
	}
}

// Reference: thesis §3.10: "the prior leader stops accepting new client
// requests" during the transfer, and aborts it "if the transfer does not
// complete within about an election timeout", resuming service.
func TestLeaderTransferRefusesProposalsThenTimesOut(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	nt.isolate(3)
	nt.node(1).TransferLeader(3)
	nt.stabilize()
	if nt.raft(1).leadTransferee != 3 {
		t.Fatalf("transfer not started")
	}
	if err := nt.node(1).Propose([]byte("x")); !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("proposal during transfer: err = %v, want ErrProposalDropped", err)
	}
	for i := 0; i < nt.raft(1).electionTimeout; i++ {
		nt.tick()
	}
	if nt.raft(1).leadTransferee != None || nt.leader() != 1 {
		t.Fatalf("transfer not aborted after an election timeout: transferee=%d leader=%d", nt.raft(1).leadTransferee, nt.leader())
	}
	if err := nt.propose(1, "y"); err != nil {
		t.Fatalf("proposal after the abort: %v", err)
	}
}

// Reference: thesis §3.10: transfer only to a voter; a learner or the
// leader itself is refused.
func TestLeaderTransferInvalidTargets(t *testing.T) {
	nt := newTestNet(t, 3, nil, 4)
	nt.elect(1)
	for _, target := range []uint64{1, 4, 9} {
		nt.node(1).TransferLeader(target)
		nt.stabilize()
		if tr := nt.raft(1).leadTransferee; tr != None || nt.leader() != 1 {
			t.Fatalf("transfer to %d: transferee=%d leader=%d", target, tr, nt.leader())
		}
	}
}

// Reference: §6 (etcd's learner rules): AddLearner on a voter demotes it;
// a demoted leader steps down like a removed one and stays a learner that
// keeps receiving the log.
func TestDemoteLeaderToLearner(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	if err := proposeCC(t, nt, 1, ConfChange{Type: ConfChangeAddLearner, NodeID: 1}); err != nil {
		t.Fatal(err)
	}
	if st := nt.raft(1).state; st == StateLeader {
		t.Fatalf("demoted leader is still leader")
	}
	nt.ticks(30)
	l := nt.leader()
	if l != 2 && l != 3 {
		t.Fatalf("no new leader:\n%s", nt)
	}
	if err := nt.propose(l, "after"); err != nil {
		t.Fatal(err)
	}
	if got := nt.appliedData(1); len(got) == 0 || got[len(got)-1] != "after" {
		t.Fatalf("demoted node applied %v", got)
	}
	for _, id := range nt.ids {
		cs := nt.node(id).Status().ConfState
		if !slices.Equal(cs.Voters, []uint64{2, 3}) || !slices.Equal(cs.Learners, []uint64{1}) {
			t.Fatalf("node %d config %+v", id, cs)
		}
	}
}
