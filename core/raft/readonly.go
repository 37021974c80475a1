package raft

// ReadOnlyOption selects how the leader confirms a ReadIndex request.
type ReadOnlyOption uint8

const (
	// ReadOnlySafe confirms leadership with a round of heartbeats that a
	// quorum answers (thesis §6.4). The default.
	ReadOnlySafe ReadOnlyOption = iota
	// ReadOnlyLeaseBased answers from the leader's lease (thesis §6.4.1)
	// without a heartbeat round while a quorum acknowledged a heartbeat
	// sent less than ElectionTick-1 ticks ago; otherwise (and during a
	// leadership transfer) it falls back to ReadOnlySafe. It is correct only
	// if the nodes' tick rates drift by less than that margin. Requires
	// check-quorum.
	ReadOnlyLeaseBased
)

// readIndexStatus is one pending read: the commit index when it arrived
// and the members that confirmed a heartbeat round sent after it.
type readIndexStatus struct {
	req   Message
	index uint64
	acks  []uint64
}

// readOnly queues ReadIndex requests until a quorum confirms them.
type readOnly struct {
	option  ReadOnlyOption
	pending map[string]*readIndexStatus
	queue   []string
}

func newReadOnly(option ReadOnlyOption) *readOnly {
	return &readOnly{option: option}
}

// addRequest queues read m at commit index. A duplicate context is ignored
// (the first request with it keeps its place).
func (ro *readOnly) addRequest(index uint64, m Message) {
	ctx := string(m.Context)
	if _, ok := ro.pending[ctx]; ok {
		return
	}
	if ro.pending == nil {
		ro.pending = make(map[string]*readIndexStatus)
	}
	ro.pending[ctx] = &readIndexStatus{req: m, index: index}
	ro.queue = append(ro.queue, ctx)
}

// recvAck records that id answered the heartbeat carrying ctx and returns
// the status, or nil if ctx is not pending.
func (ro *readOnly) recvAck(id uint64, ctx []byte) *readIndexStatus {
	rs, ok := ro.pending[string(ctx)]
	if !ok {
		return nil
	}
	for _, a := range rs.acks {
		if a == id {
			return rs
		}
	}
	rs.acks = append(rs.acks, id)
	return rs
}

// advance removes and returns every request up to and including the one
// with context ctx: a heartbeat round confirming a later read also
// confirms the earlier ones.
func (ro *readOnly) advance(ctx []byte) []*readIndexStatus {
	key := string(ctx)
	i := -1
	for j, c := range ro.queue {
		if c == key {
			i = j
			break
		}
	}
	if i < 0 {
		return nil
	}
	out := make([]*readIndexStatus, 0, i+1)
	for _, c := range ro.queue[:i+1] {
		out = append(out, ro.pending[c])
		delete(ro.pending, c)
	}
	ro.queue = ro.queue[i+1:]
	return out
}

// lastPendingRequestCtx is attached to periodic heartbeats so a read whose
// heartbeat round was lost is retried.
func (ro *readOnly) lastPendingRequestCtx() []byte {
	if len(ro.queue) == 0 {
		return nil
	}
	return []byte(ro.queue[len(ro.queue)-1])
}

func (ro *readOnly) reset() {
	ro.pending = nil
	ro.queue = nil
}
