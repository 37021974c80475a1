package conformance

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/host"
)

// Options configures Run. FSM is required.
type Options struct {
	// FSM is the plugin under test (--fsm).
	FSM string
	// FSM2 is a second implementation to compare against (--fsm2). Default:
	// a second instance of FSM.
	FSM2 string
	// Seed seeds the built-in generator (--seed). Default 1.
	Seed int64
	// Entries is the number of Apply entries to generate (--entries).
	// Default 10000. Ignored with Commands.
	Entries int
	// Commands is a commands file (--commands): one Apply command per line,
	// "?QUERY" for a query, "@version N" to set the version, "#" comments.
	// Required for plugins other than counter, kv and queue.
	Commands string
	// CheckpointEvery compares digests every this many entries. Default 1000.
	CheckpointEvery int
	// BatchEntries is the Apply batch size. Default 64.
	BatchEntries int
	// TempDir holds the snapshot file. Default os.TempDir().
	TempDir string
	// Logger receives the plugins' stderr. Default: discard.
	Logger *slog.Logger
	// Progress, if set, receives one line per checkpoint.
	Progress io.Writer
}

// Report summarizes a passing run.
type Report struct {
	Name string
	// MinVersion..MaxVersion are the versions compared: those both
	// instances support.
	MinVersion, MaxVersion uint32
	// A and B are the version ranges the two implementations report
	// (equal unless FSM2 is another release).
	A, B          [2]uint32
	Entries       int // Apply entries (including malformed ones)
	Rejected      int // results that were {"error":...}
	Queries       int
	Checkpoints   int
	LastIndex     uint64
	Digest        []byte
	SnapshotBytes int64
	Duration      time.Duration
	// Warnings are protocol "SHOULD"s the plugin did not meet.
	Warnings []string
}

// String renders the report for a terminal.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "conformance: PASS fsm %q versions %d..%d\n", r.Name, r.MinVersion, r.MaxVersion)
	if r.A != r.B {
		fmt.Fprintf(&b, "  compared at the versions both support: A %d..%d, B %d..%d\n", r.A[0], r.A[1], r.B[0], r.B[1])
	}
	fmt.Fprintf(&b, "  %d entries (%d rejected as results), %d queries, %d digest checkpoints, last index %d\n",
		r.Entries, r.Rejected, r.Queries, r.Checkpoints, r.LastIndex)
	fmt.Fprintf(&b, "  final digest %s, snapshot %d bytes, snapshot->restore digest equal, info after restart consistent\n",
		hex.EncodeToString(r.Digest), r.SnapshotBytes)
	fmt.Fprintf(&b, "  took %v\n", r.Duration.Round(time.Millisecond))
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "  warning: %s\n", w)
	}
	return b.String()
}

// DivergenceError names the first index at which the instances disagreed.
type DivergenceError struct {
	// Index is the log index of the first differing result, or the
	// checkpoint index at which digests differed (the divergence then lies
	// after the previous checkpoint, Since).
	Index uint64
	Since uint64
	// What is "result", "query result", "digest" or "restored digest".
	What string
	A, B []byte
	// Command is the entry's data (for result divergence).
	Command []byte
}

func (e *DivergenceError) Error() string {
	switch e.What {
	case "digest", "restored digest":
		return fmt.Sprintf("conformance: %s differs at index %d (diverged after index %d): %x vs %x", e.What, e.Index, e.Since, e.A, e.B)
	}
	return fmt.Sprintf("conformance: %s differs at index %d for %q: %q vs %q", e.What, e.Index, e.Command, e.A, e.B)
}

// commonVersions returns the versions both a and b support. Two
// implementations of one FSM may support different ranges (an old release
// and a new one): they are compared at the versions they share, which are
// the ones a cluster running both can have active during a rolling
// upgrade.
func commonVersions(a, b fsm.Info) (lo, hi uint32, err error) {
	if a.Name != b.Name {
		return 0, 0, fmt.Errorf("conformance: info differs: A %q %d..%d, B %q %d..%d",
			a.Name, a.MinVersion, a.MaxVersion, b.Name, b.MinVersion, b.MaxVersion)
	}
	lo, hi = max(a.MinVersion, b.MinVersion), min(a.MaxVersion, b.MaxVersion)
	if lo > hi {
		return 0, 0, fmt.Errorf("conformance: no version in common: A %q %d..%d, B %q %d..%d",
			a.Name, a.MinVersion, a.MaxVersion, b.Name, b.MinVersion, b.MaxVersion)
	}
	return lo, hi, nil
}

type instance struct {
	label string
	c     *host.Client
}

// Run performs the conformance check. It returns a Report when the plugin
// passes, a *DivergenceError when the instances disagree, and another error
// when a plugin breaks (crash, hang, gRPC error) or cannot be started.
func Run(ctx context.Context, o Options) (Report, error) {
	t0 := time.Now()
	if o.FSM == "" {
		return Report{}, errors.New("conformance: no plugin given (--fsm)")
	}
	if o.FSM2 == "" {
		o.FSM2 = o.FSM
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Entries <= 0 {
		o.Entries = 10000
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = 1000
	}
	if o.BatchEntries <= 0 {
		o.BatchEntries = 64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	start := func(path, label string) (*instance, error) {
		c, err := host.Start(ctx, host.Config{Path: path, Name: label, Logger: o.Logger})
		if err != nil {
			return nil, fmt.Errorf("conformance: start %s: %w", label, err)
		}
		return &instance{label: label, c: c}, nil
	}
	var insts []*instance
	r := &runner{o: o}
	defer func() {
		for _, in := range append(insts, r.extra...) {
			in.c.Close()
		}
	}()
	a, err := start(o.FSM, "A")
	if err != nil {
		return Report{}, err
	}
	insts = append(insts, a)
	b, err := start(o.FSM2, "B")
	if err != nil {
		return Report{}, err
	}
	insts = append(insts, b)

	ia, err := a.c.Info(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("conformance: A: info: %w", err)
	}
	ib, err := b.c.Info(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("conformance: B: info: %w", err)
	}
	lo, hi, err := commonVersions(ia, ib)
	if err != nil {
		return Report{}, err
	}
	if ia.AppliedIndex != 0 || ib.AppliedIndex != 0 {
		return Report{}, fmt.Errorf("conformance: a fresh instance must report applied index 0 (A %d, B %d); start from an empty state", ia.AppliedIndex, ib.AppliedIndex)
	}
	rep := Report{Name: ia.Name, MinVersion: lo, MaxVersion: hi,
		A: [2]uint32{ia.MinVersion, ia.MaxVersion}, B: [2]uint32{ib.MinVersion, ib.MaxVersion}}

	var gen Generator
	limit := o.Entries
	if o.Commands != "" {
		f, err := os.Open(o.Commands)
		if err != nil {
			return rep, fmt.Errorf("conformance: %w", err)
		}
		defer f.Close()
		gen, limit = NewFileGenerator(f), -1
	} else {
		var ok bool
		if gen, ok = NewGenerator(ia.Name, o.Seed); !ok {
			return rep, fmt.Errorf("conformance: no built-in commands for fsm %q; give a commands file (--commands)", ia.Name)
		}
	}

	// Both instances get the same entries: those of the versions both
	// support.
	info := ia
	info.MinVersion, info.MaxVersion = lo, hi
	r.rep, r.info, r.active = &rep, info, []*instance{a, b}
	if err := r.stream(ctx, gen, limit); err != nil {
		return rep, err
	}
	if fg, ok := gen.(*fileGen); ok && fg.Err() != nil {
		return rep, fg.Err()
	}
	// Malformed input the generators do not make: a large garbage command
	// and an empty one must come back as results, identically.
	garbage := bytes.Repeat([]byte("\x00{not json"), 200000)
	for _, d := range [][]byte{garbage, {}} {
		r.index++
		r.pending = append(r.pending, fsm.Entry{Index: r.index, Term: r.term, Data: d, Version: r.info.MinVersion})
	}
	if err := r.flush(ctx); err != nil {
		return rep, err
	}
	if err := r.checkpoint(ctx); err != nil {
		return rep, err
	}

	// Snapshot B -> fresh instance; digests equal; a truncated body is refused.
	snapPath, size, err := r.snapshotToFile(ctx, b)
	if err != nil {
		return rep, err
	}
	defer os.Remove(snapPath)
	defer os.Remove(snapPath + ".hdr")
	rep.SnapshotBytes = size
	c, err := start(o.FSM, "C")
	if err != nil {
		return rep, err
	}
	insts = append(insts, c)
	if err := r.restoreAndCompare(ctx, c, snapPath); err != nil {
		return rep, err
	}
	if w := r.truncatedRestore(ctx, c, snapPath, size); w != "" {
		rep.Warnings = append(rep.Warnings, w)
	}
	if _, err := c.c.Info(ctx); err != nil {
		return rep, fmt.Errorf("conformance: C after a bad restore: %w", err)
	}

	// Info after restart: same identity; applied index 0 (in memory) or the
	// last index (persistent). An in-memory instance is restored and must
	// match again.
	if err := a.c.Restart(ctx); err != nil {
		return rep, fmt.Errorf("conformance: restart A: %w", err)
	}
	ir, err := a.c.Info(ctx)
	if err != nil {
		return rep, fmt.Errorf("conformance: A after restart: info: %w", err)
	}
	if ir.Name != ia.Name || ir.MinVersion != ia.MinVersion || ir.MaxVersion != ia.MaxVersion {
		return rep, fmt.Errorf("conformance: A after restart reports %q %d..%d, before %q %d..%d",
			ir.Name, ir.MinVersion, ir.MaxVersion, ia.Name, ia.MinVersion, ia.MaxVersion)
	}
	switch ir.AppliedIndex {
	case 0:
		if err := r.restoreAndCompare(ctx, a, snapPath); err != nil {
			return rep, err
		}
	case r.index:
		idx, d, err := a.c.DigestAt(ctx)
		if err != nil {
			return rep, fmt.Errorf("conformance: A after restart: digest: %w", err)
		}
		if idx != r.index || !bytes.Equal(d, r.digest) {
			return rep, &DivergenceError{What: "digest after restart", Index: r.index, Since: r.index, A: d, B: r.digest}
		}
	default:
		return rep, fmt.Errorf("conformance: A after restart reports applied index %d; want 0 (in memory) or %d", ir.AppliedIndex, r.index)
	}
	rep.Digest = r.digest
	rep.LastIndex = r.index
	rep.Duration = time.Since(t0)
	return rep, nil
}

type runner struct {
	o      Options
	rep    *Report
	info   fsm.Info
	active []*instance // instances fed the stream
	extra  []*instance // started by the runner (closed by Run)

	index, term uint64
	lastCheck   uint64
	digest      []byte
	pending     []fsm.Entry
	sinceCheck  int
	midSnapshot bool
}

// stream feeds the generator's steps to every active instance.
func (r *runner) stream(ctx context.Context, gen Generator, limit int) error {
	r.term = 1
	entries := 0
	for limit < 0 || entries < limit {
		s, ok := gen.Next()
		if !ok {
			break
		}
		if s.Query {
			if err := r.flush(ctx); err != nil {
				return err
			}
			if err := r.query(ctx, s.Data); err != nil {
				return err
			}
			continue
		}
		entries++
		// Mostly consecutive indexes, sometimes a gap (a non-command entry)
		// and sometimes a new term, as in a real log.
		r.index++
		if entries%97 == 0 {
			r.index++
		}
		if entries%1500 == 0 {
			r.term++
		}
		v := s.Version
		if v != 0 && (v < r.info.MinVersion || v > r.info.MaxVersion) {
			return fmt.Errorf("conformance: the commands file asks for version %d, outside the versions compared (%d..%d)", v, r.info.MinVersion, r.info.MaxVersion)
		}
		if v == 0 {
			// The lowest version for the first half, the highest after.
			v = r.info.MinVersion
			if limit > 0 && entries > limit/2 {
				v = r.info.MaxVersion
			}
		}
		r.pending = append(r.pending, fsm.Entry{Index: r.index, Term: r.term, Data: s.Data, Version: v})
		if len(r.pending) >= r.o.BatchEntries {
			if err := r.flush(ctx); err != nil {
				return err
			}
		}
		if r.sinceCheck++; r.sinceCheck >= r.o.CheckpointEvery {
			if err := r.flush(ctx); err != nil {
				return err
			}
			if err := r.checkpoint(ctx); err != nil {
				return err
			}
			// Halfway, bring in a third instance restored from a snapshot
			// of A, and feed it the rest of the stream too.
			if !r.midSnapshot && limit > 0 && entries >= limit/2 {
				r.midSnapshot = true
				if err := r.addRestored(ctx); err != nil {
					return err
				}
			}
		}
	}
	return r.flush(ctx)
}

// each runs f on every active instance in parallel.
func (r *runner) each(f func(in *instance, i int) error) error {
	errs := make([]error, len(r.active))
	var wg sync.WaitGroup
	for i, in := range r.active {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(in, i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (r *runner) flush(ctx context.Context) error {
	if len(r.pending) == 0 {
		return nil
	}
	es := r.pending
	r.pending = nil
	res := make([][][]byte, len(r.active))
	err := r.each(func(in *instance, i int) error {
		out, err := in.c.ApplyBatch(ctx, es)
		if err != nil {
			return fmt.Errorf("conformance: %s: apply entries %d..%d: %w", in.label, es[0].Index, es[len(es)-1].Index, err)
		}
		res[i] = out
		return nil
	})
	if err != nil {
		return err
	}
	for j, e := range es {
		for i := 1; i < len(res); i++ {
			if !bytes.Equal(res[0][j], res[i][j]) {
				return &DivergenceError{What: "result (" + r.active[0].label + " vs " + r.active[i].label + ")",
					Index: e.Index, A: res[0][j], B: res[i][j], Command: e.Data}
			}
		}
		if bytes.HasPrefix(res[0][j], []byte(`{"error":`)) {
			r.rep.Rejected++
		}
	}
	r.rep.Entries += len(es)
	return nil
}

func (r *runner) query(ctx context.Context, q []byte) error {
	res := make([][]byte, len(r.active))
	err := r.each(func(in *instance, i int) error {
		out, err := in.c.Query(ctx, q)
		if err != nil {
			return fmt.Errorf("conformance: %s: query %q after index %d: %w", in.label, q, r.index, err)
		}
		res[i] = out
		return nil
	})
	if err != nil {
		return err
	}
	for i := 1; i < len(res); i++ {
		if !bytes.Equal(res[0], res[i]) {
			return &DivergenceError{What: "query result (" + r.active[0].label + " vs " + r.active[i].label + ")",
				Index: r.index, A: res[0], B: res[i], Command: q}
		}
	}
	r.rep.Queries++
	return nil
}

func (r *runner) checkpoint(ctx context.Context) error {
	r.sinceCheck = 0
	ds := make([][]byte, len(r.active))
	err := r.each(func(in *instance, i int) error {
		idx, d, err := in.c.DigestAt(ctx)
		if err != nil {
			return fmt.Errorf("conformance: %s: digest at %d: %w", in.label, r.index, err)
		}
		if idx != r.index {
			return fmt.Errorf("conformance: %s: digest reports applied index %d, want %d", in.label, idx, r.index)
		}
		ds[i] = d
		return nil
	})
	if err != nil {
		return err
	}
	for i := 1; i < len(ds); i++ {
		if !bytes.Equal(ds[0], ds[i]) {
			return &DivergenceError{What: "digest", Index: r.index, Since: r.lastCheck, A: ds[0], B: ds[i]}
		}
	}
	if len(ds[0]) == 0 {
		return fmt.Errorf("conformance: empty digest at index %d", r.index)
	}
	r.digest, r.lastCheck = ds[0], r.index
	r.rep.Checkpoints++
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, "checkpoint index %d digest %x\n", r.index, ds[0][:min(8, len(ds[0]))])
	}
	return nil
}

func (r *runner) snapshotToFile(ctx context.Context, in *instance) (string, int64, error) {
	f, err := os.CreateTemp(r.o.TempDir, "raftd-conformance-*.snap")
	if err != nil {
		return "", 0, fmt.Errorf("conformance: %w", err)
	}
	defer f.Close()
	cw := &countWriter{w: f}
	var h fsm.SnapshotHeader
	snap, err := in.c.Snapshot(ctx)
	if err == nil {
		h = snap.Header()
		err = snap.WriteTo(ctx, cw)
		snap.Release()
	}
	if err != nil {
		os.Remove(f.Name())
		return "", 0, fmt.Errorf("conformance: %s: snapshot: %w", in.label, err)
	}
	if h.Index != r.index {
		os.Remove(f.Name())
		return "", 0, fmt.Errorf("conformance: %s: snapshot header index %d, want %d", in.label, h.Index, r.index)
	}
	// Keep the header in a sidecar so the file can be restored later.
	hdr, err := os.Create(f.Name() + ".hdr")
	if err == nil {
		err = json.NewEncoder(hdr).Encode(h)
		if cerr := hdr.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		os.Remove(f.Name())
		return "", 0, fmt.Errorf("conformance: %w", err)
	}
	return f.Name(), cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func readHeader(snapPath string) (fsm.SnapshotHeader, error) {
	f, err := os.Open(snapPath + ".hdr")
	if err != nil {
		return fsm.SnapshotHeader{}, err
	}
	defer f.Close()
	var h fsm.SnapshotHeader
	err = json.NewDecoder(f).Decode(&h)
	return h, err
}

// restoreAndCompare restores the snapshot file into in and compares its
// digest with the last checkpoint.
func (r *runner) restoreAndCompare(ctx context.Context, in *instance, snapPath string) error {
	h, err := readHeader(snapPath)
	if err != nil {
		return fmt.Errorf("conformance: %w", err)
	}
	f, err := os.Open(snapPath)
	if err != nil {
		return fmt.Errorf("conformance: %w", err)
	}
	defer f.Close()
	if err := in.c.Restore(ctx, h, f); err != nil {
		return fmt.Errorf("conformance: %s: restore: %w", in.label, err)
	}
	idx, d, err := in.c.DigestAt(ctx)
	if err != nil {
		return fmt.Errorf("conformance: %s: digest after restore: %w", in.label, err)
	}
	if idx != h.Index || !bytes.Equal(d, r.digest) {
		return &DivergenceError{What: "restored digest", Index: h.Index, Since: h.Index, A: r.digest, B: d}
	}
	info, err := in.c.Info(ctx)
	if err != nil {
		return fmt.Errorf("conformance: %s: info after restore: %w", in.label, err)
	}
	if info.AppliedIndex != h.Index || info.AppliedTerm != h.Term {
		return fmt.Errorf("conformance: %s: info after restore reports %d/%d, want %d/%d", in.label, info.AppliedIndex, info.AppliedTerm, h.Index, h.Term)
	}
	return nil
}

// truncatedRestore restores the snapshot minus its last byte into a fresh
// instance; the plugin should refuse it. It returns a warning or "".
func (r *runner) truncatedRestore(ctx context.Context, in *instance, snapPath string, size int64) string {
	if size == 0 {
		return ""
	}
	h, err := readHeader(snapPath)
	if err != nil {
		return err.Error()
	}
	f, err := os.Open(snapPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if err := in.c.Restore(ctx, h, io.LimitReader(f, size-1)); err == nil {
		return "a snapshot body truncated by one byte was accepted by Restore"
	}
	return ""
}

// addRestored snapshots the first instance into a fresh one that then
// takes part in the rest of the stream.
func (r *runner) addRestored(ctx context.Context) error {
	a := r.active[0]
	path, _, err := r.snapshotToFile(ctx, a)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	defer os.Remove(path + ".hdr")
	c, err := host.Start(ctx, host.Config{Path: r.o.FSM, Name: "A'", Logger: r.o.Logger})
	if err != nil {
		return fmt.Errorf("conformance: start A': %w", err)
	}
	in := &instance{label: "A' (restored from A at " + fmt.Sprint(r.index) + ")", c: c}
	r.extra = append(r.extra, in)
	if err := r.restoreAndCompare(ctx, in, path); err != nil {
		return err
	}
	r.active = append(r.active, in)
	return nil
}
