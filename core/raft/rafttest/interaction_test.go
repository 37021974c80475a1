package rafttest

import (
	"flag"
	"testing"

	"github.com/cockroachdb/datadriven"
)

var scenario = flag.String("scenario", "", "run this scenario file (or directory) instead of ../testdata")

// TestInteraction runs every scenario in core/raft/testdata against a fresh
// InteractionEnv and compares the output with the golden text in the file.
// Regenerate with: go test ./core/raft/rafttest -run TestInteraction -rewrite
func TestInteraction(t *testing.T) {
	dir := "../testdata"
	if *scenario != "" {
		dir = *scenario
	}
	datadriven.Walk(t, dir, func(t *testing.T, path string) {
		env := NewInteractionEnv()
		datadriven.RunTest(t, path, env.Handle)
		for _, v := range env.Violations {
			t.Errorf("%s: safety violation: %s", path, v)
		}
	})
}
