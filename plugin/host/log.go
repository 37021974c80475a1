package host

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// slogHclog adapts a *slog.Logger to hclog.Logger, which go-plugin logs
// through (its own messages, and every line the plugin writes to stderr).
// Records go to l with hclog's level mapped to slog's (Trace to Debug);
// hclog's logger names (go-plugin names the stderr logger after the
// binary) are not repeated: l already carries the attribute plugin=NAME.
// SetLevel is ignored: the slog handler decides what is kept.
//
// Every record carries pid=PID once the process has started. go-plugin's
// own attributes are renamed to raftd's (its plugin=PATH becomes path, its
// id=PID pid, its error err) and the plugin's hclog timestamp is dropped (the record has
// its own time). A line of the plugin's stderr that is not hclog JSON (a
// Python traceback, a Node.js console.error) is logged at Info with
// stream=stderr: go-plugin would log it at Debug, hiding a plugin's
// diagnostics at the default level.
type slogHclog struct {
	l    *slog.Logger
	name string
	args []any // hclog's implied args (With), also already in l
	// stderrName is the name go-plugin gives the logger of the plugin's
	// stderr (the binary's base name); pid returns the process id (0
	// before the process starts).
	stderrName string
	pid        func() int
}

var _ hclog.Logger = (*slogHclog)(nil)

func newSlogHclog(l *slog.Logger, stderrName string, pid func() int) *slogHclog {
	return &slogHclog{l: l, stderrName: stderrName, pid: pid}
}

// stderr reports whether h logs the plugin's stderr.
func (h *slogHclog) stderr() bool { return h.name != "" && h.name == h.stderrName }

func slogLevel(level hclog.Level) slog.Level {
	switch {
	case level <= hclog.Debug: // NoLevel, Trace, Debug
		return slog.LevelDebug
	case level == hclog.Info:
		return slog.LevelInfo
	case level == hclog.Warn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

// attrs turns hclog's alternating key/value args into slog args; a
// trailing key without a value is kept under "EXTRA", as hclog does.
// With goplugin set, go-plugin's keys are renamed (see slogHclog).
func attrs(args []any, goplugin bool) []any {
	out := make([]any, 0, len(args)+1)
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			out = append(out, "EXTRA", args[i])
			break
		}
		k, ok := args[i].(string)
		if !ok {
			k = fmt.Sprint(args[i])
		}
		switch {
		case k == "timestamp":
			continue
		case goplugin && k == "plugin":
			k = "path"
		case goplugin && k == "error":
			k = "err"
		case goplugin && k == "id":
			k = "pid"
			if s, ok := args[i+1].(string); ok {
				if pid, err := strconv.Atoi(s); err == nil {
					out = append(out, k, pid) // a number, as in raftd's own records
					continue
				}
			}
		}
		out = append(out, k, args[i+1])
	}
	return out
}

func (h *slogHclog) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	lv := slogLevel(level)
	ctx := context.Background()
	if !h.l.Enabled(ctx, lv) {
		return
	}
	as := attrs(args, !h.stderr())
	if h.pid != nil && !hasKey(as, "pid") {
		if pid := h.pid(); pid > 0 {
			as = append(as, "pid", pid)
		}
	}
	h.l.Log(ctx, lv, msg, as...)
}

func hasKey(as []any, key string) bool {
	for i := 0; i < len(as); i += 2 {
		if as[i] == key {
			return true
		}
	}
	return false
}

func (h *slogHclog) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }

func (h *slogHclog) Debug(msg string, args ...any) {
	if len(args) == 0 && h.stderr() {
		// go-plugin's way of passing on a raw stderr line (hclog JSON
		// lines come with at least their timestamp).
		h.Log(hclog.Info, msg, "stream", "stderr")
		return
	}
	h.Log(hclog.Debug, msg, args...)
}
func (h *slogHclog) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *slogHclog) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *slogHclog) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *slogHclog) enabled(lv slog.Level) bool { return h.l.Enabled(context.Background(), lv) }

func (h *slogHclog) IsTrace() bool { return h.enabled(slog.LevelDebug) }
func (h *slogHclog) IsDebug() bool { return h.enabled(slog.LevelDebug) }
func (h *slogHclog) IsInfo() bool  { return h.enabled(slog.LevelInfo) }
func (h *slogHclog) IsWarn() bool  { return h.enabled(slog.LevelWarn) }
func (h *slogHclog) IsError() bool { return h.enabled(slog.LevelError) }

func (h *slogHclog) ImpliedArgs() []any { return h.args }

func (h *slogHclog) With(args ...any) hclog.Logger {
	return &slogHclog{l: h.l.With(attrs(args, !h.stderr())...), name: h.name, args: append(append([]any(nil), h.args...), args...),
		stderrName: h.stderrName, pid: h.pid}
}

func (h *slogHclog) Name() string { return h.name }

func (h *slogHclog) Named(name string) hclog.Logger {
	n := name
	if h.name != "" {
		n = h.name + "." + name
	}
	return &slogHclog{l: h.l, name: n, args: h.args, stderrName: h.stderrName, pid: h.pid}
}

func (h *slogHclog) ResetNamed(name string) hclog.Logger {
	return &slogHclog{l: h.l, name: name, args: h.args, stderrName: h.stderrName, pid: h.pid}
}

func (h *slogHclog) SetLevel(hclog.Level) {}

// GetLevel reports the lowest level the handler keeps (go-plugin skips
// parsing stderr lines when it is Off, and drops JSON lines below it).
func (h *slogHclog) GetLevel() hclog.Level {
	switch {
	case h.enabled(slog.LevelDebug):
		return hclog.Trace
	case h.enabled(slog.LevelInfo):
		return hclog.Info
	case h.enabled(slog.LevelWarn):
		return hclog.Warn
	case h.enabled(slog.LevelError):
		return hclog.Error
	}
	return hclog.Off
}

func (h *slogHclog) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *slogHclog) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	lv := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		lv = opts.ForceLevel
	}
	return lineWriter{h: h, level: lv}
}

// lineWriter logs each write (a line of a standard logger) as one record.
type lineWriter struct {
	h     *slogHclog
	level hclog.Level
}

func (w lineWriter) Write(p []byte) (int, error) {
	w.h.Log(w.level, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
