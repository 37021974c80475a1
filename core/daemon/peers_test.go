package daemon

import (
	"reflect"
	"strings"
	"testing"

	"github.com/raftd/raftd/core/node"
)

func TestParsePeers(t *testing.T) {
	got, err := ParsePeers(" 3=h:3, 1=h:1,,2=[::1]:2 ")
	want := []node.Peer{{ID: 1, RaftAddr: "h:1"}, {ID: 2, RaftAddr: "[::1]:2"}, {ID: 3, RaftAddr: "h:3"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParsePeers = %v, %v; want %v", got, err, want)
	}
	for in, msg := range map[string]string{
		"1":           `"1" is not id=host:port`,
		"0=h:1":       `node id "0" is not a positive integer`,
		"x=h:1":       `node id "x" is not a positive integer`,
		"1=nohost":    `address "nohost" of node 1 is not host:port`,
		"1=h:1,1=h:2": "node 1 listed twice",
		"1=h:1,2=h:1": "nodes 1 and 2 share address h:1",
	} {
		if _, err := ParsePeers(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParsePeers(%q) = %v, want %q", in, err, msg)
		}
	}
}
