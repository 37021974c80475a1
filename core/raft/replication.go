package raft

// Log replication (Raft §5.3, §5.4): sending appends and heartbeats, the
// follower's consistency check and conflict hint, flow control, and
// committing by counting replicas of current-term entries (figure 8).

import (
	"fmt"
)

// committedIndex returns the highest index replicated on a quorum of
// voters (0 with no voters).
func (r *raft) committedIndex() uint64 {
	if r.voters == 0 {
		return 0
	}
	buf := r.matchBuf[:0]
	for _, pr := range r.prs {
		if !pr.isLearner {
			buf = append(buf, pr.match)
		}
	}
	r.matchBuf = buf
	// Insertion sort, descending: n is tiny and this allocates nothing.
	for i := 1; i < len(buf); i++ {
		for j := i; j > 0 && buf[j] > buf[j-1]; j-- {
			buf[j], buf[j-1] = buf[j-1], buf[j]
		}
	}
	return buf[r.quorum()-1]
}

// maybeSendAppend sends one MsgApp (or MsgSnap) to pr if it is not paused
// and has something to receive (or sendIfEmpty). It returns whether a
// message was sent.
func (r *raft) maybeSendAppend(pr *progress, sendIfEmpty bool) bool {
	if pr.isPaused() {
		return false
	}
	prevIndex := pr.next - 1
	prevTerm, errt := r.raftLog.term(prevIndex)
	var ents []Entry
	var erre error
	if errt == nil {
		ents, erre = r.raftLog.entries(pr.next, r.maxMsgSize)
	}
	if errt != nil || erre != nil {
		return r.maybeSendSnapshot(pr)
	}
	if len(ents) == 0 && !sendIfEmpty {
		return false
	}
	var size uint64
	for i := range ents {
		size += ents[i].Size()
	}
	r.send(Message{
		To:      pr.id,
		Type:    MsgApp,
		Index:   prevIndex,
		LogTerm: prevTerm,
		Entries: ents,
		Commit:  r.raftLog.committed,
	})
	last := prevIndex
	if n := len(ents); n > 0 {
		last = ents[n-1].Index
	}
	pr.sentEntries(len(ents), last, size)
	pr.sentCommitIndex(r.raftLog.committed)
	return true
}

// sendAppendAll sends to pr until its window is full or it is caught up.
func (r *raft) sendAppendAll(pr *progress, sendIfEmpty bool) {
	if !r.maybeSendAppend(pr, sendIfEmpty) {
		return
	}
	for pr.state == ProgressReplicate && r.maybeSendAppend(pr, false) {
	}
}

// bcastAppend sends pending entries (or just the commit index) to every
// other member.
func (r *raft) bcastAppend() {
	for _, pr := range r.prs {
		if pr.id != r.id {
			r.sendAppendAll(pr, true)
		}
	}
}

// commitAdvanced is called on the leader when its commit index advanced.
// Followers with entries to receive get them now, carrying the new commit
// index. Commit-only updates (empty MsgApps) wait for flushCommit, so
// that however many times the commit index advances between two Readys,
// a follower gets at most one of them, and none if it receives entries
// (which carry the commit index) in the meantime.
func (r *raft) commitAdvanced() {
	for _, pr := range r.prs {
		if pr.id != r.id {
			r.sendAppendAll(pr, false)
		}
	}
	r.commitUnsent = true
}

// hasUnsentCommit reports whether flushCommit would send a message.
func (r *raft) hasUnsentCommit() bool {
	if !r.commitUnsent || r.state != StateLeader {
		return false
	}
	for _, pr := range r.prs {
		if pr.id != r.id && pr.canBumpCommit(r.raftLog.committed) && !pr.isPaused() {
			return true
		}
	}
	return false
}

// flushCommit sends an (empty) MsgApp carrying the commit index to every
// follower that has not been sent it and could raise its own commit
// index with it. A follower that is paused now learns it from the reply
// to its next ack, or from a heartbeat.
func (r *raft) flushCommit() {
	if !r.commitUnsent {
		return
	}
	r.commitUnsent = false
	if r.state != StateLeader {
		return
	}
	for _, pr := range r.prs {
		if pr.id != r.id && pr.canBumpCommit(r.raftLog.committed) {
			r.maybeSendAppend(pr, true)
		}
	}
}

func (r *raft) sendHeartbeat(pr *progress, ctx []byte) {
	// Never tell a follower to commit past what it is known to hold: its
	// log after match may still disagree with ours.
	commit := min(pr.match, r.raftLog.committed)
	r.send(Message{
		To:      pr.id,
		Type:    MsgHeartbeat,
		Commit:  commit,
		Index:   r.heartbeatStamp(),
		Context: ctx,
	})
	pr.sentCommitIndex(commit)
}

// bcastHeartbeat sends a heartbeat to every other member. While reads
// are pending it starts a new read round (reads.go), so that a round lost
// on the way is retried by the next one.
func (r *raft) bcastHeartbeat() {
	ctx := r.readOnly.nextRound()
	for _, pr := range r.prs {
		if pr.id != r.id {
			r.sendHeartbeat(pr, ctx)
		}
	}
}

// appendEntry assigns term and index to es and appends them to the
// leader's log. It returns false (appending nothing) if the uncommitted
// size limit would be exceeded.
func (r *raft) appendEntry(es ...Entry) bool {
	li := r.raftLog.lastIndex()
	var size uint64
	for i := range es {
		es[i].Term = r.Term
		es[i].Index = li + 1 + uint64(i)
		size += uint64(len(es[i].Data))
	}
	if r.maxUncommittedSize > 0 && r.uncommittedSize > 0 && size > 0 && r.uncommittedSize+size > r.maxUncommittedSize {
		r.logger.Debugf("raft: %x dropping proposal: uncommitted size limit %d reached", r.id, r.maxUncommittedSize)
		return false
	}
	r.uncommittedSize += size
	r.raftLog.append(es...)
	// The leader's own match advances only once the entries are durable
	// (RawNode.Advance), never here.
	return true
}

func (r *raft) reduceUncommittedSize(ents []Entry) {
	if r.state != StateLeader {
		return
	}
	var s uint64
	for i := range ents {
		s += uint64(len(ents[i].Data))
	}
	if s > r.uncommittedSize {
		r.uncommittedSize = 0
	} else {
		r.uncommittedSize -= s
	}
}

// maybeCommit advances the commit index to the highest index replicated
// on a quorum, but only if that entry is of the current term (Raft
// §5.4.2, figure 8): earlier entries are then committed with it.
func (r *raft) maybeCommit() bool {
	mci := r.committedIndex()
	if mci <= r.raftLog.committed {
		return false
	}
	t, err := r.raftLog.term(mci)
	if err != nil || t != r.Term {
		return false
	}
	r.raftLog.commitTo(mci)
	r.releasePendingReadIndexMessages()
	return true
}

func (r *raft) committedEntryInCurrentTerm() bool {
	t, err := r.raftLog.term(r.raftLog.committed)
	return err == nil && t == r.Term
}

// leaderSelfDurable is called when entries up to the stable index are
// durable on the leader: it counts itself towards commit.
func (r *raft) leaderSelfDurable() {
	if r.state != StateLeader {
		return
	}
	pr := r.progress(r.id)
	if pr == nil {
		return
	}
	if pr.maybeUpdate(min(r.raftLog.lastStableIndex(), r.raftLog.lastIndex())) && r.maybeCommit() {
		r.commitAdvanced()
	}
}

func (r *raft) leaderPropose(m Message) error {
	if len(m.Entries) == 0 {
		r.logger.Debugf("raft: %x dropping empty proposal", r.id)
		return ErrProposalDropped
	}
	if r.progress(r.id) == nil {
		// Removed from the configuration.
		return ErrProposalDropped
	}
	if r.leadTransferee != None {
		r.logger.Debugf("raft: %x dropping proposal: transferring leadership to %x", r.id, r.leadTransferee)
		return ErrProposalDropped
	}
	if m.From != r.id {
		// A forwarded proposal: do not write into the sender's slice (the
		// transport may still hold it, e.g. for a duplicate delivery).
		m.Entries = append([]Entry(nil), m.Entries...)
	}
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type != EntryConfChange && e.Type != EntryNormal {
			r.logger.Warningf("raft: %x dropping proposal with unknown entry type %d", r.id, e.Type)
			return ErrProposalDropped
		}
		if e.Type != EntryConfChange {
			continue
		}
		if reason := r.confChangeRefusal(e.Data); reason != "" {
			r.logger.Infof("raft: %x refusing conf change: %s", r.id, reason)
			if len(m.Entries) == 1 {
				return ErrProposalDropped
			}
			*e = Entry{Type: EntryNormal}
			continue
		}
		r.pendingConfIndex = r.raftLog.lastIndex() + uint64(i) + 1
	}
	if !r.appendEntry(m.Entries...) {
		return ErrProposalDropped
	}
	r.bcastAppend()
	return nil
}

func (r *raft) handleAppendResponse(pr *progress, m Message) {
	pr.recentActive = true
	if m.Index > r.raftLog.lastIndex() {
		// We never sent an append at or past this index.
		r.logger.Warningf("raft: %x ignoring MsgAppResp from %x for index %d beyond our last index %d", r.id, m.From, m.Index, r.raftLog.lastIndex())
		return
	}
	if m.Reject {
		r.logger.Debugf("raft: %x received MsgAppResp(rejected, hint: (index %d, term %d)) from %x for index %d",
			r.id, m.RejectHint, m.LogTerm, m.From, m.Index)
		next := r.nextFromHint(pr, m)
		if pr.maybeDecrTo(m.Index, next) {
			r.logger.Debugf("raft: %x decreased progress of %x to next=%d", r.id, m.From, pr.next)
			r.maybeSendAppend(pr, false)
		}
		return
	}
	if pr.maybeUpdate(m.Index) || (pr.match == m.Index && pr.state == ProgressProbe && m.Index+1 == pr.next) {
		switch {
		case pr.state == ProgressProbe:
			pr.becomeReplicate()
		case pr.state == ProgressSnapshot && pr.match+1 >= r.raftLog.firstIndex():
			// The follower caught up by the snapshot (or by appends that
			// overtook it): resume normal replication.
			pr.becomeProbe()
			pr.becomeReplicate()
		case pr.state == ProgressReplicate:
			pr.inflights.freeLE(m.Index)
		}
		if r.maybeCommit() {
			// Followers learn the new commit index promptly.
			r.commitAdvanced()
		}
		// Fill the window with whatever the follower still lacks.
		r.sendAppendAll(pr, false)
		if pr.canBumpCommit(r.raftLog.committed) {
			// Nothing new to send, but the follower has not been told the
			// commit index up to what it now holds (e.g. it was a paused
			// probe when the commit advanced): tell it in the next Ready
			// rather than at the next heartbeat.
			r.commitUnsent = true
		}
		r.maybeFinishTransfer(pr)
	} else if pr.state == ProgressReplicate {
		pr.inflights.freeLE(m.Index)
	}
}

// nextFromHint turns a rejection's conflict hint into the next index to
// probe (Raft §5.3, thesis §5.3 optimisation): if we have entries of the
// follower's conflicting term, probe after our last one of it; otherwise
// skip the follower's whole term.
func (r *raft) nextFromHint(pr *progress, m Message) uint64 {
	if m.LogTerm == 0 {
		// The follower's log is shorter: its last index is the hint.
		return m.RejectHint + 1
	}
	if m.Index == 0 {
		return 1
	}
	j, t := r.raftLog.findConflictByTerm(m.Index-1, m.LogTerm, pr.match)
	if t == m.LogTerm {
		return j + 1
	}
	return max(m.RejectHint, 1)
}

// validAppend checks that the entries of MsgApp m are consecutive after
// m.Index with non-decreasing terms, none newer than the message.
func validAppend(m *Message) error {
	if m.Index > noLimit-uint64(len(m.Entries))-1 {
		return fmt.Errorf("index %d overflows", m.Index)
	}
	prevTerm := m.LogTerm
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Index != m.Index+1+uint64(i) {
			return fmt.Errorf("entry %d has index %d, want %d", i, e.Index, m.Index+1+uint64(i))
		}
		if e.Term < prevTerm || e.Term > m.Term || e.Term == 0 {
			return fmt.Errorf("entry %d has term %d (previous %d, message term %d)", e.Index, e.Term, prevTerm, m.Term)
		}
		prevTerm = e.Term
	}
	return nil
}

// handleAppendEntries is the follower side of AppendEntries (Raft §5.3).
func (r *raft) handleAppendEntries(m Message) {
	if err := validAppend(&m); err != nil {
		r.logger.Errorf("raft: %x dropping malformed MsgApp from %x: %v", r.id, m.From, err)
		return
	}
	if m.Index < r.raftLog.committed {
		// Everything up to our commit index is known to match the leader.
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.raftLog.committed})
		return
	}
	lastNew, ok, err := r.raftLog.maybeAppend(m.Index, m.LogTerm, m.Commit, m.Entries)
	if err != nil {
		r.logger.Errorf("raft: %x dropping MsgApp from %x: %v", r.id, m.From, err)
		return
	}
	if ok {
		r.send(Message{To: m.From, Type: MsgAppResp, Index: lastNew})
		return
	}
	// Mismatch at prevIndex: reply with the conflict hint.
	last := r.raftLog.lastIndex()
	resp := Message{To: m.From, Type: MsgAppResp, Index: m.Index, Reject: true}
	if m.Index > last {
		resp.RejectHint = last
		resp.LogTerm = 0
	} else {
		t, err := r.raftLog.term(m.Index)
		if err != nil {
			// Compacted below our snapshot: cannot happen since m.Index >=
			// committed >= snapshot index; answer with what we know.
			r.send(Message{To: m.From, Type: MsgAppResp, Index: r.raftLog.committed})
			return
		}
		// First index of term t, no lower than committed+1: everything up to
		// commit matches the leader, so the conflict is after it.
		first := m.Index
		floor := r.raftLog.committed + 1
		for first > floor {
			pt, err := r.raftLog.term(first - 1)
			if err != nil || pt != t {
				break
			}
			first--
		}
		resp.LogTerm = t
		resp.RejectHint = first
	}
	r.logger.Debugf("raft: %x [logterm %d, index %d] rejected MsgApp [logterm %d, index %d] from %x (hint %d/%d)",
		r.id, resp.LogTerm, m.Index, m.LogTerm, m.Index, m.From, resp.RejectHint, resp.LogTerm)
	r.send(resp)
}

func (r *raft) handleHeartbeat(m Message) {
	if m.Commit > r.raftLog.lastIndex() {
		r.logger.Warningf("raft: %x heartbeat from %x asks to commit %d beyond our last index %d; ignoring the commit",
			r.id, m.From, m.Commit, r.raftLog.lastIndex())
	} else {
		r.raftLog.commitTo(m.Commit)
	}
	// Echo the leader's heartbeat stamp: it dates our vote-refusing lease.
	r.send(Message{To: m.From, Type: MsgHeartbeatResp, Index: m.Index, Context: m.Context})
}

// handleHeartbeatResponse is the leader side of a heartbeat's answer: the
// follower is alive, may need entries, dates its lease, and may confirm
// pending reads.
func (r *raft) handleHeartbeatResponse(pr *progress, m Message) {
	pr.recentActive = true
	pr.probeSent = false
	if pr.state == ProgressReplicate && pr.inflights.full() {
		// The window may be full of lost messages; make room for one.
		pr.inflights.freeFirst()
	}
	if pr.match < r.raftLog.lastIndex() {
		// Send even an empty probe: a follower whose next is past our last
		// index must be told where the log really diverges.
		r.maybeSendAppend(pr, true)
	}
	r.recordLeaseAck(pr, m.Index)
	if round, ok := decodeReadRound(m.Context); ok {
		r.handleReadAck(pr, round)
	}
}
