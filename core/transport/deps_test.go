package transport

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDependencyDirection: the transport and the codec import nothing of
// the project but core/raft, core/codec and proto/raft/v1 (STYLE §2), so
// core/node's types satisfy Handler and SnapshotSource only structurally.
func TestDependencyDirection(t *testing.T) {
	const module = "github.com/raftd/raftd/"
	allowed := map[string]bool{
		module + "core/raft":     true,
		module + "core/codec":    true,
		module + "proto/raft/v1": true,
	}
	for _, dir := range []string{".", "../codec"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no Go files in %s: %v", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if strings.HasPrefix(p, module) && !allowed[p] {
					t.Errorf("%s imports %s", f, p)
				}
			}
		}
	}
}
