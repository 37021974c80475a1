package view

import (
	"bytes"
	"strings"
	"testing"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
)

func TestMembers(t *testing.T) {
	resp := &apiv1.MembersResponse{Leader: 2, Members: []*apiv1.Member{{Id: 1, RaftAddr: "h:1"}, {Id: 2, RaftAddr: "h:2"}, {Id: 4, RaftAddr: "h:4", Learner: true}}}
	var buf bytes.Buffer
	if err := Members(&buf, resp, true); err != nil {
		t.Fatal(err)
	}
	want := `{"leader":2,"members":[{"id":1,"raft_addr":"h:1","learner":false},{"id":2,"raft_addr":"h:2","learner":false},{"id":4,"raft_addr":"h:4","learner":true}]}` + "\n"
	if buf.String() != want {
		t.Fatalf("JSON %q, want %q", buf.String(), want)
	}
	buf.Reset()
	if err := Members(&buf, &apiv1.MembersResponse{}, true); err != nil || buf.String() != `{"leader":0,"members":[]}`+"\n" {
		t.Fatalf("empty: %q %v", buf.String(), err)
	}
	buf.Reset()
	if err := Members(&buf, resp, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 || strings.Fields(lines[2])[3] != "*" || strings.Fields(lines[3])[2] != "learner" {
		t.Fatalf("table:\n%s", buf.String())
	}
}

func TestStatusTableNotes(t *testing.T) {
	resp := &apiv1.StatusResponse{Leader: 1, Term: 3, Nodes: []*apiv1.NodeStatus{
		{Id: 1, Role: "leader", Term: 3, Leader: 1, LastIndex: 9, Followers: []*apiv1.FollowerProgress{{Id: 2, MatchIndex: 4, State: "snapshot"}}},
		{Id: 2, Role: "follower", Halted: &apiv1.Halt{Index: 5, Reason: "plugin\nfailed"}},
		{Id: 3, Error: "dial\ntcp: refused"},
	}}
	var buf bytes.Buffer
	StatusTable(&buf, resp)
	for _, want := range []string{"leader 1, term 3", "node 3: dial tcp: refused", "node 2: apply HALTED at index 5: plugin failed", "node 2 is receiving a snapshot"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
}

// TestFSMTableBuild: the BUILD column appears when some node's plugin
// reports a build (a dash for the others), and not otherwise; JSON has
// the field where it is set.
func TestFSMTableBuild(t *testing.T) {
	fsm := func(build string) *apiv1.FSMStatus {
		return &apiv1.FSMStatus{Name: "kv", Version: 1, MinVersion: 1, MaxVersion: 2, BinarySha256: "ab12", Build: build}
	}
	resp := &apiv1.StatusResponse{Leader: 1, Nodes: []*apiv1.NodeStatus{{Id: 1, Fsm: fsm("")}, {Id: 2, Fsm: fsm("")}}}
	var buf bytes.Buffer
	if err := FSMTable(&buf, resp); err != nil {
		t.Fatal(err)
	}
	want := "ID  FSM  SUPPORTS  ACTIVE  ACTIVATED AT  BINARY SHA256\n" +
		"1   kv   [1, 2]    1       0             ab12\n" +
		"2   kv   [1, 2]    1       0             ab12\n"
	if buf.String() != want {
		t.Fatalf("without builds:\n%s\nwant\n%s", buf.String(), want)
	}
	resp.Nodes[1].Fsm = fsm("9f00")
	buf.Reset()
	if err := FSMTable(&buf, resp); err != nil {
		t.Fatal(err)
	}
	want = "ID  FSM  SUPPORTS  ACTIVE  ACTIVATED AT  BINARY SHA256  BUILD\n" +
		"1   kv   [1, 2]    1       0             ab12           -\n" +
		"2   kv   [1, 2]    1       0             ab12           9f00\n"
	if buf.String() != want {
		t.Fatalf("with a build:\n%s\nwant\n%s", buf.String(), want)
	}
	buf.Reset()
	if err := StatusJSON(&buf, resp); err != nil {
		t.Fatal(err)
	}
	if s := buf.String(); strings.Count(s, `"build":`) != 1 || !strings.Contains(s, `"build":"9f00"`) {
		t.Fatalf("JSON: %s", s)
	}
}
