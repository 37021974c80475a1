package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nondetBin builds plugin/testdata/nondet (a kv plugin, named "kv", whose
// puts from index 50 on store a value suffixed with its process id) into a
// temp dir of t.
func nondetBin(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nondet")
	build := exec.Command("go", "build", "-o", p, "./plugin/testdata/nondet")
	build.Dir = repoRoot
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the nondeterministic plugin: %v\n%s", err, b)
	}
	return p
}

// verifyJSON is the part of `raftd fsm verify --json` the test reads.
type verifyJSON struct {
	Checkpoint uint64 `json:"checkpoint_index"`
	Verdict    uint64 `json:"verdict_index"`
	Agreed     string `json:"agreed_digest"`
	Nodes      []struct {
		ID     uint64 `json:"id"`
		Digest string `json:"digest"`
	} `json:"nodes"`
	Differ []uint64 `json:"differ"`
}

func fsmVerify(t *testing.T, addr string) (int, verifyJSON, string) {
	t.Helper()
	code, out, errOut := raftd(t, nil, "fsm", "verify", "--json", "--addr", addr, "--timeout", "20s")
	var v verifyJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("fsm verify --json (exit %d): %v: %q %q", code, err, out, errOut)
	}
	return code, v, errOut
}

// One replica runs a plugin with the cluster's FSM name that silently
// diverges. Before it diverges `raftd fsm verify` exits 0 with three equal
// digests; after, it exits 1 naming that node, which reports its apply
// halted at the verdict (naming the checkpoint) while staying in the
// cluster; the other two keep serving writes and agree with each other.
func TestDivergentReplicaHalts(t *testing.T) {
	nondet := nondetBin(t)
	c := startCluster(t, 3, bin("raftd-fsm-kv"), nil, func(id uint64) []string {
		if id == 3 {
			return []string{"--fsm", nondet}
		}
		return nil
	}, "--checkpoint-entries", "0")
	all := strings.Join([]string{c.nodes[1].apiAddr, c.nodes[2].apiAddr, c.nodes[3].apiAddr}, ",")
	// The divergent node is not to lead at first (once halted it would
	// hand leadership over, after a pause in writes).
	if lead, _ := c.waitLeader(20*time.Second, 0); lead == 3 {
		if code, out, errOut := raftd(t, nil, "leader", "transfer", "--addr", all, "1"); code != 0 {
			t.Fatalf("leader transfer 1: exit %d %q %q", code, out, errOut)
		}
		c.waitLeader(20*time.Second, 3)
	}
	lead, _ := c.waitLeader(20*time.Second, 3)

	// Entries below 50 are applied alike everywhere.
	for i := range 20 {
		c.mustApply(lead, string(kvPut(fmt.Sprintf("a%02d", i), "v")), 10*time.Second)
	}
	code, v, errOut := fsmVerify(t, all)
	if code != 0 || len(v.Differ) != 0 || v.Verdict == 0 || len(v.Nodes) != 3 {
		t.Fatalf("fsm verify before the divergence: exit %d, %+v, %q; want 0 and three agreeing nodes", code, v, errOut)
	}
	for _, n := range v.Nodes {
		if n.Digest != v.Agreed {
			t.Fatalf("node %d digest %s, agreed %s (exit 0)", n.ID, n.Digest, v.Agreed)
		}
	}
	first := v.Checkpoint

	// Past index 50 node 3's puts store other values.
	for i := range 60 {
		c.mustApply(lead, string(kvPut(fmt.Sprintf("b%02d", i), "v")), 10*time.Second)
	}
	code, v, errOut = fsmVerify(t, all)
	if code != 1 || len(v.Differ) != 1 || v.Differ[0] != 3 || v.Verdict == 0 {
		t.Fatalf("fsm verify after the divergence: exit %d, %+v; want 1 naming node 3", code, v)
	}
	if !strings.Contains(errOut, "nodes 3 differ") {
		t.Fatalf("fsm verify's error does not name node 3: %q", errOut)
	}
	t.Logf("checkpoint at %d agreed; at %d node 3 differs (verdict at %d)", first, v.Checkpoint, v.Verdict)

	// Node 3 halts at the verdict, still running and in raft.
	waitFor(t, 20*time.Second, func() (bool, string) {
		st, out, err := statusJSON(t, all)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range st.Nodes {
			switch {
			case n.ID == 3 && n.Halted == nil:
				return false, "node 3 not halted: " + out
			case n.ID == 3 && (n.Halted.Index != v.Verdict || !strings.Contains(n.Halted.Reason, fmt.Sprintf("checkpoint at index %d", v.Checkpoint))):
				t.Fatalf("node 3 halted at %d (%q); want the verdict at %d naming the checkpoint at %d", n.Halted.Index, n.Halted.Reason, v.Verdict, v.Checkpoint)
			case n.ID != 3 && n.Halted != nil:
				t.Fatalf("node %d halted too: %q", n.ID, n.Halted.Reason)
			}
		}
		return true, ""
	})
	p := c.nodes[3]
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	select {
	case <-exited:
		t.Fatalf("node 3 exited: halting must keep it running")
	default:
	}
	code, out, _ := raftd(t, nil, "status", "--addr", all)
	if code != 0 || !strings.Contains(out, "HALTED") || !strings.Contains(out, fmt.Sprintf("last agreed checkpoint: index %d", v.Checkpoint)) {
		t.Fatalf("status (exit %d) does not show the halt and the last agreed checkpoint %d:\n%s", code, v.Checkpoint, out)
	}

	// The majority keeps serving writes, and agrees.
	for i := range 30 {
		c.mustApply(lead, string(kvPut(fmt.Sprintf("c%02d", i), "v")), 10*time.Second)
	}
	c.waitConverged([]uint64{1, 2}, v.Verdict+30, 20*time.Second)
	if a, b := c.staleList(1), c.staleList(2); a != b || len(kvItems(t, a)) != 110 {
		t.Fatalf("nodes 1 and 2 differ or miss writes: %d and %d items", len(kvItems(t, a)), len(kvItems(t, b)))
	}
	code, v, _ = fsmVerify(t, c.nodes[1].apiAddr)
	if code != 1 || len(v.Differ) != 1 || v.Differ[0] != 3 {
		t.Fatalf("fsm verify with node 3 halted: exit %d %+v; want 1 naming node 3 only", code, v)
	}
}
