package rafttest

// The simulator: configuration, the cluster, the run loop, the per-step
// checks, and the final heal (settle).

import (
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
	// Profile names the fault profile (see ProfileNames); "" draws one
	// from the seed.
	Profile string
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
	// ReadsServed counts reads served from the state machine and checked
	// against the linearizable order.
	ReadsServed int
	// SendFirstCrashes counts leaders that crashed after sending their new
	// entries and before writing them; UnsyncedLost counts crashes that
	// lost hard state writes made without sync.
	SendFirstCrashes, UnsyncedLost int
	// Campaigns counts forced campaigns (RawNode.Campaign).
	Campaigns int
	// SlowLeaderWrites counts leader writes its followers answered before
	// it finished.
	SlowLeaderWrites                      int
	MsgsDelivered, MsgsDropped, MsgsDuped int
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
	s.ReadsServed += o.ReadsServed
	s.SendFirstCrashes += o.SendFirstCrashes
	s.UnsyncedLost += o.UnsyncedLost
	s.Campaigns += o.Campaigns
	s.SlowLeaderWrites += o.SlowLeaderWrites
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
	// midWrite is the leader whose write slowLeaderWrite is playing: it
	// gets no Ready until that one is done.
	midWrite *simNode
	// late holds messages sent before the current partition across it,
	// which may still arrive (lease-reads profile).
	late []raft.Message
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
	// frng draws the decisions of the durability model (which unsynced
	// writes survive a crash, where a leader's send-first write crashes),
	// apart from rng so that the action schedule of a seed does not depend
	// on them.
	frng *rand.Rand
	// prof is this run's fault profile; clock is non-nil when it bounds
	// clock drift.
	prof  simProfile
	clock *simClock
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
	// synced is the hard state as of the last synced write; unsynced
	// lists the hard states written since without MustSync, in order. A
	// crash keeps synced plus a prefix of unsynced (a synced write makes
	// every earlier write durable, as a write-ahead log does).
	synced   raft.HardState
	unsynced []raft.HardState
	// commitChecked is the highest commit index checkCommitDurable
	// verified while the node led, or saw while it did not.
	commitChecked uint64
	// unanswered holds the read contexts issued (in any incarnation) whose
	// read was not answered and served yet (reuseReadCtx). serving holds
	// answered reads that wait for the state machine to reach their index.
	unanswered map[string]bool
	serving    []servingRead
}

// SimFailure is the error returned by a failing run: the violation, the
// seed to replay it and the last steps of the trace.
type SimFailure struct {
	Seed uint64
	// Profile is the profile the run was pinned to ("" if drawn from the
	// seed).
	Profile string
	Step    int
	Err     error
	Trace   []string
}

func (f *SimFailure) Error() string {
	prof := ""
	if f.Profile != "" {
		prof = " -sim.profile=" + f.Profile
	}
	return fmt.Sprintf("seed %d step %d: %v\n  replay: go test ./core/raft/rafttest -run 'TestSim$' -sim.start=%d -sim.seeds=1%s -sim.trace=500\n  last %d trace lines:\n    %s",
		f.Seed, f.Step, f.Err, f.Seed, prof, len(f.Trace), strings.Join(f.Trace, "\n    "))
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
		frng:     rand.New(rand.NewPCG(cfg.Seed^0x5851f42d4c957f2d, cfg.Seed)),
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
	pi := s.rng.IntN(len(profiles))
	if cfg.Profile != "" {
		var err error
		if pi, err = profileIndex(cfg.Profile); err != nil {
			return nil, err
		}
	}
	prof := profiles[pi]
	s.prof = prof
	if prof.leaseReads {
		s.raftCfg.ReadOnlyOption = raft.ReadOnlyLeaseBased
		s.raftCfg.DisableCheckQuorum = false
	}
	if prof.driftPercent > 0 {
		s.clock = &simClock{period: map[uint64]int64{}, next: map[uint64]int64{}}
	}
	for a, w := range baseWeights {
		if v, ok := prof.set[a]; ok {
			w = v
		}
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
	s.tracef("config: profile %s, %d nodes MaxSizePerMsg=%d MaxCommittedSizePerReady=%d MaxInflightMsgs=%d MaxInflightBytes=%d MaxUncommitted=%d DisablePreVote=%v DisableCheckQuorum=%v DisableForwarding=%v LeaseReads=%v",
		prof.name, cfg.Nodes, s.raftCfg.MaxSizePerMsg, s.raftCfg.MaxCommittedSizePerReady, s.raftCfg.MaxInflightMsgs,
		s.raftCfg.MaxInflightBytes, s.raftCfg.MaxUncommittedEntriesSize, s.raftCfg.DisablePreVote,
		s.raftCfg.DisableCheckQuorum, s.raftCfg.DisableProposalForwarding, prof.leaseReads)

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
	return &SimFailure{Seed: s.cfg.Seed, Profile: s.cfg.Profile, Step: s.step, Err: err, Trace: s.traceLines()}
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

// leaders returns the running nodes that believe they lead (a deposed
// leader may not know yet), sorted.
func (s *Sim) leaders() []uint64 {
	var out []uint64
	for _, id := range s.live() {
		if s.nodes[id].rn.Status().RaftState == raft.StateLeader {
			out = append(out, id)
		}
	}
	return out
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

// settle heals the network, restarts every crashed node and runs the
// cluster without faults: ticks, full delivery and Ready processing. It
// proposes a marker entry and requires that, within cfg.SettleRounds
// rounds, a leader has committed it and every member of the leader's
// configuration has the same commit index and has applied everything.
func (s *Sim) settle() error {
	s.step = s.cfg.Steps + 1
	s.heal()
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
			if err := s.checkCommitDurable(to); err != nil {
				return err
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
