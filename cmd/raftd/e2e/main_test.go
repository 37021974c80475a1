package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// binDir holds raftd and the raftd-fsm-* plugins.
var binDir string

// repoRoot is the module root (for the Node.js plugin).
var repoRoot string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go env GOMOD: %v\n", err)
		return 1
	}
	repoRoot = filepath.Dir(strings.TrimSpace(string(out)))
	if d := os.Getenv("RAFTD_BIN"); d != "" {
		binDir = d
	} else {
		tmp, err := os.MkdirTemp("", "raftd-e2e-bin-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		cmd := exec.Command("go", "build", "-o", tmp+string(os.PathSeparator), "./cmd/...")
		cmd.Dir = repoRoot
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: building binaries: %v\n", err)
			return 1
		}
		binDir = tmp
	}
	for _, b := range []string{"raftd", "raftd-fsm-kv"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s missing in %s: %v\n", b, binDir, err)
			return 1
		}
	}
	return m.Run()
}

func bin(name string) string { return filepath.Join(binDir, name) }

func soak() bool { return os.Getenv("RAFTD_SOAK") == "1" }

// needPlugin skips the test if the plugin binary is missing.
func needPlugin(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("plugin %s not built: %v", path, err)
	}
}
