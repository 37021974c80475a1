package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestClusterTable runs raftd-bench against real processes, briefly: the
// binaries of RAFTD_BIN (`make test` sets it), two concurrency levels of
// puts and gets. Every row must have successful requests, no errors and
// CPU in the nodes' column, and every process the run started must be gone
// when it returns.
func TestClusterTable(t *testing.T) {
	bin := os.Getenv("RAFTD_BIN")
	if bin == "" {
		t.Skip("RAFTD_BIN is not set (make test sets it)")
	}
	for _, b := range []string{"raftd", "raftd-fsm-kv"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Skipf("%s not built: %v", b, err)
		}
	}
	var out, errb bytes.Buffer
	code := runMain([]string{"-bin", bin, "-conc", "1,8", "-warmup", "100ms", "-duration", "400ms", "-keys", "300", "-state-mb", "2",
		"-tsv", filepath.Join(t.TempDir(), "out.tsv")}, &out, &errb)
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}

	if !strings.Contains(errb.String(), "raftd-bench: state: 2 MiB put in") || !strings.Contains(out.String(), "extra state: 2 MiB") {
		t.Error("no sign of the 2 MiB of extra state (-state-mb)")
	}
	m := regexp.MustCompile(`nodes \[([0-9 ]+)\], plugins \[([0-9 ]*)\], data (\S+)`).FindStringSubmatch(errb.String())
	if m == nil {
		t.Fatal("no line naming the nodes and plugins")
	}
	nodes, plugins := strings.Fields(m[1]), strings.Fields(m[2])
	if len(nodes) != 3 || len(plugins) != 3 {
		t.Errorf("nodes %v, plugins %v: want 3 of each", nodes, plugins)
	}
	for _, p := range append(nodes, plugins...) {
		pid, _ := strconv.Atoi(p)
		if alive(pid) {
			t.Errorf("pid %d is still running after the run", pid)
		}
	}
	if _, err := os.Stat(m[3]); !os.IsNotExist(err) {
		t.Errorf("data directory %s still there: %v", m[3], err)
	}

	var rows [][]string
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) == 12 && (f[0] == "put" || f[0] == "get") {
			rows = append(rows, f)
		}
	}
	if len(rows) != 4 {
		t.Fatalf("%d table rows, want 4 (put and get at 1 and 8)", len(rows))
	}
	for i, f := range rows {
		if wantOp, wantConc := []string{"put", "get"}[i/2], []string{"1", "8"}[i%2]; f[0] != wantOp || f[1] != wantConc {
			t.Errorf("row %d is %s x%s, want %s x%s", i, f[0], f[1], wantOp, wantConc)
		}
		opsSec, _ := strconv.ParseFloat(f[2], 64)
		p50, _ := strconv.ParseFloat(f[3], 64)
		srv, _ := strconv.ParseFloat(f[8], 64)
		if opsSec <= 0 || p50 <= 0 || f[7] != "0" || srv <= 0 {
			t.Errorf("row %v: want ops/s, p50 and srv above 0 and no errors", f)
		}
	}
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(string(b[i+1:]), " Z")
}
