package host_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"testing"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/statemachine"
	"github.com/raftd/raftd/fsms/counter"
	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/fsms/queue"
	"github.com/raftd/raftd/plugin/conformance"
	"github.com/raftd/raftd/plugin/fsm"
)

// TestAdapterInProcessEqualsPlugin drives each bundled FSM twice through
// the node's state machine adapter (core/statemachine): compiled into this
// process and as a plugin process behind plugin/host. Both must give the
// same results, queries, digests and snapshot bodies; a snapshot of each is
// then restored into a fresh instance of the other kind, and all four go on
// with the same stream and must still agree.
func TestAdapterInProcessEqualsPlugin(t *testing.T) {
	for _, tc := range []struct {
		name string
		new  func() fsm.FSM
	}{
		{"counter", func() fsm.FSM { return counter.New() }},
		{"kv", func() fsm.FSM { return kv.New() }},
		{"queue", func() fsm.FSM { return queue.New() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			plug, _ := start(t, "raftd-fsm-"+tc.name, nil)
			sms := []*statemachine.StateMachine{statemachine.New(tc.new()), statemachine.New(plug)}
			labels := []string{"in-process", "plugin"}
			gen, _ := conformance.NewGenerator(tc.name, 7)
			r := rand.New(rand.NewPCG(7, 9))
			info, err := sms[0].Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var index, term uint64 = 0, 1
			version := info.MinVersion
			// run feeds n steps of the stream to every state machine and
			// compares their answers.
			run := func(n int) {
				t.Helper()
				var cmds []node.Command
				flush := func() {
					if len(cmds) == 0 {
						return
					}
					var first [][]byte
					for i, sm := range sms {
						res, err := sm.Apply(ctx, cmds)
						if err != nil {
							t.Fatalf("%s: apply [%d,%d]: %v", labels[i], cmds[0].Index, index, err)
						}
						if i == 0 {
							first = res
							continue
						}
						for k := range res {
							if !bytes.Equal(res[k], first[k]) {
								t.Fatalf("entry %d %q: %s %s, %s %s", cmds[k].Index, cmds[k].Data, labels[0], first[k], labels[i], res[k])
							}
						}
					}
					cmds = nil
				}
				for range n {
					s, ok := gen.Next()
					if !ok {
						t.Fatal("generator ended")
					}
					if s.Query {
						flush()
						var first []byte
						for i, sm := range sms {
							res, err := sm.Query(ctx, s.Data)
							if err != nil {
								t.Fatalf("%s: query %q: %v", labels[i], s.Data, err)
							}
							if i > 0 && !bytes.Equal(res, first) {
								t.Fatalf("query %q after %d: %s %s, %s %s", s.Data, index, labels[0], first, labels[i], res)
							}
							first = res
						}
						continue
					}
					// Gaps in the indexes (entries that are not commands),
					// new terms, and the highest version half-way.
					index += 1 + uint64(r.IntN(3)/2)
					if r.IntN(50) == 0 {
						term++
					}
					cmds = append(cmds, node.Command{Index: index, Term: term, Data: s.Data, Version: version})
					if len(cmds) == 1+r.IntN(100) {
						flush()
					}
				}
				flush()
				var first []byte
				for i, sm := range sms {
					d, err := sm.Digest(ctx)
					if err != nil {
						t.Fatalf("%s: digest: %v", labels[i], err)
					}
					if i > 0 && !bytes.Equal(d, first) {
						t.Fatalf("digest at %d: %s %x, %s %x", index, labels[0], first, labels[i], d)
					}
					first = d
				}
			}

			run(1500)
			version = info.MaxVersion
			run(1500)

			// Snapshots: same format and the same body bytes, which hash to
			// the digest.
			digest, err := sms[0].Digest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			bodies := make([][]byte, len(sms))
			var format string
			for i, sm := range sms {
				view, err := sm.Snapshot(ctx)
				if err != nil {
					t.Fatalf("%s: snapshot: %v", labels[i], err)
				}
				var b bytes.Buffer
				err = view.WriteTo(ctx, &b)
				view.Release()
				if err != nil {
					t.Fatalf("%s: snapshot body: %v", labels[i], err)
				}
				if i == 0 {
					format = view.Format()
				} else if view.Format() != format {
					t.Fatalf("snapshot format: %s %q, %s %q", labels[0], format, labels[i], view.Format())
				}
				bodies[i] = b.Bytes()
			}
			if !bytes.Equal(bodies[0], bodies[1]) {
				t.Fatalf("snapshot bodies differ: %d and %d bytes", len(bodies[0]), len(bodies[1]))
			}
			if sum := sha256.Sum256(bodies[0]); !bytes.Equal(sum[:], digest) {
				t.Fatal("snapshot body does not hash to the digest")
			}

			// Cross restore: the plugin's body into a fresh in-process FSM,
			// the in-process body into a fresh plugin. The node may snapshot
			// after trailing non-command entries: the header's index is
			// beyond the last command.
			index += 2
			h := node.SnapshotHeader{Index: index, Term: term, FSMName: tc.name, FSMVersion: version, FSMFormat: format}
			plug2, _ := start(t, "raftd-fsm-"+tc.name, nil)
			restored := []*statemachine.StateMachine{statemachine.New(tc.new()), statemachine.New(plug2)}
			for i, sm := range restored {
				if err := sm.Restore(ctx, h, bytes.NewReader(bodies[1-i])); err != nil {
					t.Fatalf("restore into a fresh %s: %v", labels[i], err)
				}
				got, err := sm.Info(ctx)
				if err != nil || got.Applied != index {
					t.Fatalf("restored %s: info %+v, %v; want applied %d", labels[i], got, err, index)
				}
			}
			sms = append(sms, restored...)
			labels = append(labels, "in-process restored from plugin", "plugin restored from in-process")
			run(1000)
		})
	}
}
