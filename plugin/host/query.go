package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fsmv1 "github.com/raftd/raftd/proto/fsm/v1"
)

// Bounds of one QueryBatch call.
const (
	maxQueryBatch      = 256
	maxQueryBatchBytes = 4 << 20
)

// queryBatcher groups concurrent queries to one plugin process: while a
// call is on the wire, the queries that arrive wait, and go out together in
// the next QueryBatch call (like a group commit). A query that finds the
// plugin idle goes out at once, alone. One call is on the wire at a time;
// the plugin runs queries one after another anyway.
type queryBatcher struct {
	mu      sync.Mutex
	pending []*pendingQuery
	busy    bool        // a goroutine is sending batches
	unary   atomic.Bool // the plugin has no QueryBatch: one Query call each
	// Calls made, for tests: Query calls and QueryBatch calls.
	unaryCalls, batchCalls atomic.Uint64
}

type pendingQuery struct {
	q    []byte
	res  []byte
	err  error
	done chan struct{} // closed when res/err are set
}

// ConcurrentQuery marks Client as an fsm.ConcurrentQuerier: Query may be
// called while other calls are in flight (the plugin process orders them).
func (c *Client) ConcurrentQuery() {}

// Query runs a read-only query against the state after the entries whose
// Apply returned before it was called (and possibly some applied since).
// Concurrent queries share QueryBatch calls when the plugin implements it.
// A query whose call misses the CallTimeout deadline fails (an error
// matching context.DeadlineExceeded) without the plugin being declared
// broken: a slow query (an unlimited list of a large state) is no sign of a
// hung process, and restarting the plugin for it would cost a restore and a
// replay. A plugin that is really stuck is caught by Apply's watchdog.
func (c *Client) Query(ctx context.Context, q []byte) ([]byte, error) {
	p, err := c.current()
	if err != nil {
		return nil, err
	}
	if p.qb.unary.Load() {
		p.qb.unaryCalls.Add(1)
		return c.queryOne(ctx, p, q)
	}
	pq := &pendingQuery{q: q, done: make(chan struct{})}
	b := &p.qb
	b.mu.Lock()
	b.pending = append(b.pending, pq)
	start := !b.busy
	b.busy = true
	b.mu.Unlock()
	if start {
		go c.sendQueries(p)
	}
	select {
	case <-pq.done:
		return pq.res, pq.err
	case <-ctx.Done():
		// The query still runs; its answer is dropped.
		return nil, fmt.Errorf("host: plugin %s: query: %w", c.cfg.Name, ctx.Err())
	}
}

// QueryBatch runs the queries qs together: they join the queries waiting
// for the plugin and go out in as few QueryBatch calls as its limits allow
// (one, for a handful of small queries). It implements fsm.QueryBatcher;
// each query is answered as by Query.
func (c *Client) QueryBatch(ctx context.Context, qs [][]byte) ([][]byte, []error) {
	res, errs := make([][]byte, len(qs)), make([]error, len(qs))
	p, err := c.current()
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return res, errs
	}
	if p.qb.unary.Load() {
		for i, q := range qs {
			p.qb.unaryCalls.Add(1)
			res[i], errs[i] = c.queryOne(ctx, p, q)
		}
		return res, errs
	}
	pqs := make([]pendingQuery, len(qs))
	b := &p.qb
	b.mu.Lock()
	for i, q := range qs {
		pqs[i] = pendingQuery{q: q, done: make(chan struct{})}
		b.pending = append(b.pending, &pqs[i])
	}
	start := !b.busy
	b.busy = true
	b.mu.Unlock()
	if start {
		// Send them from this goroutine: it waits for them anyway.
		c.sendQueries(p)
	}
	for i := range pqs {
		pq := &pqs[i]
		select {
		case <-pq.done:
			res[i], errs[i] = pq.res, pq.err
		case <-ctx.Done():
			// The queries still run; their answers are dropped.
			for j := i; j < len(pqs); j++ {
				errs[j] = fmt.Errorf("host: plugin %s: query: %w", c.cfg.Name, ctx.Err())
			}
			return res, errs
		}
	}
	return res, errs
}

// sendQueries sends the pending queries of p in batches until none is left.
func (c *Client) sendQueries(p *process) {
	b := &p.qb
	for {
		b.mu.Lock()
		n, bytes := 0, 0
		for n < len(b.pending) && n < maxQueryBatch && (n == 0 || bytes+len(b.pending[n].q) <= maxQueryBatchBytes) {
			bytes += len(b.pending[n].q)
			n++
		}
		if n == 0 {
			b.busy = false
			b.mu.Unlock()
			return
		}
		batch := append([]*pendingQuery(nil), b.pending[:n]...)
		clear(b.pending[:n])
		b.pending = b.pending[n:]
		if len(b.pending) == 0 {
			b.pending = nil
		}
		b.mu.Unlock()
		c.runQueries(p, batch)
	}
}

// runQueries answers batch: one unary Query for a single query or a plugin
// without QueryBatch, else one QueryBatch call.
func (c *Client) runQueries(p *process, batch []*pendingQuery) {
	// NB: no caller's context: one caller giving up must not fail the
	// others. Each call still has the CallTimeout deadline.
	ctx := context.Background()
	answer := func(pq *pendingQuery, res []byte, err error) {
		pq.res, pq.err = res, err
		close(pq.done)
	}
	one := func() {
		for _, pq := range batch {
			p.qb.unaryCalls.Add(1)
			res, err := c.queryOne(ctx, p, pq.q)
			answer(pq, res, err)
		}
	}
	if len(batch) == 1 || p.qb.unary.Load() {
		one()
		return
	}
	req := &fsmv1.QueryBatchRequest{Queries: make([][]byte, len(batch))}
	for i, pq := range batch {
		req.Queries[i] = pq.q
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	p.qb.batchCalls.Add(1)
	resp, err := p.rpc.QueryBatch(cctx, req)
	cancel()
	switch code := status.Code(err); {
	case err == nil:
	case code == codes.Unimplemented:
		p.qb.unary.Store(true)
		one()
		return
	case code == codes.ResourceExhausted:
		// The answers together exceed the message size limit.
		one()
		return
	default:
		if code == codes.DeadlineExceeded || errors.Is(cctx.Err(), context.DeadlineExceeded) {
			select {
			case <-p.done:
				err = p.brokenErr()
			default:
				err = fmt.Errorf("host: plugin %s: query: no answer within %v (--plugin-call-timeout): %w", c.cfg.Name, c.cfg.CallTimeout, context.DeadlineExceeded)
			}
		} else {
			err = c.callErr(p, ctx, cctx, c.cfg.CallTimeout, "query", err)
		}
		for _, pq := range batch {
			answer(pq, nil, err)
		}
		return
	}
	if len(resp.Outcomes) != len(batch) {
		p.fail(ReasonProtocol, fmt.Errorf("query batch of %d queries answered with %d outcomes", len(batch), len(resp.Outcomes)))
		err := p.brokenErr()
		for _, pq := range batch {
			answer(pq, nil, err)
		}
		return
	}
	for i, o := range resp.Outcomes {
		if code := codes.Code(o.Code); code != codes.OK {
			answer(batch[i], nil, fmt.Errorf("host: plugin %s: query: %w", c.cfg.Name, status.Error(code, o.Message)))
			continue
		}
		answer(batch[i], o.Result, nil)
	}
}
