package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftd/raftd/core/raft"
)

var errDropped = raft.ErrProposalDropped

// maxDrain bounds how many queued proposals or reads the loop takes in one
// round before it persists (one Save and one fsync per round).
const maxDrain = 4096

// Node drives one raft.RawNode. All methods are safe for concurrent use.
//
// Goroutines: the loop goroutine owns the RawNode and is the only writer of
// Storage; the apply goroutine feeds the StateMachine in log order and starts
// snapshots, whose state machine bodies are written on one more goroutine.
// Callers of Propose/Read block in their own goroutines.
type Node struct {
	cfg Config
	id  uint64
	st  Storage
	tr  Transport
	sm  StateMachine

	rn *raft.RawNode // loop goroutine only

	propc  chan *proposal
	recvc  chan raft.Message
	readc  chan *readReq
	ctrlc  chan func()
	snapc  chan raft.Snapshot // applier -> loop: a local snapshot was taken
	fatalc chan error         // any goroutine -> loop; buffered(1)

	stopOnce sync.Once
	stopc    chan struct{} // closed by Stop
	quitc    chan struct{} // closed when the loop starts shutting down
	// shuttingDown is set by the loop when it starts shutting down.
	shuttingDown bool
	donec        chan struct{} // closed when everything stopped
	errMu        sync.Mutex
	err          error

	waits  *waitRegistry
	reqSeq atomic.Uint64
	app    *applier
	reader *queryReader // answers linearizable reads (reader.go)

	// Published by the loop.
	lead     atomic.Uint64
	term     atomic.Uint64
	commit   atomic.Uint64
	lastIdx  atomic.Uint64
	snapIdx  atomic.Uint64
	leadCh   broadcast // signalled on leader change
	readyc   chan struct{}
	readyIdx uint64

	// Published by the applier.
	applied   atomic.Uint64
	appliedCh broadcast
	halt      atomic.Pointer[Halt] // non-nil while apply is halted (halt.go)

	ck checkpoints // digest checkpoints (checkpoint.go)

	m metrics

	// Loop-owned state.
	hs            raft.HardState
	soft          raft.SoftState
	conf          raft.ConfState
	book          map[uint64]Peer
	lastConfIndex uint64
	handed        uint64 // last committed index handed to the applier
	ticks         uint64
	pendingReads  []*readReq
	inflightRead  *readBatch
	readSeq       uint64 // ReadIndex rounds issued by this process
	readNonce     uint64 // random per process; see readContext
	sendingSnap   map[uint64]bool
	propBuf       []*proposal
	cmdBuf        []*proposal
	dataBuf       [][]byte
}

// New opens the node: on first boot with cfg.Peers it writes the initial
// membership; otherwise it reads hard state, log and latest snapshot from
// cfg.Storage and checks last >= commit >= applied >= snapshot index. It
// brings the state machine to the snapshot if the FSM is behind it (the log
// after max(snapshot index, FSM applied index) is then replayed by the
// running node before it reports ready; see Ready). The node runs until
// Stop or a fatal error.
//
// Bootstrap: the initial membership is written as ConfChangeAddNode entries
// at indexes 1..len(Peers), term 1, committed (etcd's scheme): every initial
// member writes the same entries, so their logs agree without an election.
func New(cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg: cfg, id: cfg.ID, st: cfg.Storage, tr: cfg.Transport, sm: cfg.StateMachine,
		propc:       make(chan *proposal, maxDrain),
		recvc:       make(chan raft.Message, 1024),
		readc:       make(chan *readReq, maxDrain),
		ctrlc:       make(chan func(), 64),
		snapc:       make(chan raft.Snapshot, 4),
		fatalc:      make(chan error, 1),
		stopc:       make(chan struct{}),
		quitc:       make(chan struct{}),
		donec:       make(chan struct{}),
		readyc:      make(chan struct{}),
		book:        map[uint64]Peer{},
		sendingSnap: map[uint64]bool{},
		leadCh:      newBroadcast(),
		appliedCh:   newBroadcast(),
		ck:          newCheckpoints(),
	}
	var seed [16]byte
	_, _ = rand.Read(seed[:])
	n.waits = newWaitRegistry(&n.m.lat.proposalCommit)
	n.reqSeq.Store(binary.LittleEndian.Uint64(seed[:8]) >> 2)
	n.readNonce = binary.LittleEndian.Uint64(seed[8:])

	ctx := context.Background()
	hs, cs, err := n.st.InitialState()
	if err != nil {
		return nil, fmt.Errorf("node: read initial state: %w", err)
	}
	last, err := n.st.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("node: read last index: %w", err)
	}
	snap, err := n.st.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("node: read latest snapshot: %w", err)
	}
	info, err := n.sm.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("node: state machine info: %w", err)
	}
	if hs.IsEmpty() && last == 0 && snap.IsEmpty() && len(cfg.Peers) > 0 {
		if hs, last, err = n.bootstrap(info.Name); err != nil {
			return nil, err
		}
	}
	// Restart invariants (RAFT-PITFALLS "Restart"): last >= commit >=
	// applied >= snapshot index. Any violation is corruption: stop.
	si := snap.Metadata.Index
	switch {
	case hs.Commit > last:
		return nil, fmt.Errorf("node: storage corrupt: commit index %d is beyond the last log index %d", hs.Commit, last)
	case hs.Commit < si:
		return nil, fmt.Errorf("node: storage corrupt: commit index %d is below the snapshot index %d", hs.Commit, si)
	case info.Applied > hs.Commit:
		return nil, fmt.Errorf("node: state machine %q reports applied index %d beyond the commit index %d (state from another data dir?)", info.Name, info.Applied, hs.Commit)
	}
	if info.MinVersion == 0 || info.MaxVersion < info.MinVersion {
		return nil, fmt.Errorf("node: state machine %q reports an invalid version range [%d,%d]", info.Name, info.MinVersion, info.MaxVersion)
	}

	meta := newClusterMeta()
	meta.conf = cs
	if snap.IsEmpty() && last > 0 {
		if err := n.checkLogFSM(info.Name); err != nil {
			return nil, err
		}
	}
	sessions := newSessionTable()
	if !snap.IsEmpty() {
		hdr, st, err := n.readSnapshot(ctx, n.sm, info.Name, snap, info.Applied < si)
		if err != nil {
			return nil, err
		}
		meta, sessions = metaFromHeader(hdr), st
		meta.conf = snap.Metadata.ConfState
	}
	if meta.version < info.MinVersion || meta.version > info.MaxVersion {
		return nil, fmt.Errorf("node: state machine %q supports versions [%d,%d] but version %d is active since index %d", info.Name, info.MinVersion, info.MaxVersion, meta.version, meta.versionIndex)
	}
	fsmApplied := max(si, info.Applied)
	// A storage that checks its log while the state machine restores
	// gives its verdict before anything acts on the log.
	if c, ok := n.st.(logChecker); ok {
		if err := c.LogChecked(); err != nil {
			return nil, fmt.Errorf("node: check the log: %w", err)
		}
	}

	// NB: raft restarts at Applied = snapshot index, so it hands the
	// committed entries after the snapshot out again and the loop re-applies
	// their membership changes to raft (whose ConfState comes from the
	// snapshot). The applier does not feed the FSM commands it already has.
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.electionTicks(),
		HeartbeatTick:             ticksPerHeartbeat,
		Storage:                   n.st,
		Applied:                   si,
		Seed:                      cfg.Seed,
		MaxSizePerMsg:             cfg.MaxSizePerMsg,
		MaxCommittedSizePerReady:  cfg.MaxCommittedSizePerReady,
		MaxUncommittedEntriesSize: cfg.MaxUncommittedEntriesSize,
		MaxInflightMsgs:           cfg.MaxInflightMsgs,
		MaxInflightBytes:          cfg.MaxInflightBytes,
		ReadOnlyOption:            readOnlyOption(cfg.LeaseReads),
		Logger:                    raftLogger{cfg.Logger},
	})
	if err != nil {
		return nil, fmt.Errorf("node: start raft: %w", err)
	}
	n.rn = rn
	n.hs = hs
	n.conf = meta.conf
	for id, p := range meta.peers {
		n.book[id] = p
		if id != n.id {
			n.tr.AddPeer(id, p.RaftAddr)
		}
	}
	n.term.Store(hs.Term)
	n.commit.Store(hs.Commit)
	n.lastIdx.Store(last)
	n.snapIdx.Store(si)
	n.applied.Store(si)
	n.readyIdx = hs.Commit
	if si >= n.readyIdx {
		close(n.readyc)
	}

	n.app = newApplier(n, meta, sessions, snap, info, fsmApplied)
	n.reader = newQueryReader(n)
	go n.app.run()
	go n.reader.run()
	go n.run()
	go n.runCheckpoints()
	return n, nil
}

// logChecker is a Storage that may still be verifying its log when the
// node is created (storage.Options.CheckLogLater): New waits for its
// verdict, after the restore from the snapshot and before Raft starts.
type logChecker interface {
	LogChecked() error
}

func readOnlyOption(lease bool) raft.ReadOnlyOption {
	if lease {
		return raft.ReadOnlyLeaseBased
	}
	return raft.ReadOnlySafe
}

// bootstrap writes the initial membership entries (see New). The first
// one also records the cluster's FSM, fsmName.
func (n *Node) bootstrap(fsmName string) (raft.HardState, uint64, error) {
	peers := slices.Clone(n.cfg.Peers)
	slices.SortFunc(peers, func(a, b Peer) int { return cmpU64(a.ID, b.ID) })
	ents := make([]raft.Entry, len(peers))
	for i, p := range peers {
		c := ccContext{RaftAddr: p.RaftAddr, APIAddr: p.APIAddr}
		if i == 0 {
			c.FSM = fsmName
		}
		ctx, err := jsonMarshal(c)
		if err != nil {
			return raft.HardState{}, 0, err
		}
		cc := raft.ConfChange{Type: raft.ConfChangeAddNode, NodeID: p.ID, Context: ctx}
		ents[i] = raft.Entry{Term: 1, Index: uint64(i + 1), Type: raft.EntryConfChange, Data: cc.Marshal()}
	}
	hs := raft.HardState{Term: 1, Commit: uint64(len(ents))}
	if err := n.st.Save(hs, ents, true); err != nil {
		return hs, 0, fmt.Errorf("node: bootstrap: save initial membership: %w", err)
	}
	return hs, uint64(len(ents)), nil
}

// checkLogFSM compares fsmName, the FSM this node runs, with the FSM the
// first log entry records (a log without a snapshot starts at index 1, the
// bootstrap entry). A log written before the entry recorded it passes.
func (n *Node) checkLogFSM(fsmName string) error {
	first, err := n.st.FirstIndex()
	if err != nil {
		return fmt.Errorf("node: read first log index: %w", err)
	}
	if first != 1 {
		return nil
	}
	ents, err := n.st.Entries(1, 2, 1<<20)
	if err != nil || len(ents) == 0 {
		return fmt.Errorf("node: read log entry 1: %w (%d entries)", err, len(ents))
	}
	if name, ok, err := entryFSM(ents[0]); err != nil {
		return fmt.Errorf("node: log entry 1: %w", err)
	} else if ok && name != fsmName {
		return wrongFSM(fsmName, name, "recorded in log entry 1")
	}
	return nil
}

// entryFSM returns the FSM name a bootstrap entry records, if e is one
// that does.
func entryFSM(e raft.Entry) (string, bool, error) {
	if e.Type != raft.EntryConfChange {
		return "", false, nil
	}
	var cc raft.ConfChange
	if err := cc.Unmarshal(e.Data); err != nil {
		return "", false, fmt.Errorf("conf change entry %d is malformed: %w", e.Index, err)
	}
	c, err := decodeCCContext(cc.Context)
	if err != nil {
		return "", false, fmt.Errorf("conf change entry %d has a malformed context: %w", e.Index, err)
	}
	return c.FSM, c.FSM != "", nil
}

// wrongFSM is the ErrWrongFSM error for a state machine local where the
// cluster's FSM is cluster; where says how the node knows.
func wrongFSM(local, cluster, where string) error {
	return fmt.Errorf("%w: fsm %q cannot run this cluster's fsm %q (%s)", ErrWrongFSM, local, cluster, where)
}

// readSnapshot opens snap, checks its header against the metadata and
// against fsmName (the state machine this node runs), reads the session
// table at the start of its body (sessions.go) and, if restore, restores sm
// from the rest of the body.
//
// NB: damaged data wins over what the state machine made of it (a plugin
// may report a broken stream as a crash, which would restart it and read the
// same bytes again), so a corruption found while reading is the error.
func (n *Node) readSnapshot(ctx context.Context, sm StateMachine, fsmName string, snap raft.Snapshot, restore bool) (SnapshotHeader, *sessionTable, error) {
	hdr, rc, err := n.st.OpenSnapshot(snap)
	if err != nil {
		return SnapshotHeader{}, nil, fmt.Errorf("node: open snapshot at index %d: %w", snap.Metadata.Index, err)
	}
	defer rc.Close()
	if hdr.Index != snap.Metadata.Index || hdr.Term != snap.Metadata.Term {
		return hdr, nil, fmt.Errorf("node: snapshot header is for index %d term %d, metadata says index %d term %d", hdr.Index, hdr.Term, snap.Metadata.Index, snap.Metadata.Term)
	}
	if hdr.FSMName != fsmName {
		return hdr, nil, wrongFSM(fsmName, hdr.FSMName, fmt.Sprintf("recorded in the snapshot at index %d", hdr.Index))
	}
	w := &corruptWatch{rc: rc}
	sessions, body, err := readSection(hdr, w)
	if err != nil {
		return hdr, nil, fmt.Errorf("node: snapshot at index %d: %w", snap.Metadata.Index, w.or(err))
	}
	if restore {
		t0 := time.Now()
		n.cfg.Logger.Info("restoring the state machine from the snapshot", "index", hdr.Index, "bytes", hdr.Size)
		if err := restoreFSM(ctx, sm, hdr, body); err != nil {
			return hdr, nil, fmt.Errorf("node: restore state machine from snapshot at index %d: %w", snap.Metadata.Index, w.or(err))
		}
		el := time.Since(t0)
		n.m.lat.snapshotRestore.observe(el)
		n.m.snapshotsInstalled.Add(1)
		n.cfg.Logger.Info("restored the state machine from the snapshot", "index", hdr.Index, "bytes", hdr.Size,
			"elapsed", el.Round(time.Millisecond).String(), "MB/s", fmt.Sprintf("%.0f", float64(hdr.Size)/1e6/max(el.Seconds(), 1e-6)))
	}
	return hdr, sessions, nil
}

// restoreFSM restores sm from the FSM part of a snapshot body and then
// reads the body to its end, so that a storage checksum that is verified
// at EOF is checked even if Restore stopped reading early.
func restoreFSM(ctx context.Context, sm StateMachine, h SnapshotHeader, r io.Reader) error {
	if err := sm.Restore(ctx, h, r); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("snapshot body: %w", err)
	}
	return nil
}

// shutdown stops the node; err == nil is a graceful Stop.
func (n *Node) shutdown(err error) {
	n.shuttingDown = true
	close(n.quitc)
	if err == nil {
		n.app.close() // finish what was committed and handed over
	} else {
		n.app.abort()
	}
	<-n.app.donec
	n.reader.stop()
	if aerr := n.app.fatalErr(); err == nil && aerr != nil {
		err = aerr
	}
	// Drain a fatal error the applier may have reported meanwhile.
	select {
	case ferr := <-n.fatalc:
		if err == nil {
			err = ferr
		}
	default:
	}
	stopped := ErrStopped
	if err != nil {
		err = fatalError{err}
		stopped = fmt.Errorf("%w: %w", ErrStopped, err)
	}
	n.waits.failAll(fmt.Errorf("%w: %w", ErrOutcomeUnknown, stopped))
	for _, r := range n.pendingReads {
		r.resc <- readResult{err: NotApplied(stopped)}
	}
	if b := n.inflightRead; b != nil {
		for _, r := range b.reqs {
			r.resc <- readResult{err: NotApplied(stopped)}
		}
	}
	n.pendingReads, n.inflightRead = nil, nil
	n.errMu.Lock()
	n.err = err
	n.errMu.Unlock()
	close(n.donec)
}

// fatal reports a fatal error from any goroutine; the loop fail-stops.
func (n *Node) fatal(err error) {
	select {
	case n.fatalc <- err:
	default: // one fatal error is enough
	}
}

// Stop stops the node gracefully: it stops accepting requests, finishes
// applying the entries already committed and handed to the apply
// goroutine, fails waiting callers (ErrOutcomeUnknown / ErrStopped), and
// returns when everything stopped or ctx ended. It does not close the
// Storage, Transport or StateMachine: the caller does, after Stop. Stop
// returns the fatal error if the node had already failed.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() { close(n.stopc) })
	select {
	case <-n.donec:
		return n.Err()
	case <-ctx.Done():
		return fmt.Errorf("node: stop: %w", ctx.Err())
	}
}

// Done is closed when the node has stopped, after Stop or a fatal error.
func (n *Node) Done() <-chan struct{} { return n.donec }

// Err returns the fatal error that stopped the node, or nil (running, or
// stopped by Stop).
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// Ready is closed once the state machine has applied everything that was
// committed when the node started (the restart replay is over).
func (n *Node) Ready() <-chan struct{} { return n.readyc }

// ReplayTarget is the index Ready waits for the state machine to apply:
// the commit index recorded when the node started.
func (n *Node) ReplayTarget() uint64 { return n.readyIdx }

// ID returns this node's id.
func (n *Node) ID() uint64 { return n.id }

// Leader returns the leader this node knows of, or 0.
func (n *Node) Leader() uint64 { return n.lead.Load() }

// Applied returns the index the state machine has applied up to.
func (n *Node) Applied() uint64 { return n.applied.Load() }

// CommitIndex returns the highest index this node knows to be committed
// (as of its last persisted hard state).
func (n *Node) CommitIndex() uint64 { return n.commit.Load() }

// broadcast is a resettable "something changed" signal.
type broadcast struct {
	mu *sync.Mutex
	ch *chan struct{}
}

func newBroadcast() broadcast {
	ch := make(chan struct{})
	return broadcast{mu: &sync.Mutex{}, ch: &ch}
}

// wait returns a channel closed at the next signal.
func (b broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return *b.ch
}

func (b broadcast) signal() {
	b.mu.Lock()
	close(*b.ch)
	*b.ch = make(chan struct{})
	b.mu.Unlock()
}
