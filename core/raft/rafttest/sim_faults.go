package rafttest

// The random scheduler: actions, their weights and fault profiles, and
// the operator actions (proposals, reads, partitions, crashes, membership
// changes, transfers, snapshots).

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/raftd/raftd/core/raft"
)

func (s *Sim) randomStep() error {
	x := s.rng.IntN(s.weightSum)
	act := 0
	for act < numActions-1 && x >= s.weights[act] {
		x -= s.weights[act]
		act++
	}
	switch act {
	case actTick:
		if s.clock != nil {
			return s.clockTickNext()
		}
		if id, ok := s.pick(s.live()); ok {
			return s.tick(s.nodes[id])
		}
	case actDeliver:
		for range 1 + s.rng.IntN(6) {
			if err := s.deliverRandom(); err != nil {
				return err
			}
		}
		if len(s.late) > 0 && s.rng.IntN(32) == 0 {
			return s.deliverLate()
		}
	case actReady:
		var ready []uint64
		for _, id := range s.live() {
			if s.nodes[id].rn.HasReady() {
				ready = append(ready, id)
			}
		}
		if id, ok := s.pick(ready); ok {
			return s.handleReady(s.nodes[id], false)
		}
	case actDrop:
		s.dropRandom()
	case actDuplicate:
		return s.duplicateRandom()
	case actDelay:
		if len(s.net) > 1 {
			i := s.rng.IntN(len(s.net))
			m := s.net[i]
			s.net = slices.Delete(s.net, i, i+1)
			s.net = append(s.net, m)
			s.tracef("delay %s", FormatMessage(m))
		}
	case actReplay:
		// Deliver again a message delivered long ago: a stale append,
		// response or vote from an earlier term or position.
		if len(s.history) > 0 {
			m := s.history[s.rng.IntN(len(s.history))]
			if !s.mayRedeliver(m) {
				return nil
			}
			m.Entries = slices.Clone(m.Entries)
			s.stats.MsgsDuped++
			s.tracef("replay:")
			return s.deliver(m, false)
		}
	case actPropose:
		return s.propose()
	case actRead:
		s.readIndex()
	case actPartition:
		s.partitionOrHeal()
	case actCrash:
		return s.crashOrRestart()
	case actConfChange:
		return s.confChange()
	case actTransfer:
		return s.transfer()
	case actSnapshot:
		return s.snapshot()
	case actLeaderBurst:
		// Several proposals straight at a node that believes it leads,
		// possibly a deposed one behind a partition: this is what grows
		// conflicting suffixes that later leaders must overwrite.
		if id, ok := s.pick(s.leaders()); ok {
			for range 1 + s.rng.IntN(6) {
				if err := s.proposeAt(s.nodes[id]); err != nil {
					return err
				}
			}
		}
	case actLeaderCrash:
		return s.crashLeader()
	case actCampaign:
		return s.campaign()
	case actTickAll:
		if s.clock != nil {
			return s.clockAdvance(1000)
		}
		for _, id := range s.live() {
			if err := s.tick(s.nodes[id]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Sim) propose() error {
	id, ok := s.pick(s.live())
	if !ok {
		return nil
	}
	return s.proposeAt(s.nodes[id])
}

func (s *Sim) proposeAt(n *simNode) error {
	id := n.id
	size := s.rng.IntN(24)
	if s.rng.IntN(20) == 0 {
		size = 200 + s.rng.IntN(400)
	}
	payload := func() []byte {
		s.seq++
		data := fmt.Appendf(nil, "p%d.", s.seq)
		for len(data) < size {
			data = append(data, 'x')
		}
		s.proposed[string(data)] = true
		return data
	}
	s.stats.Proposals++
	var err error
	if s.rng.IntN(5) == 0 {
		batch := make([][]byte, 1+s.rng.IntN(4))
		for i := range batch {
			batch[i] = payload()
		}
		err = n.rn.ProposeBatch(batch)
		s.tracef("propose batch of %d at %d (%q...): %v", len(batch), id, batch[0], err)
	} else {
		data := payload()
		err = n.rn.Propose(data)
		s.tracef("propose at %d %q: %v", id, data, err)
	}
	if err != nil {
		s.stats.ProposalsDropped++
		if !errors.Is(err, raft.ErrProposalDropped) && !errors.Is(err, raft.ErrNoLeader) {
			return fmt.Errorf("node %d: Propose returned an undocumented error: %w", id, err)
		}
	}
	return s.maybeReady(n)
}

func (s *Sim) partitionOrHeal() {
	if s.group != nil || s.oneWay != nil {
		s.heal()
		s.tracef("heal")
		return
	}
	defer s.holdInFlight()
	s.stats.Partitions++
	switch s.rng.IntN(3) {
	case 0:
		// Isolate one node (with lease reads, often a leader: it keeps
		// answering from its lease while the others elect a new one).
		lone := s.ids[s.rng.IntN(len(s.ids))]
		if ld := s.leader(); ld != nil && s.prof.leaseReads && s.rng.IntN(2) == 0 {
			lone = ld.id
		}
		s.group = map[uint64]int{lone: 1}
	case 1:
		s.group = map[uint64]int{}
		for _, id := range s.ids {
			s.group[id] = s.rng.IntN(2)
		}
	default:
		// Cut a few links in one direction only.
		s.oneWay = map[[2]uint64]bool{}
		var cut []string
		for range 1 + s.rng.IntN(3) {
			a, b := s.ids[s.rng.IntN(len(s.ids))], s.ids[s.rng.IntN(len(s.ids))]
			if a != b && !s.oneWay[[2]uint64{a, b}] {
				s.oneWay[[2]uint64{a, b}] = true
				cut = append(cut, fmt.Sprintf("%d->%d", a, b))
			}
		}
		s.tracef("partition: one-way cuts %s", strings.Join(cut, " "))
		return
	}
	var parts [2][]uint64
	for _, id := range s.ids {
		parts[s.group[id]] = append(parts[s.group[id]], id)
	}
	s.tracef("partition (%s) / (%s)", joinIDs(parts[0]), joinIDs(parts[1]))
}

func (s *Sim) crash(n *simNode, why string) {
	n.rn = nil
	n.leader = false
	n.serving = nil
	s.loseUnsynced(n)
	s.stats.Crashes++
	s.tracef("crash %d (%s)", n.id, why)
}

func (s *Sim) crashOrRestart() error {
	var down []uint64
	for _, id := range s.ids {
		if s.nodes[id].rn == nil {
			down = append(down, id)
		}
	}
	if len(down) > 0 && s.rng.IntN(4) != 0 {
		id, _ := s.pick(down)
		s.stats.Restarts++
		return s.start(s.nodes[id], s.rng.IntN(2) == 0)
	}
	id, ok := s.pick(s.live())
	if !ok {
		return nil
	}
	n := s.nodes[id]
	if ld := s.leader(); ld != nil && s.frng.IntN(3) == 0 {
		// A leader dies while writing its new entries, which it has
		// already sent (see handleReady).
		if err := s.proposeAt(ld); err != nil || ld.rn == nil {
			return err
		}
		if ld.rn.HasReady() {
			return s.handleReady(ld, true)
		}
	}
	if n.rn.HasReady() && s.rng.IntN(3) == 0 {
		return s.handleReady(n, true)
	}
	s.crash(n, "between Ready cycles")
	return nil
}

// crashLeader crashes a running leader after delivering a random part of
// its outgoing messages: some followers get its latest entries, others do
// not (the partial replication of Raft figure 8).
func (s *Sim) crashLeader() error {
	id, ok := s.pick(s.leaders())
	if !ok {
		return nil
	}
	n := s.nodes[id]
	if s.rng.IntN(2) == 0 {
		// A last write that may reach only some followers.
		for range 1 + s.rng.IntN(3) {
			if err := s.proposeAt(n); err != nil {
				return err
			}
		}
	}
	if n.rn.HasReady() {
		if err := s.handleReady(n, false); err != nil {
			return err
		}
	}
	// Each message of the leader on the wire arrives or is lost with it.
	var keep, out []raft.Message
	for _, m := range s.net {
		if m.From == id {
			out = append(out, m)
		} else {
			keep = append(keep, m)
		}
	}
	s.net = keep
	for _, m := range out {
		if s.rng.IntN(2) == 0 {
			s.stats.MsgsDropped++
			s.tracef("lost with its sender %s", FormatMessage(m))
			continue
		}
		if err := s.deliver(m, true); err != nil {
			return err
		}
	}
	if n.rn == nil {
		return nil
	}
	// Bring back a node that crashed earlier (often an earlier leader,
	// with entries of its old term), so the cluster keeps a quorum.
	var down []uint64
	for _, d := range s.ids {
		if s.nodes[d].rn == nil {
			down = append(down, d)
		}
	}
	s.crash(n, "leader, after partial replication")
	s.stats.LeaderCrashes++
	if d, ok := s.pick(down); ok && s.rng.IntN(4) != 0 {
		s.stats.Restarts++
		return s.start(s.nodes[d], s.rng.IntN(2) == 0)
	}
	return nil
}

// confChange proposes one random membership change through a running node
// (usually the leader), judged against that node's applied configuration.
func (s *Sim) confChange() error {
	n := s.leader()
	if n == nil || s.rng.IntN(5) == 0 {
		id, ok := s.pick(s.live())
		if !ok {
			return nil
		}
		n = s.nodes[id]
	}
	voters, learners := n.conf.Voters, n.conf.Learners
	var outsiders []uint64
	for id := uint64(1); id <= uint64(s.cfg.Nodes+2); id++ {
		if !slices.Contains(voters, id) && !slices.Contains(learners, id) {
			outsiders = append(outsiders, id)
		}
	}
	minVoters := (s.cfg.Nodes + 1) / 2
	var cc raft.ConfChange
	switch r := s.rng.IntN(10); {
	case r < 3 && len(outsiders) > 0:
		cc = raft.ConfChange{Type: raft.ConfChangeAddLearner, NodeID: outsiders[s.rng.IntN(len(outsiders))]}
	case r < 6 && len(learners) > 0:
		cc = raft.ConfChange{Type: raft.ConfChangeAddNode, NodeID: learners[s.rng.IntN(len(learners))]}
	case r < 7 && len(outsiders) > 0:
		cc = raft.ConfChange{Type: raft.ConfChangeAddNode, NodeID: outsiders[s.rng.IntN(len(outsiders))]}
	case r < 8 && len(learners) > 0:
		cc = raft.ConfChange{Type: raft.ConfChangeRemoveNode, NodeID: learners[s.rng.IntN(len(learners))]}
	case len(voters) > minVoters:
		cc = raft.ConfChange{Type: raft.ConfChangeRemoveNode, NodeID: voters[s.rng.IntN(len(voters))]}
	default:
		return nil
	}
	if cc.Type != raft.ConfChangeRemoveNode && s.nodes[cc.NodeID] == nil {
		// A brand-new node starts with empty storage and no configuration;
		// the leader catches it up by log or snapshot.
		if err := s.addNode(cc.NodeID, raft.NewMemoryStorage()); err != nil {
			return err
		}
	}
	err := n.rn.ProposeConfChange(cc)
	s.tracef("propose conf change at %d: %s %d: %v", n.id, cc.Type, cc.NodeID, err)
	return s.maybeReady(n)
}

func (s *Sim) transfer() error {
	n := s.leader()
	if n == nil {
		return nil
	}
	target, ok := s.pick(n.conf.Voters)
	if !ok || target == n.id {
		return nil
	}
	s.stats.TransfersRequested++
	s.tracef("transfer leadership %d -> %d", n.id, target)
	n.rn.TransferLeader(target)
	if s.prof.leaseReads && s.rng.IntN(2) == 0 {
		// Abort at once, after the MsgTimeoutNow (if the target was up to
		// date) has left: the target may still win.
		if err := s.maybeReady(n); err != nil || n.rn == nil {
			return err
		}
		s.tracef("abort transfer at %d", n.id)
		n.rn.TransferLeader(n.id)
	}
	return nil
}

// snapshot takes a snapshot of a node's state machine at its applied index
// and compacts its log below it (keeping a random tail).
func (s *Sim) snapshot() error {
	id, ok := s.pick(s.live())
	if !ok {
		return nil
	}
	n := s.nodes[id]
	old, err := n.store.Snapshot()
	if err != nil {
		return fmt.Errorf("node %d: read snapshot: %w", id, err)
	}
	if n.fsmApplied != n.handed || n.handed <= old.Metadata.Index {
		return nil
	}
	cs := cloneConf(n.conf)
	snap, err := n.store.CreateSnapshot(n.handed, &cs, encodeSnapData(n.fsmApplied, n.fsmState))
	if err != nil {
		return fmt.Errorf("node %d: create snapshot at %d: %w", id, n.handed, err)
	}
	s.stats.SnapsCreated++
	first, _ := n.store.FirstIndex()
	keep := uint64(s.rng.IntN(6))
	compact := snap.Metadata.Index
	if compact > first+keep {
		compact -= keep
	}
	if compact >= first {
		if err := n.store.Compact(compact); err != nil {
			return fmt.Errorf("node %d: compact %d: %w", id, compact, err)
		}
	}
	s.tracef("%d snapshot %d/%d %s, compact to %d", id, snap.Metadata.Term, snap.Metadata.Index, FormatConfState(cs), compact)
	// Storing a snapshot and compacting are synced writes: everything
	// written before them is durable too.
	if err := s.synced(n); err != nil {
		return err
	}
	return nil
}
