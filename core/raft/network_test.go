package raft

import (
	"fmt"
	"slices"
	"testing"
)

// testNet is a tiny in-memory cluster for multi-node unit tests: every
// node runs on a MemoryStorage, messages go into one queue, and links can
// be cut. It follows the Ready contract exactly (persist, send, apply,
// Advance).
type testNet struct {
	t       testing.TB
	ids     []uint64
	nodes   map[uint64]*RawNode
	stores  map[uint64]*MemoryStorage
	cfgs    map[uint64]*Config
	applied map[uint64][]Entry // committed entries in apply order
	reads   map[uint64][]ReadState
	down    map[uint64]bool    // crashed nodes: no ticks, messages to them dropped
	cut     map[[2]uint64]bool // directional link cuts
	// rewrite (optional) edits a message before filter sees it.
	rewrite func(m *Message)
	// filter drops a message when it returns false.
	filter func(m Message) bool
	queue  []Message
	// noAutoConfChange makes process skip ApplyConfChange.
	noAutoConfChange bool
}

func newTestConfig(id uint64, s LogReader) *Config {
	return &Config{
		ID:              id,
		ElectionTick:    10,
		HeartbeatTick:   1,
		Storage:         s,
		Seed:            int64(id) * 7919,
		MaxSizePerMsg:   noLimit,
		MaxInflightMsgs: 256,
	}
}

// newTestNet builds a cluster whose voters are ids 1..n plus the given
// learners. mutate (optional) adjusts each node's Config.
func newTestNet(t testing.TB, n int, mutate func(*Config), learners ...uint64) *testNet {
	t.Helper()
	nt := &testNet{
		t: t, nodes: map[uint64]*RawNode{}, stores: map[uint64]*MemoryStorage{},
		cfgs: map[uint64]*Config{}, applied: map[uint64][]Entry{}, down: map[uint64]bool{}, reads: map[uint64][]ReadState{},
		cut: map[[2]uint64]bool{},
	}
	var cs ConfState
	for i := 1; i <= n; i++ {
		cs.Voters = append(cs.Voters, uint64(i))
	}
	cs.Learners = learners
	all := append(slices.Clone(cs.Voters), learners...)
	for _, id := range all {
		s := NewMemoryStorage()
		s.SetConfState(cs)
		nt.addNode(id, s, mutate)
	}
	return nt
}

// addNode starts a node on storage s.
func (nt *testNet) addNode(id uint64, s *MemoryStorage, mutate func(*Config)) {
	nt.t.Helper()
	cfg := newTestConfig(id, s)
	if mutate != nil {
		mutate(cfg)
	}
	rn, err := NewRawNode(cfg)
	if err != nil {
		nt.t.Fatalf("NewRawNode(%d): %v", id, err)
	}
	if !slices.Contains(nt.ids, id) {
		nt.ids = append(nt.ids, id)
		slices.Sort(nt.ids)
	}
	nt.nodes[id] = rn
	nt.stores[id] = s
	nt.cfgs[id] = cfg
}

// restart simulates a crash and restart of id: unpersisted state is lost
// (MemoryStorage only ever holds what was saved).
func (nt *testNet) restart(id uint64) {
	nt.t.Helper()
	cfg := *nt.cfgs[id]
	cfg.Applied = 0
	if a := nt.applied[id]; len(a) > 0 {
		cfg.Applied = a[len(a)-1].Index
	}
	snapIdx := nt.stores[id].snap.Metadata.Index
	if cfg.Applied < snapIdx {
		cfg.Applied = snapIdx
	}
	rn, err := NewRawNode(&cfg)
	if err != nil {
		nt.t.Fatalf("restart %d: %v", id, err)
	}
	nt.nodes[id] = rn
	nt.down[id] = false
}

func (nt *testNet) node(id uint64) *RawNode { return nt.nodes[id] }
func (nt *testNet) raft(id uint64) *raft    { return nt.nodes[id].r }

// process handles one Ready of node id, if any. It returns whether there
// was one.
func (nt *testNet) process(id uint64) bool {
	nt.t.Helper()
	rn := nt.nodes[id]
	if nt.down[id] || !rn.HasReady() {
		return false
	}
	rd := rn.Ready()
	s := nt.stores[id]
	if !rd.Snapshot.IsEmpty() {
		if err := s.ApplySnapshot(rd.Snapshot); err != nil {
			nt.t.Fatalf("node %d: ApplySnapshot: %v", id, err)
		}
		// The state machine is replaced by the snapshot.
		nt.applied[id] = append(nt.applied[id][:0:0], Entry{Index: rd.Snapshot.Metadata.Index, Term: rd.Snapshot.Metadata.Term, Data: []byte("snapshot")})
	}
	if err := s.Save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
		nt.t.Fatalf("node %d: Save: %v", id, err)
	}
	nt.queue = append(nt.queue, rd.Messages...)
	nt.reads[id] = append(nt.reads[id], rd.ReadStates...)
	for _, e := range rd.CommittedEntries {
		if a := nt.applied[id]; len(a) > 0 && a[len(a)-1].Index+1 != e.Index {
			nt.t.Fatalf("node %d: applied %d after %d", id, e.Index, a[len(a)-1].Index)
		}
		nt.applied[id] = append(nt.applied[id], e)
		if e.Type == EntryConfChange && !nt.noAutoConfChange {
			var cc ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				nt.t.Fatalf("node %d: bad conf change at %d: %v", id, e.Index, err)
			}
			rn.ApplyConfChange(cc)
		}
	}
	rn.Advance(rd)
	return true
}

// deliver sends every queued message once (messages produced while
// delivering wait for the next round). It returns how many were delivered.
func (nt *testNet) deliver() int {
	msgs := nt.queue
	nt.queue = nil
	n := 0
	for _, m := range msgs {
		if nt.down[m.To] || nt.down[m.From] || nt.cut[[2]uint64{m.From, m.To}] {
			continue
		}
		if nt.rewrite != nil {
			nt.rewrite(&m)
		}
		if nt.filter != nil && !nt.filter(m) {
			continue
		}
		rn, ok := nt.nodes[m.To]
		if !ok {
			continue
		}
		_ = rn.Step(m)
		n++
	}
	return n
}

// stabilize processes and delivers until nothing moves.
func (nt *testNet) stabilize() {
	nt.t.Helper()
	for i := 0; i < 10000; i++ {
		moved := false
		for _, id := range nt.ids {
			if nt.process(id) {
				moved = true
			}
		}
		if nt.deliver() > 0 {
			moved = true
		}
		if !moved {
			return
		}
	}
	nt.t.Fatalf("network did not stabilize")
}

// tick ticks every live node once and stabilizes.
func (nt *testNet) tick() {
	for _, id := range nt.ids {
		if !nt.down[id] {
			nt.nodes[id].Tick()
		}
	}
	nt.stabilize()
}

func (nt *testNet) ticks(n int) {
	for i := 0; i < n; i++ {
		nt.tick()
	}
}

// elect makes id campaign and stabilizes; it fails the test if id did not
// become leader.
func (nt *testNet) elect(id uint64) {
	nt.t.Helper()
	if err := nt.nodes[id].Campaign(); err != nil {
		nt.t.Fatalf("campaign %d: %v", id, err)
	}
	nt.stabilize()
	if st := nt.raft(id).state; st != StateLeader {
		nt.t.Fatalf("node %d is %v after campaigning, want leader", id, st)
	}
}

// leader returns the unique leader among live nodes at the highest term,
// or 0.
func (nt *testNet) leader() uint64 {
	var lead uint64
	var term uint64
	for _, id := range nt.ids {
		r := nt.raft(id)
		if nt.down[id] || r.state != StateLeader {
			continue
		}
		if r.Term > term {
			lead, term = id, r.Term
		}
	}
	return lead
}

func (nt *testNet) isolate(id uint64) {
	for _, o := range nt.ids {
		if o != id {
			nt.cut[[2]uint64{id, o}] = true
			nt.cut[[2]uint64{o, id}] = true
		}
	}
}

func (nt *testNet) heal() { nt.cut = map[[2]uint64]bool{} }

// propose proposes data on id and stabilizes.
func (nt *testNet) propose(id uint64, data string) error {
	err := nt.nodes[id].Propose([]byte(data))
	nt.stabilize()
	return err
}

// appliedData returns the non-empty normal entry payloads applied on id.
func (nt *testNet) appliedData(id uint64) []string {
	var out []string
	for _, e := range nt.applied[id] {
		if e.Type == EntryNormal && len(e.Data) > 0 {
			out = append(out, string(e.Data))
		}
	}
	return out
}

// checkLogsMatch fails if the committed prefixes of live nodes differ.
func (nt *testNet) checkLogsMatch() {
	nt.t.Helper()
	for _, a := range nt.ids {
		for _, b := range nt.ids {
			ra, rb := nt.raft(a).raftLog, nt.raft(b).raftLog
			hi := min(ra.committed, rb.committed)
			lo := max(ra.firstIndex(), rb.firstIndex())
			for i := lo; i <= hi; i++ {
				ta, _ := ra.term(i)
				tb, _ := rb.term(i)
				if ta != tb {
					nt.t.Fatalf("committed entry %d differs: node %d term %d, node %d term %d", i, a, ta, b, tb)
				}
			}
		}
	}
}

func (nt *testNet) String() string {
	s := ""
	for _, id := range nt.ids {
		r := nt.raft(id)
		s += fmt.Sprintf("%d: %v term=%d lead=%d commit=%d last=%d\n", id, r.state, r.Term, r.lead, r.raftLog.committed, r.raftLog.lastIndex())
	}
	return s
}

// newTestNetWith builds a cluster from prepared storages (one per id).
func newTestNetWith(t testing.TB, stores map[uint64]*MemoryStorage, mutate func(*Config)) *testNet {
	t.Helper()
	nt := &testNet{
		t: t, nodes: map[uint64]*RawNode{}, stores: map[uint64]*MemoryStorage{},
		cfgs: map[uint64]*Config{}, applied: map[uint64][]Entry{}, down: map[uint64]bool{}, reads: map[uint64][]ReadState{},
		cut: map[[2]uint64]bool{},
	}
	var keys []uint64
	for id := range stores {
		keys = append(keys, id)
	}
	slices.Sort(keys)
	for _, id := range keys {
		nt.addNode(id, stores[id], mutate)
	}
	return nt
}
