// Command misbehave is a test plugin: the kv FSM plus commands that make it
// misbehave on purpose, to exercise the host's watchdog and crash handling.
//
//	{"op":"hang"}   Apply blocks forever
//	{"op":"crash"}  Apply exits the process with status 3
//	{"op":"hang"}   as a query: Query blocks forever
//	{"op":"error"}  Apply returns a Go error (the plugin is broken)
package main

import (
	"context"
	"errors"
	"os"

	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/sdk"
)

type misbehave struct{ *kv.FSM }

func (m misbehave) Apply(ctx context.Context, e fsm.Entry) ([]byte, error) {
	switch string(e.Data) {
	case `{"op":"hang"}`:
		select {}
	case `{"op":"crash"}`:
		os.Exit(3)
	case `{"op":"error"}`:
		return nil, errors.New("misbehave: asked to fail")
	}
	return m.FSM.Apply(ctx, e)
}

// ApplyBatch hides kv's batch method so that Apply above is used.
func (m misbehave) ApplyBatch(ctx context.Context, es []fsm.Entry) ([][]byte, error) {
	out := make([][]byte, len(es))
	for i, e := range es {
		r, err := m.Apply(ctx, e)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

func (m misbehave) Query(ctx context.Context, q []byte) ([]byte, error) {
	if string(q) == `{"op":"hang"}` {
		select {}
	}
	return m.FSM.Query(ctx, q)
}

func main() { sdk.Serve(misbehave{kv.New()}) }
