package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	for _, tc := range []struct {
		d      time.Duration
		bucket int
	}{
		{0, 0},
		{50 * time.Microsecond, 0}, // bounds are inclusive
		{50*time.Microsecond + 1, 1},
		{time.Millisecond, 4},
		{3 * time.Millisecond, 6},
		{5 * time.Minute, len(HistogramBounds) - 1},
		{5*time.Minute + 1, len(HistogramBounds)},
		{time.Hour, len(HistogramBounds)},
	} {
		var h histogram
		h.observeN(tc.d, 3)
		s := h.snapshot()
		for i, c := range s.Counts {
			want := uint64(0)
			if i == tc.bucket {
				want = 3
			}
			if c != want {
				t.Errorf("observe %v x3: bucket %d has %d, want %d", tc.d, i, c, want)
			}
		}
		if s.Count() != 3 || s.Sum != 3*tc.d {
			t.Errorf("observe %v x3: count %d sum %v", tc.d, s.Count(), s.Sum)
		}
	}
	for i := 1; i < len(HistogramBounds); i++ {
		if HistogramBounds[i] <= HistogramBounds[i-1] {
			t.Fatalf("bounds not increasing at %d", i)
		}
	}
}

// atLeast reports whether every observation of h is above the bucket
// that holds d, i.e. no observation was at most the bound below d.
func atLeast(h Histogram, d time.Duration) bool {
	for i, b := range HistogramBounds {
		if b < d && h.Counts[i] != 0 {
			return false
		}
	}
	return true
}

// sub is the histogram of the observations of a not in b (b earlier).
func sub(a, b Histogram) Histogram {
	for i := range a.Counts {
		a.Counts[i] -= b.Counts[i]
	}
	a.Sum -= b.Sum
	return a
}

// TestLatencyHistograms drives a 3-node cluster on the fake clock with a
// 1 ms network, a 3 ms fsync and a 2 ms Apply, so that every latency has a
// known floor:
// each histogram counts exactly the operations made and none is faster
// than physics allows.
func TestLatencyHistograms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const syncDelay = 3 * time.Millisecond
		c := newCluster(t, 3, nil)
		for _, s := range c.stores {
			s.syncDelay = syncDelay
		}
		lead := c.waitLeader()
		n := c.nodes[lead]
		var follower *Node
		for id, f := range c.nodes {
			if id != lead {
				follower = f
			}
		}
		ctx := context.Background()
		const applyDelay = 2 * time.Millisecond
		for _, f := range c.fsms {
			f.mu.Lock()
			f.applyDelay = applyDelay
			f.mu.Unlock()
		}
		before := map[uint64]Latencies{}
		for id, m := range c.nodes {
			before[id] = m.Latencies()
		}
		const N = 40
		var wg sync.WaitGroup
		for i := range N {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := n.Propose(ctx, []byte(fmt.Sprintf("add:%d", i))); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		const reads, stale = 5, 7
		for range reads {
			if _, err := follower.Read(ctx, []byte("sum")); err != nil {
				t.Fatal(err)
			}
		}
		for range stale {
			if _, err := follower.StaleRead(ctx, []byte("sum")); err != nil {
				t.Fatal(err)
			}
		}
		c.waitApplied(n.Applied())

		l := n.Latencies()
		t.Logf("commit %v sum %v; sync %v; apply %v", l.ProposalCommit.Counts, l.ProposalCommit.Sum, l.StorageSync.Counts, l.CommitApply.Counts)
		pc := l.ProposalCommit.Count() - before[lead].ProposalCommit.Count()
		if pc != N {
			t.Errorf("leader ProposalCommit count %d, want %d (one per proposal)", pc, N)
		}
		// The leader writes while it sends; a follower gets the entries
		// after 1 ms, syncs for 3 ms, and its answer takes 1 ms back.
		if floor := 2*c.nw.latency + syncDelay; !atLeast(l.ProposalCommit, floor) {
			t.Errorf("a proposal committed faster than %v: %v", floor, l.ProposalCommit.Counts)
		}
		if l.StorageSync.Count() == 0 || !atLeast(l.StorageSync, syncDelay) || l.StorageSync.Sum < time.Duration(l.StorageSync.Count())*syncDelay {
			t.Errorf("StorageSync: %d observations, sum %v, buckets %v; want each >= %v", l.StorageSync.Count(), l.StorageSync.Sum, l.StorageSync.Counts, syncDelay)
		}
		if got := n.Metrics().Syncs; l.StorageSync.Count() != got {
			t.Errorf("StorageSync count %d, Metrics.Syncs %d: one observation per fsync'ed Save", l.StorageSync.Count(), got)
		}
		for id, m := range c.nodes {
			// No snapshot: every entry from index 1 was handed over and
			// applied once.
			if got, want := m.Latencies().CommitApply.Count(), m.Applied(); got != want {
				t.Errorf("node %d: CommitApply count %d, applied index %d", id, got, want)
			}
			// Every Apply call now takes applyDelay.
			if d := sub(m.Latencies().CommitApply, before[id].CommitApply); d.Count() == 0 || !atLeast(d, applyDelay) {
				t.Errorf("node %d: CommitApply since the delay %v, want each >= %v", id, d.Counts, applyDelay)
			}
			if id != lead && m.Latencies().ProposalCommit.Count() != 0 {
				t.Errorf("node %d proposed nothing but has ProposalCommit observations", id)
			}
		}
		fl := follower.Latencies()
		if fl.ReadLinearizable.Count() != reads || fl.ReadStale.Count() != stale {
			t.Errorf("follower reads: %d linearizable, %d stale observed; want %d, %d", fl.ReadLinearizable.Count(), fl.ReadStale.Count(), reads, stale)
		}
		// A follower's read index costs a round trip to the leader and the
		// leader's heartbeat round.
		if !atLeast(fl.ReadLinearizable, 2*c.nw.latency) {
			t.Errorf("a linearizable read on a follower took less than %v: %v", 2*c.nw.latency, fl.ReadLinearizable.Counts)
		}
	})
}

// TestSnapshotHistograms: a snapshot taken is observed on the node that
// took it; one installed from the leader on the node that restored it.
func TestSnapshotHistograms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotEntries = 50
			cfg.SnapshotTrailing = 5
		})
		c.waitLeader()
		ctx := context.Background()
		c.stop(3)
		var lead uint64
		for i := range 120 {
			lead = c.waitLeader()
			if _, err := c.nodes[lead].Propose(ctx, []byte(fmt.Sprintf("add:%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		c.waitApplied(c.nodes[lead].Applied())
		taken := c.nodes[lead].Metrics().SnapshotsTaken
		if got := c.nodes[lead].Latencies().SnapshotCreate.Count(); taken == 0 || got != taken {
			t.Fatalf("leader took %d snapshots, SnapshotCreate has %d observations", taken, got)
		}
		c.start(3)
		c.waitApplied(c.nodes[lead].Applied())
		if got, inst := c.nodes[3].Latencies().SnapshotRestore.Count(), c.nodes[3].Metrics().SnapshotsInstalled; inst != 1 || got != inst {
			t.Fatalf("node 3 installed %d snapshots, SnapshotRestore has %d observations; want 1 and 1", inst, got)
		}
	})
}

// TestLeaderChangesAndRefusals counts leader changes across a failover and
// proposals refused for being too large, for want of a leader, and while
// stopped.
func TestLeaderChangesAndRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.MaxEntryBytes = 100 })
		lead := c.waitLeader()
		ctx := context.Background()
		for id, n := range c.nodes {
			if got := n.Metrics().LeaderChanges; got != 1 {
				t.Errorf("node %d saw %d leader changes after the first election, want 1", id, got)
			}
		}
		_, err := c.nodes[lead].Propose(ctx, []byte(strings.Repeat("x", 101)))
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("oversized proposal: %v", err)
		}
		if got := c.nodes[lead].Metrics().Refused[RefusedTooLarge]; got != 1 {
			t.Errorf("Refused[too_large] = %d, want 1", got)
		}

		c.stop(lead)
		lead2 := c.waitLeader()
		var other uint64
		for id := range c.nodes {
			if id != lead2 {
				other = id
			}
		}
		for id, n := range c.nodes {
			if got := n.Metrics().LeaderChanges; got != 2 {
				t.Errorf("node %d saw %d leader changes after a failover, want 2", id, got)
			}
		}

		// Alone, node other loses its leader (pre-vote clears it after an
		// election timeout) and refuses proposals.
		c.stop(lead2)
		n := c.nodes[other]
		for i := 0; n.Leader() != 0; i++ {
			if i > 1000 {
				t.Fatalf("node %d still knows leader %d alone", other, n.Leader())
			}
			time.Sleep(testTick)
		}
		if _, err := n.Propose(ctx, []byte("add:1")); !errors.Is(err, ErrNotApplied) {
			t.Fatalf("proposal without a leader: %v, want not applied", err)
		}
		m := n.Metrics()
		if m.Refused[RefusedNoLeader] != 1 {
			t.Errorf("Refused[no_leader] = %d, want 1 (all refusals: %v)", m.Refused[RefusedNoLeader], m.Refused)
		}
		c.stop(other)
		if _, err := n.Propose(ctx, []byte("add:1")); !errors.Is(err, ErrNotApplied) {
			t.Fatalf("proposal to a stopped node: %v, want not applied", err)
		}
		if got := n.Metrics().Refused[RefusedStopped]; got != 1 {
			t.Errorf("Refused[stopped] = %d, want 1", got)
		}
	})
}

func TestRefusalNames(t *testing.T) {
	seen := map[string]bool{}
	for r := range NumRefusals {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] || strings.ToLower(s) != s {
			t.Errorf("refusal %d has name %q", r, s)
		}
		seen[s] = true
	}
	if NumRefusals.String() != "unknown" {
		t.Errorf("out of range refusal named %q", NumRefusals.String())
	}
}

// BenchmarkHistogramObserve is the cost of one latency observation on the
// hot path (a clock read and the histogram update), run in parallel to
// show contention on the shared counters.
//
//	go test -run '^$' -bench HistogramObserve ./core/node
func BenchmarkHistogramObserve(b *testing.B) {
	var h histogram
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		t0 := time.Now()
		for pb.Next() {
			h.observe(time.Since(t0))
		}
	})
	if h.snapshot().Count() != uint64(b.N) {
		b.Fatalf("%d observations, want %d", h.snapshot().Count(), b.N)
	}
}
