package daemon

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/fsms/kv"
)

// startLocal starts a single node with an in-process kv FSM in dir.
func startLocal(t *testing.T, dir string, mod func(*Config)) *Daemon {
	t.Helper()
	cfg := Config{ID: 1, DataDir: dir, RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", FSM: kv.New(),
		HeartbeatInterval: 20 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, NoSync: true}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	return d
}

// TestInProcessSnapshotRestart checks the in-process state machine path
// through a snapshot: a node that snapshotted and compacted its log is
// stopped and started again on a fresh FSM, which must be restored from
// the snapshot and the log after it.
func TestInProcessSnapshotRestart(t *testing.T) {
	dir := t.TempDir()
	small := func(c *Config) { c.SnapshotEntries, c.SnapshotTrailing = 5, 2 }
	d := startLocal(t, dir, small)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 23 {
		cmd := fmt.Sprintf(`{"op":"put","key":"k%d","value":"v%d"}`, i, i)
		if res, err := d.Node().Propose(ctx, []byte(cmd)); err != nil || string(res) != `{"ok":true}` {
			t.Fatalf("put %d: %q %v", i, res, err)
		}
	}
	// Snapshots are taken in the background: wait for one past the puts'
	// first half, so that the restart restores rather than replays all.
	for {
		st, err := d.Node().Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.SnapshotIndex >= 15 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no snapshot past index 15: %+v", st)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := d.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	d = startLocal(t, dir, small)
	if n := d.Node().Metrics().SnapshotsInstalled; n != 1 {
		t.Fatalf("restart installed %d snapshots, want 1", n)
	}
	for _, i := range []int{0, 14, 22} {
		res, err := d.Node().Read(ctx, []byte(fmt.Sprintf(`{"op":"get","key":"k%d"}`, i)))
		if want := fmt.Sprintf(`{"found":true,"value":"v%d"}`, i); err != nil || string(res) != want {
			t.Fatalf("get k%d after restart: %q %v, want %s", i, res, err, want)
		}
	}
}

func TestStartConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{DataDir: "x", FSM: kv.New(), RaftAddr: "a:1", APIAddr: "a:2"}, "ID must be > 0"},
		{Config{ID: 1, FSM: kv.New(), RaftAddr: "a:1", APIAddr: "a:2"}, "DataDir is required"},
		{Config{ID: 1, DataDir: "x", RaftAddr: "a:1", APIAddr: "a:2"}, "exactly one of FSM and FSMPath"},
		{Config{ID: 1, DataDir: "x", FSM: kv.New(), FSMPath: "p", RaftAddr: "a:1", APIAddr: "a:2"}, "exactly one of FSM and FSMPath"},
		{Config{ID: 1, DataDir: "x", FSM: kv.New(), APIAddr: "a:2"}, "RaftAddr and APIAddr are required"},
		{Config{ID: 1, DataDir: "x", FSMPath: "p", FSMSHA256: "zz", RaftAddr: "a:1", APIAddr: "a:2"}, "not a hex SHA-256"},
	} {
		_, err := Start(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(%+v): %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestStartOtherNodesDataDir: a data dir keeps its identity across starts.
func TestStartOtherNodesDataDir(t *testing.T) {
	dir := t.TempDir()
	d := startLocal(t, dir, nil)
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Config{ID: 2, DataDir: dir, RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", FSM: kv.New()})
	if err == nil || !strings.Contains(err.Error(), "belongs to node 1, not node 2") {
		t.Fatalf("node 2 on node 1's data dir: %v", err)
	}
}

// TestStartCorruptLog: the log is checked while the state machine restores
// (storage.Options.CheckLogLater), and a damaged entry still stops the
// start with the storage's error naming the data dir and the index: an
// entry the snapshot covers (kept as a trailing entry), one after the
// snapshot that the restart would replay, and the last one (which the
// storage's Open reads itself).
func TestStartCorruptLog(t *testing.T) {
	for _, pick := range []string{"covered by the snapshot", "after the snapshot", "last"} {
		t.Run(pick, func(t *testing.T) {
			dir := t.TempDir()
			small := func(c *Config) { c.SnapshotEntries, c.SnapshotTrailing = 10, 100 }
			d := startLocal(t, dir, small)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			put := func(i int) {
				if _, err := d.Node().Propose(ctx, []byte(fmt.Sprintf(`{"op":"put","key":"k%d","value":"v%d"}`, i, i))); err != nil {
					t.Fatalf("put %d: %v", i, err)
				}
			}
			// SnapshotEntries puts make a snapshot due; it is taken in the
			// background, and no more puts go in until it is there (more
			// would start a second one, whose compaction could remove the
			// entries below). Then three more, fewer than SnapshotEntries:
			// entries after it. The entry before the snapshot stays in the
			// log (trailing).
			for i := range 10 {
				put(i)
			}
			var st node.Status
			for {
				var err error
				if st, err = d.Node().Status(ctx); err != nil {
					t.Fatal(err)
				}
				if st.SnapshotIndex > 0 {
					break
				}
				select {
				case <-ctx.Done():
					t.Fatalf("no snapshot after %d entries: %+v", st.LastIndex, st)
				case <-time.After(5 * time.Millisecond):
				}
			}
			for i := range 3 {
				put(1000 + i)
			}
			st, _ = d.Node().Status(ctx)
			if st.SnapshotIndex < 4 || st.SnapshotIndex >= st.LastIndex || st.Metrics.SnapshotsStarted != 1 {
				t.Fatalf("want a snapshot above index 3 with entries after it: %+v", st)
			}
			if err := d.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			idx := map[string]uint64{"covered by the snapshot": st.SnapshotIndex - 1, "after the snapshot": st.LastIndex - 1, "last": st.LastIndex}[pick]
			flipEntryBit(t, filepath.Join(dir, "log"), idx)
			_, err := Start(ctx, Config{ID: 1, DataDir: dir, RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", FSM: kv.New(), NoSync: true})
			want := fmt.Sprintf("storage: corrupt entry at index %d in data dir %s: checksum mismatch", idx, dir)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Start on a log with entry %d damaged: %v\nwant an error saying %q", idx, err, want)
			}
			t.Logf("Start: %v", err)
		})
	}
}

// flipEntryBit flips a bit in the stored value of log entry idx, through
// Pebble directly (storage's key: 'l' and the big-endian index).
func flipEntryBit(t *testing.T, dir string, idx uint64) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{FormatMajorVersion: pebble.FormatValueSeparation, Logger: quietPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	k := binary.BigEndian.AppendUint64([]byte{'l'}, idx)
	v, closer, err := db.Get(k)
	if err != nil {
		t.Fatalf("entry %d: %v", idx, err)
	}
	bad := append([]byte(nil), v...)
	closer.Close()
	bad[len(bad)-1] ^= 0x10
	if err := db.Set(k, bad, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)              {}
func (quietPebble) Errorf(string, ...any)             {}
func (quietPebble) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
