package rafttest

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftd/raftd/core/raft"
)

var (
	simSeeds = flag.Int("sim.seeds", 500, "number of simulator seeds to run")
	simStart = flag.Uint64("sim.start", 1, "first simulator seed")
	simSteps = flag.Int("sim.steps", 2000, "random steps per simulator seed")
	simTrace = flag.Int("sim.trace", 60, "trace lines printed for a failing seed")
	simDump  = flag.Bool("sim.dump", false, "log the trace of every seed, passing or not (use with -sim.seeds=1)")
	simProf  = flag.String("sim.profile", "", "run only this fault profile ("+strings.Join(ProfileNames(), ", ")+"); default: each seed draws one")
)

// simConfigFor derives a run's cluster size from its seed: odd seeds run
// three nodes, even seeds five.
func simConfigFor(seed uint64, steps int) SimConfig {
	nodes := 3
	if seed%2 == 0 {
		nodes = 5
	}
	return SimConfig{Seed: seed, Nodes: nodes, Steps: steps, TraceLines: *simTrace, Profile: *simProf}
}

// runSeeds runs seeds [start, start+count) on all CPUs and returns the
// failures sorted by seed and the summed stats.
func runSeeds(start uint64, count, steps int, mutate func(*Sim)) ([]*SimFailure, SimStats) {
	var (
		mu       sync.Mutex
		failures []*SimFailure
		total    SimStats
		wg       sync.WaitGroup
	)
	seeds := make(chan uint64)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range seeds {
				st, f := runOne(seed, steps, mutate)
				mu.Lock()
				total.Add(st)
				if f != nil {
					failures = append(failures, f)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range count {
		seeds <- start + uint64(i)
	}
	close(seeds)
	wg.Wait()
	sort.Slice(failures, func(i, j int) bool { return failures[i].Seed < failures[j].Seed })
	return failures, total
}

func runOne(seed uint64, steps int, mutate func(*Sim)) (st SimStats, fail *SimFailure) {
	defer func() {
		if r := recover(); r != nil {
			buf := make([]byte, 8<<10)
			buf = buf[:runtime.Stack(buf, false)]
			fail = &SimFailure{Seed: seed, Err: errors.New("panic: " + strings.TrimSpace(string(buf)))}
			_ = r
		}
	}()
	sim, err := NewSim(simConfigFor(seed, steps))
	if err != nil {
		return st, &SimFailure{Seed: seed, Err: err}
	}
	if mutate != nil {
		mutate(sim)
	}
	defer func() {
		if r := recover(); r != nil {
			buf := make([]byte, 8<<10)
			buf = buf[:runtime.Stack(buf, false)]
			fail = sim.fail(errors.New("panic: " + toString(r) + "\n" + string(buf)))
		}
	}()
	st, err = sim.Run()
	if *simDump {
		fmt.Fprintf(os.Stderr, "seed %d trace:\n%s\n", seed, strings.Join(sim.traceLines(), "\n"))
	}
	var sf *SimFailure
	if errors.As(err, &sf) {
		return st, sf
	}
	if err != nil {
		return st, &SimFailure{Seed: seed, Err: err}
	}
	return st, nil
}

func toString(r any) string {
	if e, ok := r.(error); ok {
		return e.Error()
	}
	if s, ok := r.(string); ok {
		return s
	}
	return "non-string panic value"
}

// TestSim runs the seeded whole-cluster simulator over -sim.seeds seeds
// starting at -sim.start, -sim.steps random steps each, checking the Raft
// safety properties after every step and liveness after the final heal.
func TestSim(t *testing.T) {
	begin := time.Now()
	failures, total := runSeeds(*simStart, *simSeeds, *simSteps, nil)
	t.Logf("%d seeds from %d x %d steps in %v: %+v", *simSeeds, *simStart, *simSteps, time.Since(begin).Round(time.Millisecond), total)
	for i, f := range failures {
		if i == 3 {
			var rest []string
			for _, g := range failures[i:] {
				rest = append(rest, strings.TrimSpace(strings.SplitN(g.Error(), "\n", 2)[0]))
			}
			t.Errorf("%d more failing seeds:\n  %s", len(failures)-i, strings.Join(rest, "\n  "))
			break
		}
		t.Error(f.Error())
	}
	if len(failures) > 0 || *simSeeds < 100 || *simSteps < 1000 {
		return
	}
	// The histories must actually exercise what the checks are about;
	// otherwise passing proves nothing.
	// Some actions only run in some profiles: with -sim.profile, only
	// those of that profile must have happened.
	in := func(names ...string) bool {
		return *simProf == "" || slices.Contains(names, *simProf)
	}
	for _, c := range []struct {
		name string
		got  int
		want bool
	}{
		{"elected terms", total.Terms, true},
		{"committed entries", total.Commit, true},
		{"crashes", total.Crashes, true},
		{"partitions", total.Partitions, true},
		{"snapshots sent", total.SnapsSent, true},
		{"snapshots installed", total.SnapsApplied, true},
		{"conf changes applied", total.ConfChangesApplied, true},
		{"reads answered", total.ReadsAnswered, true},
		{"reads served and checked", total.ReadsServed, true},
		{"transfers requested", total.TransfersRequested, true},
		{"duplicated messages", total.MsgsDuped, true},
		{"truncated conflicting suffixes", total.Truncations, true},
		{"rejected appends (conflict hints)", total.AppRejects, true},
		{"transfers carried out (MsgTimeoutNow)", total.TimeoutNows, true},
		{"crashes that lost unsynced writes", total.UnsyncedLost, true},
		{"leader crashes between sending and writing", total.SendFirstCrashes, true},
		{"leader writes answered by followers first", total.SlowLeaderWrites, true},
		{"leader crashes after partial replication", total.LeaderCrashes, in("figure8")},
		{"forced campaigns", total.Campaigns, in("lease-reads")},
	} {
		if c.want && c.got < *simSeeds/10 {
			t.Errorf("coverage: only %d %s over %d seeds; the random history is too tame", c.got, c.name, *simSeeds)
		}
	}
}

// TestSimDeterministic runs the same seed twice and requires identical
// traces and stats: a failure must be replayable from its seed alone.
func TestSimDeterministic(t *testing.T) {
	for _, seed := range []uint64{7, 8} {
		var traces [2][]string
		var stats [2]SimStats
		for i := range 2 {
			sim, err := NewSim(simConfigFor(seed, 600))
			if err != nil {
				t.Fatal(err)
			}
			st, err := sim.Run()
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			traces[i], stats[i] = sim.traceLines(), st
		}
		if stats[0] != stats[1] || strings.Join(traces[0], "\n") != strings.Join(traces[1], "\n") {
			t.Fatalf("seed %d is not deterministic:\nstats %+v\n   vs %+v\ntrace:\n%s\n---- vs ----\n%s",
				seed, stats[0], stats[1], strings.Join(traces[0], "\n"), strings.Join(traces[1], "\n"))
		}
	}
}

// TestSimCatchesForgottenVotes breaks the simulated driver so that a
// restarted node forgets whom it voted for (the durability rule of Raft
// figure 2), and requires the simulator to report a safety violation
// within a bounded number of seeds. It proves the simulator can fail.
func TestSimCatchesForgottenVotes(t *testing.T) {
	const chunk, limit = 50, 1000
	others := 0
	for start := uint64(1); start < limit; start += chunk {
		failures, _ := runSeeds(start, chunk, 2000, func(s *Sim) { s.faultForgetVote = true })
		for _, f := range failures {
			msg := f.Err.Error()
			if strings.Contains(msg, "election safety") || strings.Contains(msg, "log matching") ||
				strings.Contains(msg, "state machine safety") || strings.Contains(msg, "leader completeness") {
				t.Logf("found as expected: %v", strings.SplitN(f.Error(), "\n", 2)[0])
				return
			}
			others++
		}
	}
	t.Fatalf("a driver that forgets its term and vote across restarts went unnoticed in %d seeds (%d failures of other kinds)", limit, others)
}

// TestSimCatchesLivenessFailure cuts every message after the final heal
// and requires the liveness check to report it.
func TestSimCatchesLivenessFailure(t *testing.T) {
	sim, err := NewSim(SimConfig{Seed: 3, Nodes: 3, Steps: 300, SettleRounds: 100})
	if err != nil {
		t.Fatal(err)
	}
	sim.faultDeafSettle = true
	_, err = sim.Run()
	if err == nil || !strings.Contains(err.Error(), "liveness") {
		t.Fatalf("a cluster that cannot communicate after the heal passed the liveness check: %v", err)
	}
}

func ent(index, term uint64, data string) raft.Entry {
	return raft.Entry{Index: index, Term: term, Data: []byte(data)}
}

// TestCheckerCatchesViolations feeds the checker fabricated histories, each
// breaking one property, and requires it to name the violation.
func TestCheckerCatchesViolations(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(c *Checker) error
		want string
	}{
		{"two leaders in one term", func(c *Checker) error {
			if err := c.ObserveLeader(1, 2); err != nil {
				return err
			}
			if err := c.ObserveLeader(1, 2); err != nil {
				return err
			}
			return c.ObserveLeader(3, 2)
		}, "election safety"},
		{"same index and term, different data", func(c *Checker) error {
			if err := c.ObserveAppend(1, 0, []raft.Entry{ent(1, 1, "a")}); err != nil {
				return err
			}
			return c.ObserveAppend(2, 0, []raft.Entry{ent(1, 1, "b")})
		}, "log matching"},
		{"same entry, different predecessor", func(c *Checker) error {
			if err := c.ObserveAppend(1, 0, []raft.Entry{ent(1, 1, ""), ent(2, 3, "x")}); err != nil {
				return err
			}
			return c.ObserveAppend(2, 0, []raft.Entry{ent(1, 2, ""), ent(2, 3, "x")})
		}, "log matching"},
		{"divergent applied sequence", func(c *Checker) error {
			for _, id := range []uint64{1, 2} {
				if err := c.ObserveCommit(id, 3); err != nil {
					return err
				}
				if err := c.ObserveApply(id, ent(1, 1, "")); err != nil {
					return err
				}
			}
			if err := c.ObserveApply(1, ent(2, 1, "x=1")); err != nil {
				return err
			}
			return c.ObserveApply(2, ent(2, 2, "x=2"))
		}, "state machine safety"},
		{"applied gap", func(c *Checker) error {
			if err := c.ObserveCommit(1, 5); err != nil {
				return err
			}
			return c.ObserveApply(1, ent(2, 1, ""))
		}, "gap"},
		{"applied above commit", func(c *Checker) error {
			return c.ObserveApply(1, ent(1, 1, ""))
		}, "above its commit"},
		{"snapshot restores a different state", func(c *Checker) error {
			if err := c.ObserveCommit(1, 1); err != nil {
				return err
			}
			if err := c.ObserveApply(1, ent(1, 1, "a")); err != nil {
				return err
			}
			return c.ObserveRestore(2, 1, 12345)
		}, "state machine safety"},
		{"snapshot moves applied backwards", func(c *Checker) error {
			if err := c.ObserveCommit(1, 2); err != nil {
				return err
			}
			if err := c.ObserveApply(1, ent(1, 1, "")); err != nil {
				return err
			}
			if err := c.ObserveApply(1, ent(2, 1, "")); err != nil {
				return err
			}
			return c.ObserveRestore(1, 1, NextState(0, ent(1, 1, "")))
		}, "below its applied"},
		{"commit goes backwards", func(c *Checker) error {
			if err := c.ObserveCommit(1, 4); err != nil {
				return err
			}
			return c.ObserveCommit(1, 3)
		}, "went back"},
		{"restart below persisted commit", func(c *Checker) error {
			if err := c.ObservePersist(1, 4); err != nil {
				return err
			}
			return c.ObserveRestart(1, 2, 0, 0)
		}, "below its persisted commit"},
		{"leader misses a committed entry", func(c *Checker) error {
			if err := c.ObserveCommit(1, 2); err != nil {
				return err
			}
			for _, e := range []raft.Entry{ent(1, 1, ""), ent(2, 1, "x")} {
				if err := c.ObserveApply(1, e); err != nil {
					return err
				}
			}
			terms := map[uint64]uint64{1: 1, 2: 2}
			return c.CheckLeaderLog(2, 3, 1, 2, func(i uint64) uint64 { return terms[i] })
		}, "leader completeness"},
		{"leader log too short", func(c *Checker) error {
			if err := c.ObserveCommit(1, 1); err != nil {
				return err
			}
			if err := c.ObserveApply(1, ent(1, 1, "")); err != nil {
				return err
			}
			return c.CheckLeaderLog(2, 3, 1, 0, func(uint64) uint64 { return 0 })
		}, "leader completeness"},
		{"stale read index", func(c *Checker) error {
			if err := c.ObserveCommit(1, 7); err != nil {
				return err
			}
			c.RequestRead("r1")
			return c.ObserveReadState(2, "r1", 6)
		}, "read index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(NewChecker())
			if err == nil {
				t.Fatalf("checker accepted a history that violates %s", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %q, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestCheckerAcceptsValidHistory guards against a checker that rejects
// everything: a correct history passes.
func TestCheckerAcceptsValidHistory(t *testing.T) {
	c := NewChecker()
	steps := []func() error{
		func() error { return c.ObserveLeader(1, 2) },
		func() error { return c.ObserveAppend(1, 0, []raft.Entry{ent(1, 2, ""), ent(2, 2, "a")}) },
		func() error { return c.ObserveAppend(2, 0, []raft.Entry{ent(1, 2, "")}) },
		func() error { return c.ObserveAppend(2, 2, []raft.Entry{ent(2, 2, "a")}) },
		func() error { return c.ObserveCommit(1, 2) },
		func() error { return c.ObserveApply(1, ent(1, 2, "")) },
		func() error { return c.ObserveApply(1, ent(2, 2, "a")) },
		func() error { return c.ObserveRestore(2, 2, NextState(NextState(0, ent(1, 2, "")), ent(2, 2, "a"))) },
		func() error { c.RequestRead("r"); return c.ObserveReadState(1, "r", 2) },
		func() error { return c.ObserveLeader(2, 3) },
		func() error {
			return c.CheckLeaderLog(2, 3, 3, 2, func(uint64) uint64 { return 0 })
		},
	}
	for i, f := range steps {
		if err := f(); err != nil {
			t.Fatalf("step %d: valid history rejected: %v", i, err)
		}
	}
}

// TestSimRegressionSeeds replays seeds that once failed, so that the bug
// they found stays fixed without a long sweep.
//   - 70573: a leader applied its own removal from a two-voter
//     configuration and stepped down before the other voter learned that the
//     removal committed; that voter needed the removed node's vote, which it
//     refused (its log was ahead), and the removed node never campaigns.
//     Fixed by the commit hint in (pre-)vote rejections.
func TestSimRegressionSeeds(t *testing.T) {
	for _, c := range []struct {
		seed    uint64
		profile string
	}{{70573, "churn"}} {
		cfg := simConfigFor(c.seed, 2000)
		cfg.Profile = c.profile
		sim, err := NewSim(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sim.Run(); err != nil {
			t.Error(err)
		}
	}
}
