package rafttest

// Linearizable reads in the simulator: issuing ReadIndex requests (with
// contexts that a restarted node may reuse), serving them once applied,
// and checking each result against the linearizable order.

import (
	"fmt"

	"github.com/raftd/raftd/core/raft"
)

// servingRead is a read whose ReadState arrived: it is served once the
// node's state machine has applied index.
type servingRead struct {
	ctx, key string
	index    uint64
}

// readIndex issues a read on a random running node.
func (s *Sim) readIndex() {
	id, ok := s.pick(s.live())
	if !ok {
		return
	}
	if s.prof.leaseReads && s.rng.IntN(2) == 0 {
		// Reads on a node that believes it leads are the ones a lease may
		// answer; a deposed leader that does not know it yet is the one
		// that must not.
		if lds := s.leaders(); len(lds) > 0 {
			id = lds[0]
			for _, l := range lds[1:] {
				if s.nodes[l].rn.Status().Term < s.nodes[id].rn.Status().Term {
					id = l
				}
			}
		}
	}
	n := s.nodes[id]
	ctx := s.nextReadCtx(n)
	key := s.readKey(n.id, ctx)
	s.chk.RequestRead(key)
	s.stats.ReadsRequested++
	s.tracef("read-index at %d %q (commit floor %d)", id, ctx, s.chk.MaxCommit())
	n.rn.ReadIndex([]byte(ctx))
}

// nextReadCtx returns a new read context for n. Without reuseReadCtx it
// is unique in the run. With it, n takes the lowest-numbered context not
// carried by an outstanding read, as RawNode.ReadIndex allows ("unique
// among outstanding reads"), and a restarted node starts over: contexts
// recur within an incarnation and across restarts. A read stays
// outstanding until answered and served, across crashes: a driver matches
// answers by context, so an answer still due to an earlier read would be
// taken for the new one (the driver's bug to avoid, not the core's).
func (s *Sim) nextReadCtx(n *simNode) string {
	if !s.prof.reuseReadCtx {
		s.seq++
		return fmt.Sprintf("r%d", s.seq)
	}
	if n.unanswered == nil {
		n.unanswered = map[string]bool{}
	}
	for k := 1; ; k++ {
		ctx := fmt.Sprintf("r%d", k)
		if !n.unanswered[ctx] {
			n.unanswered[ctx] = true
			return ctx
		}
	}
}

// readKey names a read in the checker: contexts are unique per node (and,
// with reuseReadCtx, reused), so the key carries the node.
func (s *Sim) readKey(id uint64, ctx string) string {
	if !s.prof.reuseReadCtx {
		return ctx
	}
	return fmt.Sprintf("%d/%s", id, ctx)
}

// observeReadStates checks the answers in a Ready against the reads'
// issue times and queues them to be served.
func (s *Sim) observeReadStates(n *simNode, rss []raft.ReadState) error {
	for _, rs := range rss {
		ctx := string(rs.RequestCtx)
		s.tracef("%d read state %q index %d", n.id, ctx, rs.Index)
		if s.prof.reuseReadCtx && !n.unanswered[ctx] {
			return fmt.Errorf("read index: node %d got an answer for read %q, which it has no outstanding request for", n.id, ctx)
		}
		key := s.readKey(n.id, ctx)
		if err := s.chk.ObserveReadState(n.id, key, rs.Index); err != nil {
			return err
		}
		n.serving = append(n.serving, servingRead{ctx: ctx, key: key, index: rs.Index})
		s.stats.ReadsAnswered++
	}
	return nil
}

// serveReads serves the answered reads whose index n's state machine has
// reached, and checks each result (see Checker.ObserveReadServed).
func (s *Sim) serveReads(n *simNode) error {
	keep := n.serving[:0]
	for _, r := range n.serving {
		if r.index > n.fsmApplied {
			keep = append(keep, r)
			continue
		}
		if s.prof.reuseReadCtx {
			delete(n.unanswered, r.ctx)
		}
		if err := s.chk.ObserveReadServed(n.id, r.key, n.fsmApplied, n.fsmState); err != nil {
			return err
		}
		s.stats.ReadsServed++
	}
	n.serving = keep
	return nil
}

// campaign makes one or two random running nodes campaign now
// (RawNode.Campaign), as an operator or a driver might, whatever their
// timers say.
func (s *Sim) campaign() error {
	for range 1 + s.rng.IntN(2) {
		id, ok := s.pick(s.live())
		if !ok {
			return nil
		}
		n := s.nodes[id]
		s.stats.Campaigns++
		err := n.rn.Campaign()
		s.tracef("campaign at %d: %v", id, err)
		if err := s.maybeReady(n); err != nil {
			return err
		}
	}
	return nil
}
