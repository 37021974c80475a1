package daemon_test

import (
	"context"
	"fmt"
	"os"

	"github.com/raftd/raftd/core/daemon"
	"github.com/raftd/raftd/fsms/kv"
)

// A Go program embeds a node by handing Start an FSM value: the state
// machine then runs in this process, with no plugin. Start returns once the
// node serves; a single node leads by then, so it takes commands at once.
func Example() {
	dir, err := os.MkdirTemp("", "raftd-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	d, err := daemon.Start(ctx, daemon.Config{
		ID:       1,
		DataDir:  dir,
		RaftAddr: "127.0.0.1:0", // any free port
		APIAddr:  "127.0.0.1:0", // raftd apply --addr d.APIAddr() works too
		FSM:      kv.New(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Stop()

	res, err := d.Node().Propose(ctx, []byte(`{"op":"put","key":"greeting","value":"hello"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(res))

	res, err = d.Node().Read(ctx, []byte(`{"op":"get","key":"greeting"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(res))
	// Output:
	// {"ok":true}
	// {"found":true,"value":"hello"}
}
