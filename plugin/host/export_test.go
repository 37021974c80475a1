package host

// QueryCalls returns how many Query and QueryBatch calls c's current
// process got.
func QueryCalls(c *Client) (unary, batches uint64) {
	p, err := c.current()
	if err != nil {
		return 0, 0
	}
	return p.qb.unaryCalls.Load(), p.qb.batchCalls.Load()
}

// PendingQueries returns how many queries wait for the next call to c's
// current process.
func PendingQueries(c *Client) int {
	p, err := c.current()
	if err != nil {
		return 0
	}
	p.qb.mu.Lock()
	defer p.qb.mu.Unlock()
	return len(p.qb.pending)
}
