package node_test

import (
	"strings"
	"testing"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/statemachine"
	"github.com/raftd/raftd/fsms/kv"
)

// newKV is the state machine of the benchmarks: fsms/kv in this process
// through core/statemachine, the baseline a plugin is measured against.
func newKV() node.StateMachine { return statemachine.New(kv.New()) }

// BenchmarkPropose3Nodes measures 128-byte kv puts through a 3-node
// cluster on an in-memory network and in-memory storage (see
// benchPropose).
//
//	go test -run '^$' -bench Propose3Nodes ./core/node
func BenchmarkPropose3Nodes(b *testing.B) {
	prefix := `{"op":"put","key":"` + strings.Repeat("k", 16) + `","value":"`
	cmd := prefix + strings.Repeat("v", 128-len(prefix)-2) + `"}`
	node.BenchPropose(b, newKV, []byte(cmd))
}

// BenchmarkRead3Nodes measures linearizable kv gets on a follower from 64
// concurrent clients.
func BenchmarkRead3Nodes(b *testing.B) {
	node.BenchRead(b, newKV, []byte(`{"op":"put","key":"k","value":"v"}`), []byte(`{"op":"get","key":"k"}`))
}
