package counter_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/raftd/raftd/fsms/counter"
	"github.com/raftd/raftd/fsms/internal/fsmtest"
	"github.com/raftd/raftd/plugin/fsm"
)

type S = fsmtest.Step

func a(in, want string) S { return S{Version: 1, In: in, Want: want} }
func q(in, want string) S { return S{Query: true, In: in, Want: want} }

func TestCommands(t *testing.T) {
	fsmtest.RunTable(t, counter.New(), []S{
		q(`{"op":"get"}`, `{"value":0}`),
		a(`{"op":"add","delta":5}`, `{"value":5}`),
		a(`{"op":"add","delta":-8}`, `{"value":-3}`),
		q(`{"op":"get"}`, `{"value":-3}`),
		a(`{"op":"add","delta":2e0}`, `{"value":-1}`),
		a(`{"op":"add","delta":0.5}`, `{"error":"delta must be an integer"}`),
		a(`{"op":"add","delta":"1"}`, `{"error":"delta must be an integer"}`),
		a(`{"op":"add"}`, `{"error":"delta must be an integer"}`),
		a(`{"op":"add","delta":-9007199254740991}`, `{"error":"overflow"}`),
		a(`{"op":"add","delta":9007199254740991}`, `{"value":9007199254740990}`),
		a(`{"op":"add","delta":2}`, `{"error":"overflow"}`),
		q(`{"op":"get"}`, `{"value":9007199254740990}`),
		a(`{"op":"get"}`, `{"error":"unknown op: get"}`),
		a(`{"delta":1}`, `{"error":"missing op"}`),
		a(`nope`, `{"error":"malformed command"}`),
		q(`{"op":"add","delta":1}`, `{"error":"unknown op: add"}`),
		q(``, `{"error":"malformed query"}`),
	})
}

func TestEncoding(t *testing.T) {
	ctx := context.Background()
	f := counter.New()
	d, _ := f.Digest(ctx)
	if hex.EncodeToString(d) != "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc" {
		t.Fatalf("digest of 0: %x", d)
	}
	f.Apply(ctx, fsm.Entry{Index: 3, Term: 2, Data: []byte(`{"op":"add","delta":-1}`)})
	snap, _ := f.Snapshot(ctx)
	var body bytes.Buffer
	snap.WriteTo(ctx, &body)
	if hex.EncodeToString(body.Bytes()) != "ffffffffffffffff" {
		t.Fatalf("body %x", body.Bytes())
	}
	for _, bad := range []string{"", "\x00\x00\x00", strings.Repeat("\x00", 9), "\x7f\xff\xff\xff\xff\xff\xff\xff"} {
		if err := counter.New().Restore(ctx, snap.Header(), strings.NewReader(bad)); !errors.Is(err, fsm.ErrSnapshotCorrupt) {
			t.Errorf("body %x: err = %v", bad, err)
		}
	}
}

func TestDeterminism(t *testing.T) {
	fsmtest.Determinism(t, "counter", func() fsm.FSM { return counter.New() }, 1, 3000)
}
