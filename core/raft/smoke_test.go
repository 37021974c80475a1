package raft

import "testing"

func TestSmokeElectAndReplicate(t *testing.T) {
	nt := newTestNet(t, 3, nil)
	nt.elect(1)
	for i := 0; i < 10; i++ {
		if err := nt.propose(1, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := nt.propose(2, "fwd"); err != nil {
		t.Fatal(err)
	}
	for _, id := range nt.ids {
		if got := len(nt.appliedData(id)); got != 11 {
			t.Fatalf("node %d applied %d entries, want 11\n%s", id, got, nt)
		}
	}
	nt.checkLogsMatch()
}

func TestSmokeTickElection(t *testing.T) {
	nt := newTestNet(t, 5, nil)
	nt.ticks(40)
	if nt.leader() == 0 {
		t.Fatalf("no leader\n%s", nt)
	}
}
