package server

import (
	"strings"
	"testing"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
)

func TestCheckActivation(t *testing.T) {
	node := func(id uint64, active, min, max, safeTo uint32) *apiv1.NodeStatus {
		return &apiv1.NodeStatus{Id: id, Fsm: &apiv1.FSMStatus{Name: "kv", Version: active, MinVersion: min, MaxVersion: max, DowngradeSafeTo: safeTo}}
	}
	all := func(active, min, max, safeTo uint32) []*apiv1.NodeStatus {
		return []*apiv1.NodeStatus{node(1, active, min, max, safeTo), node(2, active, min, max, safeTo), node(3, active, min, max, safeTo)}
	}
	mixed := all(2, 1, 2, 1)
	mixed[2] = node(3, 2, 1, 2, 0) // one plugin declares no downgrade safe
	old := all(1, 1, 2, 1)
	old[1] = node(2, 1, 1, 1, 1) // node 2 still runs a plugin capped at 1
	down := all(1, 1, 1, 1)
	down[2] = &apiv1.NodeStatus{Id: 3, Error: "unreachable at 127.0.0.1:1"}
	for _, tc := range []struct {
		name  string
		nodes []*apiv1.NodeStatus
		v     uint32
		allow bool
		want  string // "" accepted
	}{
		{"upgrade", all(1, 1, 2, 1), 2, false, ""},
		{"same version", all(2, 1, 2, 1), 2, false, ""},
		{"a member lacks it", old, 2, false, "node 2's plugin kv supports versions [1, 1], not 2"},
		{"a member unreachable", down, 1, false, "node 3 is unreachable"},
		{"beyond every plugin", all(1, 1, 2, 1), 3, false, "not 3"},
		{"downgrade without the flag", all(2, 1, 2, 1), 1, false, "below the active version 2; a downgrade needs --allow-downgrade"},
		{"downgrade declared safe", all(2, 1, 2, 1), 1, true, ""},
		{"downgrade one plugin does not declare", mixed, 1, true, "node 3's plugin kv does not declare a downgrade from 2 to 1 safe"},
		{"downgrade below what is declared", all(3, 1, 3, 2), 1, true, "downgrade_safe_to 2"},
	} {
		err := checkActivation(tc.nodes, 1, tc.v, tc.allow)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
