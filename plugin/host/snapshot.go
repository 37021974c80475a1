package host

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/internal/shared"
	fsmv1 "github.com/raftd/raftd/proto/fsm/v1"
)

// Snapshot envelope: what Snapshot writes and Restore reads, so that the
// node can store one opaque byte stream. Layout (big-endian):
//
//	magic "RFSNAP01" (8) | index u64 | term u64 | version u32 |
//	format length u16 | format | body (to EOF)
const envelopeMagic = "RFSNAP01"

const maxFormatLen = 1024

// WriteEnvelopeHeader writes the envelope header for h.
func WriteEnvelopeHeader(w io.Writer, h fsm.SnapshotHeader) error {
	if len(h.Format) > maxFormatLen {
		return fmt.Errorf("host: snapshot format name of %d bytes", len(h.Format))
	}
	b := make([]byte, 0, 30+len(h.Format))
	b = append(b, envelopeMagic...)
	b = binary.BigEndian.AppendUint64(b, h.Index)
	b = binary.BigEndian.AppendUint64(b, h.Term)
	b = binary.BigEndian.AppendUint32(b, h.Version)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Format)))
	b = append(b, h.Format...)
	_, err := w.Write(b)
	return err
}

// ReadEnvelopeHeader reads the envelope header; r is then positioned at
// the body. It lets a node inspect a stored snapshot without a plugin.
func ReadEnvelopeHeader(r io.Reader) (fsm.SnapshotHeader, error) {
	var fixed [30]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return fsm.SnapshotHeader{}, fmt.Errorf("host: snapshot envelope: %w", err)
	}
	if string(fixed[:8]) != envelopeMagic {
		return fsm.SnapshotHeader{}, errors.New("host: snapshot envelope: bad magic")
	}
	h := fsm.SnapshotHeader{
		Index:   binary.BigEndian.Uint64(fixed[8:]),
		Term:    binary.BigEndian.Uint64(fixed[16:]),
		Version: binary.BigEndian.Uint32(fixed[24:]),
	}
	n := binary.BigEndian.Uint16(fixed[28:])
	if n > maxFormatLen {
		return fsm.SnapshotHeader{}, fmt.Errorf("host: snapshot envelope: format name of %d bytes", n)
	}
	f := make([]byte, n)
	if _, err := io.ReadFull(r, f); err != nil {
		return fsm.SnapshotHeader{}, fmt.Errorf("host: snapshot envelope: %w", err)
	}
	h.Format = string(f)
	return h, nil
}

// Snapshot streams the plugin's state as of its last applied entry into w,
// as an envelope (header, then the body). Applies may continue meanwhile.
// The body is copied chunk by chunk; neither side holds it whole.
func (c *Client) Snapshot(ctx context.Context, w io.Writer) error {
	_, err := c.snapshot(ctx, w, true)
	return err
}

// SnapshotTo streams the bare body into w and returns its header.
func (c *Client) SnapshotTo(ctx context.Context, w io.Writer) (fsm.SnapshotHeader, error) {
	return c.snapshot(ctx, w, false)
}

func (c *Client) snapshot(ctx context.Context, w io.Writer, envelope bool) (fsm.SnapshotHeader, error) {
	var h fsm.SnapshotHeader
	var werr error
	err := c.call(ctx, c.cfg.SnapshotTimeout, "snapshot", func(ctx context.Context, rpc fsmv1.StateMachineClient) error {
		stream, err := rpc.Snapshot(ctx, &fsmv1.SnapshotRequest{})
		if err != nil {
			return err
		}
		first, err := stream.Recv()
		if err != nil {
			return err
		}
		if first.Header == nil || len(first.Data) > 0 {
			werr = errors.New("host: snapshot: first message is not a header")
			return nil
		}
		ph := first.Header
		h = fsm.SnapshotHeader{Index: ph.Index, Term: ph.Term, Version: ph.Version, Format: ph.Format}
		if envelope {
			if werr = WriteEnvelopeHeader(w, h); werr != nil {
				return nil
			}
		}
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if m.Header != nil || len(m.Data) > shared.ChunkBytes {
				werr = fmt.Errorf("host: snapshot: bad chunk (header %v, %d bytes)", m.Header != nil, len(m.Data))
				return nil
			}
			if _, werr = w.Write(m.Data); werr != nil {
				werr = fmt.Errorf("host: snapshot: write: %w", werr)
				return nil
			}
		}
	})
	if err == nil {
		err = werr
	}
	return h, err
}

// Restore replaces the plugin's state with an envelope produced by
// Snapshot. On error the plugin's state is unspecified: restart it.
func (c *Client) Restore(ctx context.Context, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	h, err := ReadEnvelopeHeader(br)
	if err != nil {
		return err
	}
	return c.RestoreFrom(ctx, h, br)
}

// RestoreFrom replaces the plugin's state with body (header h), sent in
// chunks of at most 1 MiB. The host must not Apply concurrently.
func (c *Client) RestoreFrom(ctx context.Context, h fsm.SnapshotHeader, body io.Reader) error {
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
