// Command misbehave is a test plugin: the kv FSM plus commands that make it
// misbehave on purpose, to exercise the host's watchdog and crash handling.
//
//	{"op":"hang"}   Apply blocks forever
//	{"op":"crash"}  Apply exits the process with status 3
//	{"op":"hang"}   as a query: Query blocks forever
//	{"op":"error"}  Apply returns a Go error (the plugin is broken)
//	{"op":"panic"}  Apply panics, every time (a poison command: the process
//	                dies on it on every replica, after every restart)
//	{"op":"sleep","ms":N}  as a query: answers {"slept":N} after N ms
//	{"op":"fail"}   as a query: Query returns a Go error
//
// With MISBEHAVE_NO_QUERY_BATCH=1 set, the plugin answers QueryBatch with
// UNIMPLEMENTED, like a plugin written before that call existed.
//
// With MISBEHAVE_APPLY_DELAY=DURATION set, every Apply of one entry takes
// at least that long (a slow state machine).
//
// With MISBEHAVE_ONCE_FILE=PATH set, hang and crash happen only while PATH
// does not exist (the plugin creates it just before misbehaving); later,
// for example when the host replays the log after a restart, they are
// ordinary commands with the result {"ok":true}. That lets an end-to-end
// test check recovery from a single hang or crash.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/internal/shared"
	"github.com/raftd/raftd/plugin/sdk"
	fsmv1 "github.com/raftd/raftd/proto/fsm/v1"
)

type misbehave struct{ *kv.FSM }

// armed reports whether a hang or crash should happen now.
func armed() bool {
	path := os.Getenv("MISBEHAVE_ONCE_FILE")
	if path == "" {
		return true
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return false // already misbehaved once
	}
	f.Close()
	return true
}

// applyDelay is MISBEHAVE_APPLY_DELAY.
var applyDelay, _ = time.ParseDuration(os.Getenv("MISBEHAVE_APPLY_DELAY"))

func (m misbehave) Apply(ctx context.Context, e fsm.Entry) ([]byte, error) {
	if applyDelay > 0 {
		time.Sleep(applyDelay)
	}
	switch string(e.Data) {
	case `{"op":"panic"}`:
		panic(fmt.Sprintf("misbehave: asked to panic at index %d", e.Index))
	case `{"op":"hang"}`, `{"op":"crash"}`:
		if !armed() {
			return []byte(`{"ok":true}`), nil
		}
		if string(e.Data) == `{"op":"hang"}` {
			select {}
		}
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
	switch string(q) {
	case `{"op":"hang"}`:
		select {}
	case `{"op":"fail"}`:
		return nil, errors.New("misbehave: asked to fail a query")
	}
	var s struct {
		Op string `json:"op"`
		Ms int    `json:"ms"`
	}
	if json.Unmarshal(q, &s) == nil && s.Op == "sleep" {
		time.Sleep(time.Duration(s.Ms) * time.Millisecond)
		return []byte(fmt.Sprintf(`{"slept":%d}`, s.Ms)), nil
	}
	return m.FSM.Query(ctx, q)
}

// unbatched is the plugin's service without QueryBatch.
type unbatched struct{ *shared.Server }

func (unbatched) QueryBatch(context.Context, *fsmv1.QueryBatchRequest) (*fsmv1.QueryBatchResponse, error) {
	return nil, status.Error(codes.Unimplemented, "method QueryBatch not implemented")
}

type unbatchedPlugin struct{ shared.GRPCPlugin }

func (p *unbatchedPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	fsmv1.RegisterStateMachineServer(s, unbatched{shared.NewServer(p.Impl)})
	return nil
}

func main() {
	f := misbehave{kv.New()}
	if os.Getenv("MISBEHAVE_NO_QUERY_BATCH") == "" {
		sdk.Serve(f)
		return
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins:         goplugin.PluginSet{shared.PluginName: &unbatchedPlugin{shared.GRPCPlugin{Impl: f}}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(shared.MaxMsgBytes), grpc.MaxSendMsgSize(shared.MaxMsgBytes))...)
		},
	})
}
