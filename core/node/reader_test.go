package node

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
)

// stateSM is a state machine whose every query answers the index its
// state is at; it counts its calls and the queries in each.
type stateSM struct {
	StateMachine // nil: only Query and QueryBatch are called
	mu           sync.Mutex
	at           uint64
	calls        []int // queries per call
}

func (s *stateSM) Query(ctx context.Context, q []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, 1)
	return []byte(strconv.FormatUint(s.at, 10)), nil
}

func (s *stateSM) QueryBatch(ctx context.Context, qs [][]byte) ([][]byte, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, len(qs))
	res := make([][]byte, len(qs))
	for i := range qs {
		res[i] = []byte(strconv.FormatUint(s.at, 10))
	}
	return res, make([]error, len(qs))
}

func (s *stateSM) callSizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.calls...)
}

// readerRig is a query reader on a node stub whose applied index and
// state machine state the test moves together.
type readerRig struct {
	t  *testing.T
	n  *Node
	sm *stateSM
	r  *queryReader
}

func newReaderRig(t *testing.T, applied uint64) *readerRig {
	sm := &stateSM{at: applied}
	n := &Node{appliedCh: newBroadcast()}
	n.app = &applier{n: n, sm: sm}
	n.applied.Store(applied)
	g := &readerRig{t: t, n: n, sm: sm, r: newQueryReader(n)}
	go g.r.run()
	t.Cleanup(g.r.stop)
	return g
}

// apply moves the state machine and the published applied index to idx.
func (g *readerRig) apply(idx uint64) {
	g.sm.mu.Lock()
	g.sm.at = idx
	g.sm.mu.Unlock()
	g.n.applied.Store(idx)
	g.n.appliedCh.signal()
}

func (g *readerRig) reads(k int) []*readReq {
	rs := make([]*readReq, k)
	for i := range rs {
		rs[i] = &readReq{ctx: context.Background(), q: []byte("q"), query: true, resc: make(chan readResult, 1)}
	}
	return rs
}

// answer returns r's answer, or fails if it has none (after every
// goroutine of the bubble settled).
func (g *readerRig) answer(r *readReq) readResult {
	g.t.Helper()
	synctest.Wait()
	select {
	case res := <-r.resc:
		return res
	default:
		g.t.Fatal("read not answered")
		return readResult{}
	}
}

func (g *readerRig) unanswered(r *readReq) {
	g.t.Helper()
	synctest.Wait()
	select {
	case res := <-r.resc:
		g.t.Fatalf("read answered before it may be: %q, %v", res.res, res.err)
	default:
	}
}

func (g *readerRig) wantCalls(want ...int) {
	g.t.Helper()
	synctest.Wait()
	got := g.sm.callSizes()
	if len(got) != len(want) {
		g.t.Fatalf("state machine calls (queries each) %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			g.t.Fatalf("state machine calls (queries each) %v, want %v", got, want)
		}
	}
}

// TestReaderSpeculativeAnswers: the queries of a round run once, together,
// when the round is issued; the answers are released only when the round
// confirms, and only if the state they saw had applied the confirmed
// index. A read confirmed at an index its speculative query did not see
// applied is queried again once that index is applied.
func TestReaderSpeculativeAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newReaderRig(t, 5)
		rs := g.reads(3)
		g.r.issued(rs)
		g.wantCalls(3) // one call for the round's three queries
		for _, r := range rs {
			g.unanswered(r) // not before the round confirms
		}
		// Confirmed at 5: the speculative answers (state at 5) serve.
		g.r.confirmed(rs[:2], 5)
		for _, r := range rs[:2] {
			if res := g.answer(r); string(res.res) != "5" || res.err != nil {
				t.Fatalf("answer %q, %v; want the state at 5", res.res, res.err)
			}
		}
		// The third read's round confirms index 7 (say a write committed
		// between the speculative query and the leader's read index): its
		// answer from state 5 must not serve; it waits for 7 and asks again.
		g.r.confirmed(rs[2:], 7)
		g.unanswered(rs[2])
		g.apply(6)
		g.unanswered(rs[2])
		g.wantCalls(3)
		g.apply(7)
		if res := g.answer(rs[2]); string(res.res) != "7" || res.err != nil {
			t.Fatalf("answer %q, %v; want the state at 7", res.res, res.err)
		}
		g.wantCalls(3, 1)
	})
}

// TestReaderConfirmedReadsWaitForApply: reads confirmed at an index not
// yet applied are not queried until it is, then all of them in one call;
// a read never confirmed (its round was given up) is never answered; a
// halt below the read index refuses the read.
func TestReaderConfirmedReadsWaitForApply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newReaderRig(t, 10)
		rs := g.reads(4)
		g.r.confirmed(rs[:2], 12)
		g.r.confirmed(rs[2:], 13)
		g.unanswered(rs[0])
		g.wantCalls()
		g.apply(13)
		for _, r := range rs {
			if res := g.answer(r); string(res.res) != "13" || res.err != nil {
				t.Fatalf("answer %q, %v; want the state at 13", res.res, res.err)
			}
		}
		g.wantCalls(4)

		// Issued, queried speculatively, never confirmed: no answer.
		lost := g.reads(1)
		g.r.issued(lost)
		g.wantCalls(4, 1)
		g.unanswered(lost[0])

		// A caller that gave up is not queried.
		ctx, cancel := context.WithCancel(context.Background())
		gone := g.reads(1)
		gone[0].ctx = ctx
		cancel()
		g.r.confirmed(gone, 13)
		g.wantCalls(4, 1)

		// Halted at 14 while a read needs 15.
		halted := g.reads(1)
		g.r.confirmed(halted, 15)
		g.unanswered(halted[0])
		g.n.halt.Store(&Halt{Index: 14, Reason: "test"})
		g.n.appliedCh.signal()
		if res := g.answer(halted[0]); !errors.Is(res.err, ErrHalted) {
			t.Fatalf("read beyond a halt: %q, %v; want ErrHalted", res.res, res.err)
		}
		g.wantCalls(4, 1)
	})
}
