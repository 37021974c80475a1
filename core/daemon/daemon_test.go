package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

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
