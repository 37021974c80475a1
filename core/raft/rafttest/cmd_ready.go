package rafttest

// Scenario commands that run the nodes' drivers: Ready cycles and
// stabilization.

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/raftd/raftd/core/raft"
)

// cmdProcessReady: process-ready [ID...]. One Ready cycle on each node.
func (env *InteractionEnv) cmdProcessReady(_ *testing.T, _ *datadriven.TestData, args []string) error {
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
}

// cmdStabilize: stabilize [ID...]. Ready cycles and delivery until
// quiescent.
func (env *InteractionEnv) cmdStabilize(_ *testing.T, _ *datadriven.TestData, args []string) error {
	ns, err := env.nodesArg(args)
	if err != nil {
		return err
	}
	return env.stabilize(ns)
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
