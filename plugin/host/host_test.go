package host_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/host"
	"github.com/raftd/raftd/plugin/internal/testbin"
)

var bins map[string]string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "raftd-host-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins, err = testbin.Build(dir, "raftd-fsm-kv", "raftd-fsm-counter", "raftd-fsm-queue", "misbehave")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func start(t *testing.T, name string, mod func(*host.Config)) (*host.Client, *syncBuf) {
	t.Helper()
	buf := &syncBuf{}
	cfg := host.Config{Path: bins[name], Logger: slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&cfg)
	}
	c, err := host.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		pid := c.PID()
		c.Close()
		if pid > 0 {
			waitGone(t, pid)
		}
	})
	return c, buf
}

// alive reports whether pid exists (and is not a zombie we could not see).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// State is the field after the parenthesized command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("plugin pid %d still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func puts(from, n int) []fsm.Entry {
	es := make([]fsm.Entry, n)
	for i := range es {
		es[i] = fsm.Entry{Index: uint64(from + i), Term: 1, Version: 1,
			Data: []byte(fmt.Sprintf(`{"op":"put","key":"k%06d","value":"v%d"}`, from+i, from+i))}
	}
	return es
}

func TestApplyQuerySnapshotRestore(t *testing.T) {
	ctx := context.Background()
	c, _ := start(t, "raftd-fsm-kv", func(c *host.Config) { c.MaxBatchBytes = 4096; c.MaxInflight = 3 })
	info, err := c.Info(ctx)
	if err != nil || info.Name != "kv" || info.MinVersion != 1 || info.MaxVersion != 2 || info.AppliedIndex != 0 || info.DowngradeSafeTo != 1 {
		t.Fatalf("info = %+v, %v", info, err)
	}
	es := puts(1, 5000)
	res, err := c.ApplyBatch(ctx, es)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(es) {
		t.Fatalf("%d results for %d entries", len(res), len(es))
	}
	for i, r := range res {
		if string(r) != `{"ok":true}` {
			t.Fatalf("result %d = %s", i, r)
		}
	}
	got, err := c.Query(ctx, []byte(`{"op":"get","key":"k000042"}`))
	if err != nil || string(got) != `{"found":true,"value":"v42"}` {
		t.Fatalf("get = %s, %v", got, err)
	}
	idx, d1, err := c.DigestAt(ctx)
	if err != nil || idx != 5000 || len(d1) != 32 {
		t.Fatalf("digest = %d %x %v", idx, d1, err)
	}
	var snap bytes.Buffer
	h, err := snapshotTo(ctx, c, &snap)
	if err != nil {
		t.Fatal(err)
	}
	if h.Index != 5000 || h.Term != 1 || h.Version != 1 || h.Format != kv.Format {
		t.Fatalf("snapshot header %+v", h)
	}
	if sum := sha256.Sum256(snap.Bytes()); !bytes.Equal(sum[:], d1) {
		t.Fatal("snapshot body is not the state the digest describes")
	}
	c2, _ := start(t, "raftd-fsm-kv", nil)
	if err := c2.Restore(ctx, h, bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	idx2, d2, err := c2.DigestAt(ctx)
	if err != nil || idx2 != 5000 || !bytes.Equal(d1, d2) {
		t.Fatalf("restored digest = %d %x %v, want 5000 %x", idx2, d2, err, d1)
	}
	// A replayed (already applied) index is refused: the plugin is broken.
	if _, err := c2.ApplyBatch(ctx, puts(10, 1)); !errors.Is(err, host.ErrBroken) {
		t.Fatalf("apply of an old index: err = %v, want ErrBroken", err)
	}
}

func TestCrashDetectedAndRestart(t *testing.T) {
	ctx := context.Background()
	c, _ := start(t, "raftd-fsm-counter", nil)
	if _, err := c.ApplyBatch(ctx, []fsm.Entry{{Index: 1, Term: 1, Data: []byte(`{"op":"add","delta":2}`)}}); err != nil {
		t.Fatal(err)
	}
	pid := c.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Broken():
	case <-time.After(5 * time.Second):
		t.Fatal("crash not noticed while idle")
	}
	_, err := c.ApplyBatch(ctx, []fsm.Entry{{Index: 2, Term: 1, Data: []byte(`{"op":"add","delta":2}`)}})
	var be *host.BrokenError
	if !errors.As(err, &be) || be.Reason != host.ReasonExited || be.PID != pid {
		t.Fatalf("err = %v, want BrokenError exited pid %d", err, pid)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if c.PID() == pid {
		t.Fatal("same pid after restart")
	}
	res, err := c.ApplyBatch(ctx, []fsm.Entry{{Index: 2, Term: 1, Data: []byte(`{"op":"add","delta":2}`)}})
	if err != nil || string(res[0]) != `{"value":2}` {
		t.Fatalf("after restart: %q %v", res, err)
	}
}

func TestHungApplyWatchdog(t *testing.T) {
	ctx := context.Background()
	c, _ := start(t, "misbehave", func(c *host.Config) { c.ApplyTimeout = 300 * time.Millisecond })
	pid := c.PID()
	t0 := time.Now()
	_, err := c.ApplyBatch(ctx, []fsm.Entry{{Index: 1, Term: 1, Data: []byte(`{"op":"hang"}`)}})
	var be *host.BrokenError
	if !errors.As(err, &be) || be.Reason != host.ReasonHung {
		t.Fatalf("err = %v, want hung", err)
	}
	// A generous bound (a loaded machine meets it) that still tells the
	// configured 300 ms watchdog from the 30 s default.
	d := time.Since(t0)
	t.Logf("watchdog fired after %v (timeout 300ms)", d)
	if d > 20*time.Second {
		t.Fatalf("watchdog took %v", d)
	}
	waitGone(t, pid)
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ApplyBatch(ctx, puts(1, 3)); err != nil {
		t.Fatal(err)
	}
}

// A query that misses CallTimeout fails for its caller only: the plugin is
// not declared broken (only Apply's watchdog restarts it), so a slow query
// (an unlimited list of a large state, say) never costs a restart.
func TestSlowQueryTimesOutWithoutRestart(t *testing.T) {
	ctx := context.Background()
	c, _ := start(t, "misbehave", func(c *host.Config) { c.CallTimeout = 300 * time.Millisecond })
	pid := c.PID()
	if _, err := c.ApplyBatch(ctx, puts(1, 3)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Query(ctx, []byte(`{"op":"sleep","ms":1500}`))
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, host.ErrBroken) {
		t.Fatalf("slow query: %v; want a deadline error that does not break the plugin", err)
	}
	if err := c.Err(); err != nil || c.PID() != pid || !alive(pid) {
		t.Fatalf("after a slow query: err %v, pid %d (was %d, alive %v)", err, c.PID(), pid, alive(pid))
	}
	// The plugin finishes the query and goes on applying and answering.
	if _, err := c.ApplyBatch(ctx, puts(4, 3)); err != nil {
		t.Fatalf("apply after the slow query: %v", err)
	}
	if got, err := c.Query(ctx, []byte(`{"op":"get","key":"k000006"}`)); err != nil || string(got) != `{"found":true,"value":"v6"}` {
		t.Fatalf("query after the slow query: %s, %v", got, err)
	}
	if c.PID() != pid {
		t.Fatalf("plugin restarted: pid %d, was %d", c.PID(), pid)
	}
}

func TestPluginErrorIsBroken(t *testing.T) {
	c, _ := start(t, "misbehave", nil)
	_, err := c.ApplyBatch(context.Background(), []fsm.Entry{{Index: 1, Term: 1, Data: []byte(`{"op":"error"}`)}})
	var be *host.BrokenError
	if !errors.As(err, &be) || be.Reason != host.ReasonRPC || !strings.Contains(err.Error(), "asked to fail") {
		t.Fatalf("err = %v, want rpc error naming the cause", err)
	}
}

func TestCrashInApply(t *testing.T) {
	c, _ := start(t, "misbehave", nil)
	_, err := c.ApplyBatch(context.Background(), []fsm.Entry{{Index: 1, Term: 1, Data: []byte(`{"op":"crash"}`)}})
	var be *host.BrokenError
	if !errors.As(err, &be) || be.Reason != host.ReasonExited {
		t.Fatalf("err = %v, want exited", err)
	}
}

func TestCloseLeavesNoProcess(t *testing.T) {
	c, _ := start(t, "raftd-fsm-kv", nil)
	pid := c.PID()
	if !alive(pid) {
		t.Fatalf("pid %d not running", pid)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	if _, err := c.Info(context.Background()); !errors.Is(err, host.ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func TestSHA256(t *testing.T) {
	sum, err := host.FileSHA256(bins["raftd-fsm-kv"])
	if err != nil {
		t.Fatal(err)
	}
	start(t, "raftd-fsm-kv", func(c *host.Config) { c.SHA256 = strings.ToUpper(sum) })
	bad := strings.Repeat("0", 64)
	_, err = host.Start(context.Background(), host.Config{Path: bins["raftd-fsm-kv"], SHA256: bad})
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("err = %v, want a sha256 mismatch", err)
	}
}

// TestBinarySHA256FollowsRestarts: the digest the client reports is that
// of the binary its current process was started from: after the file is
// replaced, the next restart reports the new one.
func TestBinarySHA256FollowsRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plugin")
	cp := func(from string) string {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		tmp := path + ".new"
		if err := os.WriteFile(tmp, b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil { // as an install would
			t.Fatal(err)
		}
		sum, err := host.FileSHA256(path)
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	kvSum := cp(bins["raftd-fsm-kv"])
	c, err := host.Start(context.Background(), host.Config{Path: path, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.BinarySHA256(); got != kvSum {
		t.Fatalf("BinarySHA256 = %s, want %s", got, kvSum)
	}
	counterSum := cp(bins["raftd-fsm-counter"])
	if got := c.BinarySHA256(); got != kvSum {
		t.Fatalf("before a restart BinarySHA256 = %s, want the running %s", got, kvSum)
	}
	if err := c.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.BinarySHA256(); got != counterSum || counterSum == kvSum {
		t.Fatalf("after a restart BinarySHA256 = %s, want %s (kv %s)", got, counterSum, kvSum)
	}
}

func TestBadPaths(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "notaplugin")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho hello\nsleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	silent := filepath.Join(dir, "silent")
	if err := os.WriteFile(silent, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{dir, "not a regular file"},
		{plain, "not executable"},
		{script, "not a working raftd FSM plugin"},
		{silent, "not a working raftd FSM plugin"},
		{"/bin/true", "not a working raftd FSM plugin"},
	} {
		t0 := time.Now()
		_, err := host.Start(context.Background(), host.Config{Path: tc.path, StartTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.path, err, tc.want)
		}
		// Reported; the bound only catches a start that does not give up
		// (a loaded machine meets it).
		d := time.Since(t0)
		t.Logf("%s: refused after %v (start timeout 2s)", tc.path, d)
		if d > 2*time.Second+15*time.Second {
			t.Errorf("%s: took %v", tc.path, d)
		}
	}
}

func TestStderrLogged(t *testing.T) {
	// The plugin logs its listen address at debug level on stderr; the host
	// copies it into its log under the plugin's name.
	c, buf := start(t, "raftd-fsm-kv", func(c *host.Config) { c.Name = "mykv" })
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), "mykv") || !strings.Contains(buf.String(), "plugin address") {
		if time.Now().After(deadline) {
			t.Fatalf("plugin stderr not in host log:\n%s", buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = c
}

func TestSIGINTIgnored(t *testing.T) {
	c, _ := start(t, "raftd-fsm-kv", nil)
	if err := syscall.Kill(c.PID(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// The plugin must still answer, repeatedly, after the signal.
	for i := 0; i < 5; i++ {
		if _, err := c.Info(context.Background()); err != nil {
			t.Fatalf("after SIGINT: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-c.Broken():
		t.Fatalf("plugin broke after SIGINT: %v", c.Err())
	default:
	}
}

// TestExitsWhenParentDies starts the plugin under a shell (its parent),
// waits for the handshake line, SIGKILLs the shell, and waits for the
// orphaned plugin to exit by itself.
func TestExitsWhenParentDies(t *testing.T) {
	hs := filepath.Join(t.TempDir(), "handshake")
	sh := exec.Command("/bin/sh", "-c", `"$0" >"$1" 2>/dev/null & echo $!; wait`, bins["raftd-fsm-kv"], hs)
	sh.Env = append(os.Environ(), "RAFTD_PLUGIN=fsm-6f1c7a2e9b0d4e58", "PLUGIN_PROTOCOL_VERSIONS=1")
	out, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		sh.Process.Kill()
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	// The handshake line is printed after the parent watch has started.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(hs)
		if strings.Contains(string(b), "|grpc|") {
			break
		}
		if time.Now().After(deadline) {
			sh.Process.Kill()
			t.Fatalf("no handshake line from the plugin: %q", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	sh.Process.Kill()
	sh.Wait()
	waitGone(t, pid)
}

// TestHangOnceThenReplay is the recovery cycle the node runs: a hang is
// detected, the plugin restarted, the same entries replayed (the test
// plugin misbehaves only once), and delivery continues.
func TestHangOnceThenReplay(t *testing.T) {
	t.Setenv("MISBEHAVE_ONCE_FILE", filepath.Join(t.TempDir(), "once"))
	ctx := context.Background()
	c, _ := start(t, "misbehave", func(c *host.Config) { c.ApplyTimeout = 300 * time.Millisecond })
	es := append(puts(1, 3), fsm.Entry{Index: 4, Term: 1, Data: []byte(`{"op":"hang"}`)})
	if _, err := c.ApplyBatch(ctx, es); !errors.Is(err, host.ErrBroken) {
		t.Fatalf("err = %v, want broken", err)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := c.ApplyBatch(ctx, es)
	if err != nil || string(res[3]) != `{"ok":true}` {
		t.Fatalf("replay: %q %v", res, err)
	}
}

// TestLargeMessages sends a command and reads a result larger than gRPC's
// default 4 MiB limit.
func TestLargeMessages(t *testing.T) {
	ctx := context.Background()
	c, _ := start(t, "raftd-fsm-kv", nil)
	big := strings.Repeat("x", 6<<20)
	res, err := c.ApplyBatch(ctx, []fsm.Entry{{Index: 1, Term: 1, Data: []byte(`{"op":"put","key":"big","value":"` + big + `"}`)}})
	if err != nil || string(res[0]) != `{"ok":true}` {
		t.Fatalf("apply: %.40q %v", res, err)
	}
	got, err := c.Query(ctx, []byte(`{"op":"get","key":"big"}`))
	if err != nil || len(got) != len(big)+len(`{"found":true,"value":""}`) {
		t.Fatalf("query: %d bytes, %v", len(got), err)
	}
}

// TestRunByHand: without the cookie the binary explains itself and exits 1.
func TestRunByHand(t *testing.T) {
	cmd := exec.Command(bins["raftd-fsm-kv"])
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "plugin") {
		t.Fatalf("err = %v, output %q", err, out)
	}
}

func TestApplyContext(t *testing.T) {
	c, _ := start(t, "misbehave", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.ApplyBatch(ctx, puts(1, 1)); !errors.Is(err, context.Canceled) || errors.Is(err, host.ErrBroken) {
		t.Fatalf("cancelled before the call: %v", err)
	}
	if c.Err() != nil {
		t.Fatalf("plugin broken by a call that sent nothing: %v", c.Err())
	}
	// Cancelled mid-call: the outcome is unknown, so the plugin is broken.
	// The context passes Apply's entry check and ends while the plugin
	// hangs (it hangs forever, so any cancellation time is mid-call).
	inner, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(100 * time.Millisecond)
		cancel()
	}()
	_, err := c.ApplyBatch(&passFirstCheck{Context: inner}, []fsm.Entry{{Index: 1, Term: 1, Data: []byte(`{"op":"hang"}`)}})
	var be *host.BrokenError
	if !errors.As(err, &be) || be.Reason != host.ReasonCancelled {
		t.Fatalf("cancelled mid-call: %v", err)
	}
}

// passFirstCheck reports no error on its first Err call, so that a
// cancellation racing with the start of Apply still lands mid-call.
type passFirstCheck struct {
	context.Context
	checked atomic.Bool
}

func (p *passFirstCheck) Err() error {
	if !p.checked.Swap(true) {
		return nil
	}
	return p.Context.Err()
}

// gateWriter closes started on its first Write and blocks it until gate is
// closed.
type gateWriter struct {
	started chan struct{}
	gate    chan struct{}
	first   sync.Once
	buf     bytes.Buffer
}

func (g *gateWriter) Write(p []byte) (int, error) {
	g.first.Do(func() {
		close(g.started)
		<-g.gate
	})
	return g.buf.Write(p)
}

// TestSnapshotDoesNotStopApply holds a snapshot stream open (its writer is
// blocked) while more entries are applied, then checks that the snapshot
// is exactly the state at its header's index. The body (about 24 MB) is
// larger than gRPC's flow-control windows, so the plugin is still
// streaming while the entries are applied.
func TestSnapshotDoesNotStopApply(t *testing.T) {
	ctx := context.Background()
	c, _ := start(t, "raftd-fsm-kv", nil)
	const n, size = 16000, 1500
	first := putCommands(0, n, size)
	if _, err := c.ApplyBatch(ctx, first); err != nil {
		t.Fatal(err)
	}
	gw := &gateWriter{started: make(chan struct{}), gate: make(chan struct{})}
	var hdr fsm.SnapshotHeader
	snapErr := make(chan error, 1)
	go func() {
		var err error
		hdr, err = snapshotTo(ctx, c, gw)
		snapErr <- err
	}()
	// Once body bytes flow, the snapshot has been captured. Apply must
	// make progress while the snapshot is stuck in its writer.
	select {
	case <-gw.started:
	case err := <-snapErr:
		t.Fatalf("snapshot ended early: %v", err)
	}
	// Overwrite the same keys with other values at later indexes.
	second := putCommands(0, n, size-1)
	for i := range second {
		second[i].Index += n
	}
	applied := make(chan error, 1)
	go func() {
		_, err := c.ApplyBatch(ctx, second)
		applied <- err
	}()
	select {
	case err := <-applied:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		close(gw.gate)
		t.Fatal("apply blocked by an open snapshot")
	}
	close(gw.gate)
	if err := <-snapErr; err != nil {
		t.Fatal(err)
	}
	if hdr.Index != n {
		t.Fatalf("snapshot index %d, want %d", hdr.Index, n)
	}
	ref := kv.New()
	if _, err := ref.ApplyBatch(ctx, first); err != nil {
		t.Fatal(err)
	}
	want, _ := ref.Digest(ctx)
	if got := sha256.Sum256(gw.buf.Bytes()); !bytes.Equal(got[:], want) {
		t.Fatalf("snapshot at index %d is not the state at that index", hdr.Index)
	}
}

// snapshotTo captures f's state and writes its body to w.
func snapshotTo(ctx context.Context, f fsm.FSM, w io.Writer) (fsm.SnapshotHeader, error) {
	s, err := f.Snapshot(ctx)
	if err != nil {
		return fsm.SnapshotHeader{}, err
	}
	defer s.Release()
	return s.Header(), s.WriteTo(ctx, w)
}
