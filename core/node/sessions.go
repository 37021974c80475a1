package node

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/raftd/raftd/core/snapshot"
)

// Exactly-once client commands (Raft thesis §6.3).
//
// A command proposed with a RequestID is delivered to the state machine at
// most once per (client, seq). The applier keeps a table of client
// sessions in the node's replicated state: every replica builds the same
// table from the same log, so every replica makes the same decision for
// every entry and a duplicate's caller gets, wherever it asks, the result
// of the first application.
//
// At each keyed command entry (kindSession), in log order:
//
//  1. sessions idle for SessionIdleEntries log indexes are forgotten
//     (this happens at every entry, keyed or not);
//  2. an unknown session is created, unless the request acknowledges
//     answers (acked > 1): its session expired, and the command, which may
//     have applied under it, is refused (ErrSessionExpired);
//  3. the session's floor rises to acked and the kept results below it are
//     dropped; a seq below the floor is refused (ErrSessionExpired);
//  4. a seq whose result is kept is a duplicate: not delivered, answered
//     with the kept result (Result.Duplicate);
//  5. anything else is delivered; its result is kept once the state machine
//     returns it (results over MaxKeptResultBytes are not kept, and a
//     duplicate of such a command gets ErrResultNotKept);
//  6. least recently used sessions are forgotten while there are more than
//     MaxSessions sessions or MaxKeptResults results, and a session with
//     more than MaxSessionResults results drops its lowest seq (its floor
//     rises past it).
//
// Every step is a function of the log alone, never of a clock, of batch
// boundaries or of this node's history (a snapshot carries the table), so
// replicas cannot diverge. A keyed command that is not delivered is
// remembered (applier.undelivered) until the next snapshot, so that a
// state machine restart replays the log without it.

// Limits of the session table. They define the replicated state machine:
// every replica must use the same values, so they are constants, not
// configuration. docs/operations.md ("Exactly-once commands") derives the
// memory they allow.
const (
	// MaxClientIDBytes bounds RequestID.Client.
	MaxClientIDBytes = 64
	// MaxSessions bounds the sessions kept; beyond it the least recently
	// used session is forgotten.
	MaxSessions = 100_000
	// MaxKeptResults bounds the results kept over all sessions; beyond it
	// the least recently used session is forgotten.
	MaxKeptResults = 200_000
	// MaxSessionResults bounds the results one session keeps (its commands
	// not yet acknowledged); beyond it the lowest seq's result is dropped.
	MaxSessionResults = 1024
	// MaxKeptResultBytes bounds a result that is kept; a longer result is
	// returned to its caller but not kept (a duplicate gets
	// ErrResultNotKept).
	MaxKeptResultBytes = 1024
	// SessionIdleEntries forgets a session whose last command is this many
	// log indexes behind the entry being applied.
	SessionIdleEntries = 1_000_000
)

// RequestID identifies one command of one client session. The zero value
// (empty Client) means none: the command is applied every time it is
// proposed.
type RequestID struct {
	// Client names the session: 1 to MaxClientIDBytes bytes no other
	// client uses.
	Client string
	// Seq numbers the session's commands from 1; a retry reuses it.
	Seq uint64
	// Acked tells that the client has the answer of every command of the
	// session with a lower seq (0 or 1: none). Acked <= Seq.
	Acked uint64
}

// IsZero reports whether id names no request.
func (id RequestID) IsZero() bool { return id.Client == "" }

func (id RequestID) validate() error {
	switch {
	case len(id.Client) > MaxClientIDBytes:
		return fmt.Errorf("%w: request id client is %d bytes, limit %d", ErrBadRequest, len(id.Client), MaxClientIDBytes)
	case id.Seq == 0:
		return fmt.Errorf("%w: request id seq must be at least 1", ErrBadRequest)
	case id.Acked > id.Seq:
		return fmt.Errorf("%w: request id acknowledges %d, beyond its own seq %d", ErrBadRequest, id.Acked, id.Seq)
	}
	return nil
}

// How a keyed command's result is kept.
const (
	resultKept     byte = 0 // val is the result
	resultLost     byte = 1 // applied, result unknown here (state machine crash, persistent FSM replay)
	resultTooLarge byte = 2 // applied, result longer than MaxKeptResultBytes
)

// sessionResult is the outcome of one applied command of a session.
type sessionResult struct {
	seq, index, term uint64
	state            byte
	val              []byte
}

// session is one client's entry in the table.
type session struct {
	client     string
	last       uint64 // index of its last command entry (the LRU order)
	floor      uint64 // seqs below it are answered or forgotten
	results    []*sessionResult
	prev, next *session // LRU list, least recent first
}

// sessionTable is the replicated table of client sessions. Owned by the
// apply goroutine.
type sessionTable struct {
	byID       map[string]*session
	head, tail *session // least and most recently used
	results    int      // kept results over all sessions
}

func newSessionTable() *sessionTable {
	return &sessionTable{byID: map[string]*session{}}
}

func (t *sessionTable) len() int { return len(t.byID) }

// verdict is what decide makes of a keyed command.
type verdict int

const (
	verdictApply     verdict = iota // deliver; keep its result in rec
	verdictDuplicate                // do not deliver; answer rec
	verdictExpired                  // do not deliver; ErrSessionExpired
)

// expire forgets sessions idle for SessionIdleEntries at entry index. It
// runs at every entry, in log order.
func (t *sessionTable) expire(index uint64) {
	for t.head != nil && index-t.head.last >= SessionIdleEntries {
		t.remove(t.head)
	}
}

// decide handles the keyed command (client, seq, acked) at (index,
// term); see the steps at the top of this file. client is not kept.
func (t *sessionTable) decide(client []byte, seq, acked, index, term uint64) (verdict, *sessionResult) {
	s := t.byID[string(client)]
	if s == nil {
		if acked > 1 {
			return verdictExpired, nil
		}
		s = &session{client: string(client)}
		t.byID[s.client] = s
	} else {
		t.unlink(s)
	}
	s.last = index
	t.pushBack(s)
	if acked > s.floor {
		s.floor = acked
		k := 0
		for k < len(s.results) && s.results[k].seq < s.floor {
			k++
		}
		t.dropResults(s, k)
	}
	if seq < s.floor {
		return verdictExpired, nil
	}
	i, found := slices.BinarySearchFunc(s.results, seq, func(r *sessionResult, seq uint64) int { return cmpU64(r.seq, seq) })
	if found {
		return verdictDuplicate, s.results[i]
	}
	rec := &sessionResult{seq: seq, index: index, term: term}
	s.results = slices.Insert(s.results, i, rec)
	t.results++
	if len(s.results) > MaxSessionResults {
		s.floor = s.results[0].seq + 1
		t.dropResults(s, 1)
	}
	for t.head != s && (len(t.byID) > MaxSessions || t.results > MaxKeptResults) {
		t.remove(t.head)
	}
	return verdictApply, rec
}

// keep records the state machine's result for rec.
func (rec *sessionResult) keep(val []byte) {
	if len(val) > MaxKeptResultBytes {
		rec.state = resultTooLarge
		return
	}
	rec.state, rec.val = resultKept, val
}

// dropResults drops the k lowest results of s, keeping the slice's
// capacity for the next ones.
func (t *sessionTable) dropResults(s *session, k int) {
	if k == 0 {
		return
	}
	n := copy(s.results, s.results[k:])
	clear(s.results[n:])
	s.results = s.results[:n]
	t.results -= k
}

func (t *sessionTable) remove(s *session) {
	t.unlink(s)
	delete(t.byID, s.client)
	t.results -= len(s.results)
}

func (t *sessionTable) unlink(s *session) {
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		t.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		t.tail = s.prev
	}
	s.prev, s.next = nil, nil
}

func (t *sessionTable) pushBack(s *session) {
	s.prev = t.tail
	if t.tail != nil {
		t.tail.next = s
	} else {
		t.head = s
	}
	t.tail = s
}

// answer turns a kept result into what the caller of a duplicate of
// (client, seq) gets.
func (rec *sessionResult) answer(o *observedEntry, client []byte, seq uint64) {
	id := func() RequestID { return RequestID{Client: string(client), Seq: seq} }
	switch rec.state {
	case resultKept:
		o.val, o.dup, o.resIndex, o.resTerm = rec.val, true, rec.index, rec.term
	case resultTooLarge:
		o.err = fmt.Errorf("%w: %w: request %s was applied at index %d; its result was over %d bytes and is not kept", ErrOutcomeUnknown, ErrResultNotKept, id(), rec.index, MaxKeptResultBytes)
	default:
		o.err = fmt.Errorf("%w: %w: request %s was applied at index %d; its result was lost to a state machine restart", ErrOutcomeUnknown, ErrResultNotKept, id(), rec.index)
	}
}

func (id RequestID) String() string {
	return fmt.Sprintf("%q seq %d", id.Client, id.Seq)
}

func sessionExpired(id RequestID, index uint64) error {
	return fmt.Errorf("%w: %w: request %s (entry %d): the cluster no longer keeps this session's result for it; it may have been applied before and is not applied again", ErrOutcomeUnknown, ErrSessionExpired, id, index)
}

// The session section of a snapshot (snapshot.NodeSectionSessions), which
// begins the body, before the FSM's part (docs/storage-format.md):
//
//	uvarint sessions
//	per session, least recently used first:
//	  uvarint len | client | uvarint last | uvarint floor | uvarint results
//	  per result, by seq: uvarint seq | uvarint index | uvarint term | state byte |
//	                      [uvarint len | value, when state is 0 (kept)]

// appendTo appends the table's section to b.
func (t *sessionTable) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(t.byID)))
	for s := t.head; s != nil; s = s.next {
		b = binary.AppendUvarint(b, uint64(len(s.client)))
		b = append(b, s.client...)
		b = binary.AppendUvarint(b, s.last)
		b = binary.AppendUvarint(b, s.floor)
		b = binary.AppendUvarint(b, uint64(len(s.results)))
		for _, r := range s.results {
			b = binary.AppendUvarint(b, r.seq)
			b = binary.AppendUvarint(b, r.index)
			b = binary.AppendUvarint(b, r.term)
			b = append(b, r.state)
			if r.state == resultKept {
				b = binary.AppendUvarint(b, uint64(len(r.val)))
				b = append(b, r.val...)
			}
		}
	}
	return b
}

// errSessionSection is wrapped by every decoding error of a session
// section, together with ErrCorrupt: the bytes passed the snapshot's
// checksums, or will fail them at the end of the body.
var errSessionSection = errors.New("session table")

// readSessionTable decodes a session section from r, reading no further
// than its end.
func readSessionTable(r *bufio.Reader) (*sessionTable, error) {
	t := newSessionTable()
	fail := func(format string, args ...any) (*sessionTable, error) {
		return nil, fmt.Errorf("%w: %w: %s", ErrCorrupt, errSessionSection, fmt.Sprintf(format, args...))
	}
	uv := func(what string, limit uint64) (uint64, error) {
		v, err := binary.ReadUvarint(r)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		if v > limit {
			return 0, fmt.Errorf("%s %d over the limit %d", what, v, limit)
		}
		return v, nil
	}
	bytesOf := func(n uint64) ([]byte, error) {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	n, err := uv("session count", MaxSessions)
	if err != nil {
		return fail("%v", err)
	}
	t.byID = make(map[string]*session, n)
	var prevLast uint64
	for range n {
		cl, err := uv("client id length", MaxClientIDBytes)
		if err == nil && cl == 0 {
			err = errors.New("empty client id")
		}
		if err != nil {
			return fail("%v", err)
		}
		id, err := bytesOf(cl)
		if err != nil {
			return fail("client id: %v", err)
		}
		s := &session{client: string(id)}
		if _, dup := t.byID[s.client]; dup {
			return fail("session %q twice", id)
		}
		var nr uint64
		if s.last, err = uv("last index", 1<<63); err == nil {
			if s.floor, err = uv("floor", 1<<63); err == nil {
				nr, err = uv("result count", MaxSessionResults)
			}
		}
		if err != nil {
			return fail("session %q: %v", id, err)
		}
		if s.last < prevLast {
			return fail("session %q: last index %d below the previous session's %d", id, s.last, prevLast)
		}
		prevLast = s.last
		for range nr {
			rec := &sessionResult{}
			if rec.seq, err = uv("seq", 1<<63); err == nil {
				if rec.index, err = uv("index", 1<<63); err == nil {
					rec.term, err = uv("term", 1<<63)
				}
			}
			if err == nil {
				rec.state, err = r.ReadByte()
			}
			if err == nil && rec.state > resultTooLarge {
				err = fmt.Errorf("unknown result state %d", rec.state)
			}
			if err == nil && rec.state == resultKept {
				var vl uint64
				if vl, err = uv("result length", MaxKeptResultBytes); err == nil {
					rec.val, err = bytesOf(vl)
				}
			}
			if err == nil && (rec.seq < s.floor || (len(s.results) > 0 && rec.seq <= s.results[len(s.results)-1].seq)) {
				err = fmt.Errorf("result seq %d out of order", rec.seq)
			}
			if err != nil {
				return fail("session %q: %v", id, err)
			}
			s.results = append(s.results, rec)
		}
		t.byID[s.client] = s
		t.pushBack(s)
		t.results += len(s.results)
	}
	return t, nil
}

// readSection reads the node section a snapshot header names from body
// and returns the session table (empty when there is none) and the reader
// of the FSM's part of the body.
func readSection(h SnapshotHeader, body io.Reader) (*sessionTable, io.Reader, error) {
	switch h.NodeSection {
	case 0:
		return newSessionTable(), body, nil
	case snapshot.NodeSectionSessions:
		br := bufio.NewReader(body)
		t, err := readSessionTable(br)
		return t, br, err
	}
	return nil, nil, fmt.Errorf("node: snapshot at index %d begins with node section format %d, which this build does not know (it reads %d)", h.Index, h.NodeSection, snapshot.NodeSectionSessions)
}
