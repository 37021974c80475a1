package raft

import "testing"

// leaseLeader returns a lease-based leader of a 3-voter cluster whose
// lease is valid: node 2 acknowledged a heartbeat sent just now.
func leaseLeader(t *testing.T) *raft {
	t.Helper()
	r, _ := newLeader(t, 3, func(c *Config) { c.ReadOnlyOption = ReadOnlyLeaseBased })
	ackFreshHeartbeat(t, r, 2)
	if !r.leaseValid() {
		t.Fatalf("setup: no valid lease after node 2 acknowledged a heartbeat")
	}
	return r
}

// ackFreshHeartbeat makes leader r broadcast a heartbeat and from answer
// it, echoing what a follower echoes.
func ackFreshHeartbeat(t *testing.T, r *raft, from uint64) {
	t.Helper()
	readMessages(r)
	_ = r.Step(Message{From: r.id, Type: MsgBeat})
	acked := false
	for _, m := range filterMsgs(readMessages(r), MsgHeartbeat) {
		if m.To == from {
			_ = r.Step(Message{From: from, To: r.id, Type: MsgHeartbeatResp, Term: r.Term, Index: m.Index, Context: m.Context})
			acked = true
		}
	}
	if !acked {
		t.Fatalf("leader sent no heartbeat to %d", from)
	}
	readMessages(r)
}

// Reference: thesis §3.10, §6.4.1: once the leader has sent MsgTimeoutNow,
// the target may win an election at any time (its vote requests bypass the
// followers' leases), even after the leader gave up on the transfer. The
// leader must not answer reads from its lease for the rest of the term.
func TestLeaseReadAfterAbortedTransfer(t *testing.T) {
	r := leaseLeader(t)
	// Node 3 is up to date: the transfer sends MsgTimeoutNow at once.
	_ = r.Step(Message{From: 3, To: 1, Type: MsgTransferLeader})
	if len(filterMsgs(readMessages(r), MsgTimeoutNow)) != 1 {
		t.Fatalf("setup: transfer to an up-to-date node sent no MsgTimeoutNow")
	}
	// The leader aborts (a transfer to itself cancels the ongoing one)...
	_ = r.Step(Message{From: 1, To: 1, Type: MsgTransferLeader})
	if r.leadTransferee != None {
		t.Fatalf("setup: transfer to %d not aborted", r.leadTransferee)
	}
	// ...and a quorum renews its lease, which node 3's election ignores.
	ackFreshHeartbeat(t, r, 2)
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("after-abort")})
	if len(r.readStates) != 0 {
		t.Fatalf("answered read at %d from the lease after sending MsgTimeoutNow in this term", r.readStates[0].Index)
	}
	if len(filterMsgs(readMessages(r), MsgHeartbeat)) == 0 {
		t.Fatalf("the read neither was answered nor started a heartbeat round")
	}
}

// Reference: thesis §9.6, §6.4.1: a follower that heard from its leader
// ignores (non-transfer) vote requests for an election timeout; leaders'
// leases rely on it. Campaign() on that follower must not drop this: it
// keeps ignoring other candidates.
func TestCampaignKeepsVoteLease(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"prevote", func(*Config) {}},
		{"no-prevote", noPreVote},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRaft(t, 1, ids(3), 10, 1, tc.mutate)
			_ = r.Step(Message{From: 2, To: 1, Type: MsgHeartbeat, Term: 2})
			readMessages(r)
			_ = r.Step(Message{From: 1, To: 1, Type: MsgHup})
			readMessages(r)
			term := r.Term
			_ = r.Step(Message{From: 3, To: 1, Type: MsgVote, Term: term + 3, Index: 100, LogTerm: 9})
			if msgs := readMessages(r); len(msgs) != 0 || r.Term != term {
				t.Fatalf("0 ticks after a heartbeat, a forced campaign let a vote through: term %d -> %d, sent %s", term, r.Term, msgTypes(msgs))
			}
		})
	}
}

// Reference: thesis §6.4.1: with lease-based reads, a node that heard from
// a leader within the election timeout does not vote for itself either:
// a forced campaign that won would depose a leader whose lease counts on
// this node's vote.
func TestCampaignRefusedWithinLease(t *testing.T) {
	r := newTestRaft(t, 1, ids(3), 10, 1, func(c *Config) { c.ReadOnlyOption = ReadOnlyLeaseBased })
	_ = r.Step(Message{From: 2, To: 1, Type: MsgHeartbeat, Term: 2})
	readMessages(r)
	_ = r.Step(Message{From: 1, To: 1, Type: MsgHup})
	if msgs := readMessages(r); len(msgs) != 0 || r.state != StateFollower || r.lead != 2 {
		t.Fatalf("campaigned within the lease: state %v lead %d, sent %s", r.state, r.lead, msgTypes(msgs))
	}
	// Once the lease ran out, Campaign works.
	for range r.electionTimeout {
		r.tick()
	}
	readMessages(r)
	if r.state == StateFollower {
		_ = r.Step(Message{From: 1, To: 1, Type: MsgHup})
	}
	if r.state != StatePreCandidate {
		t.Fatalf("after the lease: state %v, want pre-candidate", r.state)
	}
}

// Reference: thesis §6.4 step 3 (RAFT-PITFALLS "Reads"): a read is
// confirmed only by heartbeat responses to a round sent after it arrived.
// A requester that restarted may reuse a context; a delayed response to
// the earlier round with that context must not confirm the new read.
func TestReadIndexDelayedAckFromEarlierRound(t *testing.T) {
	r, _ := newLeader(t, 3)
	heartbeats := func() map[uint64]Message {
		hbs := map[uint64]Message{}
		for _, m := range filterMsgs(readMessages(r), MsgHeartbeat) {
			hbs[m.To] = m
		}
		if len(hbs) != 2 {
			t.Fatalf("heartbeat round reached %d followers, want 2", len(hbs))
		}
		return hbs
	}
	ack := func(hb Message) Message {
		return Message{From: hb.To, To: r.id, Type: MsgHeartbeatResp, Term: r.Term, Index: hb.Index, Context: hb.Context}
	}
	// Read "x" from follower 2's first incarnation; node 3 acknowledges
	// the round, node 2's response is delayed.
	_ = r.Step(Message{From: 2, To: 1, Type: MsgReadIndex, Context: []byte("x")})
	hbs := heartbeats()
	_ = r.Step(ack(hbs[3]))
	if got := filterMsgs(readMessages(r), MsgReadIndexResp); len(got) != 1 {
		t.Fatalf("setup: first read not answered: %+v", got)
	}
	delayed := ack(hbs[2])
	// Node 2 restarts and reuses "x" for a new read.
	_ = r.Step(Message{From: 2, To: 1, Type: MsgReadIndex, Context: []byte("x")})
	hbs = heartbeats()
	_ = r.Step(delayed)
	if got := filterMsgs(readMessages(r), MsgReadIndexResp); len(got) != 0 {
		t.Fatalf("a response to a heartbeat round sent before the read arrived confirmed it: %+v", got)
	}
	// A response to the round sent after it does.
	_ = r.Step(ack(hbs[3]))
	if got := filterMsgs(readMessages(r), MsgReadIndexResp); len(got) != 1 || string(got[0].Context) != "x" {
		t.Fatalf("the new read was not confirmed by its own round: %+v", got)
	}
}

// Reference: thesis §6.4.1: a follower that acknowledged a heartbeat
// refuses votes until its own election timer reaches T, counted from the
// receipt: in the worst case its first tick comes right after the
// heartbeat, so the refusal ends T-1 of its tick periods later. A leader
// whose clock runs 10% slower than that follower's (the default drift
// allowance) must stop answering from that heartbeat's lease before its
// own clock shows (T-1)/1.1 periods since the send: with T = 10, at its
// 8th tick. Counting T-1 ticks of its own would assume identical clocks.
func TestLeaseAllowsForClockDrift(t *testing.T) {
	r := leaseLeader(t) // node 2 acknowledged a heartbeat sent now
	for range 7 {
		r.tick()
		readMessages(r)
	}
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("7 ticks")})
	if len(r.readStates) != 1 {
		t.Fatalf("the lease does not cover 7 ticks after the heartbeat")
	}
	r.readStates = nil
	r.tick()
	readMessages(r)
	_ = r.Step(Message{Type: MsgReadIndex, Context: []byte("8 ticks")})
	if len(r.readStates) != 0 {
		t.Fatalf("answered from a lease 8 ticks after the heartbeat: a follower whose clock runs 10%% faster may already vote")
	}
}

func TestLeaseDriftPercentValidated(t *testing.T) {
	for _, p := range []int{-1, 101} {
		cfg := newTestConfig(1, NewMemoryStorage())
		cfg.LeaseDriftPercent = p
		if _, err := NewRawNode(cfg); err == nil {
			t.Errorf("LeaseDriftPercent %d accepted", p)
		}
	}
	r := newTestRaft(t, 1, ids(3), 10, 1, func(c *Config) { c.LeaseDriftPercent = 50 })
	if got := r.leaderLeaseTicks(); got != 6 {
		t.Fatalf("lease with T=10 and 50%% drift: %d ticks, want 6 (9/1.5)", got)
	}
}
