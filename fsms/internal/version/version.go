// Package version resolves the FSM version an entry is to be applied at,
// for the bundled FSMs.
package version

import (
	"fmt"

	"github.com/raftd/raftd/plugin/fsm"
)

// Of returns the version entry e runs at in an FSM named name that
// supports [min, max]: 0 (no version activated yet) means min; a version
// above max is fsm.ErrVersion, naming the entry.
func Of(name string, e fsm.Entry, min, max uint32) (uint32, error) {
	v := e.Version
	if v == 0 {
		v = min
	}
	if v > max {
		return 0, fmt.Errorf("%s: entry %d: %w %d (supported %d..%d)", name, e.Index, fsm.ErrVersion, v, min, max)
	}
	return v, nil
}
