package rafttest

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"sort"

	"github.com/raftd/raftd/core/raft"
)

// Checker verifies Raft's safety properties (Raft figure 3) over a history of
// observations reported by a driver. It knows nothing about how the history
// was produced: the simulator feeds it, and tests feed it fabricated
// histories to prove that each check can fail.
//
// Every Observe method returns a non-nil error describing the first
// violation it finds; the Checker keeps no record of the failed observation.
// A Checker is not safe for concurrent use.
type Checker struct {
	// leaders maps a term to the one node that led it (Raft §5.2).
	leaders map[uint64]uint64
	// logs maps an entry's (index, term) to a digest of its contents and
	// the term of the entry before it (Raft §5.3, Log Matching).
	logs map[logPos]logDigest
	// committed maps an index to the entry that some node applied there.
	committed map[uint64]committedEntry
	// states maps an index to the state-machine hash after applying it.
	states map[uint64]uint64
	// maxCommit is the highest commit index any node has reported.
	maxCommit uint64
	// reads maps a read request context to maxCommit when it was issued.
	reads map[string]uint64
	nodes map[uint64]*nodeTrack
	// completeness remembers (node, term) pairs already checked.
	completeness map[[2]uint64]bool
}

type logPos struct{ index, term uint64 }

type logDigest struct {
	data     uint64
	prevTerm uint64 // 0 when unknown (entry follows a compacted prefix)
}

type committedEntry struct {
	term uint64
	data uint64
}

type nodeTrack struct {
	commit  uint64 // highest commit seen in the current incarnation
	durable uint64 // highest commit index persisted in a HardState
	applied uint64 // state machine applied index
	state   uint64 // state machine hash at applied
}

// NewChecker returns an empty Checker.
func NewChecker() *Checker {
	return &Checker{
		leaders:      map[uint64]uint64{},
		logs:         map[logPos]logDigest{},
		committed:    map[uint64]committedEntry{},
		states:       map[uint64]uint64{},
		reads:        map[string]uint64{},
		nodes:        map[uint64]*nodeTrack{},
		completeness: map[[2]uint64]bool{},
	}
}

func (c *Checker) node(id uint64) *nodeTrack {
	n := c.nodes[id]
	if n == nil {
		n = &nodeTrack{}
		c.nodes[id] = n
	}
	return n
}

// EntryDigest hashes everything that identifies an entry's contents.
func EntryDigest(e raft.Entry) uint64 {
	h := fnv.New64a()
	var b [17]byte
	binary.BigEndian.PutUint64(b[0:], e.Index)
	binary.BigEndian.PutUint64(b[8:], e.Term)
	b[16] = byte(e.Type)
	h.Write(b[:])
	h.Write(e.Data)
	return h.Sum64()
}

// NextState is the state machine transition the checker models: the state
// after applying e to a machine whose state hash is prev. Because the hash
// chains every applied entry, two machines with equal state at an index
// applied the same sequence up to it.
func NextState(prev uint64, e raft.Entry) uint64 {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:], prev)
	binary.BigEndian.PutUint64(b[8:], EntryDigest(e))
	h := fnv.New64a()
	h.Write(b[:])
	return h.Sum64()
}

// ObserveLeader records that node id is leader in term. Election Safety
// (Raft §5.2, figure 3): at most one leader can be elected in a given term,
// over the whole history.
func (c *Checker) ObserveLeader(id, term uint64) error {
	if prev, ok := c.leaders[term]; ok && prev != id {
		return fmt.Errorf("election safety: nodes %d and %d are both leader in term %d", prev, id, term)
	}
	c.leaders[term] = id
	return nil
}

// ObserveAppend records that node id now durably holds ents, contiguous,
// where prevTerm is the term of the entry at ents[0].Index-1 in its log (0
// if unknown because compacted). Log Matching (Raft §5.3): if two logs hold
// an entry with the same index and term, the entries are identical and so
// are the logs up to it; checked inductively by requiring that an (index,
// term) pair always names the same contents and the same predecessor term.
func (c *Checker) ObserveAppend(id, prevTerm uint64, ents []raft.Entry) error {
	for i, e := range ents {
		if i > 0 {
			if e.Index != ents[i-1].Index+1 {
				return fmt.Errorf("log: node %d appended non-contiguous entries %d then %d", id, ents[i-1].Index, e.Index)
			}
			if e.Term < ents[i-1].Term {
				return fmt.Errorf("log: node %d appended term %d at %d after term %d", id, e.Term, e.Index, ents[i-1].Term)
			}
			prevTerm = ents[i-1].Term
		} else if prevTerm > e.Term {
			return fmt.Errorf("log: node %d appended term %d at %d after term %d", id, e.Term, e.Index, prevTerm)
		}
		d := logDigest{data: EntryDigest(e), prevTerm: prevTerm}
		pos := logPos{e.Index, e.Term}
		old, ok := c.logs[pos]
		if !ok {
			c.logs[pos] = d
			continue
		}
		if old.data != d.data {
			return fmt.Errorf("log matching: node %d holds an entry at index %d term %d whose contents differ from another node's", id, e.Index, e.Term)
		}
		switch {
		case old.prevTerm == 0:
			c.logs[pos] = d
		case d.prevTerm != 0 && d.prevTerm != old.prevTerm:
			return fmt.Errorf("log matching: node %d has term %d before entry %d/%d, another node has term %d", id, d.prevTerm, e.Index, e.Term, old.prevTerm)
		}
	}
	return nil
}

// ObserveApply records that node id applied e to its state machine.
// Entries are applied in index order, each once; State Machine Safety
// (Raft §5.4.3, figure 3): no two nodes apply different entries at the same
// index, so every node's applied sequence is a prefix of one sequence.
func (c *Checker) ObserveApply(id uint64, e raft.Entry) error {
	n := c.node(id)
	if e.Index != n.applied+1 {
		return fmt.Errorf("apply: node %d applied index %d after %d (gap, repeat or regression)", id, e.Index, n.applied)
	}
	if e.Index > n.commit {
		return fmt.Errorf("apply: node %d applied index %d above its commit index %d", id, e.Index, n.commit)
	}
	d := committedEntry{term: e.Term, data: EntryDigest(e)}
	if old, ok := c.committed[e.Index]; ok && old != d {
		return fmt.Errorf("state machine safety: node %d applied term %d at index %d, another node applied term %d with different contents", id, e.Term, e.Index, old.term)
	}
	next := NextState(n.state, e)
	if old, ok := c.states[e.Index]; ok && old != next {
		return fmt.Errorf("state machine safety: node %d state after index %d is %016x, another node had %016x", id, e.Index, next, old)
	}
	c.committed[e.Index] = d
	c.states[e.Index] = next
	n.applied, n.state = e.Index, next
	return nil
}

// ObserveReplay records that node id was handed e as committed again after
// a restart, while its durable state machine already held it: e must be the
// entry that was applied at its index.
func (c *Checker) ObserveReplay(id uint64, e raft.Entry) error {
	d := committedEntry{term: e.Term, data: EntryDigest(e)}
	if old, ok := c.committed[e.Index]; ok && old != d {
		return fmt.Errorf("state machine safety: node %d was handed term %d at index %d on replay, term %d was applied there", id, e.Term, e.Index, old.term)
	}
	return nil
}

// ObserveRestore records that node id replaced its state machine with a
// snapshot at index whose state hash is state. Applied never moves
// backwards, and the snapshot's state must be the one every node reached at
// that index.
func (c *Checker) ObserveRestore(id, index, state uint64) error {
	n := c.node(id)
	if index < n.applied {
		return fmt.Errorf("apply: node %d restored a snapshot at %d below its applied index %d", id, index, n.applied)
	}
	if old, ok := c.states[index]; ok && old != state {
		return fmt.Errorf("state machine safety: node %d restored state %016x at index %d, nodes applied %016x there", id, state, index, old)
	}
	c.states[index] = state
	n.applied, n.state = index, state
	if index > n.commit {
		n.commit = index
	}
	return nil
}

// ObserveCommit records node id's commit index, which never decreases while
// the node runs (Raft §5.3: committed entries are durable).
func (c *Checker) ObserveCommit(id, commit uint64) error {
	n := c.node(id)
	if commit < n.commit {
		return fmt.Errorf("commit: node %d commit index went back from %d to %d", id, n.commit, commit)
	}
	n.commit = commit
	if commit > c.maxCommit {
		c.maxCommit = commit
	}
	return nil
}

// ObservePersist records the commit index of a HardState node id made
// durable.
func (c *Checker) ObservePersist(id, commit uint64) error {
	n := c.node(id)
	if commit < n.durable {
		return fmt.Errorf("commit: node %d persisted commit %d below its earlier persisted commit %d", id, commit, n.durable)
	}
	n.durable = commit
	return nil
}

// ObserveRestart records that node id restarted with commit index commit
// and a state machine at applied with hash state. Volatile state is gone,
// but the commit index never falls below the one it persisted. A durable
// state machine may be ahead of the node's commit index (commit-only hard
// states need no sync), never ahead of what the cluster committed.
func (c *Checker) ObserveRestart(id, commit, applied, state uint64) error {
	n := c.node(id)
	if commit < n.durable {
		return fmt.Errorf("commit: node %d restarted with commit %d below its persisted commit %d", id, commit, n.durable)
	}
	if applied > commit && applied > c.maxCommit {
		return fmt.Errorf("restart: node %d state machine applied %d is above every commit index seen (%d)", id, applied, c.maxCommit)
	}
	if old, ok := c.states[applied]; ok && applied > 0 && old != state {
		return fmt.Errorf("state machine safety: node %d restarted with state %016x at %d, nodes applied %016x there", id, state, applied, old)
	}
	n.commit, n.applied, n.state = commit, applied, state
	if commit > c.maxCommit {
		c.maxCommit = commit
	}
	return nil
}

// CheckLeaderLog checks Leader Completeness (Raft §5.4, figure 3) for node
// id, leader in term: every entry applied anywhere with a term below term
// is in its log. termAt returns the term of the leader's entry at i, and
// false if i is below its log (compacted) or above its last index.
// lastIndex is the leader's last log index. Each (node, term) is checked
// once; later calls return nil.
func (c *Checker) CheckLeaderLog(id, term, firstIndex, lastIndex uint64, termAt func(i uint64) uint64) error {
	key := [2]uint64{id, term}
	if c.completeness[key] {
		return nil
	}
	c.completeness[key] = true
	idx := make([]uint64, 0, len(c.committed))
	for i, ce := range c.committed {
		if ce.term < term && i >= firstIndex {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	for _, i := range idx {
		want := c.committed[i].term
		if i > lastIndex {
			return fmt.Errorf("leader completeness: leader %d of term %d has last index %d, but index %d (term %d) is committed", id, term, lastIndex, i, want)
		}
		if got := termAt(i); got != want {
			return fmt.Errorf("leader completeness: leader %d of term %d has term %d at index %d, committed entry has term %d", id, term, got, i, want)
		}
	}
	return nil
}

// RequestRead records that a linearizable read with context ctx was issued
// now. A context may be reused once the read that carried it was answered.
func (c *Checker) RequestRead(ctx string) {
	c.reads[ctx] = c.maxCommit
}

// ObserveReadState checks a ReadIndex answer (thesis §6.4): the read index
// must cover every entry known committed before the read was issued.
func (c *Checker) ObserveReadState(id uint64, ctx string, index uint64) error {
	floor, ok := c.reads[ctx]
	if !ok {
		return fmt.Errorf("read index: node %d answered unknown read %q", id, ctx)
	}
	if index < floor {
		return fmt.Errorf("read index: node %d answered read %q with index %d, but %d was committed before it was issued", id, ctx, index, floor)
	}
	return nil
}

// ObserveReadServed checks the result of a read served on node id (thesis
// §6.4): the state at applied, with hash state, the read returned. Every
// write is ordered by its log index and a read returns the state at one
// index, so the read is linearizable if that index is at least every
// write's that completed before the read began (checked against the
// commit index known when it began, which every completed write is
// below), is one the writes really produced (state), and holds no write
// begun after the read ended (the driver applies only proposed entries,
// and proposing precedes applying).
func (c *Checker) ObserveReadServed(id uint64, key string, applied, state uint64) error {
	floor, ok := c.reads[key]
	if !ok {
		return fmt.Errorf("linearizability: node %d served unknown read %q", id, key)
	}
	if applied < floor {
		return fmt.Errorf("linearizability: node %d served read %q from state at index %d, but %d was committed before the read began", id, key, applied, floor)
	}
	if old, ok := c.states[applied]; ok && old != state {
		return fmt.Errorf("linearizability: node %d served read %q from state %016x at index %d, which no write sequence produced (%016x)", id, key, state, applied, old)
	}
	return nil
}

// MaxCommit returns the highest commit index reported so far.
func (c *Checker) MaxCommit() uint64 { return c.maxCommit }

// Leaders returns the number of terms that had a leader.
func (c *Checker) Leaders() int { return len(c.leaders) }
