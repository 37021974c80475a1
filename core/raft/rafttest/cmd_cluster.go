package rafttest

// Scenario commands that create, crash, restart and compact nodes.

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/raftd/raftd/core/raft"
)

// cmdAddNodes: add-nodes N voters=(ids) [learners=(ids)] [options].
func (env *InteractionEnv) cmdAddNodes(t *testing.T, d *datadriven.TestData, args []string) error {
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

// cmdCrash: crash ID. The node loses everything not persisted.
func (env *InteractionEnv) cmdCrash(_ *testing.T, _ *datadriven.TestData, args []string) error {
	if err := need(args, 1, "crash ID"); err != nil {
		return err
	}
	n, err := env.liveArg(args[0])
	if err != nil {
		return err
	}
	n.rn = nil
	return nil
}

// cmdRestart: restart ID.
func (env *InteractionEnv) cmdRestart(_ *testing.T, _ *datadriven.TestData, args []string) error {
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

// cmdCompact: compact ID INDEX. Snapshot at INDEX (<= applied) and compact
// the log to it.
func (env *InteractionEnv) cmdCompact(_ *testing.T, _ *datadriven.TestData, args []string) error {
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
