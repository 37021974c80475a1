package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// haltStatus is the part of `raftd status --json` these tests read.
type haltStatus struct {
	Leader uint64 `json:"leader"`
	Nodes  []struct {
		ID           uint64 `json:"id"`
		Role         string `json:"role"`
		AppliedIndex uint64 `json:"applied_index"`
		Error        string `json:"error"`
		Halted       *struct {
			Index  uint64 `json:"index"`
			Reason string `json:"reason"`
		} `json:"halted"`
	} `json:"nodes"`
}

// statusJSON runs `raftd status --json` against addr.
func statusJSON(t *testing.T, addr string) (haltStatus, string, error) {
	t.Helper()
	code, out, errOut := raftd(t, nil, "status", "--json", "--addr", addr)
	var st haltStatus
	if code != 0 {
		return st, out, fmt.Errorf("status exited %d: %s", code, strings.TrimSpace(errOut))
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, out, fmt.Errorf("status --json: %v: %s", err, out)
	}
	return st, out, nil
}

// waitAllHalted waits until `status --json` shows every node in ids halted
// at one index and returns it.
func (r *rcluster) waitAllHalted(addr string, ids []uint64, d time.Duration) uint64 {
	r.t.Helper()
	var at uint64
	waitFor(r.t, d, func() (bool, string) {
		st, out, err := statusJSON(r.t, addr)
		if err != nil {
			return false, err.Error()
		}
		at = 0
		for _, id := range ids {
			var found bool
			for _, n := range st.Nodes {
				if n.ID != id {
					continue
				}
				found = true
				if n.Halted == nil || n.Halted.Reason == "" || (at != 0 && n.Halted.Index != at) || n.AppliedIndex != n.Halted.Index-1 {
					return false, "not all halted at one index: " + out
				}
				at = n.Halted.Index
			}
			if !found {
				return false, fmt.Sprintf("node %d missing: %s", id, out)
			}
		}
		return true, ""
	})
	return at
}

// The end-to-end poison pill: a command on which the plugin panics, every
// time, on every replica. Every node halts apply at its index instead of
// crash-looping (status --json, the text status, the log and the metrics
// say so); the cluster still elects and replicates, and a restarted node
// halts again at the same index; `raftd fsm skip N` resumes all of them;
// later commands apply and the replicas agree.
func TestPoisonCommandHaltsClusterAndSkipResumes(t *testing.T) {
	plug := misbehaveBin(t)
	r := newRCluster(t, rclusterOpts{n: 3, fsm: plug,
		extra: []string{"--snapshot-entries", "50", "--snapshot-trailing", "10"}})
	var addrs []string
	for _, id := range r.ids {
		addrs = append(addrs, r.nodes[id].apiAddr)
	}
	all := strings.Join(addrs, ",")
	for i := 0; i < 100; i++ {
		r.mustApply(r.ids[i%3], string(kvPut(fmt.Sprintf("k%03d", i), "before")), 10*time.Second)
	}
	// The leader waits for the poison to be applied; it halts instead:
	// outcome unknown (exit 1) with the halt in the message.
	t0 := time.Now()
	code, _, errOut := raftd(t, nil, "apply", "--addr", all, "--timeout", "60s", `{"op":"panic"}`)
	if code != 1 || !strings.Contains(errOut, "apply halted at index") {
		t.Fatalf("apply of the poison: exit %d, stderr %q; want 1 and the halt", code, errOut)
	}
	n := r.waitAllHalted(all, r.ids, 60*time.Second)
	t.Logf("every node halted at index %d, %s after the poison was sent", n, time.Since(t0).Round(time.Millisecond))
	for _, id := range r.ids {
		if r.pid(id) == 0 {
			t.Fatalf("node %d exited: %v", id, r.exitErr(id))
		}
		if log := r.logSince(id); !strings.Contains(log, "apply halted") || !strings.Contains(log, fmt.Sprintf("index=%d", n)) {
			t.Errorf("node %d's log does not report the halt at %d:\n%s", id, n, lastLines(log, 5))
		}
	}
	code, out, _ := raftd(t, nil, "status", "--addr", all)
	if code != 0 || strings.Count(out, fmt.Sprintf("apply HALTED at index %d", n)) != 3 {
		t.Fatalf("text status (exit %d) does not show three halts at %d:\n%s", code, n, out)
	}
	// Halted: writes are refused as not applied (exit 3), stale reads
	// serve the state before the poison.
	code, _, errOut = raftd(t, nil, "apply", "--addr", all, string(kvPut("refused", "x")))
	if code != 3 || !strings.Contains(errOut, "halted") {
		t.Fatalf("apply while halted: exit %d, %q; want 3 (not applied) naming the halt", code, errOut)
	}
	for _, id := range r.ids {
		if got := len(kvItems(t, r.staleList(id))); got != 100 {
			t.Fatalf("node %d: stale list has %d items while halted, want 100", id, got)
		}
	}
	// Still in raft: the leader dies, the others elect a new one; the old
	// leader restarts (replays, fails on the poison again) and halts again
	// at the same index rather than crash-loop; its metrics show it.
	old := r.leader()
	r.kill(old)
	newLead, _ := r.waitLeader(30*time.Second, old, old)
	maddr := freeAddr(t)
	r.nodes[old].args = append(r.nodes[old].args, "--metrics-addr", maddr)
	r.start(old)
	if again := r.waitAllHalted(all, r.ids, 60*time.Second); again != n {
		t.Fatalf("after a restart the nodes halted at %d, before at %d", again, n)
	}
	if m := scrape(t, "http://"+maddr); m["raftd_apply_halted"] != float64(n) {
		t.Fatalf("node %d: raftd_apply_halted = %v, want %d", old, m["raftd_apply_halted"], n)
	}
	t.Logf("leader %d killed, %d elected; %d restarted and halted again at %d", old, newLead, old, n)
	// Skip it everywhere.
	code, out, errOut = raftd(t, nil, "fsm", "skip", "--addr", all, fmt.Sprint(n))
	if code != 0 || !strings.Contains(out, "committed at index") {
		t.Fatalf("fsm skip %d: exit %d, %q %q", n, code, out, errOut)
	}
	waitFor(t, 30*time.Second, func() (bool, string) {
		st, out, err := statusJSON(t, all)
		if err != nil {
			return false, err.Error()
		}
		for _, nd := range st.Nodes {
			if nd.Halted != nil || nd.Error != "" || nd.AppliedIndex <= n {
				return false, "not resumed: " + out
			}
		}
		return true, ""
	})
	if _, out, _ := statusJSON(t, all); strings.Contains(out, `"halted"`) {
		t.Fatalf("status --json still has a halted field after the skip: %s", out)
	}
	if m := scrape(t, "http://"+maddr); m["raftd_apply_halted"] != 0 || m["raftd_commands_skipped_total"] != 1 {
		t.Fatalf("node %d after the skip: raftd_apply_halted %v, raftd_commands_skipped_total %v; want 0, 1", old, m["raftd_apply_halted"], m["raftd_commands_skipped_total"])
	}
	for i := 0; i < 100; i++ {
		r.mustApply(r.ids[i%3], string(kvPut(fmt.Sprintf("k%03d", 100+i), "after")), 10*time.Second)
	}
	lead := r.leader()
	idx := r.waitConverged(r.ids, n+100, 30*time.Second)
	want := r.staleList(lead)
	if got := len(kvItems(t, want)); got != 200 {
		t.Fatalf("leader lists %d items, want 200", got)
	}
	for _, id := range r.ids {
		if got := r.staleList(id); got != want {
			t.Fatalf("node %d's state differs from leader %d's at applied index %d", id, lead, idx)
		}
	}
}

// A node that halts during its restart replay still opens its client API:
// a single-node cluster halted on a poison command, restarted, shows the
// halt in status and resumes with fsm skip (before, it waited for its
// replay forever and nothing could reach it).
func TestHaltDuringReplayServesAPI(t *testing.T) {
	plug := misbehaveBin(t)
	r := newRCluster(t, rclusterOpts{n: 1, fsm: plug})
	addr := r.nodes[1].apiAddr
	for i := range 5 {
		r.mustApply(1, string(kvPut(fmt.Sprintf("k%d", i), "v")), 10*time.Second)
	}
	if code, _, errOut := raftd(t, nil, "apply", "--addr", addr, "--timeout", "60s", `{"op":"panic"}`); code != 1 {
		t.Fatalf("apply of the poison: exit %d %q; want 1", code, errOut)
	}
	n := r.waitAllHalted(addr, r.ids, 60*time.Second)
	if err := r.stop(1); err != nil {
		t.Fatalf("stop: %v", err)
	}
	r.start(1)
	if again := r.waitAllHalted(addr, r.ids, 60*time.Second); again != n {
		t.Fatalf("after the restart the node halted at %d, before at %d", again, n)
	}
	if log := r.logSince(1); !strings.Contains(log, "apply halted during the replay") {
		t.Errorf("the restarted node's log does not say it halted during the replay:\n%s", lastLines(log, 5))
	}
	code, out, errOut := raftd(t, nil, "fsm", "skip", "--addr", addr, fmt.Sprint(n))
	if code != 0 {
		t.Fatalf("fsm skip %d: exit %d %q %q", n, code, out, errOut)
	}
	r.mustApply(1, string(kvPut("after", "v")), 30*time.Second)
	if got := len(kvItems(t, r.staleList(1))); got != 6 {
		t.Fatalf("%d items after the skip, want 6", got)
	}
}
