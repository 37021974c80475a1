package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftd/raftd/core/node"
)

type fakeReplay struct {
	ready, done chan struct{}
	applied     atomic.Uint64
	target      uint64
	err         error
	halt        atomic.Pointer[node.Halt]
}

func (f *fakeReplay) ID() uint64             { return 3 }
func (f *fakeReplay) Ready() <-chan struct{} { return f.ready }
func (f *fakeReplay) Done() <-chan struct{}  { return f.done }
func (f *fakeReplay) Err() error             { return f.err }
func (f *fakeReplay) Applied() uint64        { return f.applied.Load() }
func (f *fakeReplay) ReplayTarget() uint64   { return f.target }
func (f *fakeReplay) Halted() *node.Halt     { return f.halt.Load() }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSuffix(s.b.String(), "\n"), "\n")
}

// TestAwaitReplayProgress: a replay still running after replayQuiet
// logs where it started, its progress every interval, and its end (on a
// fake clock).
func TestAwaitReplayProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeReplay{ready: make(chan struct{}), done: make(chan struct{}), target: 1000}
		f.applied.Store(100)
		var buf syncBuffer
		errc := make(chan error, 1)
		go func() {
			errc <- awaitReplay(context.Background(), f, slog.New(NewTextHandler(&buf, slog.LevelInfo)), 5*time.Second)
		}()
		synctest.Wait()
		if buf.b.Len() != 0 {
			t.Fatalf("logged before the quiet period ended: %q", buf.b.String())
		}
		f.applied.Store(550)
		time.Sleep(replayQuiet)
		synctest.Wait()
		f.applied.Store(775)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		f.applied.Store(1000)
		close(f.ready)
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		want := []string{
			`INFO replaying the log from=100 to=1000 entries=900 replayed=450$`,
			`INFO replaying the log replayed=675 of=900 index=775 percent=75$`,
			`INFO replayed the log entries=900 elapsed=6s$`,
		}
		got := buf.lines()
		if len(got) != len(want) {
			t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
		}
		for i, re := range want {
			if !regexp.MustCompile(re).MatchString(got[i]) {
				t.Errorf("line %d: %q does not match %s", i, got[i], re)
			}
		}
	})
}

// TestAwaitReplayQuiet: a node with nothing to replay, or one whose
// replay ends within replayQuiet, logs nothing; one that stops during the
// replay is an error naming it.
func TestAwaitReplayQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf syncBuffer
		log := slog.New(NewTextHandler(&buf, slog.LevelInfo))
		f := &fakeReplay{ready: make(chan struct{}), done: make(chan struct{})}
		close(f.ready)
		if err := awaitReplay(context.Background(), f, log, time.Millisecond); err != nil {
			t.Fatalf("ready node: %v", err)
		}
		f = &fakeReplay{ready: make(chan struct{}), done: make(chan struct{}), target: 3}
		go func() {
			time.Sleep(replayQuiet - time.Millisecond)
			close(f.ready)
		}()
		if err := awaitReplay(context.Background(), f, log, time.Millisecond); err != nil {
			t.Fatalf("short replay: %v", err)
		}
		if buf.b.Len() != 0 {
			t.Fatalf("logged %q", buf.b.String())
		}
		f = &fakeReplay{ready: make(chan struct{}), done: make(chan struct{}), target: 10, err: errors.New("storage: corrupt")}
		close(f.done)
		err := awaitReplay(context.Background(), f, log, time.Hour)
		if err == nil || !strings.Contains(err.Error(), "node 3 stopped during start: storage: corrupt") {
			t.Fatalf("stopped node: %v", err)
		}
	})
}

// TestAwaitReplayHalted: a node whose apply halts during the replay (it
// will never apply up to the replay target) stops waiting, so that its
// API opens and the halt can be seen and skipped; it says so.
func TestAwaitReplayHalted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeReplay{ready: make(chan struct{}), done: make(chan struct{}), target: 100}
		f.applied.Store(41)
		var buf syncBuffer
		errc := make(chan error, 1)
		go func() {
			errc <- awaitReplay(context.Background(), f, slog.New(NewTextHandler(&buf, slog.LevelInfo)), time.Hour)
		}()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		select {
		case err := <-errc:
			t.Fatalf("returned before the replay ended or halted: %v", err)
		default:
		}
		f.halt.Store(&node.Halt{Index: 42, Reason: "poison"})
		time.Sleep(haltPoll)
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		got := buf.lines()
		if last := got[len(got)-1]; !strings.Contains(last, "WARN apply halted during the replay") || !strings.Contains(last, "index=42") {
			t.Fatalf("last line %q does not report the halt at 42", last)
		}
	})
}
