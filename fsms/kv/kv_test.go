package kv_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/raftd/raftd/fsms/internal/fsmtest"
	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/fsm"
)

type S = fsmtest.Step

func q(in, want string) S  { return S{Query: true, In: in, Want: want} }
func a(in, want string) S  { return S{Version: 1, In: in, Want: want} }
func a2(in, want string) S { return S{Version: 2, In: in, Want: want} }

func TestCommands(t *testing.T) {
	fsmtest.RunTable(t, kv.New(), []S{
		// get of a missing key; list of nothing.
		q(`{"op":"get","key":"a"}`, `{"found":false,"value":""}`),
		q(`{"op":"list"}`, `{"items":[]}`),
		// put, get, overwrite.
		a(`{"op":"put","key":"a","value":"1"}`, `{"ok":true}`),
		q(`{"op":"get","key":"a"}`, `{"found":true,"value":"1"}`),
		a(`{"op":"put","key":"a","value":"2"}`, `{"ok":true}`),
		q(`{"op":"get","key":"a"}`, `{"found":true,"value":"2"}`),
		// delete: existed / did not.
		a(`{"op":"delete","key":"a"}`, `{"ok":true}`),
		a(`{"op":"delete","key":"a"}`, `{"ok":false}`),
		// cas with old null: only if absent.
		a(`{"op":"cas","key":"c","old":null,"new":"x"}`, `{"ok":true,"value":"x"}`),
		a(`{"op":"cas","key":"c","old":null,"new":"y"}`, `{"ok":false,"value":"x"}`),
		a(`{"op":"cas","key":"c","old":"x","new":"y"}`, `{"ok":true,"value":"y"}`),
		a(`{"op":"cas","key":"c","old":"x","new":"z"}`, `{"ok":false,"value":"y"}`),
		a(`{"op":"cas","key":"missing","old":"","new":"z"}`, `{"ok":false,"value":""}`),
		a(`{"op":"cas","key":"c","new":"z"}`, `{"error":"old must be a string or null"}`),
		a(`{"op":"cas","key":"c","old":"y"}`, `{"error":"new must be a string"}`),
		a(`{"op":"cas","key":"c","old":"y","new":null}`, `{"error":"new must be a string"}`),
		// incr: version gate, missing key is 0, non-integer values, overflow.
		a(`{"op":"incr","key":"n","delta":1}`, `{"error":"unsupported in version 1"}`),
		S{Version: 0, In: `{"op":"incr","key":"n","delta":1}`, Want: `{"error":"unsupported in version 1"}`},
		a2(`{"op":"incr","key":"n","delta":5}`, `{"value":5}`),
		a2(`{"op":"incr","key":"n","delta":-7}`, `{"value":-2}`),
		q(`{"op":"get","key":"n"}`, `{"found":true,"value":"-2"}`),
		a2(`{"op":"incr","key":"n","delta":1e1}`, `{"value":8}`),
		a2(`{"op":"incr","key":"n","delta":1.5}`, `{"error":"delta must be an integer"}`),
		a2(`{"op":"incr","key":"n","delta":"1"}`, `{"error":"delta must be an integer"}`),
		a2(`{"op":"incr","key":"n","delta":1e400}`, `{"error":"delta must be an integer"}`),
		a2(`{"op":"incr","key":"n","delta":9007199254740992}`, `{"error":"delta must be an integer"}`),
		a2(`{"op":"incr","key":"n","delta":9007199254740991}`, `{"error":"overflow"}`),
		a2(`{"op":"incr","key":"n"}`, `{"error":"delta must be an integer"}`),
		a2(`{"op":"incr","delta":1}`, `{"error":"key must be a string"}`),
		a(`{"op":"put","key":"s","value":"007"}`, `{"ok":true}`),
		a2(`{"op":"incr","key":"s","delta":1}`, `{"error":"value is not an integer"}`),
		a(`{"op":"put","key":"s","value":"-0"}`, `{"ok":true}`),
		a2(`{"op":"incr","key":"s","delta":1}`, `{"error":"value is not an integer"}`),
		a(`{"op":"put","key":"s","value":"9007199254740992"}`, `{"ok":true}`),
		a2(`{"op":"incr","key":"s","delta":1}`, `{"error":"value is not an integer"}`),
		// list: byte order, prefix, limit.
		a(`{"op":"put","key":"b/2","value":"B2"}`, `{"ok":true}`),
		a(`{"op":"put","key":"b/1","value":"B1"}`, `{"ok":true}`),
		a(`{"op":"put","key":"b/10","value":"B10"}`, `{"ok":true}`),
		a(`{"op":"put","key":"é","value":"E"}`, `{"ok":true}`),
		a(`{"op":"put","key":"Z","value":"z"}`, `{"ok":true}`),
		q(`{"op":"list","prefix":"b/"}`, `{"items":[{"key":"b/1","value":"B1"},{"key":"b/10","value":"B10"},{"key":"b/2","value":"B2"}]}`),
		q(`{"op":"list","prefix":"b/","limit":2}`, `{"items":[{"key":"b/1","value":"B1"},{"key":"b/10","value":"B10"}]}`),
		q(`{"op":"list","prefix":"b/","limit":0}`, `{"items":[{"key":"b/1","value":"B1"},{"key":"b/10","value":"B10"},{"key":"b/2","value":"B2"}]}`),
		q(`{"op":"list","limit":2}`, `{"items":[{"key":"Z","value":"z"},{"key":"b/1","value":"B1"}]}`),
		q(`{"op":"list","prefix":"é"}`, `{"items":[{"key":"é","value":"E"}]}`),
		q(`{"op":"list","prefix":"q"}`, `{"items":[]}`),
		q(`{"op":"list","limit":-1}`, `{"error":"limit must be a non-negative integer"}`),
		q(`{"op":"list","limit":0.5}`, `{"error":"limit must be an integer"}`),
		q(`{"op":"list","prefix":null}`, `{"error":"prefix must be a string"}`),
		// Canonical string escaping in results.
		a(`{"op":"put","key":"esc","value":"q\"b\\s/\u0001\b\f\n\r\t\u007f<&>\u2028é"}`, `{"ok":true}`),
		q(`{"op":"get","key":"esc"}`, `{"found":true,"value":"q\"b\\s/\u0001\b\f\n\r\t`+"\x7f<&>\u2028é"+`"}`),
		// Lone surrogates become U+FFFD.
		a(`{"op":"put","key":"sur","value":"\ud800x"}`, `{"ok":true}`),
		q(`{"op":"get","key":"sur"}`, `{"found":true,"value":"`+"\uFFFD"+`x"}`),
		// Malformed input and field checks, in the documented order.
		a(``, `{"error":"malformed command"}`),
		a(`{`, `{"error":"malformed command"}`),
		a(`[]`, `{"error":"malformed command"}`),
		a(`null`, `{"error":"malformed command"}`),
		a(`{"op":"put","key":"a","value":"1"} x`, `{"error":"malformed command"}`),
		a("\xff", `{"error":"malformed command"}`),
		a(`{"key":"a"}`, `{"error":"missing op"}`),
		a(`{"op":7}`, `{"error":"missing op"}`),
		a(`{"OP":"put"}`, `{"error":"missing op"}`),
		a(`{"op":"get","key":"a"}`, `{"error":"unknown op: get"}`),
		a(`{"op":"x\"y"}`, `{"error":"unknown op: x\"y"}`),
		a(`{"op":"put","value":"1"}`, `{"error":"key must be a string"}`),
		a(`{"op":"put","key":1,"value":"1"}`, `{"error":"key must be a string"}`),
		a(`{"op":"put","key":"a","value":1}`, `{"error":"value must be a string"}`),
		a(`{"op":"put","key":"a"}`, `{"error":"value must be a string"}`),
		a(`{"op":"delete"}`, `{"error":"key must be a string"}`),
		a(` {"op":"put","key":"ws","value":"1","op":"delete"} `, `{"ok":false}`), // last duplicate wins
		q(`nope`, `{"error":"malformed query"}`),
		q(`{}`, `{"error":"missing op"}`),
		q(`{"op":"put"}`, `{"error":"unknown op: put"}`),
		q(`{"op":"get"}`, `{"error":"key must be a string"}`),
		// Empty key and value are fine.
		a(`{"op":"put","key":"","value":""}`, `{"ok":true}`),
		q(`{"op":"get","key":""}`, `{"found":true,"value":""}`),
	})
}

func TestVersionOutOfRange(t *testing.T) {
	_, err := kv.New().Apply(context.Background(), fsm.Entry{Index: 1, Data: []byte(`{}`), Version: 3})
	if !errors.Is(err, fsm.ErrVersion) {
		t.Fatalf("err = %v", err)
	}
}

// TestMaxVersionOption: a kv capped at version 1 reports 1..1, applies
// version-1 entries like kv and refuses version-2 entries (what an older
// release does), and its state and digest are kv's.
func TestMaxVersionOption(t *testing.T) {
	ctx := context.Background()
	v1 := kv.NewWithOptions(kv.Options{MaxVersion: 1})
	info, err := v1.Info(ctx)
	if err != nil || info.Name != kv.Name || info.MinVersion != 1 || info.MaxVersion != 1 || info.DowngradeSafeTo != kv.DowngradeSafeTo {
		t.Fatalf("capped Info = %+v, %v", info, err)
	}
	if info, _ := kv.New().Info(ctx); info.MaxVersion != kv.MaxVersion {
		t.Fatalf("uncapped Info = %+v", info)
	}
	full := kv.New()
	put := fsm.Entry{Index: 1, Term: 1, Data: []byte(`{"op":"put","key":"n","value":"1"}`), Version: 1}
	for _, f := range []*kv.FSM{v1, full} {
		if r, err := f.Apply(ctx, put); err != nil || string(r) != `{"ok":true}` {
			t.Fatalf("put = %s, %v", r, err)
		}
	}
	d1, _ := v1.Digest(ctx)
	d2, _ := full.Digest(ctx)
	if !bytes.Equal(d1, d2) {
		t.Fatalf("digests differ: %x vs %x", d1, d2)
	}
	incr := fsm.Entry{Index: 2, Term: 1, Data: []byte(`{"op":"incr","key":"n","delta":1}`), Version: 2}
	if _, err := v1.Apply(ctx, incr); !errors.Is(err, fsm.ErrVersion) {
		t.Fatalf("capped kv applied a version-2 entry: err = %v", err)
	}
	if r, err := full.Apply(ctx, incr); err != nil || string(r) != `{"value":2}` {
		t.Fatalf("incr = %s, %v", r, err)
	}
	for _, bad := range []uint32{3, 100} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("MaxVersion %d accepted", bad)
				}
			}()
			kv.NewWithOptions(kv.Options{MaxVersion: bad})
		}()
	}
}

func TestEncodingVectors(t *testing.T) {
	ctx := context.Background()
	f := kv.New()
	d, _ := f.Digest(ctx)
	if hex.EncodeToString(d) != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Fatalf("empty digest %x", d)
	}
	f.Apply(ctx, fsm.Entry{Index: 1, Data: []byte(`{"op":"put","key":"b","value":""}`)})
	f.Apply(ctx, fsm.Entry{Index: 2, Data: []byte(`{"op":"put","key":"a","value":"1"}`)})
	want, _ := hex.DecodeString("00000001" + "61" + "00000001" + "31" + "00000001" + "62" + "00000000")
	snap, _ := f.Snapshot(ctx)
	var body bytes.Buffer
	snap.WriteTo(ctx, &body)
	if !bytes.Equal(body.Bytes(), want) {
		t.Fatalf("body %x, want %x", body.Bytes(), want)
	}
	if h := snap.Header(); h != (fsm.SnapshotHeader{Index: 2, Version: 1, Format: kv.Format}) {
		t.Fatalf("header %+v", h)
	}
	d, _ = f.Digest(ctx)
	if s := sha256.Sum256(want); !bytes.Equal(d, s[:]) {
		t.Fatalf("digest %x", d)
	}
}

func TestSnapshotIsPointInTime(t *testing.T) {
	ctx := context.Background()
	f := kv.New()
	f.Apply(ctx, fsm.Entry{Index: 1, Data: []byte(`{"op":"put","key":"a","value":"1"}`)})
	snap, _ := f.Snapshot(ctx)
	f.Apply(ctx, fsm.Entry{Index: 2, Data: []byte(`{"op":"put","key":"a","value":"2"}`)})
	f.Apply(ctx, fsm.Entry{Index: 3, Data: []byte(`{"op":"put","key":"b","value":"3"}`)})
	var body bytes.Buffer
	snap.WriteTo(ctx, &body)
	g := kv.New()
	if err := g.Restore(ctx, snap.Header(), &body); err != nil {
		t.Fatal(err)
	}
	got, _ := g.Query(ctx, []byte(`{"op":"list"}`))
	if string(got) != `{"items":[{"key":"a","value":"1"}]}` {
		t.Fatalf("restored %s", got)
	}
	if info, _ := g.Info(ctx); info.AppliedIndex != 1 {
		t.Fatalf("info %+v", info)
	}
}

func TestRestoreRejectsBadBodies(t *testing.T) {
	ctx := context.Background()
	h := fsm.SnapshotHeader{Index: 5, Format: kv.Format}
	rec := func(s string) string { return string([]byte{0, 0, 0, byte(len(s))}) + s }
	for name, body := range map[string]string{
		"truncated length":  "\x00\x00",
		"truncated key":     "\x00\x00\x00\x05ab",
		"key without value": rec("a"),
		"unsorted":          rec("b") + rec("1") + rec("a") + rec("2"),
		"duplicate":         rec("a") + rec("1") + rec("a") + rec("2"),
		"huge length":       "\xff\xff\xff\xff",
	} {
		f := kv.New()
		f.Apply(ctx, fsm.Entry{Index: 1, Data: []byte(`{"op":"put","key":"keep","value":"me"}`)})
		err := f.Restore(ctx, h, strings.NewReader(body))
		if !errors.Is(err, fsm.ErrSnapshotCorrupt) {
			t.Errorf("%s: err = %v", name, err)
		}
		if got, _ := f.Query(ctx, []byte(`{"op":"get","key":"keep"}`)); string(got) != `{"found":true,"value":"me"}` {
			t.Errorf("%s: state changed by a failed restore: %s", name, got)
		}
	}
	if err := kv.New().Restore(ctx, fsm.SnapshotHeader{Format: "raftd.queue.v1"}, strings.NewReader("")); !errors.Is(err, fsm.ErrSnapshotFormat) {
		t.Errorf("wrong format: %v", err)
	}
}

func TestDeterminism(t *testing.T) {
	for seed := int64(1); seed <= 3; seed++ {
		fsmtest.Determinism(t, "kv", func() fsm.FSM { return kv.New() }, seed, 5000)
	}
}

func BenchmarkApplyPut(b *testing.B) {
	ctx := context.Background()
	f := kv.New()
	val := strings.Repeat("v", 80)
	cmds := make([][]byte, 1024)
	for i := range cmds {
		cmds[i] = []byte(`{"op":"put","key":"key` + string(rune('a'+i%26)) + `","value":"` + val + `"}`)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.Apply(ctx, fsm.Entry{Index: uint64(i + 1), Data: cmds[i%len(cmds)]}); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzApply checks that no input crashes kv, that every result is a JSON
// object, and that two instances fed the same input agree.
func FuzzApply(f *testing.F) {
	for _, s := range []string{`{"op":"put","key":"a","value":"1"}`, `{"op":"incr","key":"a","delta":1}`, `{"op":"cas","key":"a","old":null,"new":"x"}`, `{`, `{"op":"list","limit":1}`} {
		f.Add([]byte(s), uint8(2))
	}
	f.Fuzz(func(t *testing.T, data []byte, v uint8) {
		ctx := context.Background()
		x, y := kv.New(), kv.New()
		version := uint32(v%2) + 1
		for i, g := range []*kv.FSM{x, y} {
			r1, err := g.Apply(ctx, fsm.Entry{Index: 1, Data: []byte(`{"op":"put","key":"a","value":"5"}`), Version: version})
			if err != nil {
				t.Fatal(err)
			}
			r2, err := g.Apply(ctx, fsm.Entry{Index: 2, Data: data, Version: version})
			if err != nil {
				t.Fatal(err)
			}
			q, err := g.Query(ctx, data)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range [][]byte{r1, r2, q} {
				if !json.Valid(r) || r[0] != '{' {
					t.Fatalf("instance %d: result %q is not a JSON object", i, r)
				}
			}
		}
		dx, _ := x.Digest(ctx)
		dy, _ := y.Digest(ctx)
		if !bytes.Equal(dx, dy) {
			t.Fatal("digests differ")
		}
	})
}
