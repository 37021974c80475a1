// Command raftd-fsm-kv-v1 is the bundled kv FSM capped at version 1, as an
// older release of it would be: it reports versions 1..1 and refuses
// entries of version 2. It exists to rehearse rolling upgrades
// (docs/upgrades.md: kv-v1 -> kv, then raftd fsm activate 2).
package main

import (
	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/sdk"
)

func main() { sdk.Serve(kv.NewWithOptions(kv.Options{MaxVersion: 1})) }
