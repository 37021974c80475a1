package kv

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/RaduBerinde/btreemap"

	"github.com/raftd/raftd/fsms/internal/jsoncmd"
	"github.com/raftd/raftd/fsms/internal/records"
	"github.com/raftd/raftd/fsms/internal/version"
	"github.com/raftd/raftd/plugin/fsm"
)

// Name, Format and the version range of this FSM.
const (
	Name       = "kv"
	Format     = "raftd.kv.v1"
	MinVersion = 1
	MaxVersion = 2
	// DowngradeSafeTo is the lowest version kv declares safe to switch back
	// to: every version stores plain strings and reads them the same way
	// (version 2 only adds the incr command), so going back to 1 only
	// turns incr off again.
	DowngradeSafeTo = 1
)

const degree = 32

// FSM is an in-memory sorted map from string to string. It is not safe for
// concurrent use, except that a Snapshot's WriteTo may run concurrently with
// other methods (the tree is copy-on-write).
type FSM struct {
	tree       *btreemap.BTreeMap[string, string]
	index      uint64
	term       uint64
	version    uint32
	maxVersion uint32
}

// Options configure an FSM.
type Options struct {
	// MaxVersion caps the versions the FSM reports and runs, for a build
	// that behaves like an older release (raftd-fsm-kv-v1, for upgrade
	// rehearsals). 0 means MaxVersion; it must be in [MinVersion,
	// MaxVersion].
	MaxVersion uint32
}

var _ fsm.FSM = (*FSM)(nil)
var _ fsm.BatchApplier = (*FSM)(nil)

// New returns an empty kv FSM.
func New() *FSM { return &FSM{tree: newTree(), maxVersion: MaxVersion} }

// NewWithOptions returns an empty kv FSM configured by o. It panics if
// o.MaxVersion is outside [MinVersion, MaxVersion] (a programming error in
// the plugin's main).
func NewWithOptions(o Options) *FSM {
	f := New()
	if o.MaxVersion != 0 {
		if o.MaxVersion < MinVersion || o.MaxVersion > MaxVersion {
			panic(fmt.Sprintf("kv: Options.MaxVersion %d outside [%d,%d]", o.MaxVersion, MinVersion, MaxVersion))
		}
		f.maxVersion = o.MaxVersion
	}
	return f
}

func newTree() *btreemap.BTreeMap[string, string] {
	return btreemap.New[string, string](degree, strings.Compare)
}

// Info implements fsm.FSM.
func (f *FSM) Info(context.Context) (fsm.Info, error) {
	return fsm.Info{Name: Name, MinVersion: MinVersion, MaxVersion: f.maxVersion,
		AppliedIndex: f.index, AppliedTerm: f.term, DowngradeSafeTo: DowngradeSafeTo}, nil
}

// Len returns the number of keys.
func (f *FSM) Len() int { return f.tree.Len() }

// Apply implements fsm.FSM.
func (f *FSM) Apply(_ context.Context, e fsm.Entry) ([]byte, error) {
	v, err := version.Of(Name, e, MinVersion, f.maxVersion)
	if err != nil {
		return nil, err
	}
	res := f.apply(e.Data, v)
	f.index, f.term, f.version = e.Index, e.Term, v
	return res, nil
}

// ApplyBatch implements fsm.BatchApplier.
func (f *FSM) ApplyBatch(ctx context.Context, es []fsm.Entry) ([][]byte, error) {
	out := make([][]byte, len(es))
	for i, e := range es {
		r, err := f.Apply(ctx, e)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// The results of put and delete. They are shared: a result is never
// modified by the FSM or by the caller (fsm.FSM's contract).
var (
	resOK    = []byte(`{"ok":true}`)
	resNotOK = []byte(`{"ok":false}`)
)

func (f *FSM) apply(data []byte, version uint32) []byte {
	c, op, errRes := jsoncmd.ParseOp(data, "command")
	if errRes != nil {
		return errRes
	}
	switch op {
	case "put":
		key, ok := c.String("key")
		if !ok {
			return jsoncmd.Error("key must be a string")
		}
		val, ok := c.String("value")
		if !ok {
			return jsoncmd.Error("value must be a string")
		}
		f.tree.ReplaceOrInsert(key, val)
		return resOK
	case "delete":
		key, ok := c.String("key")
		if !ok {
			return jsoncmd.Error("key must be a string")
		}
		if _, _, existed := f.tree.Delete(key); existed {
			return resOK
		}
		return resNotOK
	case "cas":
		key, ok := c.String("key")
		if !ok {
			return jsoncmd.Error("key must be a string")
		}
		oldNull := c.IsNull("old")
		old, oldOK := c.String("old")
		if !oldNull && !oldOK {
			return jsoncmd.Error("old must be a string or null")
		}
		nv, ok := c.String("new")
		if !ok {
			return jsoncmd.Error("new must be a string")
		}
		_, cur, present := f.tree.Get(key)
		if (oldNull && !present) || (oldOK && present && cur == old) {
			f.tree.ReplaceOrInsert(key, nv)
			return casResult(true, nv)
		}
		return casResult(false, cur)
	case "incr":
		if version < 2 {
			return jsoncmd.Error("unsupported in version 1")
		}
		key, ok := c.String("key")
		if !ok {
			return jsoncmd.Error("key must be a string")
		}
		delta, ok := c.Int("delta")
		if !ok {
			return jsoncmd.Error("delta must be an integer")
		}
		var cur int64
		if _, s, present := f.tree.Get(key); present {
			cur, ok = parseCanonicalInt(s)
			if !ok {
				return jsoncmd.Error("value is not an integer")
			}
		}
		nv, ok := jsoncmd.AddSafe(cur, delta)
		if !ok {
			return jsoncmd.Error("overflow")
		}
		f.tree.ReplaceOrInsert(key, strconv.FormatInt(nv, 10))
		b := append(make([]byte, 0, 32), `{"value":`...)
		b = jsoncmd.AppendInt(b, nv)
		return append(b, '}')
	default:
		return jsoncmd.Error("unknown op: " + op)
	}
}

func casResult(ok bool, v string) []byte {
	b := make([]byte, 0, len(v)+24)
	b = append(b, `{"ok":`...)
	b = jsoncmd.AppendBool(b, ok)
	b = append(b, `,"value":`...)
	b = jsoncmd.AppendString(b, v)
	return append(b, '}')
}

var canonicalInt = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

// parseCanonicalInt accepts the canonical decimal form of a safe integer.
func parseCanonicalInt(s string) (int64, bool) {
	if len(s) > 17 || s == "-0" || !canonicalInt.MatchString(s) {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v > jsoncmd.MaxSafe || v < -jsoncmd.MaxSafe {
		return 0, false
	}
	return v, true
}

// Query implements fsm.FSM.
func (f *FSM) Query(_ context.Context, q []byte) ([]byte, error) {
	c, op, errRes := jsoncmd.ParseOp(q, "query")
	if errRes != nil {
		return errRes, nil
	}
	switch op {
	case "get":
		key, ok := c.String("key")
		if !ok {
			return jsoncmd.Error("key must be a string"), nil
		}
		_, v, found := f.tree.Get(key)
		b := append(make([]byte, 0, len(v)+32), `{"found":`...)
		b = jsoncmd.AppendBool(b, found)
		b = append(b, `,"value":`...)
		b = jsoncmd.AppendString(b, v)
		return append(b, '}'), nil
	case "list":
		var ok bool
		prefix := ""
		if c.Has("prefix") {
			if prefix, ok = c.String("prefix"); !ok {
				return jsoncmd.Error("prefix must be a string"), nil
			}
		}
		var limit int64
		if c.Has("limit") {
			if limit, ok = c.Int("limit"); !ok {
				return jsoncmd.Error("limit must be an integer"), nil
			}
			if limit < 0 {
				return jsoncmd.Error("limit must be a non-negative integer"), nil
			}
		}
		b := append(make([]byte, 0, 256), `{"items":[`...)
		n := int64(0)
		for k, v := range f.tree.Ascend(btreemap.GE(prefix), btreemap.Max[string]()) {
			if !strings.HasPrefix(k, prefix) || (limit > 0 && n == limit) {
				break
			}
			if n > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"key":`...)
			b = jsoncmd.AppendString(b, k)
			b = append(b, `,"value":`...)
			b = jsoncmd.AppendString(b, v)
			b = append(b, '}')
			n++
		}
		return append(b, "]}"...), nil
	default:
		return jsoncmd.Error("unknown op: " + op), nil
	}
}

// Snapshot implements fsm.FSM. It clones the tree lazily (O(1)); writes to
// f afterwards copy the nodes they touch.
func (f *FSM) Snapshot(context.Context) (fsm.Snapshot, error) {
	return &snapshot{
		tree: f.tree.Clone(),
		hdr:  fsm.SnapshotHeader{Index: f.index, Term: f.term, Version: f.version, Format: Format},
	}, nil
}

type snapshot struct {
	tree *btreemap.BTreeMap[string, string]
	hdr  fsm.SnapshotHeader
}

func (s *snapshot) Header() fsm.SnapshotHeader { return s.hdr }
func (s *snapshot) Release()                   { s.tree = nil }

func (s *snapshot) WriteTo(ctx context.Context, w io.Writer) error {
	return encode(ctx, s.tree, w)
}

func encode(ctx context.Context, t *btreemap.BTreeMap[string, string], w io.Writer) error {
	rw := records.NewWriter(w)
	n := 0
	for k, v := range t.Ascend(btreemap.Min[string](), btreemap.Max[string]()) {
		if err := rw.Write(k); err != nil {
			return err
		}
		if err := rw.Write(v); err != nil {
			return err
		}
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return rw.Flush()
}

// Restore implements fsm.FSM. The previous state is kept on error.
func (f *FSM) Restore(ctx context.Context, h fsm.SnapshotHeader, r io.Reader) error {
	if h.Format != Format {
		return fmt.Errorf("kv: restore: %w %q (want %q)", fsm.ErrSnapshotFormat, h.Format, Format)
	}
	t := newTree()
	rr := records.NewReader(r)
	prev, first := "", true
	for n := 0; ; n++ {
		k, v, err := rr.Next2()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("kv: restore: %w", err)
		}
		if !first && k <= prev {
			return fmt.Errorf("kv: restore: %w: key %q not after %q", fsm.ErrSnapshotCorrupt, k, prev)
		}
		first, prev = false, k
		t.ReplaceOrInsert(k, v)
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	f.tree, f.index, f.term, f.version = t, h.Index, h.Term, h.Version
	return nil
}

// Digest implements fsm.FSM: SHA-256 of the canonical encoding.
func (f *FSM) Digest(ctx context.Context) ([]byte, error) {
	h := sha256.New()
	if err := encode(ctx, f.tree, h); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
