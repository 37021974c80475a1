package e2e

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// logLine matches a record of raftd's text log.
var logLine = regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARN|ERROR) `)

// oneLineErr asserts that stderr ends with one "raftd: ..." line mentioning
// want (then only the usage hint, for usage errors), that whatever comes
// before it is log records (a start that fails after storage opened has
// logged that), and that it holds no stack trace.
func oneLineErr(t *testing.T, args []string, stderr, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) > 1 && strings.HasPrefix(lines[len(lines)-1], "Run 'raftd --help'") {
		lines = lines[:len(lines)-1]
	}
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "raftd: ") || !strings.Contains(last, want) {
		t.Errorf("raftd %v: stderr %q, want it to end with one line with %q", args, stderr, want)
	}
	for _, l := range lines[:len(lines)-1] {
		if !logLine.MatchString(l) {
			t.Errorf("raftd %v: stderr line %q before the error is not a log record", args, l)
		}
	}
	if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
		t.Errorf("raftd %v: stack trace on stderr: %q", args, stderr)
	}
}

// Test 5: CLI error paths, each asserting the message and the exit code.
func TestCLIErrors(t *testing.T) {
	dir := t.TempDir()
	notPlugin := filepath.Join(dir, "not-a-plugin")
	if err := os.WriteFile(notPlugin, []byte("#!/bin/sh\necho hello\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dead := freeAddr(t)
	kv := bin("raftd-fsm-kv")

	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown flag", []string{"run", "--fsm", kv, "--frobnicate"}, 2, "unknown flag: --frobnicate"},
		{"missing --fsm", []string{"run"}, 2, "--fsm is required"},
		{"bad peers", []string{"run", "--fsm", kv, "--peers", "1=127.0.0.1:1,x=2"}, 2, `node id "x" is not a positive integer`},
		{"plugin missing", []string{"run", "--fsm", filepath.Join(dir, "nope"), "--data-dir", filepath.Join(dir, "d1"),
			"--api-addr", freeAddr(t), "--raft-addr", freeAddr(t)}, 1, "no such file"},
		{"not a plugin", []string{"run", "--fsm", notPlugin, "--data-dir", filepath.Join(dir, "d2"),
			"--api-addr", freeAddr(t), "--raft-addr", freeAddr(t)}, 1, "plugin"},
		{"api address in use", []string{"run", "--fsm", kv, "--data-dir", filepath.Join(dir, "d3"),
			"--api-addr", busy.Addr().String(), "--raft-addr", freeAddr(t)}, 1, "already in use"},
		{"unreachable cluster", []string{"apply", "--addr", dead, `{"op":"put","key":"a","value":"1"}`}, 3, "cannot reach " + dead},
		{"unreachable status", []string{"status", "--addr", dead}, 3, "cannot reach"},
		{"apply without command", []string{"apply", "--addr", dead}, 2, "expected one COMMAND"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Now()
			code, _, stderr := raftd(t, nil, tc.args...)
			if code != tc.code {
				t.Errorf("raftd %v: exit %d, want %d (stderr %q)", tc.args, code, tc.code, stderr)
			}
			oneLineErr(t, tc.args, stderr, tc.msg)
			if d := time.Since(t0); d > 20*time.Second {
				t.Errorf("raftd %v took %s", tc.args, d)
			}
		})
	}
}

// A single node: clean SIGTERM exit, then its data dir refuses another node
// id; an oversized command is refused with exit 3.
func TestSingleNodeDataDirAndLimits(t *testing.T) {
	c := newCluster(t, 1, bin("raftd-fsm-kv"), "--max-entry-bytes", "100")
	p := c.nodes[1]
	code, out, stderr := raftd(t, nil, "apply", "--addr", p.apiAddr, `{"op":"put","key":"a","value":"`+strings.Repeat("x", 200)+`"}`)
	if code != 3 {
		t.Fatalf("oversized apply: exit %d, want 3 (%q %q)", code, out, stderr)
	}
	oneLineErr(t, nil, stderr, "over the limit of 100 bytes")
	if got := c.mustApply(1, `{"op":"put","key":"a","value":"1"}`, 10*time.Second); got != `{"ok":true}` {
		t.Fatalf("put: %s", got)
	}
	inUse := []string{"run", "--fsm", bin("raftd-fsm-kv"), "--data-dir", p.dataDir, "--api-addr", freeAddr(t), "--raft-addr", freeAddr(t)}
	code, _, stderr = raftd(t, nil, inUse...)
	if code != 1 {
		t.Fatalf("second process on a data dir in use: exit %d, want 1 (%q)", code, stderr)
	}
	oneLineErr(t, inUse, stderr, "in use by another raftd process")
	// The refused process started its plugin while it opened the storage
	// (core/daemon) and stopped it: only node 1's plugin runs.
	if keep := (&rcluster{cluster: c}).pluginPID(1); keep != 0 {
		if stray := processesOf(bin("raftd-fsm-kv"), keep); len(stray) > 0 {
			t.Fatalf("plugin processes %v left running by the refused raftd (node 1's is %d)", stray, keep)
		}
	}
	if err := c.stop(1); err != nil {
		t.Fatalf("SIGTERM: node exited with %v, want exit 0", err)
	}
	args := []string{"run", "--fsm", bin("raftd-fsm-kv"), "--id", "2", "--data-dir", p.dataDir,
		"--api-addr", freeAddr(t), "--raft-addr", freeAddr(t)}
	code, _, stderr = raftd(t, nil, args...)
	if code == 0 {
		t.Fatalf("foreign data dir accepted")
	}
	oneLineErr(t, args, stderr, "belongs to node 1")
	// The same node restarts on its data dir and still has its data.
	c.start(1)
	c.waitLeader(10*time.Second, 0)
	code, out, stderr = raftd(t, nil, "query", "--addr", p.apiAddr, `{"op":"get","key":"a"}`)
	if code != 0 || strings.TrimSpace(out) != `{"found":true,"value":"1"}` {
		t.Fatalf("after restart: exit %d, %q %q", code, out, stderr)
	}
}

// processesOf lists the live processes whose argv[0] is path, except pid
// not.
func processesOf(path string, not int) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == not {
			continue
		}
		b, err := os.ReadFile(d + "/cmdline")
		if err != nil {
			continue
		}
		if argv0, _, _ := strings.Cut(string(b), "\x00"); argv0 != path {
			continue
		}
		if st, err := os.ReadFile(d + "/stat"); err == nil && procState(st) == "Z" {
			continue
		}
		out = append(out, pid)
	}
	return out
}
