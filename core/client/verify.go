package client

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
)

// CheckVerify interprets the answer of VerifyFSM (`raftd fsm verify`):
// differ lists the nodes, in id order, whose digest is not the agreed one
// or that reported none (with no agreed digest: every node when no digest
// has a majority; when the checkpoint was undecided, the nodes that did
// not answer, and every node if the answers differ). err is nil when every
// node reported the agreed digest, else it names those nodes and what the
// verdict did to them.
func CheckVerify(r *apiv1.VerifyFSMResponse) (differ []uint64, err error) {
	agreed := r.GetAgreedDigest()
	digests := map[string]bool{}
	for _, n := range r.GetNodes() {
		if n.GetError() == "" {
			digests[string(n.GetDigest())] = true
		}
	}
	for _, n := range r.GetNodes() {
		switch {
		case n.GetError() != "":
		case len(agreed) > 0 && bytes.Equal(n.GetDigest(), agreed):
			continue
		case len(agreed) == 0 && !r.GetNoMajority() && len(digests) == 1:
			continue // undecided, but every answer agrees
		}
		differ = append(differ, n.GetId())
	}
	c, v := r.GetCheckpointIndex(), r.GetVerdictIndex()
	switch {
	case len(differ) == 0 && v != 0:
		return nil, nil
	case len(differ) == 0:
		return nil, fmt.Errorf("fsm verify: checkpoint at index %d undecided: no verdict was committed", c)
	case r.GetNoMajority():
		return differ, fmt.Errorf("fsm verify: no digest has a majority at the checkpoint at index %d: nodes %s differ; every node halts at index %d", c, ids(differ), v)
	case v == 0:
		return differ, fmt.Errorf("fsm verify: checkpoint at index %d undecided (nodes %s did not answer or differ); nothing halted", c, ids(differ))
	}
	return differ, fmt.Errorf("fsm verify: nodes %s differ from the majority's digest at the checkpoint at index %d (or gave none); a node whose digest differs halts at index %d", ids(differ), c, v)
}

func ids(xs []uint64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatUint(x, 10)
	}
	return strings.Join(s, ", ")
}
