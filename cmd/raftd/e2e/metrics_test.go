package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
)

// get fetches url with a deadline and returns the status and body.
func get(t *testing.T, url string) (int, string, error) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// scrape reads /metrics into "name{labels}" -> value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	code, body, err := get(t, base+"/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad /metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetricsEndpoint runs a single node with --metrics-addr: /metrics
// reflects an apply (applied index, leadership, a transport counter, the
// Go runtime), /healthz and /debug/pprof/ (asked for with --enable-pprof)
// answer 200, and the endpoint goes away when the node stops.
func TestMetricsEndpoint(t *testing.T) {
	maddr := freeAddr(t)
	base := "http://" + maddr
	c := newCluster(t, 1, bin("raftd-fsm-kv"), "--metrics-addr", maddr, "--enable-pprof")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.client(1).Apply(ctx, &apiv1.ApplyRequest{Command: []byte(`{"op":"put","key":"m","value":"1"}`)})
	if err != nil || resp.GetIndex() == 0 {
		t.Fatalf("apply: %v (index %d)", err, resp.GetIndex())
	}
	idx := float64(resp.GetIndex())

	m := scrape(t, base)
	for name, ok := range map[string]bool{
		"raftd_applied_index >= apply index": m["raftd_applied_index"] >= idx,
		"raftd_commit_index >= apply index":  m["raftd_commit_index"] >= idx,
		"raftd_last_index >= apply index":    m["raftd_last_index"] >= idx,
		"raftd_is_leader == 1":               m["raftd_is_leader"] == 1,
		"raftd_leader_id == 1":               m["raftd_leader_id"] == 1,
		"raftd_term >= 1":                    m["raftd_term"] >= 1,
		"raftd_commands_applied_total >= 1":  m["raftd_commands_applied_total"] >= 1,
		"raftd_proposals_total >= 1":         m["raftd_proposals_total"] >= 1,
		`raftd_role{role="leader"} == 1`:     m[`raftd_role{role="leader"}`] == 1,
	} {
		if !ok {
			t.Errorf("%s does not hold (applied %v, commit %v, is_leader %v, leader_id %v, term %v, applied cmds %v)", name,
				m["raftd_applied_index"], m["raftd_commit_index"], m["raftd_is_leader"], m["raftd_leader_id"], m["raftd_term"],
				m["raftd_commands_applied_total"])
		}
	}
	for _, k := range []string{"raftd_transport_messages_sent_total", "raftd_transport_messages_dropped_total",
		"go_goroutines", "process_cpu_seconds_total", `raftd_node_info{fsm="kv",node_id="1"}`} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s missing from /metrics", k)
		}
	}

	if code, body, err := get(t, base+"/healthz"); err != nil || code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q %v, want 200 \"ok\"", code, body, err)
	}
	if code, body, err := get(t, base+"/debug/pprof/"); err != nil || code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d %v %.200q", code, err, body)
	}

	if err := c.stop(1); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if code, _, err := get(t, base+"/healthz"); err == nil {
		t.Fatalf("/healthz answered %d after the node stopped", code)
	}
}

// TestMetricsAddrErrors: a malformed --metrics-addr is a usage error (exit
// 2); one in use fails like the other listeners (exit 1), before the
// plugin starts; both are one line.
func TestMetricsAddrErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, addr string
		code       int
		msg        string
	}{
		{"malformed", "localhost", 2, `--metrics-addr "localhost" is not host:port`},
		{"in use", busy.Addr().String(), 1, "metrics address (--metrics-addr) " + busy.Addr().String() + " is already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"run", "--fsm", bin("raftd-fsm-kv"), "--data-dir", filepath.Join(dir, tc.name),
				"--api-addr", freeAddr(t), "--raft-addr", freeAddr(t), "--metrics-addr", tc.addr}
			code, _, stderr := raftd(t, nil, args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			oneLineErr(t, args, stderr, tc.msg)
			if tc.code == 1 && strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", stderr)
			}
		})
	}
}
