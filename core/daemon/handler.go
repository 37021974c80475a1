package daemon

import (
	"context"
	"errors"
	"io"
	"sync/atomic"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/server"
)

// lateHandler lets the transport exist before the node it delivers to:
// until set, inbound messages are dropped (Raft retransmits).
type lateHandler struct {
	n atomic.Pointer[node.Node]
}

var errNotStarted = errors.New("raftd: node not started yet")

func (h *lateHandler) Process(ctx context.Context, m raft.Message) error {
	if n := h.n.Load(); n != nil {
		return n.Process(ctx, m)
	}
	return errNotStarted
}

func (h *lateHandler) ReportUnreachable(id uint64) {
	if n := h.n.Load(); n != nil {
		n.ReportUnreachable(id)
	}
}

func (h *lateHandler) ReportSnapshot(id uint64, st raft.SnapshotStatus) {
	if n := h.n.Load(); n != nil {
		n.ReportSnapshot(id, st)
	}
}

func (h *lateHandler) ReceiveSnapshot(ctx context.Context, m raft.Message, body io.Reader) error {
	if n := h.n.Load(); n != nil {
		return n.ReceiveSnapshot(ctx, m, body)
	}
	return errNotStarted
}

func (h *lateHandler) OpenSnapshot(meta raft.SnapshotMetadata, data []byte) (io.ReadCloser, error) {
	if n := h.n.Load(); n != nil {
		return n.OpenSnapshot(meta, data)
	}
	return nil, errNotStarted
}

// latePeers lets the node exist before the server that asks other
// members for their checkpoint digests (node.CheckpointPeers).
type latePeers struct {
	s atomic.Pointer[server.Server]
}

func (p *latePeers) CheckpointDigest(ctx context.Context, id, index uint64) ([]byte, error) {
	if s := p.s.Load(); s != nil {
		return s.CheckpointDigest(ctx, id, index)
	}
	return nil, errNotStarted
}
