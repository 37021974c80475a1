package raft

import (
	"fmt"
	"strings"
	"testing"
)

// newTestRaft returns a raft node with the given voters on a fresh
// MemoryStorage. Bootstrap entries are written for the voters, so the log
// starts at index len(voters) with term 1; callers that need another log
// pass a pre-filled storage to newTestRaftWith.
func newTestRaft(t testing.TB, id uint64, voters []uint64, election, heartbeat int, mutate ...func(*Config)) *raft {
	t.Helper()
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: voters})
	return newTestRaftWith(t, id, s, election, heartbeat, mutate...)
}

func newTestRaftWith(t testing.TB, id uint64, s LogReader, election, heartbeat int, mutate ...func(*Config)) *raft {
	t.Helper()
	cfg := newTestConfig(id, s)
	cfg.ElectionTick = election
	cfg.HeartbeatTick = heartbeat
	for _, m := range mutate {
		m(cfg)
	}
	r, err := newRaft(cfg)
	if err != nil {
		t.Fatalf("newRaft: %v", err)
	}
	return r
}

// storageWithLog returns a storage holding ents (indexes from 1) and the
// given voters, with no bootstrap entries (the HardState is non-empty).
func storageWithLog(voters []uint64, term uint64, ents ...Entry) *MemoryStorage {
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: voters})
	if err := s.Append(ents); err != nil {
		panic(err)
	}
	s.SetHardState(HardState{Term: term})
	return s
}

// entsWithTerms returns entries at indexes 1..len(terms) with the given
// terms.
func entsWithTerms(terms ...uint64) []Entry {
	ents := make([]Entry, len(terms))
	for i, t := range terms {
		ents[i] = Entry{Index: uint64(i + 1), Term: t, Data: []byte(fmt.Sprintf("e%d", i+1))}
	}
	return ents
}

func noPreVote(c *Config)     { c.DisablePreVote = true }
func noCheckQuorum(c *Config) { c.DisableCheckQuorum = true }

// readMessages drains r's outbox.
func readMessages(r *raft) []Message {
	msgs := r.msgs
	r.msgs = nil
	return msgs
}

// persist makes everything unstable in r durable in s, the way the driver
// would (without Ready), and counts the leader itself.
func persist(r *raft, s *MemoryStorage) {
	if snap := r.raftLog.unstable.snapshot; snap != nil {
		_ = s.ApplySnapshot(*snap)
		r.raftLog.unstable.stableSnapTo(snap.Metadata.Index)
	}
	ents := r.raftLog.unstable.entries
	if len(ents) > 0 {
		if err := s.Append(ents); err != nil {
			panic(err)
		}
		last := ents[len(ents)-1]
		r.raftLog.unstable.stableTo(last.Index, last.Term)
	}
	r.leaderSelfDurable()
}

func msgTypes(msgs []Message) string {
	var b []string
	for _, m := range msgs {
		b = append(b, fmt.Sprintf("%d->%d:%v", m.From, m.To, m.Type))
	}
	return strings.Join(b, " ")
}

func filterMsgs(msgs []Message, t MessageType) []Message {
	var out []Message
	for _, m := range msgs {
		if m.Type == t {
			out = append(out, m)
		}
	}
	return out
}

// ids returns 1..n.
func ids(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}
