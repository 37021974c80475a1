package rafttest

// Scenario commands that play the network: delivery, loss and
// partitions.

import (
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/raftd/raftd/core/raft"
)

// cmdDeliverMsgs: deliver-msgs [ID...] [drop=(IDs)] delivers the pending
// messages to these nodes (all), after dropping those to the drop= nodes;
// drop-msgs [ID...] drops the pending messages to these nodes (all).
func (env *InteractionEnv) cmdDeliverMsgs(_ *testing.T, d *datadriven.TestData, args []string) error {
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
}

// cmdPartition: partition ID... puts these nodes on one side, the rest on
// the other.
func (env *InteractionEnv) cmdPartition(_ *testing.T, _ *datadriven.TestData, args []string) error {
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
}

// cmdHeal: heal.
func (env *InteractionEnv) cmdHeal(_ *testing.T, _ *datadriven.TestData, _ []string) error {
	env.group = nil
	return nil
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
