package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Packages built by Build, by binary name.
var Packages = map[string]string{
	"raftd-fsm-counter": "./cmd/raftd-fsm-counter",
	"raftd-fsm-kv":      "./cmd/raftd-fsm-kv",
	"raftd-fsm-kv-v1":   "./cmd/raftd-fsm-kv-v1",
	"raftd-fsm-queue":   "./cmd/raftd-fsm-queue",
	"misbehave":         "./plugin/testdata/misbehave",
	"nondet":            "./plugin/testdata/nondet",
}

var (
	mu    sync.Mutex
	built = map[string]string{}
)

// Build compiles the named binaries (keys of Packages) into dir with one
// go build and returns their paths by name. Results are cached per process.
// When RAFTD_BIN is set (make test builds ./cmd/... there first), the
// raftd-fsm-* binaries are taken from it instead of being rebuilt.
func Build(dir string, names ...string) (map[string]string, error) {
	mu.Lock()
	defer mu.Unlock()
	out := map[string]string{}
	var pkgs []string
	binDir := os.Getenv("RAFTD_BIN") // set by make test after make build
	for _, n := range names {
		if p, ok := built[n]; ok {
			out[n] = p
			continue
		}
		if binDir != "" && strings.HasPrefix(n, "raftd-fsm-") {
			p := filepath.Join(binDir, n)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				built[n], out[n] = p, p
				continue
			}
		}
		pkg, ok := Packages[n]
		if !ok {
			return nil, fmt.Errorf("testbin: unknown binary %q", n)
		}
		pkgs = append(pkgs, pkg)
	}
	if len(pkgs) == 0 {
		return out, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("testbin: go build: %v\n%s", err, b)
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			p := filepath.Join(dir, filepath.Base(Packages[n]))
			built[n], out[n] = p, p
		}
	}
	return out, nil
}

func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("testbin: go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(b))), nil
}
