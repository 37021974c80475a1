package node

import (
	"context"
	"fmt"
	"io"

	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/snapshot"
)

// Process implements Handler. A MsgSnap must come through
// ReceiveSnapshot, with its body.
func (n *Node) Process(ctx context.Context, m raft.Message) error {
	if m.Type == raft.MsgSnap {
		return fmt.Errorf("node: MsgSnap from %d without its body (use ReceiveSnapshot)", m.From)
	}
	return n.process(ctx, m)
}

func (n *Node) process(ctx context.Context, m raft.Message) error {
	select {
	case n.recvc <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.quitc:
		return ErrStopped
	}
}

// ReportUnreachable implements Handler.
func (n *Node) ReportUnreachable(id uint64) {
	select {
	case n.ctrlc <- func() { n.rn.ReportUnreachable(id) }:
	default: // best effort: raft retries anyway
	}
}

// ReportSnapshot implements Handler.
func (n *Node) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	select {
	case n.ctrlc <- func() {
		delete(n.sendingSnap, id)
		n.rn.ReportSnapshot(id, status)
	}:
	case <-n.quitc:
	}
}

// ReceiveSnapshot implements Handler: it reads the snapshot stream (the
// core/snapshot framing), checks its header against m's metadata, stores
// the body durably, checked against the stream's trailer, then steps m
// with the local descriptor.
func (n *Node) ReceiveSnapshot(ctx context.Context, m raft.Message, body io.Reader) error {
	if m.Type != raft.MsgSnap || m.Snapshot == nil || m.Snapshot.IsEmpty() {
		return fmt.Errorf("node: receive snapshot: message %v from %d carries no snapshot", m.Type, m.From)
	}
	meta := m.Snapshot.Metadata
	wrap := func(err error) error {
		return fmt.Errorf("node: receive snapshot %d from %d: %w", meta.Index, m.From, err)
	}
	if h := n.halt.Load(); h != nil && h.Checkpoint != 0 {
		// The operator decides what becomes of a diverged state
		// (checkpoint.go): the snapshot would replace the evidence.
		return wrap(&HaltedError{Halt: *h, What: "refusing snapshots from the leader until this replica is rebuilt"})
	}
	hdr, r, err := snapshot.NewReader(body)
	if err != nil {
		return wrap(err)
	}
	if hdr.Index != meta.Index || hdr.Term != meta.Term || !hdr.ConfState.Equal(meta.ConfState) {
		return wrap(fmt.Errorf("header is for index %d term %d membership %v, message says index %d term %d membership %v",
			hdr.Index, hdr.Term, hdr.ConfState, meta.Index, meta.Term, meta.ConfState))
	}
	sink, err := n.st.BeginSnapshot(hdr)
	if err != nil {
		return wrap(err)
	}
	_, err = io.Copy(sink, r)
	var desc []byte
	if err == nil {
		desc, err = sink.Commit()
	} else {
		_ = sink.Abort()
	}
	if err != nil {
		return wrap(err)
	}
	snap := *m.Snapshot
	snap.Data = desc
	m.Snapshot = &snap
	return n.process(ctx, m)
}

// OpenSnapshot implements SnapshotSource: the stream of snap (header, body,
// trailer). If the body turns out to be damaged (a Storage error matching
// ErrCorrupt, from the open or from any Read of the returned reader) the
// node fail-stops with that error rather than let the transport offer the
// same body again (corrupt.go).
func (n *Node) OpenSnapshot(meta raft.SnapshotMetadata, data []byte) (io.ReadCloser, error) {
	return n.openStream(raft.Snapshot{Metadata: meta, Data: data}, "read to send to a follower")
}
