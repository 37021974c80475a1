package fsmtest

import (
	"bytes"
	"context"
	"testing"

	"github.com/raftd/raftd/plugin/conformance"
	"github.com/raftd/raftd/plugin/fsm"
)

// Step is one table row: an Apply (Query false) or a Query, and the exact
// expected result.
type Step struct {
	Version uint32
	Query   bool
	In      string
	Want    string
}

// RunTable applies the steps in order to f, checking every result byte for
// byte.
func RunTable(t *testing.T, f fsm.FSM, steps []Step) {
	t.Helper()
	ctx := context.Background()
	var index uint64
	for i, s := range steps {
		var got []byte
		var err error
		if s.Query {
			got, err = f.Query(ctx, []byte(s.In))
		} else {
			index++
			got, err = f.Apply(ctx, fsm.Entry{Index: index, Term: 1, Data: []byte(s.In), Version: s.Version})
		}
		if err != nil {
			t.Fatalf("step %d %s: error %v", i, s.In, err)
		}
		if string(got) != s.Want {
			t.Errorf("step %d %s (v%d):\n got %s\nwant %s", i, s.In, s.Version, got, s.Want)
		}
	}
}

// Determinism applies a seeded random command stream to a, snapshots at
// several points, restores each snapshot into a fresh instance from
// newFSM, and checks that the restored instance has the same digest and
// then produces the same results and digests as a for the rest of the
// stream.
func Determinism(t *testing.T, name string, newFSM func() fsm.FSM, seed int64, n int) {
	t.Helper()
	ctx := context.Background()
	gen, ok := conformance.NewGenerator(name, seed)
	if !ok {
		t.Fatalf("no generator for %s", name)
	}
	a := newFSM()
	var followers []fsm.FSM
	info, _ := a.Info(ctx)
	index := uint64(0)
	for applied := 0; applied < n; {
		s, _ := gen.Next()
		if s.Query {
			want, err := a.Query(ctx, s.Data)
			if err != nil {
				t.Fatal(err)
			}
			for j, f := range followers {
				got, err := f.Query(ctx, s.Data)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("follower %d: query %s after %d: %s vs %s (%v)", j, s.Data, index, got, want, err)
				}
			}
			continue
		}
		applied++
		index++
		v := info.MinVersion
		if applied > n/2 {
			v = info.MaxVersion
		}
		e := fsm.Entry{Index: index, Term: 1, Data: s.Data, Version: v}
		want, err := a.Apply(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		for j, f := range followers {
			got, err := f.Apply(ctx, e)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("follower %d: apply %s at %d: %s vs %s (%v)", j, s.Data, index, got, want, err)
			}
		}
		if applied%(n/5) == 0 {
			da := digest(t, a)
			for j, f := range followers {
				if !bytes.Equal(digest(t, f), da) {
					t.Fatalf("follower %d: digest differs at %d", j, index)
				}
			}
			followers = append(followers, restored(t, a, newFSM()))
		}
	}
	if len(followers) == 0 {
		t.Fatal("no snapshot taken")
	}
}

func digest(t *testing.T, f fsm.FSM) []byte {
	t.Helper()
	d, err := f.Digest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// restored snapshots src into dst and checks digest, Info and that the
// snapshot body's SHA-256 equals the digest.
func restored(t *testing.T, src, dst fsm.FSM) fsm.FSM {
	t.Helper()
	ctx := context.Background()
	snap, err := src.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var body bytes.Buffer
	if err := snap.WriteTo(ctx, &body); err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(ctx, snap.Header(), bytes.NewReader(body.Bytes())); err != nil {
		t.Fatal(err)
	}
	ds, dd := digest(t, src), digest(t, dst)
	if !bytes.Equal(ds, dd) {
		t.Fatalf("restored digest %x, want %x", dd, ds)
	}
	if sum := sha256Sum(body.Bytes()); !bytes.Equal(sum, ds) {
		t.Fatalf("digest %x is not SHA-256 of the snapshot body %x", ds, sum)
	}
	is, _ := src.Info(ctx)
	id, _ := dst.Info(ctx)
	if is != id {
		t.Fatalf("info after restore %+v, want %+v", id, is)
	}
	return dst
}
