// Command nondet is a deliberately nondeterministic kv plugin for testing
// the conformance checker: from the 50th entry on, each put stores its
// value with a suffix taken from the process id, so two instances diverge
// (visible in later get/cas results and in digests).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/sdk"
)

type nondet struct{ *kv.FSM }

func (n nondet) Apply(ctx context.Context, e fsm.Entry) ([]byte, error) {
	if e.Index >= 50 {
		var c map[string]any
		if json.Unmarshal(e.Data, &c) == nil && c["op"] == "put" {
			if v, ok := c["value"].(string); ok {
				c["value"] = fmt.Sprintf("%s#%d", v, os.Getpid())
				e.Data, _ = json.Marshal(c)
			}
		}
	}
	return n.FSM.Apply(ctx, e)
}

func (n nondet) ApplyBatch(ctx context.Context, es []fsm.Entry) ([][]byte, error) {
	out := make([][]byte, len(es))
	for i, e := range es {
		r, err := n.Apply(ctx, e)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

func main() { sdk.Serve(nondet{kv.New()}) }
