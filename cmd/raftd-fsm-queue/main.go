// Command raftd-fsm-queue is the bundled queue FSM as a raftd plugin. It is
// started by the raftd host (raftd run --fsm PATH), not by hand.
package main

import (
	"github.com/raftd/raftd/fsms/queue"
	"github.com/raftd/raftd/plugin/sdk"
)

func main() { sdk.Serve(queue.New()) }
