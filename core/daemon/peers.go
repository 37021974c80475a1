package daemon

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/raftd/raftd/core/node"
)

// ParsePeers parses a member list "1=host:port,2=host:port" (raftd run
// --peers) into peers ordered by id. Ids must be positive and distinct,
// and so must addresses; empty items are skipped. Errors name --peers.
func ParsePeers(s string) ([]node.Peer, error) {
	var peers []node.Peer
	ids := map[uint64]bool{}
	addrs := map[string]uint64{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("--peers: %q is not id=host:port", part)
		}
		id, err := strconv.ParseUint(k, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("--peers: node id %q is not a positive integer", k)
		}
		if !strings.Contains(v, ":") {
			return nil, fmt.Errorf("--peers: address %q of node %d is not host:port", v, id)
		}
		if ids[id] {
			return nil, fmt.Errorf("--peers: node %d listed twice", id)
		}
		if other, dup := addrs[v]; dup {
			return nil, fmt.Errorf("--peers: nodes %d and %d share address %s", other, id, v)
		}
		ids[id], addrs[v] = true, id
		peers = append(peers, node.Peer{ID: id, RaftAddr: v})
	}
	slices.SortFunc(peers, func(a, b node.Peer) int { return cmpID(a.ID, b.ID) })
	return peers, nil
}

func cmpID(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
