package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/internal/shared"
	fsmv1 "github.com/raftd/raftd/proto/fsm/v1"
)

// Config configures a Client. Only Path is required; zero values mean the
// documented defaults.
type Config struct {
	// Path is the plugin executable.
	Path string
	// Args are extra arguments for the executable. Default none.
	Args []string
	// SHA256 is the expected hex SHA-256 of the executable (--fsm-sha256).
	// When set, a binary with another digest is refused before it runs.
	SHA256 string
	// Name tags the plugin's log lines. Default: the base name of Path.
	Name string
	// Logger receives the host's messages about the plugin and the lines
	// the plugin writes to stderr (JSON lines in hclog's format at their
	// level, any other line at debug level), each with the attribute
	// plugin=Name. Default: slog.Default().
	Logger *slog.Logger
	// StartTimeout bounds the start-up handshake. Default 30s: an
	// interpreter (Node.js, Python) loading gRPC on a busy machine can take
	// several seconds; a plugin that exits instead is noticed at once.
	StartTimeout time.Duration
	// CallTimeout bounds Info, Query and Digest. Default 10s. Info and
	// Digest calls that miss it break the process; a Query that misses it
	// only fails (see Query).
	CallTimeout time.Duration
	// SnapshotTimeout bounds Snapshot and Restore. Default 30m.
	SnapshotTimeout time.Duration
	// ApplyTimeout is the watchdog for Apply: if no batch completes for
	// this long, the plugin is declared hung and killed. Default 30s.
	ApplyTimeout time.Duration
	// MaxBatchBytes is the target size of one Apply request. Default 1 MiB.
	MaxBatchBytes int
	// MaxInflight is how many Apply requests may be outstanding. Default 8.
	MaxInflight int
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.Name == "" {
		d.Name = filepath.Base(d.Path)
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.StartTimeout <= 0 {
		d.StartTimeout = 30 * time.Second
	}
	if d.CallTimeout <= 0 {
		d.CallTimeout = 10 * time.Second
	}
	if d.SnapshotTimeout <= 0 {
		d.SnapshotTimeout = 30 * time.Minute
	}
	if d.ApplyTimeout <= 0 {
		d.ApplyTimeout = 30 * time.Second
	}
	if d.MaxBatchBytes <= 0 {
		d.MaxBatchBytes = 1 << 20
	}
	if d.MaxInflight <= 0 {
		d.MaxInflight = 8
	}
	return d
}

// ErrBroken is matched (errors.Is) by every *BrokenError, as is
// fsm.ErrCrashed (so a caller that sees the Client as an fsm.FSM knows to
// restart it).
var ErrBroken = errors.New("host: plugin broken")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("host: client closed")

// Reason says why a plugin process is considered broken.
type Reason string

// Reasons for a BrokenError.
const (
	ReasonExited    Reason = "exited"    // the process died (crash, kill -9)
	ReasonHung      Reason = "hung"      // Apply watchdog fired
	ReasonTimeout   Reason = "timeout"   // a non-Apply call missed its deadline
	ReasonRPC       Reason = "rpc error" // a gRPC error on the Apply stream or a call
	ReasonProtocol  Reason = "protocol"  // the plugin broke the protocol
	ReasonCancelled Reason = "cancelled" // Apply's context ended mid-batch: state unknown
	ReasonRestarted Reason = "restarted" // replaced by Restart
	ReasonClosed    Reason = "closed"    // Close was called
)

// BrokenError reports a plugin process that can no longer be trusted: its
// state may be behind or unknown. Recover with Restart, then Restore and
// replay.
type BrokenError struct {
	Plugin string
	PID    int
	Reason Reason
	Err    error // underlying cause, may be nil
}

func (e *BrokenError) Error() string {
	s := fmt.Sprintf("host: plugin %s (pid %d) %s", e.Plugin, e.PID, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *BrokenError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrBroken) and errors.Is(err, fsm.ErrCrashed)
// true.
func (e *BrokenError) Is(target error) bool { return target == ErrBroken || target == fsm.ErrCrashed }

// Client is a supervised plugin process. It implements fsm.FSM (plus
// fsm.BatchApplier and fsm.Restarter), so the node drives a plugin through
// the same adapter as an FSM in its own process. It is safe for
// concurrent use; Apply calls are serialized (their order is the apply
// order).
type Client struct {
	cfg Config

	mu     sync.Mutex
	proc   *process // nil after Close
	closed bool
	sha256 string // of the binary as read when proc was started

	applyMu sync.Mutex // serializes Apply and Restart
}

var (
	_ fsm.FSM               = (*Client)(nil)
	_ fsm.BatchApplier      = (*Client)(nil)
	_ fsm.Restarter         = (*Client)(nil)
	_ fsm.ConcurrentQuerier = (*Client)(nil)
)

// Start checks the executable (existence, SHA-256), launches it, performs
// the handshake and an Info call, and opens the Apply stream. A missing
// file, a digest mismatch or a binary that is not a raftd plugin gives an
// error within StartTimeout; no process is left behind.
func Start(ctx context.Context, cfg Config) (*Client, error) {
	c := &Client{cfg: cfg.withDefaults()}
	sum, err := checkBinary(c.cfg.Path, c.cfg.SHA256)
	if err != nil {
		return nil, err
	}
	p, err := c.launch(ctx)
	if err != nil {
		return nil, err
	}
	c.proc, c.sha256 = p, sum
	return c, nil
}

// checkBinary verifies that path is an executable regular file and, when
// want is set, that its SHA-256 is want. It returns the file's SHA-256.
func checkBinary(path, want string) (string, error) {
	if path == "" {
		return "", errors.New("host: no plugin path given")
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("host: plugin %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("host: plugin %s: not a regular file", path)
	}
	if st.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("host: plugin %s: not executable", path)
	}
	if want != "" {
		want = strings.ToLower(strings.TrimSpace(want))
		if b, err := hex.DecodeString(want); err != nil || len(b) != sha256.Size {
			return "", fmt.Errorf("host: expected sha256 %q is not 64 hex digits", want)
		}
	}
	got, err := FileSHA256(path)
	if err != nil {
		return "", err
	}
	if want != "" && got != want {
		return "", fmt.Errorf("host: plugin %s: sha256 %s does not match the expected %s", path, got, want)
	}
	return got, nil
}

// FileSHA256 returns the lower-case hex SHA-256 of a file (what raftd fsm
// status shows as the binary digest).
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("host: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("host: hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// process is one running plugin.
type process struct {
	name   string
	log    *slog.Logger
	gp     *goplugin.Client
	rpc    fsmv1.StateMachineClient
	pid    int
	stream fsmv1.StateMachine_ApplyClient
	cancel context.CancelFunc // ends the Apply stream
	resps  chan *fsmv1.ApplyResponse
	done   chan struct{} // closed when broken
	once   sync.Once
	errMu  sync.Mutex
	err    *BrokenError
	killed chan struct{} // closed after the process is reaped
	info   fsm.Info
	qb     queryBatcher // query.go
}

func (c *Client) launch(ctx context.Context) (*process, error) {
	cfg := &c.cfg
	cmd := exec.Command(cfg.Path, cfg.Args...)
	// Own process group: a terminal's Ctrl-C does not reach the plugin
	// directly, and killing the group also removes any children it forked
	// (which would otherwise hold its stderr open and stall the cleanup).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	plog := cfg.Logger.With("plugin", cfg.Name)
	gp := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  shared.Handshake,
		Plugins:          goplugin.PluginSet{shared.PluginName: &shared.GRPCPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     cfg.StartTimeout,
		// NB: go-plugin logs through this only from the goroutine that
		// starts the process and from goroutines it starts afterwards,
		// so reading cmd.Process is ordered after its write.
		Logger: newSlogHclog(plog, filepath.Base(cfg.Path), func() int {
			if cmd.Process == nil {
				return 0
			}
			return cmd.Process.Pid
		}),
		GRPCDialOptions: shared.DialOptions(),
	})
	fail := func(err error) (*process, error) {
		pid := 0
		if cmd.Process != nil {
			pid = cmd.Process.Pid
		}
		stop(gp, pid, false)
		return nil, err
	}
	cp, err := gp.Client()
	if err != nil {
		return fail(fmt.Errorf("host: %s is not a working raftd FSM plugin: %w", cfg.Path, err))
	}
	raw, err := cp.Dispense(shared.PluginName)
	if err != nil {
		return fail(fmt.Errorf("host: %s: dispense: %w", cfg.Path, err))
	}
	rpc, ok := raw.(fsmv1.StateMachineClient)
	if !ok {
		return fail(fmt.Errorf("host: %s: unexpected client type %T", cfg.Path, raw))
	}
	p := &process{
		name: cfg.Name, log: plog, gp: gp, rpc: rpc,
		pid:    gp.ReattachConfig().Pid,
		resps:  make(chan *fsmv1.ApplyResponse, cfg.MaxInflight),
		done:   make(chan struct{}),
		killed: make(chan struct{}),
	}
	ictx, cancel := context.WithTimeout(ctx, cfg.CallTimeout)
	ir, err := rpc.Info(ictx, &fsmv1.InfoRequest{})
	cancel()
	if err != nil {
		return fail(fmt.Errorf("host: %s: info: %w", cfg.Path, err))
	}
	if ir.Name == "" || ir.MinVersion < 1 || ir.MaxVersion < ir.MinVersion {
		return fail(fmt.Errorf("host: %s: info: invalid name %q or version range %d..%d", cfg.Path, ir.Name, ir.MinVersion, ir.MaxVersion))
	}
	p.info = infoFromProto(ir)
	sctx, scancel := context.WithCancel(context.Background())
	stream, err := rpc.Apply(sctx)
	if err != nil {
		scancel()
		return fail(fmt.Errorf("host: %s: open apply stream: %w", cfg.Path, err))
	}
	p.stream, p.cancel = stream, scancel
	go p.receive()
	p.log.Debug("plugin started", "pid", p.pid, "fsm", ir.Name, "versions", fmt.Sprintf("%d..%d", ir.MinVersion, ir.MaxVersion))
	return p, nil
}

func infoFromProto(r *fsmv1.InfoResponse) fsm.Info {
	return fsm.Info{Name: r.Name, MinVersion: r.MinVersion, MaxVersion: r.MaxVersion,
		AppliedIndex: r.AppliedIndex, AppliedTerm: r.AppliedTerm, DowngradeSafeTo: r.DowngradeSafeTo, Build: r.Build}
}

// receive forwards Apply responses until the stream breaks.
func (p *process) receive() {
	for {
		r, err := p.stream.Recv()
		if err != nil {
			if err == io.EOF {
				err = errors.New("apply stream closed by the plugin")
			}
			p.fail(ReasonRPC, err)
			return
		}
		select {
		case p.resps <- r:
		case <-p.done:
			return
		}
	}
}

// fail marks the process broken (first reason wins) and kills it. An RPC
// failure caused by the process dying is reported as ReasonExited.
func (p *process) fail(reason Reason, cause error) {
	p.once.Do(func() {
		if reason == ReasonRPC && p.waitExited(500*time.Millisecond) {
			reason = ReasonExited
		}
		p.errMu.Lock()
		p.err = &BrokenError{Plugin: p.name, PID: p.pid, Reason: reason, Err: cause}
		p.errMu.Unlock()
		close(p.done)
		p.cancel()
		graceful := reason == ReasonClosed || reason == ReasonRestarted
		if graceful {
			p.log.Debug("stopping plugin", "pid", p.pid, "reason", string(reason))
		} else {
			p.log.Error("plugin broken", "pid", p.pid, "reason", string(reason), "err", cause)
		}
		stop(p.gp, p.pid, graceful)
		close(p.killed)
	})
}

// stopGrace is how long a graceful stop may take before the process
// group is killed.
const stopGrace = 3 * time.Second

// stop ends a plugin process and everything in its process group, and
// returns after go-plugin has reaped it. Graceful means: ask through the
// controller's Shutdown first (go-plugin's Kill waits up to 2 s, then
// SIGKILLs the plugin); otherwise SIGKILL right away.
func stop(gp *goplugin.Client, pid int, graceful bool) {
	killGroup := func() {
		if pid > 0 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	if !graceful {
		killGroup()
	}
	done := make(chan struct{})
	go func() {
		gp.Kill()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(stopGrace):
		killGroup()
		<-done
	}
	killGroup() // leftovers forked by the plugin
}

func (p *process) waitExited(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if p.gp.Exited() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *process) brokenErr() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.err
}

// current returns the live process or the error that ended it.
func (c *Client) current() (*process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	p := c.proc
	select {
	case <-p.done:
		return nil, p.brokenErr()
	default:
		return p, nil
	}
}

// PID returns the process id of the current plugin process (0 after Close).
func (c *Client) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil || c.closed {
		return 0
	}
	return c.proc.pid
}

// Name returns the plugin's log name (Config.Name).
func (c *Client) Name() string { return c.cfg.Name }

// Broken returns a channel closed when the current process breaks, and
// the process it belongs to; use it to notice a crash while idle.
func (c *Client) Broken() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return c.proc.done
}

// Err returns the *BrokenError of the current process, ErrClosed, or nil
// while it is healthy.
func (c *Client) Err() error {
	_, err := c.current()
	return err
}

// Restart kills the current process (if still running) and starts a new
// one. The new process has a fresh Apply stream; an in-memory FSM starts
// empty, so the caller restores a snapshot and replays before new Apply
// calls (Info tells where the plugin is).
func (c *Client) Restart(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	old := c.proc
	c.mu.Unlock()
	old.fail(ReasonRestarted, nil) // unblocks a stuck Apply
	<-old.killed
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	sum, err := checkBinary(c.cfg.Path, c.cfg.SHA256)
	if err != nil {
		return err
	}
	p, err := c.launch(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		go p.fail(ReasonClosed, nil)
		<-p.killed
		return ErrClosed
	}
	c.proc, c.sha256 = p, sum
	return nil
}

// BinarySHA256 returns the hex SHA-256 of the plugin executable as it was
// read when the current process was started (by Start or the last
// Restart): a binary replaced on disk shows up after the next restart.
// NB: the file is hashed just before it is run, not atomically with it.
func (c *Client) BinarySHA256() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sha256
}

// Path returns the plugin executable's path.
func (c *Client) Path() string { return c.cfg.Path }

// Close stops the plugin (graceful Shutdown, SIGKILL after 2 s) and waits
// until the process is gone. Later calls return ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	p := c.proc
	c.mu.Unlock()
	p.fail(ReasonClosed, nil)
	<-p.killed
	return nil
}

// call runs a unary call under a deadline. A deadline miss or a transport
// failure breaks the process; other gRPC errors are returned as they are.
func (c *Client) call(ctx context.Context, timeout time.Duration, what string, f func(context.Context, fsmv1.StateMachineClient) error) error {
	p, err := c.current()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := f(cctx, p.rpc); err != nil {
		return c.callErr(p, ctx, cctx, timeout, what, err)
	}
	return nil
}

// callErr classifies the error of a call to p made under cctx (derived
// from the caller's ctx with the given timeout): the process is broken by
// a missed deadline or a transport failure; the caller's own cancellation
// and the plugin's gRPC errors are returned as they are.
func (c *Client) callErr(p *process, ctx, cctx context.Context, timeout time.Duration, what string, err error) error {
	select {
	case <-p.done:
		return p.brokenErr()
	default:
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("host: %s: %w", what, ctx.Err())
	case cctx.Err() == context.DeadlineExceeded || status.Code(err) == codes.DeadlineExceeded:
		p.fail(ReasonTimeout, fmt.Errorf("%s: no answer within %v", what, timeout))
		return p.brokenErr()
	case status.Code(err) == codes.Unavailable || status.Code(err) == codes.Canceled:
		p.fail(ReasonRPC, fmt.Errorf("%s: %w", what, err))
		return p.brokenErr()
	}
	return fmt.Errorf("host: plugin %s: %s: %w", c.cfg.Name, what, err)
}

// Info returns the plugin's name, versions and applied position.
func (c *Client) Info(ctx context.Context) (fsm.Info, error) {
	var info fsm.Info
	err := c.call(ctx, c.cfg.CallTimeout, "info", func(ctx context.Context, rpc fsmv1.StateMachineClient) error {
		r, err := rpc.Info(ctx, &fsmv1.InfoRequest{})
		if err == nil {
			info = infoFromProto(r)
		}
		return err
	})
	return info, err
}

// queryOne runs q alone with a unary Query call under CallTimeout. A query
// that misses its deadline fails for its caller only (an error matching
// context.DeadlineExceeded): the plugin is not declared broken, because a
// slow query (an unlimited list of a large state) is no sign of a hung
// process, and restarting the plugin for it would cost a restore and a
// replay. A plugin that is really stuck is caught by Apply's watchdog.
func (c *Client) queryOne(ctx context.Context, p *process, q []byte) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	r, err := p.rpc.Query(cctx, &fsmv1.QueryRequest{Query: q})
	if err == nil {
		return r.Result, nil
	}
	if ctx.Err() == nil && (cctx.Err() == context.DeadlineExceeded || status.Code(err) == codes.DeadlineExceeded) {
		select {
		case <-p.done:
			return nil, p.brokenErr()
		default:
		}
		return nil, fmt.Errorf("host: plugin %s: query: no answer within %v (--plugin-call-timeout): %w", c.cfg.Name, c.cfg.CallTimeout, context.DeadlineExceeded)
	}
	return nil, c.callErr(p, ctx, cctx, c.cfg.CallTimeout, "query", err)
}

// Digest returns the plugin's digest of its state.
func (c *Client) Digest(ctx context.Context) ([]byte, error) {
	_, d, err := c.DigestAt(ctx)
	return d, err
}

// DigestAt returns the digest and the applied index it describes.
func (c *Client) DigestAt(ctx context.Context) (uint64, []byte, error) {
	var idx uint64
	var d []byte
	err := c.call(ctx, c.cfg.CallTimeout, "digest", func(ctx context.Context, rpc fsmv1.StateMachineClient) error {
		r, err := rpc.Digest(ctx, &fsmv1.DigestRequest{})
		if err == nil {
			idx, d = r.AppliedIndex, r.Digest
		}
		return err
	})
	return idx, d, err
}
