// Command raftd-fsm-kv is the bundled kv FSM as a raftd plugin. It is
// started by the raftd host (raftd run --fsm PATH), not by hand.
package main

import (
	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/sdk"
)

func main() { sdk.Serve(kv.New()) }
