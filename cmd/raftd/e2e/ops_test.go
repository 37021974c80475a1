package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `raftd dev` starts a cluster in one process, prints the addresses, serves
// clients, and exits 0 on SIGINT.
func TestDevClusterAndCtrlC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("raftd"), "dev", "--fsm", bin("raftd-fsm-kv"), "--nodes", "3")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
	}()
	re := regexp.MustCompile(`node (\d)  api (\S+)  raft (\S+)`)
	sc := bufio.NewScanner(out)
	var apis []string
	for len(apis) < 3 && sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			apis = append(apis, m[2])
		}
	}
	if len(apis) != 3 {
		t.Fatalf("dev printed %d node addresses; stderr %q", len(apis), stderr.String())
	}
	go io.Copy(io.Discard, out)
	all := strings.Join(apis, ",")
	code, o, e := raftd(t, nil, "apply", "--addr", all, `{"op":"put","key":"dev","value":"1"}`)
	if code != 0 || strings.TrimSpace(o) != `{"ok":true}` {
		t.Fatalf("apply on dev cluster: %d %q %q", code, o, e)
	}
	code, o, e = raftd(t, nil, "query", "--addr", apis[2], `{"op":"get","key":"dev"}`)
	if code != 0 || strings.TrimSpace(o) != `{"found":true,"value":"1"}` {
		t.Fatalf("query on dev cluster: %d %q %q", code, o, e)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("raftd dev after SIGINT: %v; stderr %q", err, stderr.String())
	}
}

// Snapshot save from a live cluster, restore into a fresh single-node data
// dir, and serve the same state from it.
func TestSnapshotSaveRestore(t *testing.T) {
	c := newCluster(t, 3, bin("raftd-fsm-kv"))
	for i := 0; i < 50; i++ {
		c.mustApply(c.ids[i%3], `{"op":"put","key":"k`+string(rune('a'+i%26))+`","value":"v"}`, 10*time.Second)
	}
	want := c.staleList(1)
	dir := t.TempDir()
	file := filepath.Join(dir, "backup.snap")
	// Addressed to a follower, save downloads the leader's snapshot.
	lead, _ := c.waitLeader(10*time.Second, 0)
	follower := c.ids[0]
	if follower == lead {
		follower = c.ids[1]
	}
	code, out, stderr := raftd(t, nil, "snapshot", "save", "--new", "--addr", c.nodes[follower].apiAddr, file)
	if code != 0 || !strings.Contains(out, "saved snapshot at index") || !strings.Contains(out, fmt.Sprintf("from leader %d ", lead)) {
		t.Fatalf("snapshot save via follower %d (leader %d): %d %q %q", follower, lead, code, out, stderr)
	}
	// The kv snapshot restored into a data dir that is then run with the
	// counter plugin: refused at start, naming both FSMs.
	wrongDir, wrongRaft := filepath.Join(dir, "wrong"), freeAddr(t)
	code, out, stderr = raftd(t, nil, "snapshot", "restore", file, "--data-dir", wrongDir, "--raft-addr", wrongRaft)
	if code != 0 || !strings.Contains(out, "restored") {
		t.Fatalf("snapshot restore: %d %q %q", code, out, stderr)
	}
	code, _, stderr = raftd(t, nil, "run", "--fsm", bin("raftd-fsm-counter"), "--data-dir", wrongDir, "--raft-addr", wrongRaft, "--api-addr", freeAddr(t))
	if code == 0 || !strings.Contains(stderr, `fsm "kv"`) || !strings.Contains(stderr, `fsm "counter"`) {
		t.Fatalf("counter plugin on a kv snapshot: exit %d, stderr %q", code, stderr)
	}
	t.Logf("counter plugin on a kv snapshot: exit %d: %s", code, strings.TrimSpace(stderr))
	r := &cluster{t: t, nodes: map[uint64]*proc{}, conns: c.conns}
	p := &proc{id: 1, apiAddr: freeAddr(t), raftAddr: freeAddr(t), dataDir: filepath.Join(dir, "r1"), logPath: filepath.Join(dir, "r1.log")}
	r.nodes[1], r.ids = p, []uint64{1}
	t.Cleanup(r.cleanup)
	code, out, stderr = raftd(t, nil, "snapshot", "restore", file, "--data-dir", p.dataDir, "--raft-addr", p.raftAddr)
	if code != 0 || !strings.Contains(out, "restored") {
		t.Fatalf("snapshot restore: %d %q %q", code, out, stderr)
	}
	p.args = []string{"run", "--fsm", bin("raftd-fsm-kv"), "--data-dir", p.dataDir, "--raft-addr", p.raftAddr, "--api-addr", p.apiAddr}
	r.start(1)
	r.waitLeader(10*time.Second, 0)
	if got := r.staleList(1); got != want {
		t.Fatalf("restored node lists %s, want %s", got, want)
	}
	code, _, stderr = raftd(t, nil, "snapshot", "restore", file, "--data-dir", p.dataDir, "--raft-addr", p.raftAddr)
	if code == 0 || !strings.Contains(stderr, "not empty") {
		t.Fatalf("restore into a used data dir: %d %q", code, stderr)
	}
}

// `raftd fsm test` passes the bundled counter plugin; `fsm activate` of a
// version some member lacks is refused with exit 3; a supported one works.
func TestFSMCommands(t *testing.T) {
	code, out, stderr := raftd(t, nil, "fsm", "test", "--fsm", bin("raftd-fsm-counter"), "--entries", "500")
	if code != 0 || !strings.Contains(out, "conformance: PASS") {
		t.Fatalf("fsm test: %d %q %q", code, out, stderr)
	}
	// A deliberately nondeterministic plugin fails with exit 1, naming the
	// index at which the two instances diverged.
	nondet := nondetBin(t)
	code, out, stderr = raftd(t, nil, "fsm", "test", "--fsm", nondet, "--entries", "2000", "--checkpoint-every", "200")
	if code != 1 || !strings.Contains(stderr, "differs at index") || strings.Contains(out, "PASS") {
		t.Fatalf("fsm test of a nondeterministic plugin: %d %q %q", code, out, stderr)
	}
	c := newCluster(t, 3, bin("raftd-fsm-kv"))
	code, _, stderr = raftd(t, nil, "fsm", "activate", "--addr", c.nodes[1].apiAddr, "99")
	if code != 3 || !strings.Contains(stderr, "not 99") {
		t.Fatalf("fsm activate 99: %d %q", code, stderr)
	}
	code, out, stderr = raftd(t, nil, "fsm", "activate", "--addr", c.nodes[3].apiAddr, "2")
	if code != 0 || !strings.Contains(out, "FSM version 2 active from index") {
		t.Fatalf("fsm activate 2: %d %q %q", code, out, stderr)
	}
	code, out, stderr = raftd(t, nil, "fsm", "status", "--json", "--addr", c.nodes[2].apiAddr)
	if code != 0 || strings.Count(out, `"version":2`) != 3 {
		t.Fatalf("fsm status after activation: %d %q %q", code, out, stderr)
	}
}
