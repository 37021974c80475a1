package cli

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMetricsAddrFlag checks --metrics-addr: off by default, and a
// malformed address is a one-line usage error (exit 2) before anything
// starts.
func TestMetricsAddrFlag(t *testing.T) {
	var got *RunOptions
	cmd := NewCmdRun(&Factory{}, func(o *RunOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"--fsm", "x"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.MetricsAddr != "" {
		t.Fatalf("--metrics-addr defaults to %q, want off", got.MetricsAddr)
	}
	for _, tc := range []struct {
		addr, msg string
	}{
		{"nope", `--metrics-addr "nope" is not host:port`},
		{"127.0.0.1:http", `port "http" is not a number`},
		{"127.0.0.1:99999", `port "99999" is not a number`},
		{"127.0.0.1:", `port "" is not a number`},
		{"127.0.0.1:7000", "--metrics-addr and --api-addr must differ"},
		{"127.0.0.1:7001", "--metrics-addr and --raft-addr must differ"},
	} {
		code, stdout, stderr := run(t, nil, "run", "--fsm", "x", "--metrics-addr", tc.addr)
		if code != ExitUsage || stdout != "" {
			t.Errorf("--metrics-addr %s: exit %d, stdout %q; want %d (stderr %q)", tc.addr, code, stdout, ExitUsage, stderr)
		}
		first, _, _ := strings.Cut(stderr, "\n")
		if !strings.HasPrefix(first, "raftd: run: ") || !strings.Contains(first, tc.msg) {
			t.Errorf("--metrics-addr %s: first line %q lacks %q", tc.addr, first, tc.msg)
		}
	}
}

// TestRunMetricsAddrInUse: `raftd run` with a taken --metrics-addr exits 1
// with the listener's one-line error, before the plugin starts (the
// --fsm file here is executable but no plugin).
func TestRunMetricsAddrInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	fake := filepath.Join(t.TempDir(), "raftd-fsm-none")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, nil, "run", "--fsm", fake, "--data-dir", t.TempDir(),
		"--raft-addr", "127.0.0.1:0", "--api-addr", "localhost:0", "--metrics-addr", busy.Addr().String())
	want := "metrics address (--metrics-addr) " + busy.Addr().String() + " is already in use"
	if code != ExitFailure || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d and one line with %q", code, stdout, stderr, ExitFailure, want)
	}
}
