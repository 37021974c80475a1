package rafttest

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/raftd/raftd/core/raft"
)

// InteractionEnv runs scripted scenarios against a cluster of RawNodes on
// MemoryStorage. It plays the network (a FIFO of pending messages that the
// script delivers or drops explicitly), the disks and the state machine
// (which records the applied index, the configuration and a hash of
// everything applied). Every step is checked by a Checker: a violation is
// printed as a VIOLATION line and recorded in Violations. Nothing happens
// unless a command asks for it, so a scenario's output is a precise,
// reviewable account of every Ready and message.
//
// Commands (arguments in brackets are optional):
//
//	add-nodes N [voters=(ids)] [learners=(ids)] [prevote=bool]
//	    [checkquorum=bool] [forwarding=bool] [max-inflight=n]
//	    [max-size=bytes] [election=ticks] [heartbeat=ticks]
//	campaign ID
//	tick ID [n]             tick n times (default 1)
//	tick-election ID        tick 2*ElectionTick times (always times out)
//	tick-heartbeat ID       tick HeartbeatTick times
//	propose ID data
//	propose-conf-change ID add|remove|learner TARGET
//	transfer-leadership from=ID to=ID
//	read-index ID ctx
//	process-ready ID...     run one Ready cycle on each node
//	deliver-msgs [ID...] [drop=(IDs)]
//	                        deliver pending messages to these nodes (all),
//	                        after dropping those to the drop= nodes
//	drop-msgs [ID...]       drop pending messages to these nodes (all)
//	partition ID...         these nodes on one side, the rest on the other
//	heal
//	stabilize [ID...]       Ready cycles and delivery until quiescent
//	status ID
//	raft-state              one line per node
//	raft-log ID
//	compact ID INDEX        snapshot at INDEX (<= applied), compact to it
//	crash ID                lose everything not persisted
//	restart ID
type InteractionEnv struct {
	nodes map[uint64]*envNode
	ids   []uint64
	// net holds messages sent but not yet delivered, in send order.
	net   []raft.Message
	group map[uint64]bool // partition side; nil when healed
	cfg   raft.Config     // template from the last add-nodes
	out   *strings.Builder
	// chk checks the safety properties over everything the scenario does;
	// violations are printed and collected in Violations.
	chk *Checker
	// Violations lists every safety violation seen (see Checker).
	Violations []string
}

type envNode struct {
	id      uint64
	store   *raft.MemoryStorage
	rn      *raft.RawNode
	applied uint64
	// states maps an applied index to the state machine hash there (see
	// NextState), for snapshots.
	states map[uint64]uint64
	// confs records the configuration after each applied conf change, to
	// know the ConfState at a snapshot index.
	confs []confAt
}

type confAt struct {
	index uint64
	cs    raft.ConfState
}

// NewInteractionEnv returns an empty environment.
func NewInteractionEnv() *InteractionEnv {
	return &InteractionEnv{nodes: map[uint64]*envNode{}, chk: NewChecker()}
}

// Handle runs one datadriven directive and returns its output.
func (env *InteractionEnv) Handle(t *testing.T, d *datadriven.TestData) string {
	var b strings.Builder
	env.out = &b
	if err := env.handle(t, d); err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
	}
	for _, id := range env.ids {
		n := env.nodes[id]
		if n.rn == nil {
			continue
		}
		st := n.rn.Status()
		if st.RaftState == raft.StateLeader {
			env.violation(env.chk.ObserveLeader(id, st.Term))
		}
		env.violation(env.chk.ObserveCommit(id, st.Commit))
	}
	if b.Len() == 0 {
		return "ok\n"
	}
	return b.String()
}

// violation prints and records err if it is not nil.
func (env *InteractionEnv) violation(err error) {
	if err != nil {
		env.Violations = append(env.Violations, err.Error())
		env.printf("VIOLATION: %v\n", err)
	}
}

func (env *InteractionEnv) printf(format string, args ...any) {
	fmt.Fprintf(env.out, format, args...)
}

// positional returns the directive's arguments that have no value.
func positional(d *datadriven.TestData) []string {
	var out []string
	for _, a := range d.CmdArgs {
		if len(a.Vals) == 0 {
			out = append(out, a.Key)
		}
	}
	return out
}

func parseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("bad node id %q", s)
	}
	return id, nil
}

func (env *InteractionEnv) nodeArg(s string) (*envNode, error) {
	id, err := parseID(s)
	if err != nil {
		return nil, err
	}
	n := env.nodes[id]
	if n == nil {
		return nil, fmt.Errorf("no node %d", id)
	}
	return n, nil
}

func (env *InteractionEnv) liveArg(s string) (*envNode, error) {
	n, err := env.nodeArg(s)
	if err != nil {
		return nil, err
	}
	if n.rn == nil {
		return nil, fmt.Errorf("node %d is down", n.id)
	}
	return n, nil
}

// nodesArg parses the positional IDs, or returns all nodes if there are none.
func (env *InteractionEnv) nodesArg(args []string) ([]*envNode, error) {
	if len(args) == 0 {
		var all []*envNode
		for _, id := range env.ids {
			all = append(all, env.nodes[id])
		}
		return all, nil
	}
	var out []*envNode
	for _, a := range args {
		n, err := env.nodeArg(a)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func need(args []string, n int, usage string) error {
	if len(args) < n {
		return fmt.Errorf("usage: %s", usage)
	}
	return nil
}

func (env *InteractionEnv) handle(t *testing.T, d *datadriven.TestData) error {
	args := positional(d)
	switch d.Cmd {
	case "add-nodes":
		return env.addNodes(t, d, args)
	case "campaign":
		if err := need(args, 1, "campaign ID"); err != nil {
			return err
		}
		n, err := env.liveArg(args[0])
		if err != nil {
			return err
		}
		return n.rn.Campaign()
	case "tick", "tick-election", "tick-heartbeat":
		if err := need(args, 1, d.Cmd+" ID"); err != nil {
			return err
		}
		n, err := env.liveArg(args[0])
		if err != nil {
			return err
		}
		count := 1
		switch d.Cmd {
		case "tick-election":
			count = 2 * env.cfg.ElectionTick
		case "tick-heartbeat":
			count = env.cfg.HeartbeatTick
		default:
			if len(args) > 1 {
				if count, err = strconv.Atoi(args[1]); err != nil || count < 1 {
					return fmt.Errorf("bad tick count %q", args[1])
				}
			}
		}
		for range count {
			n.rn.Tick()
		}
		return nil
	case "propose":
		if err := need(args, 2, "propose ID data"); err != nil {
			return err
		}
		n, err := env.liveArg(args[0])
		if err != nil {
			return err
		}
		return n.rn.Propose([]byte(args[1]))
	case "propose-conf-change":
		return env.proposeConfChange(args)
	case "transfer-leadership":
		var from, to uint64
		d.ScanArgs(t, "from", &from)
		d.ScanArgs(t, "to", &to)
		n, err := env.liveArg(strconv.FormatUint(from, 10))
		if err != nil {
			return err
		}
		n.rn.TransferLeader(to)
		return nil
	case "read-index":
		if err := need(args, 2, "read-index ID ctx"); err != nil {
			return err
		}
		n, err := env.liveArg(args[0])
		if err != nil {
			return err
		}
		env.chk.RequestRead(args[1])
		n.rn.ReadIndex([]byte(args[1]))
		return nil
	case "process-ready":
		ns, err := env.nodesArg(args)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if err := env.processReady(n); err != nil {
				return err
			}
		}
		return nil
	case "deliver-msgs", "drop-msgs":
		if drop, ok := d.Arg("drop"); ok && d.Cmd == "deliver-msgs" {
			dropped, err := env.nodesArg(drop.Vals)
			if err != nil {
				return err
			}
			for _, n := range dropped {
				if _, err := env.deliverTo(n, true); err != nil {
					return err
				}
			}
			if len(args) == 0 {
				return nil
			}
		}
		ns, err := env.nodesArg(args)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if _, err := env.deliverTo(n, d.Cmd == "drop-msgs"); err != nil {
				return err
			}
		}
		return nil
	case "partition":
		if err := need(args, 1, "partition ID..."); err != nil {
			return err
		}
		env.group = map[uint64]bool{}
		for _, a := range args {
			n, err := env.nodeArg(a)
			if err != nil {
				return err
			}
			env.group[n.id] = true
		}
		return nil
	case "heal":
		env.group = nil
		return nil
	case "stabilize":
		ns, err := env.nodesArg(args)
		if err != nil {
			return err
		}
		return env.stabilize(ns)
	case "status":
		if err := need(args, 1, "status ID"); err != nil {
			return err
		}
		n, err := env.liveArg(args[0])
		if err != nil {
			return err
		}
		env.printStatus(n)
		return nil
	case "raft-state":
		for _, id := range env.ids {
			n := env.nodes[id]
			if n.rn == nil {
				env.printf("%d: down\n", id)
				continue
			}
			st := n.rn.Status()
			env.printf("%d: %s term=%d lead=%d commit=%d applied=%d\n", id, st.RaftState, st.Term, st.Lead, st.Commit, n.applied)
		}
		return nil
	case "raft-log":
		if err := need(args, 1, "raft-log ID"); err != nil {
			return err
		}
		n, err := env.nodeArg(args[0])
		if err != nil {
			return err
		}
		return env.printLog(n)
	case "compact":
		if err := need(args, 2, "compact ID INDEX"); err != nil {
			return err
		}
		n, err := env.liveArg(args[0])
		if err != nil {
			return err
		}
		idx, err := strconv.ParseUint(args[1], 10, 64)
		if err != nil {
			return fmt.Errorf("bad index %q", args[1])
		}
		return env.compact(n, idx)
	case "crash":
		if err := need(args, 1, "crash ID"); err != nil {
			return err
		}
		n, err := env.liveArg(args[0])
		if err != nil {
			return err
		}
		n.rn = nil
		return nil
	case "restart":
		if err := need(args, 1, "restart ID"); err != nil {
			return err
		}
		n, err := env.nodeArg(args[0])
		if err != nil {
			return err
		}
		if n.rn != nil {
			return fmt.Errorf("node %d is running", n.id)
		}
		return env.start(n)
	}
	return fmt.Errorf("unknown command %q", d.Cmd)
}

func scanIDs(t *testing.T, d *datadriven.TestData, key string) ([]uint64, bool) {
	arg, ok := d.Arg(key)
	if !ok {
		return nil, false
	}
	var ids []uint64
	for _, v := range arg.Vals {
		id, err := parseID(v)
		if err != nil {
			d.Fatalf(t, "%s: %v", key, err)
		}
		ids = append(ids, id)
	}
	return ids, true
}

func (env *InteractionEnv) addNodes(t *testing.T, d *datadriven.TestData, args []string) error {
	if err := need(args, 1, "add-nodes N [voters=(..)] [learners=(..)]"); err != nil {
		return err
	}
	count, err := strconv.Atoi(args[0])
	if err != nil || count < 1 {
		return fmt.Errorf("bad node count %q", args[0])
	}
	cfg := raft.Config{ElectionTick: 10, HeartbeatTick: 1, MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256}
	d.MaybeScanArgs(t, "election", &cfg.ElectionTick)
	d.MaybeScanArgs(t, "heartbeat", &cfg.HeartbeatTick)
	d.MaybeScanArgs(t, "max-inflight", &cfg.MaxInflightMsgs)
	d.MaybeScanArgs(t, "max-size", &cfg.MaxSizePerMsg)
	prevote, checkQuorum, forwarding := true, true, true
	d.MaybeScanArgs(t, "prevote", &prevote)
	d.MaybeScanArgs(t, "checkquorum", &checkQuorum)
	d.MaybeScanArgs(t, "forwarding", &forwarding)
	cfg.DisablePreVote, cfg.DisableCheckQuorum, cfg.DisableProposalForwarding = !prevote, !checkQuorum, !forwarding
	env.cfg = cfg

	var cs raft.ConfState
	voters, hasVoters := scanIDs(t, d, "voters")
	if !hasVoters {
		return errors.New("add-nodes needs voters=(..)")
	}
	learners, _ := scanIDs(t, d, "learners")
	cs.Voters, cs.Learners = voters, learners
	first := uint64(len(env.ids) + 1)
	for i := range count {
		id := first + uint64(i)
		// Founding members start with the configuration in their
		// storage (the engine writes it into the log at start); others,
		// added later by a conf change, start empty.
		st := raft.NewMemoryStorage()
		if slices.Contains(voters, id) || slices.Contains(learners, id) {
			st.SetConfState(cs)
		}
		n := &envNode{id: id, store: st}
		env.nodes[id] = n
		env.ids = append(env.ids, id)
		if err := env.start(n); err != nil {
			return err
		}
	}
	return nil
}

// start creates n's engine from its storage; the state machine restarts
// from the storage snapshot.
func (env *InteractionEnv) start(n *envNode) error {
	snap, err := n.store.Snapshot()
	if err != nil {
		return err
	}
	cfg := env.cfg
	cfg.ID = n.id
	cfg.Storage = n.store
	cfg.Applied = snap.Metadata.Index
	cfg.Seed = int64(n.id)
	rn, err := raft.NewRawNode(&cfg)
	if err != nil {
		return err
	}
	n.rn = rn
	n.applied = snap.Metadata.Index
	n.confs = []confAt{{snap.Metadata.Index, cloneConf(snap.Metadata.ConfState)}}
	var state uint64
	if !snap.IsEmpty() {
		if _, state, err = decodeSnapData(snap.Data); err != nil {
			return err
		}
	}
	n.states = map[uint64]uint64{n.applied: state}
	st := rn.Status()
	env.violation(env.chk.ObserveRestart(n.id, st.Commit, n.applied, state))
	env.printf("%d: started term=%d commit=%d applied=%d %s\n", n.id, st.Term, st.Commit, n.applied, FormatConfState(snap.Metadata.ConfState))
	return nil
}

func (env *InteractionEnv) proposeConfChange(args []string) error {
	if err := need(args, 3, "propose-conf-change ID add|remove|learner TARGET"); err != nil {
		return err
	}
	n, err := env.liveArg(args[0])
	if err != nil {
		return err
	}
	target, err := parseID(args[2])
	if err != nil {
		return err
	}
	cc := raft.ConfChange{NodeID: target}
	switch args[1] {
	case "add":
		cc.Type = raft.ConfChangeAddNode
	case "remove":
		cc.Type = raft.ConfChangeRemoveNode
	case "learner":
		cc.Type = raft.ConfChangeAddLearner
	default:
		return fmt.Errorf("bad conf change type %q (add|remove|learner)", args[1])
	}
	return n.rn.ProposeConfChange(cc)
}

func (env *InteractionEnv) cut(a, b uint64) bool {
	return env.group != nil && env.group[a] != env.group[b]
}

// deliverTo steps the pending messages addressed to n (or drops them) in
// send order, printing each. It reports whether there were any.
func (env *InteractionEnv) deliverTo(n *envNode, drop bool) (bool, error) {
	var mine, rest []raft.Message
	for _, m := range env.net {
		if m.To == n.id {
			mine = append(mine, m)
		} else {
			rest = append(rest, m)
		}
	}
	env.net = rest
	if len(mine) == 0 {
		return false, nil
	}
	if drop {
		env.printf("> %d dropping messages\n", n.id)
	} else {
		env.printf("> %d receiving messages\n", n.id)
	}
	for _, m := range mine {
		switch {
		case drop:
			env.printf("  dropped: %s\n", FormatMessage(m))
		case env.cut(m.From, m.To):
			env.printf("  dropped (partition): %s\n", FormatMessage(m))
		case n.rn == nil:
			env.printf("  dropped (down): %s\n", FormatMessage(m))
		default:
			env.printf("  %s\n", FormatMessage(m))
			if err := n.rn.Step(m); err != nil {
				env.printf("  step error: %v\n", err)
			}
		}
		if m.Type == raft.MsgSnap {
			// The transport reports the snapshot stream's outcome.
			if from := env.nodes[m.From]; from != nil && from.rn != nil {
				status := raft.SnapshotFinish
				if drop || env.cut(m.From, m.To) || n.rn == nil {
					status = raft.SnapshotFailure
				}
				from.rn.ReportSnapshot(m.To, status)
			}
		}
	}
	return true, nil
}

// processReady runs one driver cycle on n, printing the Ready.
func (env *InteractionEnv) processReady(n *envNode) error {
	if n.rn == nil || !n.rn.HasReady() {
		return nil
	}
	rd := n.rn.Ready()
	env.printf("> %d handling Ready\n", n.id)
	if rd.SoftState != nil {
		env.printf("  State:%s Lead:%d\n", rd.SoftState.RaftState, rd.SoftState.Lead)
	}
	if !rd.HardState.IsEmpty() {
		env.printf("  HardState Term:%d Vote:%d Commit:%d\n", rd.HardState.Term, rd.HardState.Vote, rd.HardState.Commit)
	}
	if !rd.Snapshot.IsEmpty() {
		md := rd.Snapshot.Metadata
		env.printf("  Snapshot %d/%d %s\n", md.Term, md.Index, FormatConfState(md.ConfState))
		if err := n.store.ApplySnapshot(rd.Snapshot); err != nil {
			return fmt.Errorf("node %d: apply snapshot: %w", n.id, err)
		}
	}
	if len(rd.Entries) > 0 {
		env.printf("  Entries:\n")
		for _, e := range rd.Entries {
			env.printf("  %s\n", FormatEntry(e))
		}
		if err := n.store.Append(rd.Entries); err != nil {
			return fmt.Errorf("node %d: append: %w", n.id, err)
		}
		prevTerm, _ := n.store.Term(rd.Entries[0].Index - 1)
		env.violation(env.chk.ObserveAppend(n.id, prevTerm, rd.Entries))
	}
	if !rd.HardState.IsEmpty() {
		if err := n.store.SetHardState(rd.HardState); err != nil {
			return err
		}
		env.violation(env.chk.ObservePersist(n.id, rd.HardState.Commit))
		env.violation(env.chk.ObserveCommit(n.id, rd.HardState.Commit))
	}
	if len(rd.Messages) > 0 {
		env.printf("  Messages:\n")
		for _, m := range rd.Messages {
			env.printf("  %s\n", FormatMessage(m))
			if len(m.Entries) > 0 {
				m.Entries = slices.Clone(m.Entries)
			}
			env.net = append(env.net, m)
		}
	}
	if !rd.Snapshot.IsEmpty() {
		idx, state, err := decodeSnapData(rd.Snapshot.Data)
		if err != nil {
			return fmt.Errorf("node %d: install snapshot: %w", n.id, err)
		}
		env.violation(env.chk.ObserveRestore(n.id, idx, state))
		n.states[idx] = state
		n.applied = rd.Snapshot.Metadata.Index
		n.confs = append(n.confs, confAt{n.applied, cloneConf(rd.Snapshot.Metadata.ConfState)})
	}
	for _, rs := range rd.ReadStates {
		env.printf("  ReadState ctx=%q index=%d\n", rs.RequestCtx, rs.Index)
		env.violation(env.chk.ObserveReadState(n.id, string(rs.RequestCtx), rs.Index))
	}
	if len(rd.CommittedEntries) > 0 {
		env.printf("  CommittedEntries:\n")
	}
	for _, e := range rd.CommittedEntries {
		env.printf("  %s\n", FormatEntry(e))
		if e.Index != n.applied+1 {
			return fmt.Errorf("node %d: committed entry %d handed out after applied %d", n.id, e.Index, n.applied)
		}
		env.violation(env.chk.ObserveApply(n.id, e))
		n.states[e.Index] = NextState(n.states[n.applied], e)
		n.applied = e.Index
		if e.Type == raft.EntryConfChange {
			var cc raft.ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				return err
			}
			cs := n.rn.ApplyConfChange(cc)
			if cs == nil {
				return fmt.Errorf("node %d: ApplyConfChange returned nil", n.id)
			}
			n.confs = append(n.confs, confAt{e.Index, cloneConf(*cs)})
			env.printf("  INFO %d applied %s %d: %s\n", n.id, cc.Type, cc.NodeID, FormatConfState(*cs))
		}
	}
	n.rn.Advance(rd)
	return nil
}

// stabilize alternates Ready cycles and delivery on ns until no node has
// a Ready and no message is pending for any of them.
func (env *InteractionEnv) stabilize(ns []*envNode) error {
	for range 1000 {
		busy := false
		for _, n := range ns {
			if n.rn != nil && n.rn.HasReady() {
				busy = true
				if err := env.processReady(n); err != nil {
					return err
				}
			}
		}
		for _, n := range ns {
			got, err := env.deliverTo(n, false)
			if err != nil {
				return err
			}
			busy = busy || got
		}
		if !busy {
			return nil
		}
	}
	return errors.New("stabilize: not quiescent after 1000 rounds")
}

func (env *InteractionEnv) printStatus(n *envNode) {
	st := n.rn.Status()
	env.printf("%d: %s term=%d vote=%d lead=%d commit=%d applied=%d %s\n",
		n.id, st.RaftState, st.Term, st.Vote, st.Lead, st.Commit, n.applied, FormatConfState(st.ConfState))
	if st.RaftState != raft.StateLeader {
		return
	}
	if st.LeadTransferee != raft.None {
		env.printf("  transferring leadership to %d\n", st.LeadTransferee)
	}
	var ids []uint64
	for id := range st.Progress {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		pr := st.Progress[id]
		env.printf("  %d: match=%d next=%d\n", id, pr.Match, pr.Next)
	}
}

func (env *InteractionEnv) printLog(n *envNode) error {
	snap, _ := n.store.Snapshot()
	if !snap.IsEmpty() {
		env.printf("snapshot %d/%d %s\n", snap.Metadata.Term, snap.Metadata.Index, FormatConfState(snap.Metadata.ConfState))
	}
	first, _ := n.store.FirstIndex()
	last, _ := n.store.LastIndex()
	if last < first {
		env.printf("log is empty\n")
		return nil
	}
	ents, err := n.store.Entries(first, last+1, 1<<62)
	if err != nil {
		return err
	}
	for _, e := range ents {
		env.printf("%s\n", FormatEntry(e))
	}
	return nil
}

func (env *InteractionEnv) compact(n *envNode, idx uint64) error {
	if idx > n.applied {
		return fmt.Errorf("cannot snapshot at %d above applied index %d", idx, n.applied)
	}
	var cs raft.ConfState
	for _, c := range n.confs {
		if c.index <= idx {
			cs = c.cs
		}
	}
	state, ok := n.states[idx]
	if !ok {
		return fmt.Errorf("no state machine state recorded at %d", idx)
	}
	if _, err := n.store.CreateSnapshot(idx, &cs, encodeSnapData(idx, state)); err != nil {
		return err
	}
	if err := n.store.Compact(idx); err != nil {
		return err
	}
	env.printf("%d: snapshot and compact at %d %s\n", n.id, idx, FormatConfState(cs))
	return nil
}
