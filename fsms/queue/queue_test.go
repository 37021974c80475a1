package queue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/raftd/raftd/fsms/internal/fsmtest"
	"github.com/raftd/raftd/fsms/queue"
	"github.com/raftd/raftd/plugin/fsm"
)

type S = fsmtest.Step

func a(in, want string) S { return S{Version: 1, In: in, Want: want} }
func q(in, want string) S { return S{Query: true, In: in, Want: want} }

func TestCommands(t *testing.T) {
	fsmtest.RunTable(t, queue.New(), []S{
		q(`{"op":"len"}`, `{"len":0}`),
		q(`{"op":"peek"}`, `{"ok":false,"item":""}`),
		a(`{"op":"pop"}`, `{"ok":false,"item":""}`),
		a(`{"op":"push","item":"x"}`, `{"len":1}`),
		a(`{"op":"push","item":"y\n\"z\""}`, `{"len":2}`),
		a(`{"op":"push","item":""}`, `{"len":3}`),
		q(`{"op":"peek"}`, `{"ok":true,"item":"x"}`),
		q(`{"op":"len"}`, `{"len":3}`),
		a(`{"op":"pop"}`, `{"ok":true,"item":"x"}`),
		a(`{"op":"pop"}`, `{"ok":true,"item":"y\n\"z\""}`),
		a(`{"op":"pop"}`, `{"ok":true,"item":""}`),
		a(`{"op":"pop"}`, `{"ok":false,"item":""}`),
		a(`{"op":"push"}`, `{"error":"item must be a string"}`),
		a(`{"op":"push","item":3}`, `{"error":"item must be a string"}`),
		a(`{"op":"peek"}`, `{"error":"unknown op: peek"}`),
		q(`{"op":"pop"}`, `{"error":"unknown op: pop"}`),
		a(`[1]`, `{"error":"malformed command"}`),
		q(`{"item":"x"}`, `{"error":"missing op"}`),
	})
}

// TestCompaction pushes and pops enough to trigger the internal compaction
// and checks FIFO order survives it.
func TestCompaction(t *testing.T) {
	ctx := context.Background()
	f := queue.New()
	idx := uint64(0)
	next, popped := 0, 0
	for round := 0; round < 50; round++ {
		for i := 0; i < 300; i++ {
			idx++
			f.Apply(ctx, fsm.Entry{Index: idx, Data: []byte(fmt.Sprintf(`{"op":"push","item":"%d"}`, next))})
			next++
		}
		for i := 0; i < 250; i++ {
			idx++
			got, _ := f.Apply(ctx, fsm.Entry{Index: idx, Data: []byte(`{"op":"pop"}`)})
			if want := fmt.Sprintf(`{"ok":true,"item":"%d"}`, popped); string(got) != want {
				t.Fatalf("pop = %s, want %s", got, want)
			}
			popped++
		}
	}
	if f.Len() != next-popped {
		t.Fatalf("len %d, want %d", f.Len(), next-popped)
	}
}

func TestRestoreRejectsTruncated(t *testing.T) {
	err := queue.New().Restore(context.Background(), fsm.SnapshotHeader{Format: queue.Format}, strings.NewReader("\x00\x00\x00\x03ab"))
	if !errors.Is(err, fsm.ErrSnapshotCorrupt) {
		t.Fatalf("err = %v", err)
	}
}

func TestDeterminism(t *testing.T) {
	fsmtest.Determinism(t, "queue", func() fsm.FSM { return queue.New() }, 1, 3000)
}
