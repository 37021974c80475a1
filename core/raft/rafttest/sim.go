package rafttest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/raftd/raftd/core/raft"
)

// SimConfig configures one simulated run. The run is a pure function of it:
// the same SimConfig always produces the same history.
type SimConfig struct {
	// Seed selects the history.
	Seed uint64
	// Nodes is the size of the initial voter set (IDs 1..Nodes).
	Nodes int
	// Steps is the number of random fault-injecting steps before the
	// final heal.
	Steps int
	// SettleRounds bounds the fault-free rounds (one tick per node, then
	// delivery until quiescent) the cluster may take after the final heal
	// to elect a leader and converge. The default is 30 election timeouts
	// (300 rounds; over 21,000 seeds the worst case needed 133).
	SettleRounds int
	// TraceLines is how many trace lines a failure reports. The default
	// is 60.
	TraceLines int
}

// SimStats counts what a run exercised, so that a test can prove the
// random history was not vacuous.
type SimStats struct {
	Steps, Terms, Commit                   int
	Proposals, ProposalsDropped            int
	Crashes, Restarts, Partitions          int
	SnapsCreated, SnapsSent, SnapsApplied  int
	ConfChangesApplied, TransfersRequested int
	ReadsRequested, ReadsAnswered          int
	MsgsDelivered, MsgsDropped, MsgsDuped  int
	// Truncations counts appends that replaced a conflicting suffix;
	// AppRejects counts delivered MsgAppResp rejections (conflict hints);
	// TimeoutNows counts delivered MsgTimeoutNow (transfers carried out).
	Truncations, AppRejects, TimeoutNows int
	// LeaderCrashes counts leaders crashed right after a partial
	// replication (the figure8 profile).
	LeaderCrashes int
	SettleRounds  int
}

// Add accumulates o into s.
func (s *SimStats) Add(o SimStats) {
	s.Steps += o.Steps
	s.Terms += o.Terms
	s.Commit += o.Commit
	s.Proposals += o.Proposals
	s.ProposalsDropped += o.ProposalsDropped
	s.Crashes += o.Crashes
	s.Restarts += o.Restarts
	s.Partitions += o.Partitions
	s.SnapsCreated += o.SnapsCreated
	s.SnapsSent += o.SnapsSent
	s.SnapsApplied += o.SnapsApplied
	s.ConfChangesApplied += o.ConfChangesApplied
	s.TransfersRequested += o.TransfersRequested
	s.ReadsRequested += o.ReadsRequested
	s.ReadsAnswered += o.ReadsAnswered
	s.MsgsDelivered += o.MsgsDelivered
	s.MsgsDropped += o.MsgsDropped
	s.MsgsDuped += o.MsgsDuped
	s.Truncations += o.Truncations
	s.AppRejects += o.AppRejects
	s.TimeoutNows += o.TimeoutNows
	s.LeaderCrashes += o.LeaderCrashes
	if o.SettleRounds > s.SettleRounds {
		s.SettleRounds = o.SettleRounds
	}
}

// Engine parameters used by the simulator.
const (
	simElectionTick  = 10
	simHeartbeatTick = 2
	maxInFlightMsgs  = 256 // the network drops the oldest beyond this
)

// Sim is a whole cluster of RawNodes on MemoryStorage driven by a seeded
// random scheduler that plays the network, the disks and the operators.
// It checks the Raft safety properties after every step (see Checker).
type Sim struct {
	cfg   SimConfig
	rng   *rand.Rand
	chk   *Checker
	nodes map[uint64]*simNode
	ids   []uint64 // sorted IDs of every node ever created
	net   []raft.Message
	// group is the partition: nodes in different groups cannot talk. nil
	// means healed.
	group map[uint64]int
	// oneWay lists directed links (from, to) that lose every message, a
	// partial partition; nil when healed.
	oneWay  map[[2]uint64]bool
	step    int
	seq     int
	trace   []string // ring buffer of the last TraceLines lines
	ntrace  int
	stats   SimStats
	raftCfg raft.Config // template; ID, Storage, Applied, Seed set per node
	// faultForgetVote breaks the driver on purpose: a restarted node loses
	// the Term and Vote of its HardState (as if they were never fsynced).
	// Tests use it to prove the checks fire.
	faultForgetVote bool
	// faultDeafSettle breaks the network after the final heal: nothing is
	// delivered. Tests use it to prove the liveness check fires.
	faultDeafSettle bool
	// weights are the action weights of this run's profile.
	weights   [numActions]int
	weightSum int
	// history holds recently delivered messages, for replays.
	history []raft.Message
	// proposed holds every payload ever proposed: an applied normal entry
	// must carry one of them (or be empty), never anything else.
	proposed map[string]bool
}

type simNode struct {
	id    uint64
	store *raft.MemoryStorage
	rn    *raft.RawNode // nil while crashed
	// incarnation counts starts, to derive distinct engine seeds.
	incarnation uint64
	// handed is the last index the engine handed out as committed (or
	// installed by snapshot) in this incarnation.
	handed uint64
	// conf is the configuration as of handed.
	conf raft.ConfState
	// fsmApplied and fsmState are the state machine; fsmState is the hash
	// chain of everything applied (see NextState).
	fsmApplied, fsmState uint64
	// leader remembers whether the node was last seen leading.
	leader bool
	// markers counts settle markers handed to the state machine.
	markers int
	// confs is the configuration after every applied conf change or
	// installed snapshot, in index order; it survives crashes (what a
	// durable state machine knows).
	confs []confAt
}

// SimFailure is the error returned by a failing run: the violation, the
// seed to replay it and the last steps of the trace.
type SimFailure struct {
	Seed  uint64
	Step  int
	Err   error
	Trace []string
}

func (f *SimFailure) Error() string {
	return fmt.Sprintf("seed %d step %d: %v\n  replay: go test ./core/raft/rafttest -run 'TestSim$' -sim.start=%d -sim.seeds=1 -sim.trace=500\n  last %d trace lines:\n    %s",
		f.Seed, f.Step, f.Err, f.Seed, len(f.Trace), strings.Join(f.Trace, "\n    "))
}

// NewSim builds the cluster described by cfg. Every initial node starts
// with an empty log and the founding voters as its storage's ConfState;
// the engine writes them into the log as committed entries.
func NewSim(cfg SimConfig) (*Sim, error) {
	if cfg.Nodes < 1 {
		return nil, fmt.Errorf("rafttest: sim needs at least one node, got %d", cfg.Nodes)
	}
	if cfg.TraceLines <= 0 {
		cfg.TraceLines = 60
	}
	if cfg.SettleRounds == 0 {
		cfg.SettleRounds = 30 * simElectionTick
	}
	s := &Sim{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		chk:      NewChecker(),
		nodes:    map[uint64]*simNode{},
		trace:    make([]string, cfg.TraceLines),
		proposed: map[string]bool{},
	}
	s.raftCfg = raft.Config{
		ElectionTick:  simElectionTick,
		HeartbeatTick: simHeartbeatTick,
		// Small limits so batching, flow control and message splitting
		// are exercised by short histories.
		MaxSizePerMsg:            uint64(64 << s.rng.IntN(6)),
		MaxCommittedSizePerReady: uint64(256 << s.rng.IntN(6)),
		MaxInflightMsgs:          1 + s.rng.IntN(8),
	}
	if s.rng.IntN(3) == 0 {
		s.raftCfg.MaxInflightBytes = uint64(256 << s.rng.IntN(4))
	}
	if s.rng.IntN(4) == 0 {
		s.raftCfg.MaxUncommittedEntriesSize = uint64(512 << s.rng.IntN(4))
	}
	// Pre-vote and check-quorum are on by default; sometimes run without
	// them, which must still be safe.
	s.raftCfg.DisablePreVote = s.rng.IntN(8) == 0
	s.raftCfg.DisableCheckQuorum = s.rng.IntN(8) == 0
	s.raftCfg.DisableProposalForwarding = s.rng.IntN(10) == 0
	prof := profiles[s.rng.IntN(len(profiles))]
	for a, w := range baseWeights {
		if k := prof.scale[a]; k > 0 {
			w *= k
		}
		w += prof.add[a]
		s.weights[a] = w
		s.weightSum += w
	}
	if prof.oneEntryPerMsg {
		s.raftCfg.MaxSizePerMsg = 1
	}
	s.tracef("config: profile %s, %d nodes MaxSizePerMsg=%d MaxCommittedSizePerReady=%d MaxInflightMsgs=%d MaxInflightBytes=%d MaxUncommitted=%d DisablePreVote=%v DisableCheckQuorum=%v DisableForwarding=%v",
		prof.name, cfg.Nodes, s.raftCfg.MaxSizePerMsg, s.raftCfg.MaxCommittedSizePerReady, s.raftCfg.MaxInflightMsgs,
		s.raftCfg.MaxInflightBytes, s.raftCfg.MaxUncommittedEntriesSize, s.raftCfg.DisablePreVote,
		s.raftCfg.DisableCheckQuorum, s.raftCfg.DisableProposalForwarding)

	voters := make([]uint64, cfg.Nodes)
	for i := range voters {
		voters[i] = uint64(i + 1)
	}
	for _, id := range voters {
		st := raft.NewMemoryStorage()
		st.SetConfState(raft.ConfState{Voters: voters})
		if err := s.addNode(id, st); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func encodeSnapData(index, state uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, index)
	binary.BigEndian.PutUint64(b[8:], state)
	return b
}

func decodeSnapData(b []byte) (index, state uint64, err error) {
	if len(b) != 16 {
		return 0, 0, fmt.Errorf("snapshot descriptor has %d bytes, want 16", len(b))
	}
	return binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), nil
}

func (s *Sim) addNode(id uint64, st *raft.MemoryStorage) error {
	n := &simNode{id: id, store: st}
	s.nodes[id] = n
	s.ids = append(s.ids, id)
	slices.Sort(s.ids)
	return s.start(n, false)
}

// start (re)creates n's engine from what its storage holds. With
// durableFSM the state machine kept its state across the crash (like a
// plugin that persists its applied index); otherwise it is restored from
// the storage snapshot.
func (s *Sim) start(n *simNode, durableFSM bool) error {
	snap, err := n.store.Snapshot()
	if err != nil {
		return fmt.Errorf("node %d: read snapshot: %w", n.id, err)
	}
	if !durableFSM || n.fsmApplied < snap.Metadata.Index {
		n.fsmApplied, n.fsmState = 0, 0
		if !snap.IsEmpty() {
			n.fsmApplied, n.fsmState, err = decodeSnapData(snap.Data)
			if err != nil {
				return fmt.Errorf("node %d: %w", n.id, err)
			}
			if n.fsmApplied != snap.Metadata.Index {
				return fmt.Errorf("node %d: snapshot at %d describes state at %d", n.id, snap.Metadata.Index, n.fsmApplied)
			}
		}
	}
	if s.faultForgetVote && n.incarnation > 0 {
		hs, _, _ := n.store.InitialState()
		hs.Term, hs.Vote = 0, raft.None
		if err := n.store.SetHardState(hs); err != nil {
			return err
		}
	}
	n.handed = snap.Metadata.Index
	n.conf = cloneConf(snap.Metadata.ConfState)
	if !snap.IsEmpty() {
		// The snapshot may have been persisted by a Ready whose install
		// the crash interrupted: record its configuration here too.
		n.confs = append(n.confs, confAt{snap.Metadata.Index, cloneConf(n.conf)})
	}
	// A durable state machine may resume at its own applied index; the
	// engine must then rebuild the configuration as of that index.
	if durableFSM && n.fsmApplied > n.handed && s.rng.IntN(2) == 0 {
		n.handed = n.fsmApplied
		n.conf = n.confAt(n.handed, n.conf)
	}
	n.incarnation++
	n.leader = false
	cfg := s.raftCfg
	cfg.ID = n.id
	cfg.Storage = n.store
	cfg.Applied = n.handed
	cfg.Seed = int64(s.cfg.Seed*1000003 + n.id*131 + n.incarnation)
	rn, err := raft.NewRawNode(&cfg)
	if err != nil {
		return fmt.Errorf("node %d: restart: %w", n.id, err)
	}
	n.rn = rn
	st := rn.Status()
	s.tracef("start %d (incarnation %d, durable fsm %v): term %d commit %d applied %d fsm %d snap %d %s",
		n.id, n.incarnation, durableFSM, st.Term, st.Commit, cfg.Applied, n.fsmApplied, snap.Metadata.Index, FormatConfState(n.conf))
	if !st.ConfState.Equal(n.conf) {
		return fmt.Errorf("node %d: restarted with Applied=%d and configuration %s, want %s (as of index %d)",
			n.id, cfg.Applied, FormatConfState(st.ConfState), FormatConfState(n.conf), cfg.Applied)
	}
	return s.chk.ObserveRestart(n.id, st.Commit, n.fsmApplied, n.fsmState)
}

// confAt returns the configuration in effect after applying index i, or
// def if no change at or below i is recorded.
func (n *simNode) confAt(i uint64, def raft.ConfState) raft.ConfState {
	// Replays after a restart append the same changes again, so the list
	// is not sorted: take the change with the highest index <= i.
	cs, best := def, uint64(0)
	for _, c := range n.confs {
		if c.index <= i && c.index >= best {
			cs, best = c.cs, c.index
		}
	}
	return cloneConf(cs)
}

func cloneConf(cs raft.ConfState) raft.ConfState {
	return raft.ConfState{Voters: slices.Clone(cs.Voters), Learners: slices.Clone(cs.Learners)}
}

func (s *Sim) tracef(format string, args ...any) {
	s.trace[s.ntrace%len(s.trace)] = fmt.Sprintf("[%d] ", s.step) + fmt.Sprintf(format, args...)
	s.ntrace++
}

func (s *Sim) traceLines() []string {
	var out []string
	start := max(s.ntrace-len(s.trace), 0)
	for i := start; i < s.ntrace; i++ {
		out = append(out, s.trace[i%len(s.trace)])
	}
	return out
}

func (s *Sim) fail(err error) *SimFailure {
	return &SimFailure{Seed: s.cfg.Seed, Step: s.step, Err: err, Trace: s.traceLines()}
}

// Run executes cfg.Steps random steps, then heals everything and waits for
// the cluster to converge. It returns a *SimFailure on the first violation.
func (s *Sim) Run() (SimStats, error) {
	if err := s.check(); err != nil {
		return s.stats, s.fail(err)
	}
	for s.step = 1; s.step <= s.cfg.Steps; s.step++ {
		if err := s.randomStep(); err != nil {
			return s.stats, s.fail(err)
		}
		if err := s.check(); err != nil {
			return s.stats, s.fail(err)
		}
	}
	s.stats.Steps = s.cfg.Steps
	if err := s.settle(); err != nil {
		return s.stats, s.fail(err)
	}
	s.stats.Terms = s.chk.Leaders()
	s.stats.Commit = int(s.chk.MaxCommit())
	return s.stats, nil
}

// live returns the IDs of running nodes, sorted.
func (s *Sim) live() []uint64 {
	out := make([]uint64, 0, len(s.ids))
	for _, id := range s.ids {
		if s.nodes[id].rn != nil {
			out = append(out, id)
		}
	}
	return out
}

func (s *Sim) pick(ids []uint64) (uint64, bool) {
	if len(ids) == 0 {
		return 0, false
	}
	return ids[s.rng.IntN(len(ids))], true
}

// leader returns a running node that believes it leads, preferring the
// highest term, or nil.
func (s *Sim) leader() *simNode {
	var best *simNode
	var bestTerm uint64
	for _, id := range s.live() {
		n := s.nodes[id]
		st := n.rn.Status()
		if st.RaftState == raft.StateLeader && (best == nil || st.Term > bestTerm) {
			best, bestTerm = n, st.Term
		}
	}
	return best
}

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
	numActions
)

// baseWeights are the relative frequencies of the actions (per mille).
var baseWeights = [numActions]int{
	actTick: 250, actDeliver: 310, actReady: 200, actDrop: 20, actDuplicate: 10,
	actDelay: 10, actReplay: 10, actPropose: 80, actRead: 40, actPartition: 5,
	actCrash: 7, actConfChange: 10, actTransfer: 5, actSnapshot: 13, actTickAll: 60,
	actLeaderBurst: 10,
	// actLeaderCrash only runs in profiles that add a weight for it.
	actLeaderCrash: 0,
}

// profiles scale some weights, one profile per seed, so that different
// seeds stress different parts of the protocol.
var profiles = []struct {
	name  string
	scale map[int]int
	// oneEntryPerMsg forces MsgApp to carry a single entry, so that a
	// follower can hold an old-term entry without the new leader's next
	// one (the figure 8 situation).
	oneEntryPerMsg bool
	// add sets the weight of actions whose base weight is 0.
	add map[int]int
}{
	{"calm", nil, false, nil},
	{"lossy", map[int]int{actDrop: 5, actDuplicate: 4, actDelay: 4, actReplay: 5}, false, nil},
	{"crashy", map[int]int{actCrash: 4, actPartition: 3, actLeaderBurst: 3, actRead: 3}, false, nil},
	{"churn", map[int]int{actConfChange: 4, actTransfer: 4, actSnapshot: 3, actRead: 2}, false, nil},
	{"elections", map[int]int{actCrash: 6, actPartition: 4, actLeaderBurst: 4, actTickAll: 2, actDrop: 3, actRead: 3}, true, nil},
	// figure8 (Raft §5.4.2): leaders write a few entries and die after
	// replicating part of them, again and again, and crashed nodes come
	// back quickly; a node that was leader in an old term is often
	// re-elected and re-replicates its old-term entries to a majority.
	// A leader that commits such an entry by counting replicas is caught
	// when a later leader overwrites it.
	{"figure8", map[int]int{actCrash: 2, actLeaderBurst: 5, actTickAll: 12}, true, map[int]int{actLeaderCrash: 60}},
}

func (s *Sim) randomStep() error {
	x := s.rng.IntN(s.weightSum)
	act := 0
	for act < numActions-1 && x >= s.weights[act] {
		x -= s.weights[act]
		act++
	}
	switch act {
	case actTick:
		if id, ok := s.pick(s.live()); ok {
			return s.tick(s.nodes[id])
		}
	case actDeliver:
		for range 1 + s.rng.IntN(6) {
			if err := s.deliverRandom(); err != nil {
				return err
			}
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
		s.transfer()
	case actSnapshot:
		return s.snapshot()
	case actLeaderBurst:
		// Several proposals straight at a node that believes it leads,
		// possibly a deposed one behind a partition: this is what grows
		// conflicting suffixes that later leaders must overwrite.
		var leaders []uint64
		for _, id := range s.live() {
			if s.nodes[id].rn.Status().RaftState == raft.StateLeader {
				leaders = append(leaders, id)
			}
		}
		if id, ok := s.pick(leaders); ok {
			for range 1 + s.rng.IntN(6) {
				if err := s.proposeAt(s.nodes[id]); err != nil {
					return err
				}
			}
		}
	case actLeaderCrash:
		return s.crashLeader()
	case actTickAll:
		for _, id := range s.live() {
			if err := s.tick(s.nodes[id]); err != nil {
				return err
			}
		}
	}
	return nil
}

// tick advances n's clock by one tick and, most of the time, lets its
// driver run a Ready cycle right away.
func (s *Sim) tick(n *simNode) error {
	n.rn.Tick()
	return s.maybeReady(n)
}

func (s *Sim) maybeReady(n *simNode) error {
	if n.rn != nil && n.rn.HasReady() && s.rng.IntN(3) != 0 {
		return s.handleReady(n, false)
	}
	return nil
}

// handleReady runs one driver cycle on n: persist snapshot, hard state and
// entries; then (unless crashBeforeSend) send messages, install the
// snapshot into the state machine, apply committed entries and Advance.
func (s *Sim) handleReady(n *simNode, crashBeforeSend bool) error {
	rd := n.rn.Ready()
	if rd.SoftState != nil {
		s.tracef("%d soft state: %s lead=%d", n.id, rd.SoftState.RaftState, rd.SoftState.Lead)
	}
	if !rd.Snapshot.IsEmpty() {
		if err := n.store.ApplySnapshot(rd.Snapshot); err != nil {
			return fmt.Errorf("node %d: persist snapshot %d/%d: %w", n.id, rd.Snapshot.Metadata.Term, rd.Snapshot.Metadata.Index, err)
		}
		s.tracef("%d persist snapshot %d/%d %s", n.id, rd.Snapshot.Metadata.Term, rd.Snapshot.Metadata.Index, FormatConfState(rd.Snapshot.Metadata.ConfState))
	}
	if len(rd.Entries) > 0 {
		if last, _ := n.store.LastIndex(); rd.Entries[0].Index <= last {
			s.stats.Truncations++
		}
		if err := n.store.Append(rd.Entries); err != nil {
			return fmt.Errorf("node %d: persist entries [%d,%d]: %w", n.id, rd.Entries[0].Index, rd.Entries[len(rd.Entries)-1].Index, err)
		}
		var prevTerm uint64
		if t, err := n.store.Term(rd.Entries[0].Index - 1); err == nil {
			prevTerm = t
		}
		s.tracef("%d persist entries [%s]", n.id, FormatEntries(rd.Entries))
		if err := s.chk.ObserveAppend(n.id, prevTerm, rd.Entries); err != nil {
			return err
		}
	}
	if !rd.HardState.IsEmpty() {
		if err := n.store.SetHardState(rd.HardState); err != nil {
			return fmt.Errorf("node %d: persist hard state: %w", n.id, err)
		}
		s.tracef("%d persist hard state term=%d vote=%d commit=%d", n.id, rd.HardState.Term, rd.HardState.Vote, rd.HardState.Commit)
		if err := s.chk.ObservePersist(n.id, rd.HardState.Commit); err != nil {
			return err
		}
		if err := s.chk.ObserveCommit(n.id, rd.HardState.Commit); err != nil {
			return err
		}
	}
	if err := s.checkRestartInvariant(n); err != nil {
		return err
	}
	if crashBeforeSend {
		s.crash(n, "after persisting, before sending")
		return nil
	}
	for _, m := range rd.Messages {
		s.send(m)
	}
	if !rd.Snapshot.IsEmpty() {
		idx, state, err := decodeSnapData(rd.Snapshot.Data)
		if err != nil {
			return fmt.Errorf("node %d: install snapshot: %w", n.id, err)
		}
		if idx != rd.Snapshot.Metadata.Index {
			return fmt.Errorf("node %d: snapshot %d carries a descriptor for index %d", n.id, rd.Snapshot.Metadata.Index, idx)
		}
		if idx < n.handed {
			return fmt.Errorf("node %d: engine installed snapshot %d below its applied index %d", n.id, idx, n.handed)
		}
		if err := s.chk.ObserveRestore(n.id, idx, state); err != nil {
			return err
		}
		n.fsmApplied, n.fsmState, n.handed = idx, state, idx
		n.conf = cloneConf(rd.Snapshot.Metadata.ConfState)
		n.confs = append(n.confs, confAt{idx, cloneConf(n.conf)})
		s.stats.SnapsApplied++
	}
	for _, rs := range rd.ReadStates {
		s.tracef("%d read state %q index %d", n.id, rs.RequestCtx, rs.Index)
		if err := s.chk.ObserveReadState(n.id, string(rs.RequestCtx), rs.Index); err != nil {
			return err
		}
		s.stats.ReadsAnswered++
	}
	for _, e := range rd.CommittedEntries {
		if e.Index != n.handed+1 {
			return fmt.Errorf("node %d: engine handed out committed index %d after %d", n.id, e.Index, n.handed)
		}
		n.handed = e.Index
		if e.Type == raft.EntryConfChange {
			var cc raft.ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				return fmt.Errorf("node %d: committed conf change %d/%d does not decode: %w", n.id, e.Term, e.Index, err)
			}
			cs := n.rn.ApplyConfChange(cc)
			if cs == nil {
				return fmt.Errorf("node %d: ApplyConfChange(%s %d) returned nil", n.id, cc.Type, cc.NodeID)
			}
			n.conf = cloneConf(*cs)
			n.confs = append(n.confs, confAt{e.Index, cloneConf(n.conf)})
			s.stats.ConfChangesApplied++
			s.tracef("%d apply conf change %s %d -> %s", n.id, cc.Type, cc.NodeID, FormatConfState(n.conf))
		}
		if e.Type == raft.EntryNormal && len(e.Data) > 0 && !s.proposed[string(e.Data)] {
			return fmt.Errorf("node %d: committed entry %d/%d carries data that was never proposed: %q", n.id, e.Term, e.Index, e.Data)
		}
		if e.Type == raft.EntryNormal && len(e.Data) == 0 {
			// The simulator never proposes empty data: an empty entry is a
			// new leader's first entry of its term (Raft §8), nothing else.
			if pt, err := n.store.Term(e.Index - 1); err == nil && pt >= e.Term {
				return fmt.Errorf("node %d: committed empty entry %d/%d follows an entry of term %d: a proposal lost its data", n.id, e.Term, e.Index, pt)
			}
		}
		if bytes.HasPrefix(e.Data, []byte("marker")) {
			n.markers++
		}
		if e.Index <= n.fsmApplied {
			if err := s.chk.ObserveReplay(n.id, e); err != nil {
				return err
			}
			continue
		}
		if err := s.chk.ObserveApply(n.id, e); err != nil {
			return err
		}
		n.fsmApplied, n.fsmState = e.Index, NextState(n.fsmState, e)
	}
	if len(rd.CommittedEntries) > 0 {
		s.tracef("%d applied [%s]", n.id, FormatEntries(rd.CommittedEntries))
	}
	n.rn.Advance(rd)
	if st := n.rn.Status(); !st.ConfState.Equal(n.conf) {
		return fmt.Errorf("node %d: engine configuration %s differs from the one applied through index %d: %s",
			n.id, FormatConfState(st.ConfState), n.handed, FormatConfState(n.conf))
	}
	return s.checkLeader(n)
}

// checkRestartInvariant checks what a restart from n's storage would see:
// last index >= commit >= snapshot index (RAFT-PITFALLS "Restart").
func (s *Sim) checkRestartInvariant(n *simNode) error {
	hs, _, err := n.store.InitialState()
	if err != nil {
		return fmt.Errorf("node %d: initial state: %w", n.id, err)
	}
	snap, _ := n.store.Snapshot()
	last, _ := n.store.LastIndex()
	if hs.Commit > last || (!snap.IsEmpty() && hs.Commit < snap.Metadata.Index) {
		return fmt.Errorf("node %d: durable state is inconsistent: commit %d, last index %d, snapshot index %d", n.id, hs.Commit, last, snap.Metadata.Index)
	}
	return nil
}

// checkLeader runs the leader-completeness check right after a leader's
// Ready is persisted, when its storage holds its whole log.
func (s *Sim) checkLeader(n *simNode) error {
	st := n.rn.Status()
	if st.RaftState != raft.StateLeader {
		n.leader = false
		return nil
	}
	if !n.leader {
		n.leader = true
		s.tracef("%d is leader in term %d", n.id, st.Term)
	}
	if n.rn.HasReady() {
		return nil // may still hold unpersisted entries
	}
	first, _ := n.store.FirstIndex()
	last, _ := n.store.LastIndex()
	return s.chk.CheckLeaderLog(n.id, st.Term, first, last, func(i uint64) uint64 {
		t, err := n.store.Term(i)
		if err != nil {
			return 0
		}
		return t
	})
}

// check runs the per-step checks that need every node's volatile state.
func (s *Sim) check() error {
	for _, id := range s.ids {
		n := s.nodes[id]
		if n.rn == nil {
			continue
		}
		st := n.rn.Status()
		if st.RaftState == raft.StateLeader {
			if err := s.chk.ObserveLeader(id, st.Term); err != nil {
				return err
			}
		}
		if err := s.chk.ObserveCommit(id, st.Commit); err != nil {
			return err
		}
		if st.SnapshotIndex > st.Commit || st.Commit > st.LastIndex {
			return fmt.Errorf("node %d: inconsistent log bounds: snapshot %d, commit %d, last %d", id, st.SnapshotIndex, st.Commit, st.LastIndex)
		}
		if st.RaftState == raft.StateLeader {
			if err := s.checkProgress(n, st); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkProgress checks leader n's view of its followers: a follower in the
// leader's term holds at least Match entries and agrees with the leader on
// the term at Match. Within one term a follower never loses an entry it
// acknowledged (it is durable and only a higher-term leader can make it
// truncate), so a larger Match means the leader mis-read a reply.
func (s *Sim) checkProgress(n *simNode, st raft.Status) error {
	for id, pr := range st.Progress {
		if pr.Next < pr.Match+1 || pr.Match > st.LastIndex {
			return fmt.Errorf("progress: leader %d (term %d, last %d) has match %d next %d for node %d", n.id, st.Term, st.LastIndex, pr.Match, pr.Next, id)
		}
		f := s.nodes[id]
		if id == n.id || pr.Match == 0 || f == nil || f.rn == nil || f.rn.Status().Term != st.Term {
			continue
		}
		last, _ := f.store.LastIndex()
		if pr.Match > last {
			return fmt.Errorf("progress: leader %d (term %d) has match %d for node %d, whose log ends at %d", n.id, st.Term, pr.Match, id, last)
		}
		ft, ferr := f.store.Term(pr.Match)
		lt, lerr := n.store.Term(pr.Match)
		if ferr == nil && lerr == nil && ft != lt {
			return fmt.Errorf("progress: leader %d (term %d) has match %d for node %d, but their terms there differ (%d vs %d)", n.id, st.Term, pr.Match, id, lt, ft)
		}
	}
	return nil
}

func (s *Sim) send(m raft.Message) {
	// A real network serializes at send time: copy what the engine might
	// reuse.
	if len(m.Entries) > 0 {
		m.Entries = slices.Clone(m.Entries)
	}
	if m.Snapshot != nil {
		sn := *m.Snapshot
		sn.Metadata.ConfState = cloneConf(sn.Metadata.ConfState)
		m.Snapshot = &sn
	}
	s.net = append(s.net, m)
	if len(s.net) > maxInFlightMsgs {
		s.dropAt(0, "network full")
	}
}

func (s *Sim) partitioned(a, b uint64) bool {
	return (s.group != nil && s.group[a] != s.group[b]) || s.oneWay[[2]uint64{a, b}]
}

func (s *Sim) dropAt(i int, why string) {
	m := s.net[i]
	s.net = slices.Delete(s.net, i, i+1)
	s.stats.MsgsDropped++
	s.tracef("drop (%s) %s", why, FormatMessage(m))
	s.reportDropped(m)
}

// reportDropped plays the transport: a lost snapshot is reported as failed
// and, sometimes, the peer as unreachable.
func (s *Sim) reportDropped(m raft.Message) {
	from := s.nodes[m.From]
	if from == nil || from.rn == nil {
		return
	}
	if m.Type == raft.MsgSnap {
		from.rn.ReportSnapshot(m.To, raft.SnapshotFailure)
	} else if s.rng.IntN(4) == 0 {
		from.rn.ReportUnreachable(m.To)
	}
}

func (s *Sim) dropRandom() {
	if len(s.net) > 0 {
		s.dropAt(s.rng.IntN(len(s.net)), "random")
	}
}

func (s *Sim) deliverRandom() error {
	if len(s.net) == 0 {
		return nil
	}
	// Mostly FIFO, sometimes any message (reordering).
	i := 0
	if s.rng.IntN(3) == 0 {
		i = s.rng.IntN(len(s.net))
	}
	m := s.net[i]
	s.net = slices.Delete(s.net, i, i+1)
	return s.deliver(m, true)
}

func (s *Sim) duplicateRandom() error {
	if len(s.net) == 0 {
		return nil
	}
	m := s.net[s.rng.IntN(len(s.net))]
	m.Entries = slices.Clone(m.Entries)
	s.stats.MsgsDuped++
	s.tracef("duplicate:")
	return s.deliver(m, false)
}

// deliver steps m into its recipient. report says whether the sender's
// driver learns the outcome of a snapshot (a duplicate is not reported).
func (s *Sim) deliver(m raft.Message, report bool) error {
	to := s.nodes[m.To]
	if to == nil || to.rn == nil || s.partitioned(m.From, m.To) {
		s.stats.MsgsDropped++
		s.tracef("lost %s", FormatMessage(m))
		if report {
			s.reportDropped(m)
		}
		return nil
	}
	s.stats.MsgsDelivered++
	s.tracef("deliver %s", FormatMessage(m))
	switch {
	case m.Type == raft.MsgAppResp && m.Reject:
		s.stats.AppRejects++
	case m.Type == raft.MsgTimeoutNow:
		s.stats.TimeoutNows++
	}
	if len(s.history) < 64 {
		s.history = append(s.history, m)
	} else {
		s.history[s.rng.IntN(64)] = m
	}
	if err := to.rn.Step(m); err != nil {
		s.tracef("  step error: %v", err)
	}
	if m.Type == raft.MsgSnap {
		s.stats.SnapsSent++
		if from := s.nodes[m.From]; report && from != nil && from.rn != nil {
			from.rn.ReportSnapshot(m.To, raft.SnapshotFinish)
		}
	}
	return s.maybeReady(to)
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

func (s *Sim) readIndex() {
	id, ok := s.pick(s.live())
	if !ok {
		return
	}
	s.seq++
	ctx := fmt.Sprintf("r%d", s.seq)
	s.chk.RequestRead(ctx)
	s.stats.ReadsRequested++
	s.tracef("read-index at %d %q (commit floor %d)", id, ctx, s.chk.MaxCommit())
	s.nodes[id].rn.ReadIndex([]byte(ctx))
}

func (s *Sim) partitionOrHeal() {
	if s.group != nil || s.oneWay != nil {
		s.group, s.oneWay = nil, nil
		s.tracef("heal")
		return
	}
	s.stats.Partitions++
	switch s.rng.IntN(3) {
	case 0:
		// Isolate one node.
		lone := s.ids[s.rng.IntN(len(s.ids))]
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
	var leaders []uint64
	for _, id := range s.live() {
		if s.nodes[id].rn.Status().RaftState == raft.StateLeader {
			leaders = append(leaders, id)
		}
	}
	id, ok := s.pick(leaders)
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

func (s *Sim) transfer() {
	n := s.leader()
	if n == nil {
		return
	}
	target, ok := s.pick(n.conf.Voters)
	if !ok || target == n.id {
		return
	}
	s.stats.TransfersRequested++
	s.tracef("transfer leadership %d -> %d", n.id, target)
	n.rn.TransferLeader(target)
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
	return nil
}

// settle heals the network, restarts every crashed node and runs the
// cluster without faults: ticks, full delivery and Ready processing. It
// proposes a marker entry and requires that, within cfg.SettleRounds
// rounds, a leader has committed it and every member of the leader's
// configuration has the same commit index and has applied everything.
func (s *Sim) settle() error {
	s.step = s.cfg.Steps + 1
	s.group, s.oneWay = nil, nil
	s.tracef("final heal")
	for _, id := range s.ids {
		if n := s.nodes[id]; n.rn == nil {
			s.stats.Restarts++
			if err := s.start(n, s.rng.IntN(2) == 0); err != nil {
				return err
			}
		}
	}
	markerAt := -1
	for round := 0; round < s.cfg.SettleRounds; round++ {
		s.stats.SettleRounds = round + 1
		ld := s.leader()
		for _, id := range s.ids {
			n := s.nodes[id]
			// A driver shuts down a node that left the configuration.
			if ld != nil && !isMember(ld.conf, id) {
				continue
			}
			n.rn.Tick()
		}
		if err := s.flush(); err != nil {
			return err
		}
		ld = s.leader()
		if ld == nil {
			continue
		}
		if markerAt < 0 || round-markerAt > 3*simElectionTick {
			markerAt = round
			s.seq++
			marker := fmt.Appendf(nil, "marker%d", s.seq)
			s.proposed[string(marker)] = true
			err := ld.rn.Propose(marker)
			s.tracef("propose marker at %d: %v", ld.id, err)
			if err := s.flush(); err != nil {
				return err
			}
		}
		if s.converged(ld) {
			return nil
		}
	}
	var b strings.Builder
	for _, id := range s.ids {
		n := s.nodes[id]
		st := n.rn.Status()
		fmt.Fprintf(&b, "\n  node %d: %s term %d lead %d commit %d handed %d fsm %d %s", id, st.RaftState, st.Term, st.Lead, st.Commit, n.handed, n.fsmApplied, FormatConfState(n.conf))
	}
	return fmt.Errorf("liveness: no convergence within %d rounds after the final heal:%s", s.cfg.SettleRounds, b.String())
}

func isMember(cs raft.ConfState, id uint64) bool {
	return slices.Contains(cs.Voters, id) || slices.Contains(cs.Learners, id)
}

// flush runs Ready cycles and delivers every message until quiescent.
func (s *Sim) flush() error {
	for iter := 0; iter < 10000; iter++ {
		busy := false
		for _, id := range s.ids {
			n := s.nodes[id]
			if n.rn != nil && n.rn.HasReady() {
				busy = true
				if err := s.handleReady(n, false); err != nil {
					return err
				}
			}
		}
		msgs := s.net
		s.net = nil
		if s.faultDeafSettle {
			msgs = nil
		}
		for _, m := range msgs {
			busy = true
			to := s.nodes[m.To]
			if to == nil || to.rn == nil {
				continue
			}
			s.stats.MsgsDelivered++
			s.tracef("deliver %s", FormatMessage(m))
			if err := to.rn.Step(m); err != nil {
				s.tracef("  step error: %v", err)
			}
			if m.Type == raft.MsgSnap {
				s.stats.SnapsSent++
				if from := s.nodes[m.From]; from != nil && from.rn != nil {
					from.rn.ReportSnapshot(m.To, raft.SnapshotFinish)
				}
			}
		}
		if err := s.check(); err != nil {
			return err
		}
		if !busy {
			return nil
		}
	}
	return fmt.Errorf("liveness: cluster did not quiesce within 10000 delivery rounds without ticks")
}

func (s *Sim) converged(ld *simNode) bool {
	lst := ld.rn.Status()
	last, _ := ld.store.LastIndex()
	if lst.Commit != last || ld.handed != lst.Commit || ld.markers == 0 {
		return false
	}
	for _, id := range s.ids {
		if !isMember(ld.conf, id) {
			continue
		}
		n := s.nodes[id]
		st := n.rn.Status()
		if st.Commit != lst.Commit || n.handed != lst.Commit || n.fsmApplied < n.handed {
			return false
		}
	}
	return true
}

func sortIDs(ids []uint64) { slices.Sort(ids) }
