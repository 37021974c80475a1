package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Test 4: the same smoke run with the counter, queue and Node kv plugins.
func TestSmokeCounter(t *testing.T) {
	needPlugin(t, bin("raftd-fsm-counter"))
	c := newCluster(t, 3, bin("raftd-fsm-counter"))
	for i, want := range []string{`{"value":5}`, `{"value":3}`, `{"value":10}`} {
		delta := []string{"5", "-2", "7"}[i]
		if got := c.mustApply(c.ids[i%3], `{"op":"add","delta":`+delta+`}`, 10*time.Second); got != want {
			t.Fatalf("add %s: got %s, want %s", delta, got, want)
		}
	}
	if got := c.mustApply(1, `{"op":"bogus"}`, 10*time.Second); !strings.HasPrefix(got, `{"error":`) {
		t.Fatalf("bogus command: got %s, want an error result", got)
	}
	c.waitConverged(c.ids, 4, 10*time.Second)
	for _, id := range c.ids {
		code, out, stderr := raftd(t, nil, "query", "--consistency", "stale", "--addr", c.nodes[id].apiAddr, `{"op":"get"}`)
		if code != 0 || strings.TrimSpace(out) != `{"value":10}` {
			t.Fatalf("node %d: exit %d, %q %q", id, code, out, stderr)
		}
	}
}

func TestSmokeQueue(t *testing.T) {
	needPlugin(t, bin("raftd-fsm-queue"))
	c := newCluster(t, 3, bin("raftd-fsm-queue"))
	steps := []struct{ cmd, want string }{
		{`{"op":"push","item":"a"}`, `{"len":1}`},
		{`{"op":"push","item":"b"}`, `{"len":2}`},
		{`{"op":"pop"}`, `{"ok":true,"item":"a"}`},
		{`{"op":"pop"}`, `{"ok":true,"item":"b"}`},
		{`{"op":"pop"}`, `{"ok":false,"item":""}`},
	}
	for i, s := range steps {
		code, out, stderr := raftd(t, nil, "apply", "--addr", c.nodes[c.ids[i%3]].apiAddr, s.cmd)
		if code != 0 || strings.TrimSpace(out) != s.want {
			t.Fatalf("%s: exit %d, out %q, want %s (stderr %q)", s.cmd, code, out, s.want, stderr)
		}
	}
	code, out, _ := raftd(t, nil, "query", "--addr", c.nodes[2].apiAddr, `{"op":"len"}`)
	if code != 0 || strings.TrimSpace(out) != `{"len":0}` {
		t.Fatalf("len: %d %q", code, out)
	}
}

func TestSmokeNodeKV(t *testing.T) {
	dir := filepath.Join(repoRoot, "fsms", "node-kv")
	plugin := filepath.Join(dir, "raftd-fsm-node-kv")
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		t.Skip("fsms/node-kv/node_modules missing (run make node)")
	}
	needPlugin(t, plugin)
	c := newCluster(t, 3, plugin)
	kvSmoke(t, c)
}

func TestSmokeKVCLI(t *testing.T) {
	c := newCluster(t, 3, bin("raftd-fsm-kv"))
	kvSmoke(t, c)
}

// kvSmoke runs the DESIGN kv table through the CLI.
func kvSmoke(t *testing.T, c *cluster) {
	t.Helper()
	all := c.nodes[1].apiAddr + "," + c.nodes[2].apiAddr + "," + c.nodes[3].apiAddr
	steps := []struct{ sub, arg, want string }{
		{"apply", `{"op":"put","key":"a","value":"1"}`, `{"ok":true}`},
		{"query", `{"op":"get","key":"a"}`, `{"found":true,"value":"1"}`},
		{"query", `{"op":"get","key":"zz"}`, `{"found":false,"value":""}`},
		{"apply", `{"op":"cas","key":"a","old":"1","new":"2"}`, `{"ok":true,"value":"2"}`},
		{"apply", `{"op":"cas","key":"a","old":"1","new":"3"}`, `{"ok":false,"value":"2"}`},
		{"apply", `{"op":"cas","key":"b","old":null,"new":"x"}`, `{"ok":true,"value":"x"}`},
		{"query", `{"op":"list","prefix":""}`, `{"items":[{"key":"a","value":"2"},{"key":"b","value":"x"}]}`},
		{"apply", `{"op":"delete","key":"a"}`, `{"ok":true}`},
		{"apply", `{"op":"delete","key":"a"}`, `{"ok":false}`},
	}
	for _, s := range steps {
		code, out, stderr := raftd(t, []string{"RAFTD_ADDR=" + all}, s.sub, s.arg)
		if code != 0 || strings.TrimSpace(out) != s.want {
			t.Fatalf("raftd %s %s: exit %d, out %q, want %s (stderr %q)", s.sub, s.arg, code, out, s.want, stderr)
		}
	}
	code, out, stderr := raftd(t, nil, "apply", "--addr", all, `not json`)
	if code != 0 || !strings.HasPrefix(strings.TrimSpace(out), `{"error":`) {
		t.Fatalf("malformed command: exit %d, out %q (stderr %q)", code, out, stderr)
	}
	code, out, stderr = raftd(t, nil, "status", "--json", "--addr", c.nodes[2].apiAddr)
	if code != 0 || !strings.Contains(out, `"role":"leader"`) || !strings.Contains(out, `"fsm":{"name":`) {
		t.Fatalf("status --json: exit %d, %q %q", code, out, stderr)
	}
}
