package counter

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/raftd/raftd/fsms/internal/jsoncmd"
	"github.com/raftd/raftd/fsms/internal/version"
	"github.com/raftd/raftd/plugin/fsm"
)

// Name, Format and the version range of this FSM.
const (
	Name       = "counter"
	Format     = "raftd.counter.v1"
	MinVersion = 1
	MaxVersion = 1
)

// FSM holds one integer in [-(2^53-1), 2^53-1]. Not safe for concurrent use.
type FSM struct {
	value   int64
	index   uint64
	term    uint64
	version uint32
}

var _ fsm.FSM = (*FSM)(nil)

// New returns a counter at 0.
func New() *FSM { return &FSM{} }

// Value returns the current value.
func (f *FSM) Value() int64 { return f.value }

// Info implements fsm.FSM.
func (f *FSM) Info(context.Context) (fsm.Info, error) {
	return fsm.Info{Name: Name, MinVersion: MinVersion, MaxVersion: MaxVersion,
		AppliedIndex: f.index, AppliedTerm: f.term}, nil
}

// Apply implements fsm.FSM.
func (f *FSM) Apply(_ context.Context, e fsm.Entry) ([]byte, error) {
	v, err := version.Of(Name, e, MinVersion, MaxVersion)
	if err != nil {
		return nil, err
	}
	res := f.apply(e.Data)
	f.index, f.term, f.version = e.Index, e.Term, v
	return res, nil
}

func (f *FSM) apply(data []byte) []byte {
	c, op, errRes := jsoncmd.ParseOp(data, "command")
	if errRes != nil {
		return errRes
	}
	if op != "add" {
		return jsoncmd.Error("unknown op: " + op)
	}
	delta, ok := c.Int("delta")
	if !ok {
		return jsoncmd.Error("delta must be an integer")
	}
	nv, ok := jsoncmd.AddSafe(f.value, delta)
	if !ok {
		return jsoncmd.Error("overflow")
	}
	f.value = nv
	return valueResult(nv)
}

func valueResult(v int64) []byte {
	b := append(make([]byte, 0, 32), `{"value":`...)
	b = jsoncmd.AppendInt(b, v)
	return append(b, '}')
}

// Query implements fsm.FSM.
func (f *FSM) Query(_ context.Context, q []byte) ([]byte, error) {
	_, op, errRes := jsoncmd.ParseOp(q, "query")
	if errRes != nil {
		return errRes, nil
	}
	if op != "get" {
		return jsoncmd.Error("unknown op: " + op), nil
	}
	return valueResult(f.value), nil
}

func (f *FSM) encode() []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(f.value))
	return b[:]
}

// Snapshot implements fsm.FSM.
func (f *FSM) Snapshot(context.Context) (fsm.Snapshot, error) {
	return &snapshot{body: f.encode(),
		hdr: fsm.SnapshotHeader{Index: f.index, Term: f.term, Version: f.version, Format: Format}}, nil
}

type snapshot struct {
	body []byte
	hdr  fsm.SnapshotHeader
}

func (s *snapshot) Header() fsm.SnapshotHeader { return s.hdr }
func (s *snapshot) Release()                   {}
func (s *snapshot) WriteTo(_ context.Context, w io.Writer) error {
	_, err := w.Write(s.body)
	return err
}

// Restore implements fsm.FSM.
func (f *FSM) Restore(_ context.Context, h fsm.SnapshotHeader, r io.Reader) error {
	if h.Format != Format {
		return fmt.Errorf("counter: restore: %w %q (want %q)", fsm.ErrSnapshotFormat, h.Format, Format)
	}
	var b [9]byte
	n, err := io.ReadFull(r, b[:])
	if err != io.ErrUnexpectedEOF || n != 8 {
		if err == nil || err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("counter: restore: %w: body is not 8 bytes", fsm.ErrSnapshotCorrupt)
		}
		return fmt.Errorf("counter: restore: %w", err)
	}
	v := int64(binary.BigEndian.Uint64(b[:8]))
	if v > jsoncmd.MaxSafe || v < -jsoncmd.MaxSafe {
		return fmt.Errorf("counter: restore: %w: value %d out of range", fsm.ErrSnapshotCorrupt, v)
	}
	f.value, f.index, f.term, f.version = v, h.Index, h.Term, h.Version
	return nil
}

// Digest implements fsm.FSM.
func (f *FSM) Digest(context.Context) ([]byte, error) {
	s := sha256.Sum256(f.encode())
	return s[:], nil
}
