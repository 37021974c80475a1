package client_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/raftd/raftd/client"
	"github.com/raftd/raftd/core/daemon"
	"github.com/raftd/raftd/fsms/counter"
)

// A counter add applied through the client, then sent again with the same
// request identity (as a retry after a lost answer would): the second
// answer is the first application's, and the counter moved once.
func Example() {
	dir, err := os.MkdirTemp("", "raftd-client-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := daemon.Start(ctx, daemon.Config{ID: 1, DataDir: dir, RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", FSM: counter.New()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Stop()

	c, err := client.New(client.Config{Endpoints: []string{d.APIAddr()}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	res, err := c.Apply(ctx, []byte(`{"op":"add","delta":1}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s duplicate=%v\n", res.Value, res.Duplicate)

	again, err := c.ApplyWithID(ctx, res.ID, []byte(`{"op":"add","delta":1}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s duplicate=%v same index=%v\n", again.Value, again.Duplicate, again.Index == res.Index)

	q, err := c.Query(ctx, []byte(`{"op":"get"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s\n", q.Value)
	// Output:
	// {"value":1} duplicate=false
	// {"value":1} duplicate=true same index=true
	// {"value":1}
}
