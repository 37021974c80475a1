package server

import "sync/atomic"

// The reasons for which the server refuses an Apply itself, before the
// node sees it (the node counts its own refusals: node.Metrics.Refused).
const (
	refusedInvalid           = iota // empty command
	refusedTooLarge                 // over Config.MaxEntryBytes
	refusedDraining                 // the server is shutting down
	refusedNoLeader                 // a follower knows no leader to forward to
	refusedLeaderUnreachable        // the leader could not be reached (or moved)
	numRefusals
)

var refusalNames = [numRefusals]string{"invalid", "too_large", "draining", "no_leader", "leader_unreachable"}

type refusals [numRefusals]atomic.Uint64

func (r *refusals) add(reason int) { r[reason].Add(1) }

// Refused returns how many Apply requests this server refused before they
// reached a node, by reason: invalid, too_large, draining, no_leader,
// leader_unreachable. Every reason is present.
func (s *Server) Refused() map[string]uint64 {
	out := make(map[string]uint64, numRefusals)
	for i := range s.refused {
		out[refusalNames[i]] = s.refused[i].Load()
	}
	return out
}
