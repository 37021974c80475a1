package rafttest

// Fault profiles: the scheduler's actions and their weights, the named
// profiles that scale them, and the drifting clocks of the lease-reads
// profile.

import (
	"fmt"
	"strings"
)

// Actions the scheduler chooses from at every step.
const (
	actTick = iota
	actDeliver
	actReady
	actDrop
	actDuplicate
	actDelay
	actReplay
	actPropose
	actRead
	actPartition
	actCrash
	actConfChange
	actTransfer
	actSnapshot
	actTickAll
	actLeaderBurst
	actLeaderCrash
	actCampaign
	numActions
)

// baseWeights are the relative frequencies of the actions (per mille).
var baseWeights = [numActions]int{
	actTick: 250, actDeliver: 310, actReady: 200, actDrop: 20, actDuplicate: 10,
	actDelay: 10, actReplay: 10, actPropose: 80, actRead: 40, actPartition: 5,
	actCrash: 7, actConfChange: 10, actTransfer: 5, actSnapshot: 13, actTickAll: 60,
	actLeaderBurst: 10,
	// actLeaderCrash and actCampaign only run in profiles that add a
	// weight for them.
	actLeaderCrash: 0,
	actCampaign:    0,
}

// simProfile scales some action weights and sets some options, one
// profile per seed, so that different seeds stress different parts of the
// protocol.
type simProfile struct {
	name  string
	scale map[int]int
	// oneEntryPerMsg forces MsgApp to carry a single entry, so that a
	// follower can hold an old-term entry without the new leader's next
	// one (the figure 8 situation).
	oneEntryPerMsg bool
	// add sets the weight of actions whose base weight is 0.
	add map[int]int
	// set replaces the base weight of some actions.
	set map[int]int
	// leaseReads turns on ReadOnlyLeaseBased (and so check-quorum).
	leaseReads bool
	// driftPercent > 0 drives the nodes' clocks from one simulated time,
	// each node ticking at its own fixed rate; the rates of any two nodes
	// differ by at most this percentage (see simClock). Otherwise a tick is
	// an action on a random node, i.e. clocks drift without bound, which
	// leases do not survive.
	driftPercent int
	// reuseReadCtx numbers each node incarnation's read contexts from 1
	// again, as a driver that forgets them across restarts would.
	reuseReadCtx bool
}

var profiles = []simProfile{
	{name: "calm"},
	{name: "lossy", scale: map[int]int{actDrop: 5, actDuplicate: 4, actDelay: 4, actReplay: 5}},
	{name: "crashy", scale: map[int]int{actCrash: 4, actPartition: 3, actLeaderBurst: 3, actRead: 3}},
	{name: "churn", scale: map[int]int{actConfChange: 4, actTransfer: 4, actSnapshot: 3, actRead: 2}},
	{name: "elections", scale: map[int]int{actCrash: 6, actPartition: 4, actLeaderBurst: 4, actTickAll: 2, actDrop: 3, actRead: 3}, oneEntryPerMsg: true},
	// figure8 (Raft §5.4.2): leaders write a few entries and die after
	// replicating part of them, again and again, and crashed nodes come
	// back quickly; a node that was leader in an old term is often
	// re-elected and re-replicates its old-term entries to a majority.
	// A leader that commits such an entry by counting replicas is caught
	// when a later leader overwrites it.
	{name: "figure8", scale: map[int]int{actCrash: 2, actLeaderBurst: 5, actTickAll: 12}, oneEntryPerMsg: true, add: map[int]int{actLeaderCrash: 60}},
	// lease-reads (thesis §6.4.1): lease-based reads on clocks whose
	// rates differ within the margin the lease allows, many reads, read
	// contexts reused across restarts, leadership transfers (and aborts),
	// forced campaigns, partitions and stale or late messages. A read
	// answered from a lease that another leader could break is caught
	// against the linearizable order.
	{
		name: "lease-reads",
		scale: map[int]int{actRead: 5, actTransfer: 8, actPartition: 4, actCrash: 3, actDelay: 4,
			actReplay: 4, actDrop: 2, actPropose: 2, actLeaderBurst: 2},
		add: map[int]int{actCampaign: 40},
		// Fewer ticks between events: a lease lasts a few ticks, and what
		// breaks one must happen within them.
		set:          map[int]int{actTick: 60, actTickAll: 10},
		leaseReads:   true,
		driftPercent: raftLeaseDriftPercent,
		reuseReadCtx: true,
	},
}

// raftLeaseDriftPercent is the clock drift raft's lease rule tolerates
// (see raft.ReadOnlyLeaseBased).
const raftLeaseDriftPercent = 10

// profileIndex returns the index of the profile called name, or an error
// listing the known names.
func profileIndex(name string) (int, error) {
	for i, p := range profiles {
		if p.name == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("rafttest: unknown sim profile %q (known: %s)", name, strings.Join(ProfileNames(), ", "))
}

// ProfileNames lists the simulator's fault profiles.
func ProfileNames() []string {
	out := make([]string, len(profiles))
	for i, p := range profiles {
		out[i] = p.name
	}
	return out
}

// simClock drives the nodes' ticks from one simulated time when a profile
// bounds clock drift. Each node ticks every period units of time, its
// period fixed for the node's life (a restart keeps the hardware clock)
// and drawn in [1000, 1000+10*driftPercent], so no node's clock runs more
// than driftPercent faster than another's.
type simClock struct {
	now    int64
	period map[uint64]int64
	next   map[uint64]int64
}

// clockStart sets up n's clock when it (re)starts: its period is drawn
// once per node, its next tick comes after a random phase.
func (s *Sim) clockStart(n *simNode) {
	c := s.clock
	if c == nil {
		return
	}
	p, ok := c.period[n.id]
	if !ok {
		p = 1000 + s.rng.Int64N(int64(10*s.prof.driftPercent)+1)
		c.period[n.id] = p
	}
	c.next[n.id] = c.now + 1 + s.rng.Int64N(p)
}

// clockNextDue returns the running node whose tick comes first (the lowest
// id on a tie) and when.
func (s *Sim) clockNextDue() (uint64, int64, bool) {
	var best uint64
	var at int64
	for _, id := range s.live() {
		if t := s.clock.next[id]; best == 0 || t < at {
			best, at = id, t
		}
	}
	return best, at, best != 0
}

// clockTickNext advances time to the next tick of any running node and
// ticks it.
func (s *Sim) clockTickNext() error {
	id, at, ok := s.clockNextDue()
	if !ok {
		return nil
	}
	return s.clockTick(id, at)
}

// clockAdvance advances time by d, ticking the running nodes whose ticks
// fall within it, in time order.
func (s *Sim) clockAdvance(d int64) error {
	until := s.clock.now + d
	for {
		id, at, ok := s.clockNextDue()
		if !ok || at > until {
			break
		}
		if err := s.clockTick(id, at); err != nil {
			return err
		}
	}
	s.clock.now = until
	return nil
}

func (s *Sim) clockTick(id uint64, at int64) error {
	c := s.clock
	c.now = at
	c.next[id] = at + c.period[id]
	return s.tick(s.nodes[id])
}
