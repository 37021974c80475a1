package queue

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/raftd/raftd/fsms/internal/jsoncmd"
	"github.com/raftd/raftd/fsms/internal/records"
	"github.com/raftd/raftd/fsms/internal/version"
	"github.com/raftd/raftd/plugin/fsm"
)

// Name, Format and the version range of this FSM.
const (
	Name       = "queue"
	Format     = "raftd.queue.v1"
	MinVersion = 1
	MaxVersion = 1
)

// FSM is a FIFO of strings. Not safe for concurrent use, except a
// Snapshot's WriteTo.
type FSM struct {
	// items[head:] is the queue, head first.
	items   []string
	head    int
	index   uint64
	term    uint64
	version uint32
}

var _ fsm.FSM = (*FSM)(nil)

// New returns an empty queue.
func New() *FSM { return &FSM{} }

// Len returns the number of items.
func (f *FSM) Len() int { return len(f.items) - f.head }

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
	switch op {
	case "push":
		item, ok := c.String("item")
		if !ok {
			return jsoncmd.Error("item must be a string")
		}
		f.items = append(f.items, item)
		return lenResult(f.Len())
	case "pop":
		if f.Len() == 0 {
			return itemResult(false, "")
		}
		item := f.items[f.head]
		f.items[f.head] = ""
		f.head++
		if f.head == len(f.items) {
			f.items, f.head = f.items[:0], 0
		} else if f.head > 1024 && f.head*2 > len(f.items) {
			n := copy(f.items, f.items[f.head:])
			clear(f.items[n:])
			f.items, f.head = f.items[:n], 0
		}
		return itemResult(true, item)
	default:
		return jsoncmd.Error("unknown op: " + op)
	}
}

func lenResult(n int) []byte {
	b := append(make([]byte, 0, 24), `{"len":`...)
	b = jsoncmd.AppendInt(b, int64(n))
	return append(b, '}')
}

func itemResult(ok bool, item string) []byte {
	b := append(make([]byte, 0, len(item)+24), `{"ok":`...)
	b = jsoncmd.AppendBool(b, ok)
	b = append(b, `,"item":`...)
	b = jsoncmd.AppendString(b, item)
	return append(b, '}')
}

// Query implements fsm.FSM.
func (f *FSM) Query(_ context.Context, q []byte) ([]byte, error) {
	_, op, errRes := jsoncmd.ParseOp(q, "query")
	if errRes != nil {
		return errRes, nil
	}
	switch op {
	case "peek":
		if f.Len() == 0 {
			return itemResult(false, ""), nil
		}
		return itemResult(true, f.items[f.head]), nil
	case "len":
		return lenResult(f.Len()), nil
	default:
		return jsoncmd.Error("unknown op: " + op), nil
	}
}

// Snapshot implements fsm.FSM. It copies the item headers (16 bytes per
// item), not the strings, which are immutable.
func (f *FSM) Snapshot(context.Context) (fsm.Snapshot, error) {
	return &snapshot{items: append([]string(nil), f.items[f.head:]...),
		hdr: fsm.SnapshotHeader{Index: f.index, Term: f.term, Version: f.version, Format: Format}}, nil
}

type snapshot struct {
	items []string
	hdr   fsm.SnapshotHeader
}

func (s *snapshot) Header() fsm.SnapshotHeader { return s.hdr }
func (s *snapshot) Release()                   { s.items = nil }
func (s *snapshot) WriteTo(_ context.Context, w io.Writer) error {
	return encode(s.items, w)
}

func encode(items []string, w io.Writer) error {
	rw := records.NewWriter(w)
	for _, it := range items {
		if err := rw.Write(it); err != nil {
			return err
		}
	}
	return rw.Flush()
}

// Restore implements fsm.FSM. The previous state is kept on error.
func (f *FSM) Restore(_ context.Context, h fsm.SnapshotHeader, r io.Reader) error {
	if h.Format != Format {
		return fmt.Errorf("queue: restore: %w %q (want %q)", fsm.ErrSnapshotFormat, h.Format, Format)
	}
	var items []string
	rr := records.NewReader(r)
	for {
		it, err := rr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("queue: restore: %w", err)
		}
		items = append(items, it)
	}
	f.items, f.head, f.index, f.term, f.version = items, 0, h.Index, h.Term, h.Version
	return nil
}

// Digest implements fsm.FSM.
func (f *FSM) Digest(context.Context) ([]byte, error) {
	h := sha256.New()
	if err := encode(f.items[f.head:], h); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
