package conformance_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raftd/raftd/plugin/conformance"
	"github.com/raftd/raftd/plugin/internal/testbin"
)

var bins map[string]string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "raftd-conformance-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins, err = testbin.Build(dir, "raftd-fsm-kv", "raftd-fsm-kv-v1", "raftd-fsm-counter", "raftd-fsm-queue", "nondet")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestBundledPass(t *testing.T) {
	for _, name := range []string{"raftd-fsm-counter", "raftd-fsm-kv", "raftd-fsm-queue"} {
		t.Run(name, func(t *testing.T) {
			rep, err := conformance.Run(context.Background(), conformance.Options{
				FSM: bins[name], Seed: 7, Entries: 3000, CheckpointEvery: 500, TempDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Entries < 3000 || rep.Checkpoints < 6 || rep.Queries == 0 || rep.Rejected == 0 || len(rep.Warnings) != 0 {
				t.Fatalf("thin report:\n%s", rep)
			}
			t.Log(rep)
		})
	}
}

func TestNondeterministicFails(t *testing.T) {
	_, err := conformance.Run(context.Background(), conformance.Options{
		FSM: bins["nondet"], Seed: 3, Entries: 2000, CheckpointEvery: 200, TempDir: t.TempDir()})
	var de *conformance.DivergenceError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want a divergence", err)
	}
	// nondet starts diverging at index 50; the first visible difference
	// must be at or after it and be named.
	if de.Index < 50 || !strings.Contains(err.Error(), fmt.Sprint(de.Index)) {
		t.Fatalf("divergence at %d: %v", de.Index, err)
	}
	t.Log(err)
}

func TestDifferentFSMsRefused(t *testing.T) {
	_, err := conformance.Run(context.Background(), conformance.Options{
		FSM: bins["raftd-fsm-kv"], FSM2: bins["raftd-fsm-counter"], Entries: 10})
	if err == nil || !strings.Contains(err.Error(), "info differs") {
		t.Fatalf("err = %v", err)
	}
}

// TestOtherRelease compares kv (versions 1..2) with the build capped at
// version 1, as an operator compares a new release with the one the
// cluster runs: at the version both support, and nothing else.
func TestOtherRelease(t *testing.T) {
	dir := t.TempDir()
	rep, err := conformance.Run(context.Background(), conformance.Options{
		FSM: bins["raftd-fsm-kv"], FSM2: bins["raftd-fsm-kv-v1"], Seed: 5, Entries: 2000, CheckpointEvery: 500, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if rep.MinVersion != 1 || rep.MaxVersion != 1 || rep.A != [2]uint32{1, 2} || rep.B != [2]uint32{1, 1} {
		t.Fatalf("versions: compared %d..%d, A %v, B %v", rep.MinVersion, rep.MaxVersion, rep.A, rep.B)
	}
	if rep.Entries < 2000 || rep.Rejected == 0 || !strings.Contains(rep.String(), "compared at the versions both support: A 1..2, B 1..1") {
		t.Fatalf("report:\n%s", rep)
	}
	// A commands file cannot ask for a version one of them lacks.
	file := filepath.Join(dir, "v2.txt")
	if err := os.WriteFile(file, []byte("@version 2\n{\"op\":\"incr\",\"key\":\"a\",\"delta\":1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = conformance.Run(context.Background(), conformance.Options{
		FSM: bins["raftd-fsm-kv"], FSM2: bins["raftd-fsm-kv-v1"], Commands: file, TempDir: dir})
	if err == nil || !strings.Contains(err.Error(), "version 2, outside the versions compared (1..1)") {
		t.Fatalf("err = %v", err)
	}
}

func TestCommandsFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cmds.txt")
	content := `# a tiny kv scenario
{"op":"put","key":"a","value":"1"}
?{"op":"get","key":"a"}
{"op":"incr","key":"a","delta":2}
@version 2
{"op":"incr","key":"a","delta":2}
?{"op":"list"}
not json at all
`
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := conformance.Run(context.Background(), conformance.Options{FSM: bins["raftd-fsm-kv"], Commands: file, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// 4 commands from the file plus the 2 built-in malformed ones; rejected:
	// incr under version 1, "not json", and the 2 built-in ones.
	if rep.Entries != 6 || rep.Queries != 2 || rep.Rejected != 4 {
		t.Fatalf("report:\n%s", rep)
	}
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("@version x\n"), 0o644)
	if _, err := conformance.Run(context.Background(), conformance.Options{FSM: bins["raftd-fsm-kv"], Commands: bad}); err == nil || !strings.Contains(err.Error(), "bad version") {
		t.Fatalf("bad file: err = %v", err)
	}
}

func TestMissingPlugin(t *testing.T) {
	_, err := conformance.Run(context.Background(), conformance.Options{FSM: "/nonexistent/plugin"})
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("err = %v", err)
	}
}

// TestGoKVAgainstNodeKV runs the checker with the Go kv as one instance
// and the Node.js kv (fsms/node-kv) as the other: every result, snapshot
// and digest must agree byte for byte. It skips without node or without
// the plugin's node_modules (make node installs them).
func TestGoKVAgainstNodeKV(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed")
	}
	dir, err := filepath.Abs("../../fsms/node-kv")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		t.Skip("fsms/node-kv/node_modules missing; run make node")
	}
	rep, err := conformance.Run(context.Background(), conformance.Options{
		FSM: filepath.Join(dir, "raftd-fsm-node-kv"), FSM2: bins["raftd-fsm-kv"],
		Seed: 11, Entries: 3000, CheckpointEvery: 500, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Warnings) != 0 {
		t.Fatalf("warnings:\n%s", rep)
	}
}
