package client_test

import (
	"testing"

	"github.com/raftd/raftd/core/client"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
)

func TestLeaderAPIAddr(t *testing.T) {
	nodes := []*apiv1.NodeStatus{{Id: 1, ApiAddr: "a:1"}, {Id: 2, ApiAddr: "a:2"}, {Id: 3, Error: "unreachable"}}
	if a, err := client.LeaderAPIAddr(&apiv1.StatusResponse{Leader: 2, Nodes: nodes}); err != nil || a != "a:2" {
		t.Fatalf("leader 2: %q %v", a, err)
	}
	for _, st := range []*apiv1.StatusResponse{{Nodes: nodes}, {Leader: 3, Nodes: nodes}, {Leader: 4, Nodes: nodes}} {
		if a, err := client.LeaderAPIAddr(st); err == nil {
			t.Errorf("leader %d: %q, want an error", st.GetLeader(), a)
		}
	}
}
