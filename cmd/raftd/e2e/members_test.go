package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A fourth node joins as a learner, is promoted, catches up, and is removed
// again; `raftd bench` runs against the cluster.
func TestMembershipAndBench(t *testing.T) {
	c := newCluster(t, 3, bin("raftd-fsm-kv"))
	for i := 0; i < 20; i++ {
		c.mustApply(c.ids[i%3], fmt.Sprintf(`{"op":"put","key":"m%02d","value":"%d"}`, i, i), 10*time.Second)
	}
	var peers string
	for i, a := range c.nodes[1].args {
		if a == "--peers" {
			peers = c.nodes[1].args[i+1]
		}
	}
	dir := t.TempDir()
	p := &proc{id: 4, apiAddr: freeAddr(t), raftAddr: freeAddr(t), dataDir: filepath.Join(dir, "n4"), logPath: filepath.Join(dir, "n4.log")}
	p.args = []string{"run", "--fsm", bin("raftd-fsm-kv"), "--id", "4", "--data-dir", p.dataDir, "--raft-addr", p.raftAddr,
		"--api-addr", p.apiAddr, "--peers", peers, "--join"}
	c.nodes[4] = p
	c.ids = append(c.ids, 4)
	c.start(4)

	all := c.nodes[1].apiAddr + "," + c.nodes[2].apiAddr
	code, out, stderr := raftd(t, nil, "members", "add", "--addr", all, "--learner", "4", p.raftAddr)
	if code != 0 || !strings.Contains(out, "learner") {
		t.Fatalf("members add --learner: %d %q %q", code, out, stderr)
	}
	c.waitConverged(c.ids, 20, 20*time.Second)
	code, out, stderr = raftd(t, nil, "members", "add", "--addr", all, "4", p.raftAddr)
	if code != 0 || strings.Contains(out, "learner") {
		t.Fatalf("promote: %d %q %q", code, out, stderr)
	}
	code, out, stderr = raftd(t, nil, "status", "--json", "--addr", p.apiAddr)
	if code != 0 || strings.Count(out, `"role":"follower"`)+strings.Count(out, `"role":"leader"`) != 4 {
		t.Fatalf("status with 4 voters: %d %q %q", code, out, stderr)
	}
	if got, want := c.staleList(4), c.staleList(1); got != want {
		t.Fatalf("new member lists %s, want %s", got, want)
	}
	code, out, stderr = raftd(t, nil, "bench", "--addr", all, "--clients", "4", "--duration", "1s")
	if code != 0 || !strings.Contains(out, "throughput:") || !strings.Contains(out, "p99") {
		t.Fatalf("bench: %d %q %q", code, out, stderr)
	}
	code, out, stderr = raftd(t, nil, "members", "remove", "--addr", all, "4")
	if code != 0 || strings.Contains(out, p.raftAddr) {
		t.Fatalf("members remove: %d %q %q", code, out, stderr)
	}
	code, out, stderr = raftd(t, nil, "members", "--addr", all)
	if code != 0 || strings.Count(out, "voter") != 3 {
		t.Fatalf("members: %d %q %q", code, out, stderr)
	}
}
