package rafttest

// Scenario commands that submit client requests: proposals, membership
// changes, leadership transfers and reads.

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/raftd/raftd/core/raft"
)

// cmdPropose: propose ID data.
func (env *InteractionEnv) cmdPropose(_ *testing.T, _ *datadriven.TestData, args []string) error {
	if err := need(args, 2, "propose ID data"); err != nil {
		return err
	}
	n, err := env.liveArg(args[0])
	if err != nil {
		return err
	}
	return n.rn.Propose([]byte(args[1]))
}

// cmdProposeConfChange: propose-conf-change ID add|remove|learner TARGET.
func (env *InteractionEnv) cmdProposeConfChange(_ *testing.T, _ *datadriven.TestData, args []string) error {
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

// cmdTransferLeadership: transfer-leadership from=ID to=ID.
func (env *InteractionEnv) cmdTransferLeadership(t *testing.T, d *datadriven.TestData, _ []string) error {
	var from, to uint64
	d.ScanArgs(t, "from", &from)
	d.ScanArgs(t, "to", &to)
	n, err := env.liveArg(strconv.FormatUint(from, 10))
	if err != nil {
		return err
	}
	n.rn.TransferLeader(to)
	return nil
}

// cmdReadIndex: read-index ID ctx.
func (env *InteractionEnv) cmdReadIndex(_ *testing.T, _ *datadriven.TestData, args []string) error {
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
}
