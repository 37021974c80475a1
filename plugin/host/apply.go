package host

import (
	"context"
	"fmt"
	"time"

	"github.com/raftd/raftd/plugin/fsm"
	fsmv1 "github.com/raftd/raftd/proto/fsm/v1"
)

// entryOverheadBytes approximates the protobuf framing of one entry when
// cutting batches.
const entryOverheadBytes = 24

// Apply implements fsm.FSM: it delivers one entry (see ApplyBatch).
func (c *Client) Apply(ctx context.Context, e fsm.Entry) ([]byte, error) {
	res, err := c.ApplyBatch(ctx, []fsm.Entry{e})
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// ApplyBatch implements fsm.BatchApplier. It delivers entries (strictly
// increasing indexes, committed, in log order) and returns one result per
// entry, in order. The entries are cut
// into requests of about MaxBatchBytes and up to MaxInflight requests are
// on the wire at once, so a large call costs a few round trips, not one
// per entry.
//
// Apply has no deadline of its own (Raft's apply path must not fail for
// timing reasons), but a watchdog declares the plugin hung when no request
// completes within ApplyTimeout. If ctx ends mid-call the outcome is
// unknown and the process is marked broken too. Any error is a
// *BrokenError (or ErrClosed): which entries were applied is unknown, so
// the caller restarts the plugin, restores and replays.
//
// Ownership: the caller must not modify the entries' Data until Apply
// returns; the returned results belong to the caller.
func (c *Client) ApplyBatch(ctx context.Context, es []fsm.Entry) ([][]byte, error) {
	if len(es) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("host: apply: %w", err) // nothing sent: the plugin is fine
	}
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	p, err := c.current()
	if err != nil {
		return nil, err
	}
	timeout := c.cfg.ApplyTimeout
	wd := time.AfterFunc(timeout, func() {
		p.fail(ReasonHung, fmt.Errorf("apply of entries %d..%d: no response within %v", es[0].Index, es[len(es)-1].Index, timeout))
	})
	defer wd.Stop()
	stop := context.AfterFunc(ctx, func() {
		p.fail(ReasonCancelled, fmt.Errorf("apply of entries %d..%d: %w", es[0].Index, es[len(es)-1].Index, ctx.Err()))
	})
	defer stop()

	results := make([][]byte, 0, len(es))
	type inflight struct {
		n    int    // entries in the request
		last uint64 // index of its last entry
	}
	var sizes []inflight // requests on the wire, oldest first
	next := 0
	for len(results) < len(es) {
		for next < len(es) && len(sizes) < c.cfg.MaxInflight {
			end, bytes := next, 0
			for end < len(es) && (end == next || bytes+len(es[end].Data)+entryOverheadBytes <= c.cfg.MaxBatchBytes) {
				bytes += len(es[end].Data) + entryOverheadBytes
				end++
			}
			if err := p.stream.Send(toRequest(es[next:end])); err != nil {
				p.fail(ReasonRPC, fmt.Errorf("send apply request: %w", err))
				return nil, p.brokenErr()
			}
			sizes = append(sizes, inflight{n: end - next, last: es[end-1].Index})
			next = end
		}
		select {
		case r := <-p.resps:
			req := sizes[0]
			sizes = sizes[1:]
			if len(r.Results) != req.n || r.AppliedIndex != req.last {
				p.fail(ReasonProtocol, fmt.Errorf("apply response has %d results and applied index %d for %d entries ending at %d",
					len(r.Results), r.AppliedIndex, req.n, req.last))
				return nil, p.brokenErr()
			}
			results = append(results, r.Results...)
			wd.Reset(timeout)
		case <-p.done:
			return nil, p.brokenErr()
		}
	}
	return results, nil
}

func toRequest(es []fsm.Entry) *fsmv1.ApplyRequest {
	ents := make([]fsmv1.Entry, len(es))
	ptrs := make([]*fsmv1.Entry, len(es))
	for i := range es {
		e := &ents[i]
		e.Index, e.Term, e.Data, e.Version = es[i].Index, es[i].Term, es[i].Data, es[i].Version
		ptrs[i] = e
	}
	return &fsmv1.ApplyRequest{Entries: ptrs}
}
