package transport

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/raftd/raftd/core/codec"
	"github.com/raftd/raftd/core/raft"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
)

// SnapshotTransfer describes an outbound snapshot transfer in progress.
type SnapshotTransfer struct {
	// To is the receiving peer.
	To uint64
	// Index is the snapshot's last included index.
	Index uint64
	// BytesSent counts body bytes handed to gRPC so far.
	BytesSent uint64
	// Started is when the transfer began.
	Started time.Time
}

// transfer is the live state behind a SnapshotTransfer.
type transfer struct {
	to, index uint64
	started   time.Time
	sent      atomic.Uint64
}

// SnapshotTransfers lists the outbound snapshot transfers in progress,
// ordered by peer id.
func (t *Transport) SnapshotTransfers() []SnapshotTransfer {
	t.xferMu.Lock()
	out := make([]SnapshotTransfer, 0, len(t.xfers))
	for x := range t.xfers {
		out = append(out, SnapshotTransfer{To: x.to, Index: x.index, BytesSent: x.sent.Load(), Started: x.started})
	}
	t.xferMu.Unlock()
	slices.SortFunc(out, func(a, b SnapshotTransfer) int {
		return cmp.Or(cmp.Compare(a.To, b.To), cmp.Compare(a.Index, b.Index))
	})
	return out
}

// startSnapshot runs one outbound snapshot transfer to p (nil if the peer
// is unknown, which fails the transfer) on its own goroutine, and reports
// its outcome. The caller holds t.mu for reading and has checked that t is
// not closed.
func (t *Transport) startSnapshot(p *peer, m raft.Message) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		var err error
		started := time.Now()
		if p == nil {
			err = fmt.Errorf("transport: snapshot to unknown peer %d", m.To)
		} else {
			x := &transfer{to: m.To, started: started}
			if m.Snapshot != nil {
				x.index = m.Snapshot.Metadata.Index
			}
			t.xferMu.Lock()
			t.xfers[x] = struct{}{}
			t.xferMu.Unlock()
			err = t.sendSnapshot(p, m, x)
			t.xferMu.Lock()
			delete(t.xfers, x)
			t.xferMu.Unlock()
		}
		if t.ctx.Err() != nil {
			return // closing: nobody is listening
		}
		st := raft.SnapshotFinish
		if err != nil {
			st = raft.SnapshotFailure
			t.stats.snapshotsFailed.Add(1)
			t.opts.Logger.Warn("transport: snapshot failed", "to", m.To, "err", err)
		} else {
			t.stats.snapshotsSent.Add(1)
			t.snapSend.Observe(time.Since(started).Seconds())
		}
		t.opts.Handler.ReportSnapshot(m.To, st)
	}()
}

// sendSnapshot streams m and the body its snapshot describes to p on a
// connection of its own, so the transfer never queues behind, or delays,
// the peer's message stream.
func (t *Transport) sendSnapshot(p *peer, m raft.Message, x *transfer) error {
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

	cc, err := grpc.NewClient(target(p.addr), p.dialOpts...)
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
			x.sent.Add(uint64(n))
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
