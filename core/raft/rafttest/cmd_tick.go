package rafttest

// Scenario commands that drive the nodes' clocks and elections.

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// cmdCampaign: campaign ID.
func (env *InteractionEnv) cmdCampaign(_ *testing.T, _ *datadriven.TestData, args []string) error {
	if err := need(args, 1, "campaign ID"); err != nil {
		return err
	}
	n, err := env.liveArg(args[0])
	if err != nil {
		return err
	}
	return n.rn.Campaign()
}

// cmdTick: tick ID [n], tick-election ID (2*ElectionTick ticks: always
// times out), tick-heartbeat ID (HeartbeatTick ticks).
func (env *InteractionEnv) cmdTick(_ *testing.T, d *datadriven.TestData, args []string) error {
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
}
