package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// Digest checkpoints: runtime divergence detection.
//
// A nondeterministic state machine (map order, clocks, a different library
// on one node) gives replicas different states without any error. To catch
// it while the cluster runs, the leader commits a checkpoint entry every
// Config.CheckpointEntries applied entries (and on Verify):
//
//  1. Each replica that applies the checkpoint entry at index C records the
//     digest of its state at exactly C: between two Apply calls it takes a
//     point-in-time view (StateMachine.Snapshot, the same capture a local
//     snapshot makes) and hashes the view's body, SHA-256, on a goroutine of
//     its own while applying goes on. The digest of a state is defined as
//     the SHA-256 of its snapshot body (docs/plugin-protocol.md), so it is
//     what StateMachine.Digest returns for the bundled FSMs; Digest itself
//     is not used because it hashes under the state machine's lock and
//     would stall apply for as long as hashing a large state takes.
//  2. The coordinator (Verify, on the leader) asks every member for its
//     digest at C (CheckpointPeers; CheckpointDigest serves the local side)
//     and decides: the digest a majority of voters reported, or "no
//     majority" once the reports rule one out. Unreachable members leave
//     it undecided: nothing more is committed, and the next checkpoint
//     tries again.
//  3. It commits the verdict as an entry (checkpoint index, digest or
//     none). Every replica decides on it alike when it applies it: a
//     replica whose own digest at C differs halts apply at the verdict's
//     index (Halt.Checkpoint = C, the same halted status as a poison
//     command); with no majority every replica halts there. A replica that
//     has no digest for C (it installed a leader snapshot beyond C, or its
//     state machine was restarted while hashing) has nothing to compare,
//     and goes on.
//
// A replica halted for divergence stays in raft but hands leadership over
// whenever it has it (maybeHandOff), refuses snapshots from the leader
// (ReceiveSnapshot; the loop fail-stops if one raced the halt), and does
// not resume on `fsm skip`: the operator rebuilds it (docs/operations.md).
//
// Like a command-failure halt, the divergence halt is recomputed, not
// stored: a restarted replica replays the checkpoint entry (digest again)
// and the verdict (compare again). For that, a local snapshot is not
// started at an index at or beyond a checkpoint that awaits its verdict:
// the restart would then begin past the checkpoint and find nothing to
// compare (snapshotDue). A checkpoint whose verdict does not come within
// checkpointHoldEntries stops holding snapshots back.
//
// NB: the last agreed checkpoint is kept in memory only: after a restart
// from a snapshot taken after it, Status reports none until the next
// verdict.

// DefaultCheckpointEntries is the default Config.CheckpointEntries.
const DefaultCheckpointEntries = 5000

// DefaultCheckpointTimeout is the default Config.CheckpointTimeout.
const DefaultCheckpointTimeout = time.Minute

// maxDigestJobs bounds the digests a node keeps: the oldest is dropped
// (cancelled if still hashing) beyond it.
const maxDigestJobs = 4

// CheckpointPeers asks other members for their checkpoint digests.
// core/server implements it over the peer port's Forward service.
type CheckpointPeers interface {
	// CheckpointDigest returns the digest member id recorded at the
	// checkpoint at index, waiting until it has one (Node.CheckpointDigest
	// on that member) or ctx ends.
	CheckpointDigest(ctx context.Context, id, index uint64) ([]byte, error)
}

// Checkpoint is a digest at a checkpoint index.
type Checkpoint struct {
	Index  uint64
	Digest []byte
}

// MemberDigest is one member's answer for a checkpoint.
type MemberDigest struct {
	ID      uint64
	Learner bool
	// Digest is the member's digest at the checkpoint; nil if Err.
	Digest []byte
	Err    error
}

// CheckpointReport is the outcome of Verify.
type CheckpointReport struct {
	// Index is the checkpoint entry's index.
	Index uint64
	// VerdictIndex is the verdict entry's index; 0 when none was committed
	// (the reports decided nothing: too many members did not answer).
	VerdictIndex uint64
	// Agreed is the digest a majority of voters reported; nil if none.
	Agreed []byte
	// NoMajority is set when the reports rule out a majority digest; the
	// verdict then halts every replica.
	NoMajority bool
	// Members lists every member's answer, in id order.
	Members []MemberDigest
}

// Differ returns the members whose digest is not Agreed (a different one,
// or none), in id order.
func (r CheckpointReport) Differ() []uint64 {
	var ids []uint64
	for _, m := range r.Members {
		if m.Err != nil || r.Agreed == nil || !bytes.Equal(m.Digest, r.Agreed) {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// digestJob is the digest of the state at one checkpoint, hashed on its
// own goroutine.
type digestJob struct {
	index  uint64
	cancel context.CancelFunc
	done   chan struct{} // closed once digest or err is set
	digest []byte
	err    error
}

func (j *digestJob) finish(d []byte, err error) {
	j.digest, j.err = d, err
	j.cancel()
	close(j.done)
}

// checkpoints is the node's checkpoint state shared between the apply
// goroutine (which records digests and verdicts), the coordinator and
// callers of CheckpointDigest and Status.
type checkpoints struct {
	mu     sync.Mutex
	jobs   []*digestJob // by index, ascending; at most maxDigestJobs
	agreed Checkpoint   // the last agreed checkpoint (Index 0: none)

	sem   chan struct{} // held by the one coordination running (Verify)
	due   chan struct{} // applier -> runCheckpoints: a checkpoint is due
	busy  atomic.Bool   // an automatic checkpoint is due or running
	tried atomic.Uint64 // applied index at the last automatic attempt
	pace  pacer         // spaces automatic checkpoints (pace.go)
}

func newCheckpoints() checkpoints {
	return checkpoints{sem: make(chan struct{}, 1), due: make(chan struct{}, 1)}
}

// add records j, dropping the oldest job beyond maxDigestJobs.
func (c *checkpoints) add(j *digestJob) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.jobs = append(c.jobs, j)
	if len(c.jobs) > maxDigestJobs {
		c.jobs[0].cancel()
		c.jobs = slices.Delete(c.jobs, 0, 1)
	}
}

func (c *checkpoints) job(index uint64) *digestJob {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, j := range c.jobs {
		if j.index == index {
			return j
		}
	}
	return nil
}

// drop forgets (and cancels) the jobs below index; index == 0 drops all.
func (c *checkpoints) drop(index uint64) []*digestJob {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*digestJob
	c.jobs = slices.DeleteFunc(c.jobs, func(j *digestJob) bool {
		if index == 0 || j.index < index {
			j.cancel()
			out = append(out, j)
			return true
		}
		return false
	})
	return out
}

func (c *checkpoints) setAgreed(ck Checkpoint) {
	c.mu.Lock()
	c.agreed = ck
	c.mu.Unlock()
}

// lastAgreed returns the last agreed checkpoint this node applied a
// verdict for and matched, or nil.
func (c *checkpoints) lastAgreed() *Checkpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agreed.Index == 0 {
		return nil
	}
	ck := Checkpoint{Index: c.agreed.Index, Digest: slices.Clone(c.agreed.Digest)}
	return &ck
}

// checkpointAt records the digest of the state at idx, the checkpoint
// entry being applied: every command before it is applied, none after.
// Only the capture runs here; the body is hashed on another goroutine. A
// non-nil error is fatal.
func (a *applier) checkpointAt(idx uint64) error {
	a.ckptLast = max(a.ckptLast, idx)
	a.ckptAwaiting = idx
	a.n.m.checkpoints.Add(1)
	ctx, cancel := context.WithCancel(a.ctx)
	j := &digestJob{index: idx, cancel: cancel, done: make(chan struct{})}
	a.n.ck.add(j)
	if a.fsmApplied > idx {
		// A persistent state machine restarted ahead of the log: its state
		// is not the one at idx.
		j.finish(nil, fmt.Errorf("the state machine holds index %d, beyond the checkpoint", a.fsmApplied))
		return nil
	}
	start := a.n.now()
	view, err := a.sm.Snapshot(a.ctx)
	if err != nil {
		j.finish(nil, fmt.Errorf("state machine snapshot: %w", err))
		if errors.Is(err, ErrStateMachineCrashed) {
			return a.withRecover(a.fsmApplied)
		}
		return fmt.Errorf("node: state machine %q snapshot for the checkpoint at index %d: %w", a.info.Name, idx, err)
	}
	m, n := &a.n.m, a.n
	go func() {
		t0 := time.Now()
		h := sha256.New()
		err := view.WriteTo(ctx, h)
		view.Release()
		if err != nil {
			j.finish(nil, fmt.Errorf("hash the state: %w", err))
			return
		}
		m.digests.Add(1)
		m.digestNanos.Add(uint64(time.Since(t0)))
		// The cost of a checkpoint is this node's capture and hash (every
		// member pays about the same); it paces the leader's next one.
		n.ck.pace.ran(start, n.now())
		j.finish(h.Sum(nil), nil)
	}()
	return nil
}

// cancelDigests abandons the digests being hashed and waits for their
// goroutines: the state machine is about to be restored or restarted (no
// view may be read then), or the node stops. Their checkpoints have no
// digest on this node.
func (a *applier) cancelDigests() {
	a.n.ck.mu.Lock()
	jobs := slices.Clone(a.n.ck.jobs)
	a.n.ck.mu.Unlock()
	for _, j := range jobs {
		j.cancel()
		<-j.done
	}
}

// verdict applies the verdict entry at index v on the checkpoint at c:
// agreed is the digest a majority of voters reported, nil for none. It
// returns the halt to enter, or nil to go on.
func (a *applier) verdict(v, c uint64, agreed []byte) *Halt {
	if c <= a.verdictFor {
		return nil // a verdict on this checkpoint or a later one was applied
	}
	a.verdictFor = c
	var mine []byte
	var why error
	if j := a.n.ck.job(c); j == nil {
		why = errors.New("no digest recorded (its state came from a snapshot beyond the checkpoint, or it was dropped)")
	} else {
		<-j.done // normally long done: the leader waited for the digests
		mine, why = j.digest, j.err
	}
	a.n.ck.drop(c)
	since := a.sinceAgreed(c)
	if a.n.cfg.unsafeNoDigestCompare {
		return nil
	}
	// NB: a replica that halts keeps its checkpoint holding snapshots
	// back, so that a restart replays the checkpoint and halts again.
	if agreed != nil && (why != nil || bytes.Equal(mine, agreed)) && a.ckptAwaiting <= c {
		a.ckptAwaiting = 0
	}
	switch {
	case agreed == nil:
		mineS := "none"
		if why == nil {
			mineS = short(mine)
		}
		return &Halt{Index: v, Checkpoint: c, Reason: fmt.Sprintf(
			"no digest had a majority of voters at the checkpoint at index %d (this replica's: %s); every replica halts there: the replicas diverged in the entries %s",
			c, mineS, since)}
	case why != nil:
		a.n.cfg.Logger.Warn("checkpoint: this replica cannot compare its state with the majority's",
			"checkpoint", c, "verdict", v, "agreed", short(agreed), "why", why)
		return nil
	case !bytes.Equal(mine, agreed):
		return &Halt{Index: v, Checkpoint: c, Reason: fmt.Sprintf(
			"state machine %q diverged: its digest at the checkpoint at index %d is %s, a majority of voters has %s; the divergence is in the entries %s",
			a.info.Name, c, short(mine), short(agreed), since)}
	}
	a.n.ck.setAgreed(Checkpoint{Index: c, Digest: slices.Clone(agreed)})
	a.n.m.checkpointsAgreed.Add(1)
	a.n.cfg.Logger.Debug("checkpoint agreed", "checkpoint", c, "verdict", v, "digest", short(agreed))
	return nil
}

// sinceAgreed names the entries between the last agreed checkpoint and c.
func (a *applier) sinceAgreed(c uint64) string {
	if ag := a.n.ck.lastAgreed(); ag != nil && ag.Index < c {
		return fmt.Sprintf("(%d, %d] (since the last agreed checkpoint)", ag.Index, c)
	}
	return fmt.Sprintf("up to index %d (no earlier checkpoint agreed on this node since it started)", c)
}

// short is a digest prefix for messages.
func short(d []byte) string {
	s := hex.EncodeToString(d)
	if len(s) > 16 {
		s = s[:16]
	}
	return s
}

// checkpointHoldEntries is how many entries a checkpoint awaiting its
// verdict holds automatic snapshots back (see the package comment above):
// beyond it the verdict is not coming (the coordinator gave up).
func (a *applier) checkpointHoldEntries() uint64 {
	return uint64(max(a.n.cfg.SnapshotEntries, a.n.cfg.CheckpointEntries, 1000))
}

// checkpointHoldsSnapshot reports whether a checkpoint at or below the
// applied index awaits its verdict, so that no automatic snapshot may be
// taken now.
func (a *applier) checkpointHoldsSnapshot() bool {
	c := a.ckptAwaiting
	if c == 0 || c > a.applied {
		return false
	}
	if a.applied-c > a.checkpointHoldEntries() {
		a.n.cfg.Logger.Warn("checkpoint: no verdict came; snapshots are no longer held back for it", "checkpoint", c, "applied", a.applied)
		a.ckptAwaiting = 0
		return false
	}
	return true
}

// maybeCheckpoint asks the coordinator for an automatic checkpoint when
// this node leads and Config.CheckpointEntries entries were applied since
// the last checkpoint (or the last attempt).
func (a *applier) maybeCheckpoint() {
	every := a.n.cfg.CheckpointEntries
	ck := &a.n.ck
	if every <= 0 || a.n.cfg.CheckpointPeers == nil || a.halt != nil || a.n.lead.Load() != a.n.id {
		return
	}
	if a.applied < max(a.ckptLast, ck.tried.Load())+uint64(every) || !ck.pace.ready(a.n.now()) || !ck.busy.CompareAndSwap(false, true) {
		return
	}
	ck.tried.Store(a.applied)
	ck.due <- struct{}{} // never blocks: busy admits one at a time
}

// runCheckpoints is the goroutine that runs automatic checkpoints.
func (n *Node) runCheckpoints() {
	for {
		select {
		case <-n.ck.due:
		case <-n.quitc:
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*n.cfg.CheckpointTimeout)
		go func() {
			select {
			case <-n.quitc:
				cancel()
			case <-ctx.Done():
			}
		}()
		rep, err := n.Verify(ctx)
		cancel()
		log := n.cfg.Logger
		switch {
		case err != nil:
			log.Warn("checkpoint: not completed", "err", err)
		case rep.VerdictIndex == 0:
			log.Warn("checkpoint: undecided (too few members answered); the next checkpoint tries again", "checkpoint", rep.Index, "differ", rep.Differ())
		case rep.NoMajority:
			log.Error("checkpoint: no digest had a majority; every replica halts", "checkpoint", rep.Index, "verdict", rep.VerdictIndex)
		case len(rep.Differ()) > 0:
			log.Warn("checkpoint: members differ from the majority or did not answer", "checkpoint", rep.Index, "verdict", rep.VerdictIndex, "members", rep.Differ())
		default:
			log.Debug("checkpoint: all members agree", "checkpoint", rep.Index, "verdict", rep.VerdictIndex)
		}
		n.ck.busy.Store(false)
	}
}

// CheckpointDigest returns this node's digest of its state at the
// checkpoint at index, waiting until it has applied that entry and hashed
// the state, or ctx ends. An error matches ErrNoCheckpoint (NotApplied)
// when the node has no digest there.
func (n *Node) CheckpointDigest(ctx context.Context, index uint64) ([]byte, error) {
	for {
		applied := n.appliedCh.wait()
		if j := n.ck.job(index); j != nil {
			select {
			case <-j.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-n.donec:
				return nil, NotApplied(ErrStopped)
			}
			if j.err != nil {
				return nil, NotApplied(fmt.Errorf("%w at index %d on node %d: %w", ErrNoCheckpoint, index, n.id, j.err))
			}
			return j.digest, nil
		}
		if n.applied.Load() >= index {
			return nil, NotApplied(fmt.Errorf("%w at index %d on node %d (no checkpoint entry applied there, or its digest was dropped)", ErrNoCheckpoint, index, n.id))
		}
		if h := n.halt.Load(); h != nil && h.Index <= index {
			return nil, NotApplied(&HaltedError{Halt: *h, What: fmt.Sprintf("it cannot reach the checkpoint at index %d", index)})
		}
		select {
		case <-applied:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-n.donec:
			return nil, NotApplied(ErrStopped)
		}
	}
}

// Verify commits a checkpoint now, collects every member's digest at it
// and commits the verdict (see the package comment above). Call it on the
// leader; one runs at a time. An error matching ErrNotApplied means no
// checkpoint was committed. A report with VerdictIndex 0 means the reports
// decided nothing (members did not answer within Config.CheckpointTimeout
// or ctx); nothing was halted.
func (n *Node) Verify(ctx context.Context) (CheckpointReport, error) {
	select {
	case n.ck.sem <- struct{}{}:
	case <-ctx.Done():
		return CheckpointReport{}, NotApplied(fmt.Errorf("node: checkpoint: another one is running: %w", ctx.Err()))
	case <-n.quitc:
		return CheckpointReport{}, NotApplied(ErrStopped)
	}
	defer func() { <-n.ck.sem }()
	if err := n.haltedErr("refused, not applied: a halted node cannot record its digest"); err != nil {
		return CheckpointReport{}, NotApplied(err)
	}
	req := n.reqSeq.Add(1)
	r, err := n.wait(ctx, &proposal{req: req, data: encodeCheckpoint(n.id, req)})
	if err != nil {
		return CheckpointReport{}, err
	}
	rep := CheckpointReport{Index: r.Index}
	ms, err := n.Members(ctx)
	if err != nil {
		return rep, fmt.Errorf("%w: checkpoint at index %d committed: %w", ErrOutcomeUnknown, r.Index, err)
	}
	rep.Members = n.collectDigests(ctx, ms, r.Index)
	var voters []uint64
	got := map[uint64][]byte{}
	for _, m := range rep.Members {
		if !m.Learner {
			voters = append(voters, m.ID)
		}
		if m.Err == nil {
			got[m.ID] = m.Digest
		}
	}
	agreed, noMajority, decided := decideDigest(voters, got)
	if !decided {
		return rep, nil
	}
	rep.Agreed, rep.NoMajority = agreed, noMajority
	req = n.reqSeq.Add(1)
	vr, err := n.wait(ctx, &proposal{req: req, data: encodeVerdict(n.id, req, r.Index, agreed), admin: true})
	var he *HaltedError
	switch {
	case err == nil:
		rep.VerdictIndex = vr.Index
	case errors.As(err, &he) && he.Halt.Checkpoint == r.Index:
		rep.VerdictIndex = he.Halt.Index // this node halted on the verdict
	default:
		return rep, fmt.Errorf("checkpoint at index %d: verdict: %w", r.Index, err)
	}
	return rep, nil
}

// collectDigests asks every member for its digest at the checkpoint at
// index, in parallel, within Config.CheckpointTimeout.
func (n *Node) collectDigests(ctx context.Context, ms []Member, index uint64) []MemberDigest {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.CheckpointTimeout)
	defer cancel()
	out := make([]MemberDigest, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		out[i] = MemberDigest{ID: m.ID, Learner: m.Learner}
		wg.Add(1)
		go func(md *MemberDigest) {
			defer wg.Done()
			switch {
			case md.ID == n.id:
				md.Digest, md.Err = n.CheckpointDigest(ctx, index)
			case n.cfg.CheckpointPeers == nil:
				md.Err = errors.New("node: no way to ask other members (Config.CheckpointPeers is nil)")
			default:
				md.Digest, md.Err = n.cfg.CheckpointPeers.CheckpointDigest(ctx, md.ID, index)
			}
			if md.Err == nil && len(md.Digest) == 0 {
				md.Err = errors.New("empty digest")
			}
			if md.Err == nil && len(md.Digest) > maxDigestBytes {
				md.Err = fmt.Errorf("digest of %d bytes, more than %d", len(md.Digest), maxDigestBytes)
			}
			if md.Err != nil {
				md.Digest = nil
			}
		}(&out[i])
	}
	wg.Wait()
	return out
}

// decideDigest decides a checkpoint from the voters' digests (got; a voter
// missing from it did not answer): the digest more than half of the voters
// reported, or noMajority when no digest can reach that even if every
// missing voter reported it. decided is false while missing voters could
// still make either outcome.
func decideDigest(voters []uint64, got map[uint64][]byte) (agreed []byte, noMajority, decided bool) {
	q := len(voters)/2 + 1
	counts := map[string]int{}
	missing, best := 0, 0
	for _, id := range voters {
		d, ok := got[id]
		if !ok {
			missing++
			continue
		}
		counts[string(d)]++
	}
	for d, c := range counts {
		if c >= q {
			return []byte(d), false, true
		}
		best = max(best, c)
	}
	if len(voters) > 0 && best+missing < q {
		return nil, true, true
	}
	return nil, false, false
}

// maybeHandOff transfers leadership away from a node halted for
// divergence (loop goroutine): it cannot apply, so as leader it would
// refuse every write and serve its divergent state's snapshots. The
// target is the most up-to-date recently active voter.
func (n *Node) maybeHandOff() {
	h := n.halt.Load()
	if h == nil || h.Checkpoint == 0 || n.soft.RaftState != raft.StateLeader {
		return
	}
	rs := n.rn.Status()
	var best, bestMatch uint64
	for id, p := range rs.Progress {
		if id == n.id || p.IsLearner || !p.RecentActive {
			continue
		}
		if best == 0 || p.Match > bestMatch || (p.Match == bestMatch && id < best) {
			best, bestMatch = id, p.Match
		}
	}
	if best != 0 {
		n.cfg.Logger.Warn("apply halted for divergence: handing leadership over", "to", best)
		n.rn.TransferLeader(best)
	}
}
