// Command raftd-fsm-counter is the bundled counter FSM as a raftd plugin. It is
// started by the raftd host (raftd run --fsm PATH), not by hand.
package main

import (
	"github.com/raftd/raftd/fsms/counter"
	"github.com/raftd/raftd/plugin/sdk"
)

func main() { sdk.Serve(counter.New()) }
