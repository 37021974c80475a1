package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
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
// snapshots, whose bodies a SnapshotStarter writes on one more goroutine.
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
	readSeq       uint64
	sendingSnap   map[uint64]bool
	propBuf       []*proposal
	cmdBuf        []*proposal
	dataBuf       [][]byte
}

type readReq struct {
	resc chan readResult // buffered(1)
}

type readResult struct {
	index uint64
	err   error
}

type readBatch struct {
	rctx string
	reqs []*readReq
	tick uint64
}

type confProposal struct {
	cc raft.ConfChange
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
		waits:       newWaitRegistry(),
		book:        map[uint64]Peer{},
		sendingSnap: map[uint64]bool{},
		leadCh:      newBroadcast(),
		appliedCh:   newBroadcast(),
	}
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	n.reqSeq.Store(binary.LittleEndian.Uint64(seed[:]) >> 2)

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
	if hs.IsEmpty() && last == 0 && snap.IsEmpty() && len(cfg.Peers) > 0 {
		if hs, last, err = n.bootstrap(); err != nil {
			return nil, err
		}
	}

	info, err := n.sm.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("node: state machine info: %w", err)
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
	if !snap.IsEmpty() {
		hdr, err := n.readSnapshot(ctx, n.sm, snap, info.Applied < si)
		if err != nil {
			return nil, err
		}
		meta = hdr.meta()
		meta.conf = snap.Metadata.ConfState
	}
	if meta.version < info.MinVersion || meta.version > info.MaxVersion {
		return nil, fmt.Errorf("node: state machine %q supports versions [%d,%d] but version %d is active since index %d", info.Name, info.MinVersion, info.MaxVersion, meta.version, meta.versionIndex)
	}
	fsmApplied := max(si, info.Applied)

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
		ReadOnlyOption:            readOnlyOption(cfg.LeaseReads),
		Logger:                    cfg.Logger,
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

	n.app = newApplier(n, meta, snap, info, fsmApplied)
	go n.app.run()
	go n.run()
	return n, nil
}

func readOnlyOption(lease bool) raft.ReadOnlyOption {
	if lease {
		return raft.ReadOnlyLeaseBased
	}
	return raft.ReadOnlySafe
}

// bootstrap writes the initial membership entries (see New).
func (n *Node) bootstrap() (raft.HardState, uint64, error) {
	peers := slices.Clone(n.cfg.Peers)
	slices.SortFunc(peers, func(a, b Peer) int { return cmpU64(a.ID, b.ID) })
	ents := make([]raft.Entry, len(peers))
	for i, p := range peers {
		ctx, err := jsonMarshal(ccContext{RaftAddr: p.RaftAddr, APIAddr: p.APIAddr})
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

// readSnapshot reads the header of snap's body, checks it against the
// metadata and, if restore, restores sm from the rest of the body.
//
// NB: damaged data wins over what the state machine made of it (a plugin
// may report a broken stream as a crash, which would restart it and read the
// same bytes again), so a corruption found while reading is the error.
func (n *Node) readSnapshot(ctx context.Context, sm StateMachine, snap raft.Snapshot, restore bool) (SnapshotHeader, error) {
	rc, err := n.st.OpenSnapshot(snap)
	if err != nil {
		return SnapshotHeader{}, fmt.Errorf("node: open snapshot at index %d: %w", snap.Metadata.Index, err)
	}
	defer rc.Close()
	w := &corruptWatch{rc: rc}
	br := newBufReader(w)
	hdr, err := ReadSnapshotHeader(br)
	if err != nil {
		return hdr, fmt.Errorf("node: snapshot at index %d: %w", snap.Metadata.Index, w.or(err))
	}
	if hdr.Index != snap.Metadata.Index || hdr.Term != snap.Metadata.Term {
		return hdr, fmt.Errorf("node: snapshot body is for index %d term %d, metadata says index %d term %d", hdr.Index, hdr.Term, snap.Metadata.Index, snap.Metadata.Term)
	}
	if restore {
		if err := restoreFSM(ctx, sm, br); err != nil {
			return hdr, fmt.Errorf("node: restore state machine from snapshot at index %d: %w", snap.Metadata.Index, w.or(err))
		}
		n.m.snapshotsInstalled.Add(1)
	}
	return hdr, nil
}

// restoreFSM restores sm from the FSM part of a snapshot body and then
// reads the body to its end, so that a storage checksum that is verified
// at EOF is checked even if Restore stopped reading early.
func restoreFSM(ctx context.Context, sm StateMachine, r io.Reader) error {
	if err := sm.Restore(ctx, r); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("snapshot body: %w", err)
	}
	return nil
}

// run is the loop goroutine.
func (n *Node) run() {
	ticker := time.NewTicker(n.cfg.tick())
	defer ticker.Stop()
	// core/raft panics with an error when storage fails under it (for
	// example a checksum mismatch while reading entries to apply or send).
	// The RawNode is unusable then: fail-stop with that error, naming what
	// failed, instead of crashing the process.
	defer func() {
		if r := recover(); r != nil {
			if n.shuttingDown {
				panic(r) // a failure while stopping: nothing left to save
			}
			err, ok := r.(error)
			if !ok {
				err = fmt.Errorf("%v", r)
			}
			n.shutdown(fmt.Errorf("node %d: raft: %w", n.id, err))
		}
	}()
	var err error
	for err == nil {
		// Backpressure: while the state machine is far behind, take no
		// new proposals (callers block in Propose).
		propc := n.propc
		if n.app.backlog.Load() > int64(n.cfg.MaxApplyBacklog) {
			propc = nil
			n.m.throttled.Add(1)
		}
		select {
		case <-ticker.C:
			n.rn.Tick()
			n.ticks++
			n.retryReads()
			n.waits.expire(n.ticks)
		case m := <-n.recvc:
			n.step(m)
		drainRecv:
			for range maxDrain {
				select {
				case m := <-n.recvc:
					n.step(m)
				default:
					break drainRecv
				}
			}
		case p := <-propc:
			batch := append(n.propBuf[:0], p)
		drainProps:
			for range maxDrain {
				select {
				case p := <-n.propc:
					batch = append(batch, p)
				default:
					break drainProps
				}
			}
			n.propose(batch)
			clear(batch)
			n.propBuf = batch[:0]
		case r := <-n.readc:
			n.pendingReads = append(n.pendingReads, r)
		drainReads:
			for range maxDrain {
				select {
				case r := <-n.readc:
					n.pendingReads = append(n.pendingReads, r)
				default:
					break drainReads
				}
			}
		case f := <-n.ctrlc:
			f()
		case s := <-n.snapc:
			err = n.onSnapshotTaken(s)
		case err = <-n.fatalc:
		case <-n.stopc:
			n.shutdown(nil)
			return
		}
		if err == nil {
			n.issueReads()
			err = n.handleReady()
		}
	}
	n.shutdown(err)
}

func (n *Node) step(m raft.Message) {
	if err := n.rn.Step(m); err != nil {
		// Stale or unknown-peer messages are expected; raft decides.
		n.m.stepErrors.Add(1)
	}
}

// propose hands a batch of proposals to raft: the commands in one
// ProposeBatch (one append, one Save, one fsync), conf changes one by one.
func (n *Node) propose(batch []*proposal) {
	n.m.proposals.Add(uint64(len(batch)))
	if n.soft.Lead == raft.None {
		for _, p := range batch {
			n.waits.fail(p.req, fmt.Errorf("node %d: %w", n.id, raft.ErrNoLeader))
		}
		return
	}
	datas := n.dataBuf[:0]
	cmds := n.cmdBuf[:0]
	for _, p := range batch {
		n.waits.proposed(p.req, n.hs.Term)
		if p.cc == nil {
			datas = append(datas, p.data)
			cmds = append(cmds, p)
			continue
		}
		if n.soft.RaftState == raft.StateLeader && n.lastConfIndex > n.applied.Load() {
			n.waits.fail(p.req, fmt.Errorf("%w (entry %d not applied yet): %w", ErrConfChangeInProgress, n.lastConfIndex, errDropped))
			continue
		}
		n.proposeFailed([]*proposal{p}, n.rn.ProposeConfChange(p.cc.cc))
	}
	if len(datas) > 0 {
		n.proposeFailed(cmds, n.rn.ProposeBatch(datas))
	}
	clear(datas)
	clear(cmds)
	n.dataBuf, n.cmdBuf = datas[:0], cmds[:0]
}

func (n *Node) proposeFailed(ps []*proposal, err error) {
	if err == nil {
		return
	}
	n.m.proposalsDropped.Add(uint64(len(ps)))
	if !errors.Is(err, errDropped) && !errors.Is(err, raft.ErrNoLeader) {
		err = fmt.Errorf("%w: %w", errDropped, err)
	}
	for _, p := range ps {
		n.waits.fail(p.req, err)
	}
}

// handleReady runs the Ready/Advance contract (doc.go) until raft has
// nothing more to hand out.
func (n *Node) handleReady() error {
	for n.rn.HasReady() {
		rd := n.rn.Ready()
		oldTerm, oldLead := n.hs.Term, n.soft.Lead
		leaderLost := false
		if rd.SoftState != nil {
			leaderLost = oldLead != raft.None && rd.SoftState.Lead != oldLead
			n.onSoftState(*rd.SoftState)
		}
		termChanged, voteChanged := false, false
		if !rd.HardState.IsEmpty() {
			termChanged = rd.HardState.Term != n.hs.Term
			voteChanged = termChanged || rd.HardState.Vote != n.hs.Vote
			n.hs = rd.HardState
		}
		// A leader whose term and vote did not change may send its new
		// entries while it writes them (thesis §10.2.1): raft counts the
		// leader's own copy only after Advance, i.e. once it is durable.
		// Everything else waits for the write.
		sendFirst := n.soft.RaftState == raft.StateLeader && !voteChanged && rd.Snapshot.IsEmpty()
		if sendFirst {
			n.send(rd.Messages)
		}
		// 1. Install a snapshot first: the entries that follow build on it.
		if !rd.Snapshot.IsEmpty() {
			si := rd.Snapshot.Metadata.Index
			if err := n.st.ApplySnapshot(rd.Snapshot); err != nil {
				return fmt.Errorf("node: storage: install snapshot at index %d: %w", si, err)
			}
			n.snapIdx.Store(si)
			n.conf = rd.Snapshot.Metadata.ConfState
			n.waits.failCovered(si)
			n.lastIdx.Store(max(n.lastIdx.Load(), si))
		}
		// 2. Persist hard state and entries, fsync'ed when raft says so,
		// BEFORE any message that depends on them leaves (Raft §5.1, figure 2;
		// RAFT-PITFALLS "Votes and terms").
		if !rd.HardState.IsEmpty() || len(rd.Entries) > 0 {
			if err := n.st.Save(n.hs, rd.Entries, rd.MustSync); err != nil {
				if len(rd.Entries) > 0 {
					return fmt.Errorf("node: storage: save entries [%d,%d]: %w", rd.Entries[0].Index, rd.Entries[len(rd.Entries)-1].Index, err)
				}
				return fmt.Errorf("node: storage: save hard state %+v: %w", n.hs, err)
			}
			n.m.saves.Add(1)
			if rd.MustSync {
				n.m.syncs.Add(1)
			}
			n.m.entriesSaved.Add(uint64(len(rd.Entries)))
			if len(rd.Entries) > 0 {
				n.lastIdx.Store(rd.Entries[len(rd.Entries)-1].Index)
			}
			n.commit.Store(n.hs.Commit)
			n.term.Store(n.hs.Term)
		}
		if err := n.trackEntries(rd.Entries); err != nil {
			return err
		}
		// Callers whose entry was replaced by a now committed one are
		// answered at once; the others keep waiting for a definite outcome
		// for a grace period after a leadership change.
		n.waits.committed(n.hs.Commit)
		if (termChanged || leaderLost) && n.cfg.LeaderChangeWait > 0 {
			why := fmt.Sprintf("leadership changed (term %d leader %d -> term %d leader %d)", oldTerm, oldLead, n.hs.Term, n.soft.Lead)
			n.waits.leadershipChanged(why, n.ticks+n.cfg.leaderChangeTicks())
		}
		// 3. Send.
		if !sendFirst {
			n.send(rd.Messages)
		}
		for _, rs := range rd.ReadStates {
			n.onReadState(rs)
		}
		// 4. Hand committed entries to the apply goroutine; apply membership
		// changes to raft now (raft needs them in order, the FSM never sees
		// them).
		if !rd.Snapshot.IsEmpty() || len(rd.CommittedEntries) > 0 {
			t := applyTask{ents: rd.CommittedEntries}
			if !rd.Snapshot.IsEmpty() {
				s := rd.Snapshot
				t.snap = &s
			}
			for _, e := range rd.CommittedEntries {
				if e.Type != raft.EntryConfChange {
					continue
				}
				cs, err := n.applyConfChange(e)
				if err != nil {
					return err
				}
				if t.confStates == nil {
					t.confStates = map[uint64]raft.ConfState{}
				}
				t.confStates[e.Index] = cs
			}
			n.app.enqueue(t)
			if k := len(rd.CommittedEntries); k > 0 {
				n.handed = rd.CommittedEntries[k-1].Index
			}
		}
		n.rn.Advance(rd)
	}
	return nil
}

func (n *Node) send(msgs []raft.Message) {
	if len(msgs) == 0 {
		return
	}
	for _, m := range msgs {
		if m.Type == raft.MsgSnap {
			n.sendingSnap[m.To] = true
			n.m.snapshotsSent.Add(1)
		}
	}
	n.tr.Send(msgs)
	n.m.messagesSent.Add(uint64(len(msgs)))
}

// trackEntries records where this node's own proposals landed in its log.
func (n *Node) trackEntries(ents []raft.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	for _, e := range ents {
		if e.Type == raft.EntryConfChange {
			n.lastConfIndex = e.Index
		}
	}
	if n.waits.empty() {
		return nil
	}
	obs := make([]observedEntry, 0, len(ents))
	for _, e := range ents {
		req, err := n.ownRequest(e)
		if err != nil {
			return fmt.Errorf("node: entry %d (term %d) written to the log is malformed: %w", e.Index, e.Term, err)
		}
		obs = append(obs, observedEntry{index: e.Index, term: e.Term, req: req})
	}
	n.waits.written(obs)
	return nil
}

// ownRequest returns the request id of e if this node proposed it.
func (n *Node) ownRequest(e raft.Entry) (uint64, error) {
	switch e.Type {
	case raft.EntryNormal:
		if len(e.Data) == 0 {
			return 0, nil
		}
		env, err := decodeEnvelope(e.Data)
		if err != nil {
			return 0, err
		}
		if env.proposer == n.id {
			return env.req, nil
		}
	case raft.EntryConfChange:
		var cc raft.ConfChange
		if err := cc.Unmarshal(e.Data); err != nil {
			return 0, err
		}
		c, err := decodeCCContext(cc.Context)
		if err != nil {
			return 0, err
		}
		if c.Proposer == n.id {
			return c.Req, nil
		}
	}
	return 0, nil
}

// applyConfChange applies a committed membership change to raft and the
// transport (loop goroutine).
func (n *Node) applyConfChange(e raft.Entry) (raft.ConfState, error) {
	var cc raft.ConfChange
	if err := cc.Unmarshal(e.Data); err != nil {
		return raft.ConfState{}, fmt.Errorf("node: conf change entry %d is malformed: %w", e.Index, err)
	}
	c, err := decodeCCContext(cc.Context)
	if err != nil {
		return raft.ConfState{}, fmt.Errorf("node: conf change entry %d has a malformed context: %w", e.Index, err)
	}
	cs := n.rn.ApplyConfChange(cc)
	if cs != nil {
		n.conf = raft.ConfState{Voters: slices.Clone(cs.Voters), Learners: slices.Clone(cs.Learners)}
	}
	switch cc.Type {
	case raft.ConfChangeAddNode, raft.ConfChangeAddLearner:
		p := n.book[cc.NodeID]
		p.ID = cc.NodeID
		if c.RaftAddr != "" {
			p.RaftAddr = c.RaftAddr
		}
		if c.APIAddr != "" {
			p.APIAddr = c.APIAddr
		}
		n.book[cc.NodeID] = p
		if cc.NodeID != n.id && p.RaftAddr != "" {
			n.tr.AddPeer(cc.NodeID, p.RaftAddr)
		}
	case raft.ConfChangeRemoveNode:
		delete(n.book, cc.NodeID)
		delete(n.sendingSnap, cc.NodeID)
		if cc.NodeID != n.id {
			n.tr.RemovePeer(cc.NodeID)
		}
	}
	return n.conf, nil
}

func (n *Node) onSoftState(ss raft.SoftState) {
	old := n.soft
	n.soft = ss
	if old.Lead != ss.Lead {
		n.lead.Store(ss.Lead)
		n.leadCh.signal()
		// A read index request in flight may have been lost with the old
		// leader; ask again (reads are idempotent).
		if n.inflightRead != nil {
			n.pendingReads = append(n.inflightRead.reqs, n.pendingReads...)
			n.inflightRead = nil
		}
	}
	if ss.RaftState != raft.StateLeader {
		clear(n.sendingSnap)
	}
}

// issueReads starts one ReadIndex round for all queued reads (thesis §6.4),
// unless one is in flight: reads arriving meanwhile share the next round.
func (n *Node) issueReads() {
	if n.inflightRead != nil || len(n.pendingReads) == 0 {
		return
	}
	if n.soft.Lead == raft.None {
		for _, r := range n.pendingReads {
			r.resc <- readResult{err: fmt.Errorf("node %d: %w", n.id, raft.ErrNoLeader)}
		}
		n.pendingReads = nil
		return
	}
	n.readSeq++
	var rctx [16]byte
	binary.BigEndian.PutUint64(rctx[:8], n.id)
	binary.BigEndian.PutUint64(rctx[8:], n.readSeq)
	n.inflightRead = &readBatch{rctx: string(rctx[:]), reqs: n.pendingReads, tick: n.ticks}
	n.pendingReads = nil
	n.m.readIndexRounds.Add(1)
	n.rn.ReadIndex(rctx[:])
}

// retryReads re-issues a round that got no answer within an election
// timeout (the request or its answer was dropped).
func (n *Node) retryReads() {
	if b := n.inflightRead; b != nil && n.ticks-b.tick > uint64(n.cfg.electionTicks()) {
		n.pendingReads = append(b.reqs, n.pendingReads...)
		n.inflightRead = nil
	}
}

func (n *Node) onReadState(rs raft.ReadState) {
	b := n.inflightRead
	if b == nil || string(rs.RequestCtx) != b.rctx {
		return
	}
	n.inflightRead = nil
	for _, r := range b.reqs {
		r.resc <- readResult{index: rs.Index}
	}
}

// onSnapshotTaken records a local snapshot and compacts the log behind it,
// keeping SnapshotTrailing entries for followers that are a little behind.
func (n *Node) onSnapshotTaken(s raft.Snapshot) error {
	si := s.Metadata.Index
	if si <= n.snapIdx.Load() {
		return nil // a newer snapshot was installed meanwhile
	}
	if err := n.st.SaveSnapshot(s); err != nil {
		return fmt.Errorf("node: storage: record snapshot at index %d: %w", si, err)
	}
	n.snapIdx.Store(si)
	trailing := uint64(n.cfg.SnapshotTrailing)
	if si <= trailing {
		return nil
	}
	compact := si - trailing
	first, err := n.st.FirstIndex()
	if err != nil {
		return fmt.Errorf("node: storage: first index: %w", err)
	}
	if compact < first {
		return nil
	}
	if err := n.st.Compact(compact); err != nil {
		return fmt.Errorf("node: storage: compact through index %d: %w", compact, err)
	}
	n.m.compactions.Add(1)
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
		stopped = fmt.Errorf("%w: %w", ErrStopped, err)
	}
	n.waits.failAll(fmt.Errorf("%w: %w", ErrOutcomeUnknown, stopped))
	for _, r := range n.pendingReads {
		r.resc <- readResult{err: stopped}
	}
	if b := n.inflightRead; b != nil {
		for _, r := range b.reqs {
			r.resc <- readResult{err: stopped}
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

// ID returns this node's id.
func (n *Node) ID() uint64 { return n.id }

// Leader returns the leader this node knows of, or 0.
func (n *Node) Leader() uint64 { return n.lead.Load() }

// Applied returns the index the state machine has applied up to.
func (n *Node) Applied() uint64 { return n.applied.Load() }

// Result is an applied command's FSM result and log position.
type Result struct {
	Value []byte
	Index uint64
	Term  uint64
}

// Propose appends data to the log as an FSM command, waits until it is
// committed and applied on this node, and returns the FSM's result for it.
// Any member may propose; a follower forwards to the leader. See the error
// variables for which errors mean "certainly not applied".
func (n *Node) Propose(ctx context.Context, data []byte) ([]byte, error) {
	r, err := n.ProposeEntry(ctx, data)
	return r.Value, err
}

// ProposeEntry is Propose that also returns the entry's index and term.
func (n *Node) ProposeEntry(ctx context.Context, data []byte) (Result, error) {
	if len(data) > n.cfg.MaxEntryBytes {
		return Result{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), n.cfg.MaxEntryBytes)
	}
	req := n.reqSeq.Add(1)
	return n.wait(ctx, &proposal{req: req, data: encodeCommand(n.id, req, data)})
}

// wait registers p, hands it to the loop and waits for its outcome.
func (n *Node) wait(ctx context.Context, p *proposal) (Result, error) {
	p.done = make(chan propResult, 1)
	select {
	case <-n.quitc:
		return Result{}, ErrStopped
	default:
	}
	n.waits.add(p)
	select {
	case n.propc <- p:
	case <-ctx.Done():
		n.waits.cancel(p.req)
		return Result{}, fmt.Errorf("node: not proposed: %w", ctx.Err())
	case <-n.quitc:
		n.waits.cancel(p.req)
		return Result{}, ErrStopped
	}
	select {
	case r := <-p.done:
		return Result{Value: r.val, Index: r.index, Term: r.term}, r.err
	case <-ctx.Done():
		if n.waits.cancel(p.req) {
			return Result{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
		}
		r := <-p.done
		return Result{Value: r.val, Index: r.index, Term: r.term}, r.err
	case <-n.donec:
		// Queued after the loop stopped (shutdown failed everyone else).
		if n.waits.cancel(p.req) {
			return Result{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ErrStopped)
		}
		r := <-p.done
		return Result{Value: r.val, Index: r.index, Term: r.term}, r.err
	}
}

// Read runs q against the state machine linearizably: it obtains a read
// index from the leader (ReadIndex, thesis §6.4; no log entry), waits until
// this node applied it, then queries. Concurrent reads share one ReadIndex
// round. Followers serve reads too (the leader only confirms the index).
func (n *Node) Read(ctx context.Context, q []byte) ([]byte, error) {
	if _, err := n.ReadIndex(ctx); err != nil {
		return nil, err
	}
	return n.query(ctx, q)
}

// ReadIndex returns an index at which a linearizable read may be served,
// after waiting until this node has applied it.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	r := &readReq{resc: make(chan readResult, 1)}
	select {
	case <-n.quitc:
		return 0, ErrStopped
	default:
	}
	select {
	case n.readc <- r:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-n.quitc:
		return 0, ErrStopped
	}
	var res readResult
	select {
	case res = <-r.resc:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-n.donec:
		select {
		case res = <-r.resc:
		default:
			return 0, ErrStopped
		}
	}
	if res.err != nil {
		return 0, res.err
	}
	n.m.reads.Add(1)
	return res.index, n.waitApplied(ctx, res.index)
}

// StaleRead runs q against the local state machine without contacting the
// leader. The answer may be stale. It refuses with ErrNotReady until the
// restart replay is over.
func (n *Node) StaleRead(ctx context.Context, q []byte) ([]byte, error) {
	select {
	case <-n.readyc:
	default:
		return nil, fmt.Errorf("%w: applied %d of %d", ErrNotReady, n.applied.Load(), n.readyIdx)
	}
	select {
	case <-n.quitc:
		return nil, ErrStopped
	default:
	}
	return n.query(ctx, q)
}

func (n *Node) query(ctx context.Context, q []byte) ([]byte, error) {
	n.app.queryMu.RLock()
	defer n.app.queryMu.RUnlock()
	return n.sm.Query(ctx, q)
}

// waitApplied blocks until the applied index reaches idx.
func (n *Node) waitApplied(ctx context.Context, idx uint64) error {
	for {
		ch := n.appliedCh.wait()
		if n.applied.Load() >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.donec:
			return ErrStopped
		}
	}
}

// do runs f on the loop goroutine and waits for it.
func (n *Node) do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case n.ctrlc <- func() { f(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.quitc:
		return ErrStopped
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.donec:
		return ErrStopped
	}
}

// Process implements Handler. A MsgSnap must come through
// ReceiveSnapshot, with its body.
func (n *Node) Process(ctx context.Context, m raft.Message) error {
	if m.Type == raft.MsgSnap {
		return fmt.Errorf("node: MsgSnap from %d without its body (use ReceiveSnapshot)", m.From)
	}
	return n.process(ctx, m)
}

func (n *Node) process(ctx context.Context, m raft.Message) error {
	select {
	case n.recvc <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.quitc:
		return ErrStopped
	}
}

// ReportUnreachable implements Handler.
func (n *Node) ReportUnreachable(id uint64) {
	select {
	case n.ctrlc <- func() { n.rn.ReportUnreachable(id) }:
	default: // best effort: raft retries anyway
	}
}

// ReportSnapshot implements Handler.
func (n *Node) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	select {
	case n.ctrlc <- func() {
		delete(n.sendingSnap, id)
		n.rn.ReportSnapshot(id, status)
	}:
	case <-n.quitc:
	}
}

// ReceiveSnapshot implements Handler: it stores the body durably (checking
// its header against m's metadata), then steps m with the local descriptor.
func (n *Node) ReceiveSnapshot(ctx context.Context, m raft.Message, body io.Reader) error {
	if m.Type != raft.MsgSnap || m.Snapshot == nil || m.Snapshot.IsEmpty() {
		return fmt.Errorf("node: receive snapshot: message %v from %d carries no snapshot", m.Type, m.From)
	}
	meta := m.Snapshot.Metadata
	sink, err := n.st.BeginSnapshot(meta)
	if err != nil {
		return fmt.Errorf("node: receive snapshot %d from %d: %w", meta.Index, m.From, err)
	}
	br := newBufReader(body)
	hdr, err := ReadSnapshotHeader(io.TeeReader(br, sink))
	if err == nil && (hdr.Index != meta.Index || hdr.Term != meta.Term) {
		err = fmt.Errorf("body is for index %d term %d, message says index %d term %d", hdr.Index, hdr.Term, meta.Index, meta.Term)
	}
	if err == nil {
		_, err = io.Copy(sink, br)
	}
	var desc []byte
	if err == nil {
		desc, err = sink.Commit()
	} else {
		_ = sink.Abort()
	}
	if err != nil {
		return fmt.Errorf("node: receive snapshot %d from %d: %w", meta.Index, m.From, err)
	}
	snap := *m.Snapshot
	snap.Data = desc
	m.Snapshot = &snap
	return n.process(ctx, m)
}

// OpenSnapshot implements SnapshotSource. If the body turns out to be
// damaged (a Storage error matching ErrCorrupt, from the open or from any
// Read of the returned reader) the node fail-stops with that error rather
// than let the transport offer the same body again (corrupt.go).
func (n *Node) OpenSnapshot(meta raft.SnapshotMetadata, data []byte) (io.ReadCloser, error) {
	return n.openWatched(meta.Index, func() (io.ReadCloser, error) {
		return n.st.OpenSnapshot(raft.Snapshot{Metadata: meta, Data: data})
	}, "read to send to a follower")
}

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
