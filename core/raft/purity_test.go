package raft

import (
	"os/exec"
	"strings"
	"testing"
)

const modulePath = "github.com/raftd/raftd"

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, out)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestPurity fails if the core imports anything that would make it
// impure (clocks, global randomness, I/O, locks) or anything outside the
// standard library. Test files are exempt.
func TestPurity(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the go tool is needed to check imports: %v", err)
	}
	imports := goList(t, "-f", `{{join .Imports "\n"}}`, ".")
	if len(imports) == 0 {
		t.Fatalf("go list found no imports; the check is not working")
	}
	for _, p := range imports {
		switch p {
		case "time", "math/rand", "math/rand/v2", "os", "net", "log", "sync", "sync/atomic", "unsafe", "syscall":
			t.Errorf("core/raft imports %q; inject it through Config", p)
		}
	}
	for _, p := range goList(t, "-deps", "-f", `{{if not .Standard}}{{.ImportPath}}{{end}}`, ".") {
		if p != modulePath+"/core/raft" {
			t.Errorf("core/raft depends on non-standard package %s", p)
		}
	}
}
