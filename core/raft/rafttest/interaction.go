package rafttest

import (
	"fmt"
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

// command runs one directive with its positional arguments.
type command func(env *InteractionEnv, t *testing.T, d *datadriven.TestData, args []string) error

// commands maps each directive to its handler; the handlers live in the
// cmd_*.go files, grouped by what they act on.
var commands = map[string]command{
	// cmd_cluster.go
	"add-nodes": (*InteractionEnv).cmdAddNodes,
	"crash":     (*InteractionEnv).cmdCrash,
	"restart":   (*InteractionEnv).cmdRestart,
	"compact":   (*InteractionEnv).cmdCompact,
	// cmd_tick.go
	"campaign":       (*InteractionEnv).cmdCampaign,
	"tick":           (*InteractionEnv).cmdTick,
	"tick-election":  (*InteractionEnv).cmdTick,
	"tick-heartbeat": (*InteractionEnv).cmdTick,
	// cmd_propose.go
	"propose":             (*InteractionEnv).cmdPropose,
	"propose-conf-change": (*InteractionEnv).cmdProposeConfChange,
	"transfer-leadership": (*InteractionEnv).cmdTransferLeadership,
	"read-index":          (*InteractionEnv).cmdReadIndex,
	// cmd_ready.go
	"process-ready": (*InteractionEnv).cmdProcessReady,
	"stabilize":     (*InteractionEnv).cmdStabilize,
	// cmd_network.go
	"deliver-msgs": (*InteractionEnv).cmdDeliverMsgs,
	"drop-msgs":    (*InteractionEnv).cmdDeliverMsgs,
	"partition":    (*InteractionEnv).cmdPartition,
	"heal":         (*InteractionEnv).cmdHeal,
	// cmd_inspect.go
	"status":     (*InteractionEnv).cmdStatus,
	"raft-state": (*InteractionEnv).cmdRaftState,
	"raft-log":   (*InteractionEnv).cmdRaftLog,
}

func (env *InteractionEnv) handle(t *testing.T, d *datadriven.TestData) error {
	cmd, ok := commands[d.Cmd]
	if !ok {
		return fmt.Errorf("unknown command %q", d.Cmd)
	}
	return cmd(env, t, d, positional(d))
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
