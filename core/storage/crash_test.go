package storage

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// The crash test re-executes the test binary as a child that appends and
// fsyncs entries forever, printing "durable N" after each Save returns; the
// parent SIGKILLs it at a random point and checks the data dir.
const (
	crashDirEnv  = "RAFTD_STORAGE_CRASH_DIR"
	crashSeedEnv = "RAFTD_STORAGE_CRASH_SEED"
)

// crashEntryData is the content of entry i in the crash test.
func crashEntryData(i uint64) []byte {
	n := int(i*7919) % 700
	d := make([]byte, n)
	for j := range d {
		d[j] = byte(i>>uint(j%8*8)) ^ byte(j*13)
	}
	return d
}

// TestCrashChild is the child process of TestCrashKill9; it does nothing
// when run directly.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashKill9")
	}
	// Exit when the parent goes away (stdin closes), so no child outlives it.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}()
	seed, _ := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64)
	rng := rand.New(rand.NewPCG(seed, 99))
	s, err := Open(dir, &Options{ClusterID: "crash", NodeID: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	last, _ := s.LastIndex()
	fmt.Fprintf(os.Stdout, "opened %d\n", last)
	for {
		n := uint64(1 + rng.IntN(16))
		es := make([]raft.Entry, n)
		for i := range es {
			idx := last + 1 + uint64(i)
			es[i] = raft.Entry{Index: idx, Term: 1, Data: crashEntryData(idx)}
		}
		if err := s.Save(raft.HardState{Term: 1, Vote: 1, Commit: last + n}, es, true); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		last += n
		fmt.Fprintf(os.Stdout, "durable %d\n", last)
		if rng.IntN(50) == 0 && last > 300 {
			if err := s.Compact(last - 300); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
	}
}

// TestCrashKill9 kills a writing child process with SIGKILL at random
// points (at least 50 times; 500 with RAFTD_SOAK=1) and checks after each
// kill that every index reported durable is present and intact and that
// the log is a gap-free prefix of what was written.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	rounds := 50
	if os.Getenv("RAFTD_SOAK") != "" {
		rounds = 500
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(2026, 1127))
	var durable uint64 // highest index any child reported durable
	kills := 0
	start := time.Now()
	for round := 0; round < rounds; round++ {
		killAfter := rng.IntN(40) // durable reports to wait for; 0 kills during open
		reported, killed := runCrashChild(t, dir, rng.Uint64(), killAfter)
		if killed {
			kills++
		}
		durable = max(durable, reported)

		s, err := Open(dir, &Options{ClusterID: "crash", NodeID: 1})
		if err != nil {
			t.Fatalf("round %d: open after kill: %v", round, err)
		}
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		hs, _ := s.HardState()
		if last < durable {
			s.Close()
			t.Fatalf("round %d: last index %d after kill; index %d was reported durable", round, last, durable)
		}
		if hs.Commit > last {
			s.Close()
			t.Fatalf("round %d: commit %d beyond last %d", round, hs.Commit, last)
		}
		es, err := s.Entries(first, last+1, ^uint64(0))
		if err != nil {
			s.Close()
			t.Fatalf("round %d: read [%d,%d]: %v", round, first, last, err)
		}
		for i, e := range es {
			if e.Index != first+uint64(i) || e.Term != 1 || !bytes.Equal(e.Data, crashEntryData(e.Index)) {
				s.Close()
				t.Fatalf("round %d: entry %d (position %d) is wrong", round, e.Index, i)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d rounds, %d SIGKILLs, %d entries durable, %v", rounds, kills, durable, time.Since(start))
	if kills < rounds {
		t.Fatalf("only %d of %d children were killed", kills, rounds)
	}
}

// runCrashChild starts a child on dir, SIGKILLs it after killAfter durable
// reports and returns the highest index it reported durable.
func runCrashChild(t *testing.T, dir string, seed uint64, killAfter int) (durable uint64, killed bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashSeedEnv+"="+strconv.FormatUint(seed, 10))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	kill := func() { _ = syscall.Kill(pid, syscall.SIGKILL) }
	// Watchdog: a child that stops making progress is killed and fails the
	// test below (it then did not die by our SIGKILL at the chosen point).
	watchdog := time.AfterFunc(30*time.Second, kill)
	defer watchdog.Stop()

	sc := bufio.NewScanner(stdout)
	reports := 0
	sentKill := false
	if killAfter == 0 {
		kill() // during start-up and recovery
		sentKill = true
	}
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "durable "); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatalf("child wrote %q", line)
			}
			durable = max(durable, n)
			reports++
			if reports == killAfter && !sentKill {
				kill()
				sentKill = true
			}
		}
	}
	err = cmd.Wait()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !sentKill || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child pid %d ended by itself (%v) after %d reports; stderr:\n%s", pid, err, reports, stderr.String())
	}
	// Nothing, Pebble included, may write to stderr behind the logger.
	if stderr.Len() > 0 {
		t.Fatalf("child pid %d wrote to stderr:\n%s", pid, stderr.String())
	}
	return durable, true
}
