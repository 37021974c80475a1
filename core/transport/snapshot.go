package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"google.golang.org/grpc"

	"github.com/raftd/raftd/core/codec"
	"github.com/raftd/raftd/core/raft"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
)

// startSnapshot runs one outbound snapshot transfer to p (nil if the peer
// is unknown, which fails the transfer) on its own goroutine, and reports
// its outcome. The caller holds t.mu for reading and has checked that t is
// not closed.
func (t *Transport) startSnapshot(p *peer, m raft.Message) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		var err error
		if p == nil {
			err = fmt.Errorf("transport: snapshot to unknown peer %d", m.To)
		} else {
			err = t.sendSnapshot(p, m)
		}
		if t.ctx.Err() != nil {
			return // closing: nobody is listening
		}
		st := raft.SnapshotFinish
		if err != nil {
			st = raft.SnapshotFailure
			t.stats.snapshotsFailed.Add(1)
			t.opts.Logger.Warningf("transport: snapshot to %d failed: %v", m.To, err)
		} else {
			t.stats.snapshotsSent.Add(1)
		}
		t.opts.Handler.ReportSnapshot(m.To, st)
	}()
}

// sendSnapshot streams m and the body its snapshot describes to p on a
// connection of its own, so the transfer never queues behind, or delays,
// the peer's message stream.
func (t *Transport) sendSnapshot(p *peer, m raft.Message) error {
	if m.Snapshot == nil {
		return errors.New("transport: MsgSnap without snapshot")
	}
	idx := m.Snapshot.Metadata.Index
	if t.opts.Snapshots == nil {
		return fmt.Errorf("transport: snapshot at index %d: no SnapshotSource configured", idx)
	}
	if t.opts.Faults.isCut(p.id) {
		return fmt.Errorf("transport: snapshot at index %d: partitioned from %d (fault injection)", idx, p.id)
	}
	body, err := t.opts.Snapshots.OpenSnapshot(m.Snapshot.Metadata, m.Snapshot.Data)
	if err != nil {
		return fmt.Errorf("transport: open snapshot at index %d: %w", idx, err)
	}
	defer body.Close()

	cc, err := grpc.NewClient(target(p.addr), t.dialOpts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(t.outgoingContext(p.ctx, p.id))
	defer cancel()
	stream, err := raftv1.NewRaftClient(cc).SendSnapshot(ctx)
	if err != nil {
		return fmt.Errorf("transport: snapshot at index %d: %w", idx, err)
	}
	send := func(c *raftv1.SnapshotChunk) error {
		if err := stream.Send(c); err != nil {
			if errors.Is(err, io.EOF) {
				// The receiver ended the call early; its status says why.
				_, err = stream.CloseAndRecv()
			}
			return fmt.Errorf("transport: snapshot at index %d: %w", idx, err)
		}
		return nil
	}
	if err := send(&raftv1.SnapshotChunk{Message: codec.MessageToProto(&m)}); err != nil {
		return err
	}
	var total uint64
	var crc uint32
	for {
		// A fresh buffer per chunk: gRPC may still hold a sent message.
		buf := make([]byte, t.opts.SnapshotChunkBytes)
		n, rerr := io.ReadFull(body, buf)
		if n > 0 {
			total += uint64(n)
			crc = crc32.Update(crc, castagnoli, buf[:n])
			if err := send(&raftv1.SnapshotChunk{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("transport: read snapshot at index %d after %d bytes: %w", idx, total, rerr)
		}
	}
	if err := send(&raftv1.SnapshotChunk{Done: true, TotalBytes: total, Crc32C: crc}); err != nil {
		return err
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return fmt.Errorf("transport: snapshot at index %d (%d bytes): %w", idx, total, err)
	}
	return nil
}
