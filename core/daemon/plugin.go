package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/host"
)

// CheckPlugin verifies that path is an executable regular file and, if want
// is set, that its SHA-256 is want (hex). It returns the hex digest. Start
// runs it before anything else; a caller that starts several nodes on one
// plugin may run it once up front.
func CheckPlugin(path, want string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("fsm plugin %s: no such file", path)
		}
		return "", fmt.Errorf("fsm plugin %s: %v", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("fsm plugin %s: not a regular file", path)
	}
	if fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("fsm plugin %s: not executable", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("fsm plugin %s: %v", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("fsm plugin %s: %v", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		return "", fmt.Errorf("fsm plugin %s: sha256 is %s, --fsm-sha256 wants %s", path, sum, want)
	}
	return sum, nil
}

// firstLine returns s up to its first line break.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}

// hclogFor returns an hclog.Logger (what plugin/host and go-plugin log
// through) whose records go to l, with the hclog logger's name as the
// attribute "plugin".
func hclogFor(l *slog.Logger) hclog.Logger {
	level := hclog.Info
	switch {
	case l.Enabled(context.Background(), slog.LevelDebug):
		level = hclog.Debug
	case !l.Enabled(context.Background(), slog.LevelInfo):
		level = hclog.Warn
	}
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: io.Discard, Level: level})
	il.RegisterSink(hclogSink{l})
	return il
}

// hclogSink forwards hclog records to a *slog.Logger.
type hclogSink struct{ l *slog.Logger }

func (s hclogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	var lv slog.Level
	switch {
	case level <= hclog.Debug:
		lv = slog.LevelDebug
	case level == hclog.Info:
		lv = slog.LevelInfo
	case level == hclog.Warn:
		lv = slog.LevelWarn
	default:
		lv = slog.LevelError
	}
	ctx := context.Background()
	if !s.l.Enabled(ctx, lv) {
		return
	}
	attrs := make([]any, 0, len(args)+2)
	if name != "" {
		attrs = append(attrs, "plugin", name)
	}
	for i := 0; i+1 < len(args); i += 2 {
		attrs = append(attrs, fmt.Sprint(args[i]), args[i+1])
	}
	s.l.Log(ctx, lv, msg, attrs...)
}

// pluginSM adapts a plugin/host client to node.StateMachine. A plugin that
// crashed or hung (host.ErrBroken) is reported as node.ErrStateMachineCrashed
// so the node restarts, restores and replays it.
type pluginSM struct {
	c *host.Client
}

var (
	_ node.StateMachine    = pluginSM{}
	_ node.Restarter       = pluginSM{}
	_ node.SnapshotStarter = pluginSM{}
)

func crashed(err error) error {
	if err != nil && errors.Is(err, host.ErrBroken) {
		return fmt.Errorf("%w: %w", node.ErrStateMachineCrashed, err)
	}
	return err
}

func (p pluginSM) Info(ctx context.Context) (node.FSMInfo, error) {
	i, err := p.c.Info(ctx)
	if err != nil {
		return node.FSMInfo{}, crashed(err)
	}
	return node.FSMInfo{Name: i.Name, MinVersion: i.MinVersion, MaxVersion: i.MaxVersion, Applied: i.AppliedIndex}, nil
}

func (p pluginSM) Apply(ctx context.Context, cmds []node.Command) ([][]byte, error) {
	es := make([]fsm.Entry, len(cmds))
	for i, c := range cmds {
		es[i] = fsm.Entry{Index: c.Index, Term: c.Term, Data: c.Data, Version: c.Version}
	}
	res, err := p.c.Apply(ctx, es)
	return res, crashed(err)
}

func (p pluginSM) Query(ctx context.Context, q []byte) ([]byte, error) {
	res, err := p.c.Query(ctx, q)
	return res, crashed(err)
}

func (p pluginSM) Snapshot(ctx context.Context, w io.Writer) error {
	return crashed(p.c.Snapshot(ctx, w))
}

// StartSnapshot implements node.SnapshotStarter. The plugin captures its
// state when it answers the Snapshot call with its header (under its lock,
// at its applied index), and the host writes the envelope header to w only
// after receiving that header; so the first write to w marks the capture.
// StartSnapshot returns then, and the body streams into w in the background
// while the node keeps applying. wait returns the outcome of the whole
// stream; cancelling ctx ends it promptly.
func (p pluginSM) StartSnapshot(ctx context.Context, w io.Writer) (func() error, error) {
	cw := &captureWriter{w: w, captured: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- crashed(p.c.Snapshot(ctx, cw)) }()
	select {
	case <-cw.captured:
		return func() error { return <-done }, nil
	case err := <-done:
		if err != nil {
			return nil, err
		}
		return func() error { return nil }, nil
	}
}

// captureWriter closes captured at the first write.
type captureWriter struct {
	w        io.Writer
	once     sync.Once
	captured chan struct{}
}

func (c *captureWriter) Write(b []byte) (int, error) {
	c.once.Do(func() { close(c.captured) })
	return c.w.Write(b)
}

func (p pluginSM) Restore(ctx context.Context, r io.Reader) error {
	return crashed(p.c.Restore(ctx, r))
}

func (p pluginSM) Digest(ctx context.Context) ([]byte, error) {
	d, err := p.c.Digest(ctx)
	return d, crashed(err)
}

func (p pluginSM) Restart(ctx context.Context) error { return p.c.Restart(ctx) }

func (p pluginSM) Close() error { return p.c.Close() }
