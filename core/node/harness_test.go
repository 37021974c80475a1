package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/snapshot"
)

// memStorage is raft.MemoryStorage made safe for concurrent use, with
// snapshots in memory (each as its core/snapshot stream), counters and
// fault injection.
type memStorage struct {
	mu     sync.Mutex
	ms     *raft.MemoryStorage
	bodies map[string][]byte
	seq    int

	saves   atomic.Int64
	saveErr atomic.Pointer[error]
	// entriesErr, when set, fails Entries (as a corrupt entry would).
	entriesErr atomic.Pointer[error]
	// syncDelay is how long an fsync'ed Save takes (fake time under
	// synctest), so that concurrent work piles up as it does on a disk.
	syncDelay time.Duration
	compacts  atomic.Int64
	aborts    atomic.Int64
}

func newMemStorage() *memStorage {
	return &memStorage{ms: raft.NewMemoryStorage(), bodies: map[string][]byte{}}
}

func (s *memStorage) InitialState() (raft.HardState, raft.ConfState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ms.InitialState()
}

func (s *memStorage) Entries(lo, hi, maxBytes uint64) ([]raft.Entry, error) {
	if p := s.entriesErr.Load(); p != nil {
		return nil, *p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ms.Entries(lo, hi, maxBytes)
}

func (s *memStorage) Term(i uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ms.Term(i)
}

func (s *memStorage) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ms.FirstIndex()
}

func (s *memStorage) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ms.LastIndex()
}

func (s *memStorage) Snapshot() (raft.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ms.Snapshot()
}

func (s *memStorage) Save(hs raft.HardState, ents []raft.Entry, sync bool) error {
	if p := s.saveErr.Load(); p != nil {
		return *p
	}
	s.saves.Add(1)
	if sync && s.syncDelay > 0 {
		time.Sleep(s.syncDelay)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ms.Save(hs, ents, sync)
}

func (s *memStorage) ApplySnapshot(snap raft.Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ms.ApplySnapshot(snap)
}

func (s *memStorage) SaveSnapshot(snap raft.Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := snap.Metadata.ConfState
	got, err := s.ms.CreateSnapshot(snap.Metadata.Index, &cs, snap.Data)
	if err == nil && got.Metadata.Term != snap.Metadata.Term {
		return fmt.Errorf("snapshot term %d, log says %d", snap.Metadata.Term, got.Metadata.Term)
	}
	return err
}

func (s *memStorage) Compact(i uint64) error {
	s.compacts.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ms.Compact(i)
}

func (s *memStorage) BeginSnapshot(h SnapshotHeader) (SnapshotSink, error) {
	return &memSink{s: s, h: h.Clone()}, nil
}

// OpenSnapshot decodes the stored stream; the body reader checks its
// trailer at the end.
func (s *memStorage) OpenSnapshot(snap raft.Snapshot) (SnapshotHeader, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.bodies[string(snap.Data)]
	if !ok {
		return SnapshotHeader{}, nil, fmt.Errorf("no snapshot body %q", snap.Data)
	}
	h, r, err := snapshot.NewReader(bytes.NewReader(b))
	if err != nil {
		return SnapshotHeader{}, nil, err
	}
	return h, io.NopCloser(r), nil
}

// memSink keeps a snapshot as its whole stream (header, body, trailer).
type memSink struct {
	s   *memStorage
	h   SnapshotHeader
	buf bytes.Buffer
}

func (k *memSink) Write(p []byte) (int, error) { return k.buf.Write(p) }
func (k *memSink) Abort() error                { k.s.aborts.Add(1); return nil }
func (k *memSink) Commit() ([]byte, error) {
	stream, err := io.ReadAll(snapshot.Encode(k.h, &k.buf))
	if err != nil {
		return nil, err
	}
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	k.s.seq++
	name := fmt.Sprintf("snap-%d", k.s.seq)
	k.s.bodies[name] = stream
	return []byte(name), nil
}

// network connects in-process nodes. Each ordered pair has a FIFO queue
// drained by one goroutine; a full queue drops (and reports unreachable),
// like the real transport.
type timedMsg struct {
	m  raft.Message
	at time.Time
}

type network struct {
	mu    sync.Mutex
	nodes map[uint64]*Node
	cut   map[uint64]bool // isolated nodes: traffic to and from is dropped
	links map[[2]uint64]chan timedMsg
	// latency delays every message (fake time under synctest).
	latency time.Duration
	ctx     context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	sent    atomic.Int64
	// drop, when set, drops the messages it returns true for.
	drop func(from, to uint64, m raft.Message) bool
	// digestGate, when set, holds every checkpoint digest request between
	// nodes (netPeers) until it is closed.
	digestGate chan struct{}
}

func (nw *network) setDrop(f func(from, to uint64, m raft.Message) bool) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.drop = f
}

func (nw *network) dropped(from, to uint64, m raft.Message) bool {
	nw.mu.Lock()
	f := nw.drop
	nw.mu.Unlock()
	return f != nil && f(from, to, m)
}

func newNetwork() *network {
	ctx, cancel := context.WithCancel(context.Background())
	return &network{nodes: map[uint64]*Node{}, cut: map[uint64]bool{}, links: map[[2]uint64]chan timedMsg{}, latency: time.Millisecond, ctx: ctx, stop: cancel}
}

func (nw *network) close() {
	nw.stop()
	nw.wg.Wait()
}

func (nw *network) set(id uint64, n *Node) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if n == nil {
		delete(nw.nodes, id)
	} else {
		nw.nodes[id] = n
	}
}

func (nw *network) isolate(id uint64, on bool) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.cut[id] = on
}

func (nw *network) node(id uint64) *Node {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.cut[id] {
		return nil
	}
	return nw.nodes[id]
}

func (nw *network) link(from, to uint64) chan timedMsg {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	k := [2]uint64{from, to}
	ch, ok := nw.links[k]
	if !ok {
		ch = make(chan timedMsg, 4096)
		nw.links[k] = ch
		nw.wg.Add(1)
		go nw.pump(from, to, ch)
	}
	return ch
}

func (nw *network) pump(from, to uint64, ch chan timedMsg) {
	defer nw.wg.Done()
	for {
		select {
		case <-nw.ctx.Done():
			return
		case tm := <-ch:
			if d := time.Until(tm.at); d > 0 {
				time.Sleep(d)
			}
			m := tm.m
			src, dst := nw.node(from), nw.node(to)
			if src == nil || dst == nil || nw.dropped(from, to, m) {
				continue
			}
			if m.Type == raft.MsgSnap {
				rc, err := src.OpenSnapshot(m.Snapshot.Metadata, m.Snapshot.Data)
				if err == nil {
					err = dst.ReceiveSnapshot(nw.ctx, m, rc)
					rc.Close()
				}
				st := raft.SnapshotFinish
				if err != nil {
					st = raft.SnapshotFailure
				}
				src.ReportSnapshot(to, st)
				continue
			}
			_ = dst.Process(nw.ctx, m)
		}
	}
}

// transport is one node's view of the network.
type transport struct {
	nw *network
	id uint64
}

func (t *transport) Send(msgs []raft.Message) {
	for _, m := range msgs {
		t.nw.sent.Add(1)
		select {
		case t.nw.link(t.id, m.To) <- timedMsg{m: m, at: time.Now().Add(t.nw.latency)}:
		default:
			if n := t.nw.node(t.id); n != nil {
				n.ReportUnreachable(m.To)
			}
		}
	}
}

// netPeers asks other nodes of the network for their checkpoint digests,
// as core/server does over the peer port: an isolated node reaches none.
type netPeers struct {
	nw   *network
	from uint64
}

func (p *netPeers) CheckpointDigest(ctx context.Context, id, index uint64) ([]byte, error) {
	if p.nw.node(p.from) == nil {
		return nil, fmt.Errorf("node %d: isolated", p.from)
	}
	n := p.nw.node(id)
	if n == nil {
		return nil, fmt.Errorf("node %d unreachable", id)
	}
	p.nw.mu.Lock()
	gate := p.nw.digestGate
	p.nw.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return n.CheckpointDigest(ctx, index)
}

func (t *transport) AddPeer(id uint64, addr string) {}
func (t *transport) RemovePeer(id uint64)           {}
func (t *transport) Close() error                   { return nil }

// testFSM is a deterministic in-process state machine. Commands:
//
//	add:N       sum += N; result "sum=<sum>"
//	echo:X      result "X@<index>"
//	put:K:V     kv[K] = V; result "ok"
//	poison:X    crashes the state machine every time it is applied (a
//	            deterministic poison pill: the plugin panics on it)
//
// Queries: "sum", "get:K", "applied". It records violations of the
// exactly-once, in-order contract.
type testFSM struct {
	mu      sync.Mutex
	applied uint64
	sum     int64
	kv      map[string]string
	cmds    int // commands applied since creation (across restarts)
	batches int
	qcalls  int // Query and QueryBatch calls
	bad     []string

	crashAt         map[uint64]bool // crash when a batch contains one of these (once each)
	poisonHits      int             // Apply calls that met a poison command
	immune          bool            // poison commands are no-ops (result "ok")
	crashed         bool
	restartFails    int // Restart fails this many more times
	restarts        int
	failWith        error // non-crash error on next Apply
	persistent      bool  // keeps state across Restart (like a durable FSM)
	versions        [2]uint32
	lastVersion     uint32
	snapshots       int
	crashOnSnapshot int
	applyDelay      time.Duration
	restores        int
	// snapGate, when set, holds every snapshot body (both paths) until it
	// is closed; the state is captured before.
	snapGate chan struct{}
	// crashMidSnapshot: this many more snapshot bodies write a few bytes
	// and then crash the FSM (StartSnapshot path).
	crashMidSnapshot int
	snapStarts       int // captures by StartSnapshot
	// name is the FSM name Info reports; "" means "test".
	name string
	// skew makes the FSM nondeterministic from command index skewFrom on:
	// add:N adds N+skew (the result reports it; the state diverges from
	// replicas with another skew).
	skew     int64
	skewFrom uint64
}

func newTestFSM() *testFSM {
	return &testFSM{kv: map[string]string{}, crashAt: map[uint64]bool{}, versions: [2]uint32{1, 2}}
}

func (f *testFSM) Info(ctx context.Context) (FSMInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return FSMInfo{}, fmt.Errorf("info: %w", ErrStateMachineCrashed)
	}
	name := f.name
	if name == "" {
		name = "test"
	}
	return FSMInfo{Name: name, MinVersion: f.versions[0], MaxVersion: f.versions[1], Applied: f.applied}, nil
}

func (f *testFSM) Apply(ctx context.Context, cmds []Command) ([][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return nil, fmt.Errorf("apply: %w", ErrStateMachineCrashed)
	}
	if f.failWith != nil {
		return nil, f.failWith
	}
	for _, c := range cmds {
		if strings.HasPrefix(string(c.Data), "poison:") && !f.immune {
			f.poisonHits++
			f.crashed = true
			if !f.persistent {
				f.applied, f.sum, f.kv = 0, 0, map[string]string{}
			}
			return nil, fmt.Errorf("apply %d: plugin panicked: %w", c.Index, ErrStateMachineCrashed)
		}
		if f.crashAt[c.Index] {
			delete(f.crashAt, c.Index)
			f.crashed = true
			if !f.persistent {
				f.applied, f.sum, f.kv = 0, 0, map[string]string{}
			}
			return nil, fmt.Errorf("apply %d: plugin exited: %w", c.Index, ErrStateMachineCrashed)
		}
	}
	f.batches++
	if f.applyDelay > 0 {
		f.mu.Unlock()
		time.Sleep(f.applyDelay)
		f.mu.Lock()
	}
	out := make([][]byte, len(cmds))
	for i, c := range cmds {
		if c.Index <= f.applied {
			f.bad = append(f.bad, fmt.Sprintf("command %d applied after %d (twice or out of order)", c.Index, f.applied))
		}
		f.applied = c.Index
		f.cmds++
		f.lastVersion = c.Version
		s := string(c.Data)
		switch {
		case strings.HasPrefix(s, "add:"):
			n, _ := strconv.ParseInt(s[4:], 10, 64)
			if f.skewFrom != 0 && c.Index >= f.skewFrom {
				n += f.skew
			}
			f.sum += n
			out[i] = []byte(fmt.Sprintf("sum=%d", f.sum))
		case strings.HasPrefix(s, "echo:"):
			// The count is state, so it survives snapshots: it proves
			// exactly-once application.
			k := "e/" + s[5:]
			n, _ := strconv.Atoi(f.kv[k])
			f.kv[k] = strconv.Itoa(n + 1)
			out[i] = []byte(fmt.Sprintf("%s@%d", s[5:], c.Index))
		case strings.HasPrefix(s, "poison:"):
			out[i] = []byte("ok")
		case strings.HasPrefix(s, "put:"):
			kv := strings.SplitN(s[4:], ":", 2)
			f.kv[kv[0]] = kv[1]
			out[i] = []byte("ok")
		default:
			out[i] = []byte(`{"error":"unknown command"}`)
		}
	}
	return out, nil
}

func (f *testFSM) Query(ctx context.Context, q []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.qcalls++
	return f.queryLocked(q)
}

// QueryBatch makes testFSM a QueryBatcher: one call, one lock, for all.
func (f *testFSM) QueryBatch(ctx context.Context, qs [][]byte) ([][]byte, []error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.qcalls++
	res, errs := make([][]byte, len(qs)), make([]error, len(qs))
	for i, q := range qs {
		res[i], errs[i] = f.queryLocked(q)
	}
	return res, errs
}

// queries is the number of Query and QueryBatch calls so far.
func (f *testFSM) queries() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.qcalls
}

func (f *testFSM) queryLocked(q []byte) ([]byte, error) {
	if f.crashed {
		return nil, fmt.Errorf("query: %w", ErrStateMachineCrashed)
	}
	s := string(q)
	switch {
	case s == "sum":
		return []byte(strconv.FormatInt(f.sum, 10)), nil
	case s == "applied":
		return []byte(strconv.FormatUint(f.applied, 10)), nil
	case strings.HasPrefix(s, "get:"):
		return []byte(f.kv[s[4:]]), nil
	}
	return nil, errors.New("bad query")
}

type fsmState struct {
	Applied uint64
	Sum     int64
	KV      map[string]string
}

// testFormat is the testFSM's snapshot body format.
const testFormat = "test.json"

// Snapshot copies the state now; the returned view writes it later, on
// the node's body goroutine.
func (f *testFSM) Snapshot(ctx context.Context) (StateSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return nil, fmt.Errorf("snapshot: %w", ErrStateMachineCrashed)
	}
	if f.crashOnSnapshot > 0 {
		f.crashOnSnapshot--
		f.crashed = true
		f.applied, f.sum, f.kv = 0, 0, map[string]string{}
		return nil, fmt.Errorf("snapshot: plugin exited: %w", ErrStateMachineCrashed)
	}
	f.snapStarts++
	s := &testSnap{f: f, st: fsmState{f.applied, f.sum, maps.Clone(f.kv)}, gate: f.snapGate}
	if f.crashMidSnapshot > 0 {
		f.crashMidSnapshot--
		s.crashMid = true
	}
	return s, nil
}

// testSnap is a testFSM state captured by Snapshot.
type testSnap struct {
	f        *testFSM
	st       fsmState
	gate     chan struct{} // if set, WriteTo waits for it
	crashMid bool          // the "plugin" dies after a partial body
	released atomic.Int32
}

func (s *testSnap) Format() string { return testFormat }

func (s *testSnap) WriteTo(ctx context.Context, w io.Writer) error {
	f := s.f
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.crashMid {
		_, _ = w.Write([]byte(`{"Applied":`))
		f.mu.Lock()
		f.crashed = true
		if !f.persistent {
			f.applied, f.sum, f.kv = 0, 0, map[string]string{}
		}
		f.mu.Unlock()
		return fmt.Errorf("snapshot stream: plugin exited: %w", ErrStateMachineCrashed)
	}
	err := json.NewEncoder(w).Encode(s.st)
	f.mu.Lock()
	f.snapshots++
	f.mu.Unlock()
	return err
}

func (s *testSnap) Release() {
	if s.released.Add(1) != 1 {
		s.f.mu.Lock()
		s.f.bad = append(s.f.bad, "snapshot view released twice")
		s.f.mu.Unlock()
	}
}

func (f *testFSM) Restore(ctx context.Context, h SnapshotHeader, r io.Reader) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return fmt.Errorf("restore: %w", ErrStateMachineCrashed)
	}
	if h.FSMFormat != testFormat {
		return fmt.Errorf("restore: unknown snapshot format %q", h.FSMFormat)
	}
	var s fsmState
	if err := json.NewDecoder(r).Decode(&s); err != nil {
		return err
	}
	f.restores++
	f.applied, f.sum, f.kv = s.Applied, s.Sum, s.KV
	if f.kv == nil {
		f.kv = map[string]string{}
	}
	return nil
}

func (f *testFSM) Digest(ctx context.Context) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []byte(fmt.Sprintf("%d/%d/%v", f.applied, f.sum, f.kv)), nil
}

func (f *testFSM) Close() error { return nil }

func (f *testFSM) Restart(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restarts++
	if f.restartFails > 0 {
		f.restartFails--
		return errors.New("plugin did not start")
	}
	f.crashed = false
	return nil
}

func (f *testFSM) snapshotOf() (uint64, int64, int, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied, f.sum, f.cmds, append([]string(nil), f.bad...)
}

// cluster is a set of nodes on one network.
type cluster struct {
	t      testing.TB
	nw     *network
	nodes  map[uint64]*Node
	stores map[uint64]*memStorage
	fsms   map[uint64]*testFSM
	peers  []Peer
	tune   func(*Config)
}

const testTick = 10 * time.Millisecond

func newCluster(t testing.TB, size int, tune func(*Config)) *cluster {
	c := &cluster{t: t, nw: newNetwork(), nodes: map[uint64]*Node{}, stores: map[uint64]*memStorage{}, fsms: map[uint64]*testFSM{}, tune: tune}
	for id := uint64(1); id <= uint64(size); id++ {
		c.peers = append(c.peers, Peer{ID: id, RaftAddr: fmt.Sprintf("raft-%d", id), APIAddr: fmt.Sprintf("api-%d", id)})
	}
	for id := uint64(1); id <= uint64(size); id++ {
		c.stores[id] = newMemStorage()
		c.fsms[id] = newTestFSM()
		c.start(id)
	}
	t.Cleanup(c.shutdown)
	return c
}

func (c *cluster) config(id uint64) Config {
	cfg := Config{
		ID: id, Peers: c.peers, Storage: c.stores[id], Transport: &transport{nw: c.nw, id: id},
		StateMachine: c.fsms[id], HeartbeatInterval: testTick, ElectionTimeout: 10 * testTick, Seed: int64(id),
		// Checkpoints only where a test asks for them (Verify, or
		// CheckpointEntries in tune).
		CheckpointEntries: -1, CheckpointPeers: &netPeers{nw: c.nw, from: id}, Logger: testLogger.With("node", id),
	}
	if c.tune != nil {
		c.tune(&cfg)
	}
	return cfg
}

func (c *cluster) start(id uint64) *Node {
	c.t.Helper()
	n, err := New(c.config(id))
	if err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	c.nodes[id] = n
	c.nw.set(id, n)
	return n
}

func (c *cluster) stop(id uint64) {
	c.t.Helper()
	n := c.nodes[id]
	c.nw.set(id, nil)
	if err := n.Stop(context.Background()); err != nil {
		c.t.Fatalf("stop node %d: %v", id, err)
	}
	delete(c.nodes, id)
}

func (c *cluster) shutdown() {
	for id, n := range c.nodes {
		c.nw.set(id, nil)
		_ = n.Stop(context.Background())
	}
	c.nw.close()
}

// waitLeader waits (fake time) until all running, connected nodes agree on
// a leader and returns it.
func (c *cluster) waitLeader() uint64 {
	c.t.Helper()
	for range 1000 {
		var lead uint64
		agree := true
		for id, n := range c.nodes {
			if c.nw.node(id) == nil {
				continue
			}
			l := n.Leader()
			if l == 0 || (lead != 0 && l != lead) {
				agree = false
				break
			}
			lead = l
		}
		if _, ok := c.nodes[lead]; agree && ok && c.nw.node(lead) != nil {
			return lead
		}
		time.Sleep(testTick)
	}
	c.t.Fatal("no leader elected")
	return 0
}

// waitApplied waits until every running node applied at least idx.
func (c *cluster) waitApplied(idx uint64) {
	c.t.Helper()
	for range 10000 {
		ok := true
		for _, n := range c.nodes {
			if n.Applied() < idx {
				ok = false
			}
		}
		if ok {
			return
		}
		time.Sleep(testTick)
	}
	for id, n := range c.nodes {
		c.t.Logf("node %d applied %d", id, n.Applied())
	}
	c.t.Fatalf("nodes did not apply index %d", idx)
}

func (c *cluster) checkFSMs() {
	c.t.Helper()
	var refID uint64
	var ref *testFSM
	for id, f := range c.fsms {
		if _, ok := c.nodes[id]; !ok {
			continue
		}
		_, _, _, bad := f.snapshotOf()
		for _, b := range bad {
			c.t.Errorf("node %d: %s", id, b)
		}
		if ref == nil {
			refID, ref = id, f
			continue
		}
		ref.mu.Lock()
		f.mu.Lock()
		if f.applied != ref.applied || f.sum != ref.sum {
			c.t.Errorf("node %d at command %d sum %d; node %d at %d sum %d", id, f.applied, f.sum, refID, ref.applied, ref.sum)
		}
		diffs := 0
		for k, v := range f.kv {
			if ref.kv[k] != v && diffs < 10 {
				diffs++
				c.t.Errorf("key %s: node %d has %q, node %d has %q", k, id, v, refID, ref.kv[k])
			}
		}
		for k, v := range ref.kv {
			if _, ok := f.kv[k]; !ok && diffs < 10 {
				diffs++
				c.t.Errorf("key %s: node %d has %q, node %d has none", k, refID, v, id)
			}
		}
		f.mu.Unlock()
		ref.mu.Unlock()
	}
}
