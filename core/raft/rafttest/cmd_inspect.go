package rafttest

// Scenario commands that print state.

import (
	"slices"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/raftd/raftd/core/raft"
)

// cmdStatus: status ID.
func (env *InteractionEnv) cmdStatus(_ *testing.T, _ *datadriven.TestData, args []string) error {
	if err := need(args, 1, "status ID"); err != nil {
		return err
	}
	n, err := env.liveArg(args[0])
	if err != nil {
		return err
	}
	env.printStatus(n)
	return nil
}

// cmdRaftState: raft-state, one line per node.
func (env *InteractionEnv) cmdRaftState(_ *testing.T, _ *datadriven.TestData, _ []string) error {
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
}

// cmdRaftLog: raft-log ID.
func (env *InteractionEnv) cmdRaftLog(_ *testing.T, _ *datadriven.TestData, args []string) error {
	if err := need(args, 1, "raft-log ID"); err != nil {
		return err
	}
	n, err := env.nodeArg(args[0])
	if err != nil {
		return err
	}
	return env.printLog(n)
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
