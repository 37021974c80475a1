package raft

import "testing"

// A voter that rejects a (pre-)vote tells the candidate the newest entry it
// knows committed that the candidate may hold: index min(its commit, the
// candidate's last index), with its term.
func TestVoteRejectionCarriesCommitHint(t *testing.T) {
	s := storageWithLog(ids(3), 2, entsWithTerms(1, 1, 2, 2, 2)...)
	s.SetHardState(HardState{Term: 2, Commit: 4})
	r := newTestRaftWith(t, 1, s, 10, 1, noCheckQuorum)
	// The candidate's log ends at 1/3: behind ours (last term 2).
	_ = r.Step(Message{From: 2, To: 1, Type: MsgPreVote, Term: 3, Index: 3, LogTerm: 1})
	resp := filterMsgs(readMessages(r), MsgPreVoteResp)
	if len(resp) != 1 || !resp[0].Reject || resp[0].Commit != 3 || resp[0].LogTerm != 2 {
		t.Fatalf("responses %+v, want one rejection with commit hint 3 (term 2)", resp)
	}
}

// Reference: §5.3 (Log Matching). A candidate commits a hinted entry only if
// its own entry at that index has the hinted term, and never beyond its log.
func TestCommitHintTakenOnlyOnMatchingEntry(t *testing.T) {
	for _, tc := range []struct {
		name       string
		commit     uint64
		logTerm    uint64
		wantCommit uint64
	}{
		{"matching entry", 3, 2, 3},
		{"term differs at the hinted index", 3, 3, 1},
		{"beyond our last index", 9, 2, 1},
		{"no hint", 0, 0, 1},
		{"behind our commit", 1, 1, 1},
	} {
		s := storageWithLog(ids(3), 2, entsWithTerms(1, 1, 2, 2)...)
		s.SetHardState(HardState{Term: 2, Commit: 1})
		r := newTestRaftWith(t, 2, s, 10, 1)
		_ = r.Step(Message{Type: MsgHup})
		if r.state != StatePreCandidate {
			t.Fatalf("%s: state %v, want pre-candidate", tc.name, r.state)
		}
		readMessages(r)
		_ = r.Step(Message{From: 1, To: 2, Type: MsgPreVoteResp, Term: r.Term, Reject: true, Commit: tc.commit, LogTerm: tc.logTerm})
		if r.raftLog.committed != tc.wantCommit {
			t.Errorf("%s: committed %d, want %d", tc.name, r.raftLog.committed, tc.wantCommit)
		}
	}
}
