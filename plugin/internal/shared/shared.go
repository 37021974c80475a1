package shared

import (
	"context"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/raftd/raftd/plugin/fsm"
	fsmv1 "github.com/raftd/raftd/proto/fsm/v1"
)

// Handshake is the go-plugin handshake of protocol version 1
// (docs/plugin-protocol.md section 1). Changing the cookie or the version
// breaks every plugin.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "RAFTD_PLUGIN",
	MagicCookieValue: "fsm-6f1c7a2e9b0d4e58",
}

// PluginName is the key under which the FSM is dispensed.
const PluginName = "fsm"

// Size limits shared by host and plugin.
const (
	// MaxMsgBytes is the gRPC message size both sides accept.
	MaxMsgBytes = 64 << 20
	// ChunkBytes is the largest data chunk of a Snapshot/Restore stream.
	ChunkBytes = 1 << 20
)

// GRPCPlugin is the go-plugin Plugin for an FSM. Impl is set on the plugin
// side only; on the host side GRPCClient returns a
// fsmv1.StateMachineClient.
type GRPCPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl fsm.FSM
	// RawChunks is set when the plugin's gRPC server has ServerOptions.
	RawChunks bool
	// RestoreProcs, if above GOMAXPROCS, is the GOMAXPROCS of a Restore
	// while it runs (see Server.Restore).
	RestoreProcs int
}

var _ goplugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers the StateMachine service for Impl.
func (p *GRPCPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	srv := NewServer(p.Impl)
	srv.rawChunks, srv.restoreProcs = p.RawChunks, p.RestoreProcs
	fsmv1.RegisterStateMachineServer(s, srv)
	return nil
}

// GRPCClient returns the raw generated client; plugin/host wraps it.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return fsmv1.NewStateMachineClient(cc), nil
}
