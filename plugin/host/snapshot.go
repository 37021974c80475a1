package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/internal/shared"
	fsmv1 "github.com/raftd/raftd/proto/fsm/v1"
)

// Snapshot implements fsm.FSM. It opens the plugin's Snapshot stream and
// returns once the plugin has sent its header: a plugin captures its state
// (under its lock, at its applied index) before it sends the header, so
// Apply calls made after Snapshot returns do not change the body. The body
// streams in the returned Snapshot's WriteTo, which may run concurrently
// with any other call; Release ends the stream. Config.SnapshotTimeout
// bounds the whole stream, from Snapshot to the end of WriteTo; missing it
// breaks the process (ReasonTimeout). Neither side holds the body in
// memory: it is copied in chunks of at most 1 MiB.
func (c *Client) Snapshot(ctx context.Context) (fsm.Snapshot, error) {
	p, err := c.current()
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.SnapshotTimeout)
	s := &snapshot{c: c, p: p, sctx: sctx, cancel: cancel}
	var first *fsmv1.SnapshotChunk
	err = s.during(ctx, func() error {
		stream, err := p.rpc.Snapshot(sctx, &fsmv1.SnapshotRequest{})
		if err != nil {
			return err
		}
		s.stream = stream
		first, err = stream.Recv()
		if err == io.EOF {
			err = errors.New("snapshot stream ended before its header")
		}
		return err
	})
	if err != nil {
		cancel()
		return nil, err
	}
	if first.Header == nil || len(first.Data) > 0 {
		cancel()
		return nil, fmt.Errorf("host: plugin %s: snapshot: first message is not a header", c.cfg.Name)
	}
	ph := first.Header
	s.hdr = fsm.SnapshotHeader{Index: ph.Index, Term: ph.Term, Version: ph.Version, Format: ph.Format}
	return s, nil
}

// snapshot is a plugin snapshot whose header has arrived and whose body is
// still on the stream.
type snapshot struct {
	c      *Client
	p      *process
	sctx   context.Context // the stream's: SnapshotTimeout from Snapshot
	cancel context.CancelFunc
	stream fsmv1.StateMachine_SnapshotClient
	hdr    fsm.SnapshotHeader
	once   sync.Once // WriteTo runs once
}

// during runs f, a step of the stream, ending the stream if ctx ends
// meanwhile, and classifies its error like a unary call's.
func (s *snapshot) during(ctx context.Context, f func() error) error {
	stop := context.AfterFunc(ctx, s.cancel)
	err := f()
	stop()
	if err != nil {
		return s.c.callErr(s.p, ctx, s.sctx, s.c.cfg.SnapshotTimeout, "snapshot", err)
	}
	return nil
}

// Header implements fsm.Snapshot.
func (s *snapshot) Header() fsm.SnapshotHeader { return s.hdr }

// WriteTo implements fsm.Snapshot: it copies the body's chunks to w.
// Cancelling ctx ends the stream (the plugin is not broken by it).
func (s *snapshot) WriteTo(ctx context.Context, w io.Writer) error {
	err := errors.New("host: snapshot body already written")
	s.once.Do(func() { err = s.writeTo(ctx, w) })
	return err
}

func (s *snapshot) writeTo(ctx context.Context, w io.Writer) error {
	var werr error
	err := s.during(ctx, func() error {
		for {
			m, err := s.stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if m.Header != nil || len(m.Data) > shared.ChunkBytes {
				werr = fmt.Errorf("host: plugin %s: snapshot: bad chunk (header %v, %d bytes)", s.c.cfg.Name, m.Header != nil, len(m.Data))
				return nil
			}
			if _, err := w.Write(m.Data); err != nil {
				werr = fmt.Errorf("host: snapshot: write: %w", err)
				return nil
			}
		}
	})
	if err == nil {
		err = werr
	}
	s.cancel() // the stream is done (or abandoned after an error)
	return err
}

// Release implements fsm.Snapshot: it ends the stream.
func (s *snapshot) Release() { s.cancel() }

// Restore implements fsm.FSM: it replaces the plugin's state with body
// (encoded as h.Format), sent in chunks of at most 1 MiB; the plugin's
// applied position becomes h.Index/h.Term. The caller must not Apply
// concurrently. On error the plugin's state is unspecified: restart it.
func (c *Client) Restore(ctx context.Context, h fsm.SnapshotHeader, body io.Reader) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	var rerr error
	err := c.call(ctx, c.cfg.SnapshotTimeout, "restore", func(ctx context.Context, rpc fsmv1.StateMachineClient) error {
		stream, err := rpc.Restore(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&fsmv1.SnapshotChunk{Header: &fsmv1.SnapshotHeader{
			Index: h.Index, Term: h.Term, Version: h.Version, Format: h.Format}}); err != nil {
			_, err = stream.CloseAndRecv()
			return err
		}
		buf := make([]byte, shared.ChunkBytes) // reused: Send serializes before returning
		for {
			n, err := io.ReadFull(body, buf)
			if n > 0 {
				if serr := stream.Send(&fsmv1.SnapshotChunk{Data: buf[:n]}); serr != nil {
					_, serr = stream.CloseAndRecv() // the real status
					return serr
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				rerr = fmt.Errorf("host: restore: read snapshot: %w", err)
				return nil
			}
		}
		_, err = stream.CloseAndRecv()
		return err
	})
	if err == nil {
		err = rerr
	}
	return err
}
