package node

import (
	"context"
	"fmt"
	"log/slog"
)

// raftLogger implements raft.Logger, the core's small printf-style
// interface, on a *slog.Logger: raft's lines become records at the same
// level, formatted only when that level is enabled.
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) logf(lv slog.Level, format string, args ...any) {
	if r.l.Enabled(context.Background(), lv) {
		r.l.Log(context.Background(), lv, fmt.Sprintf(format, args...))
	}
}

func (r raftLogger) Debugf(format string, args ...any)   { r.logf(slog.LevelDebug, format, args...) }
func (r raftLogger) Infof(format string, args ...any)    { r.logf(slog.LevelInfo, format, args...) }
func (r raftLogger) Warningf(format string, args ...any) { r.logf(slog.LevelWarn, format, args...) }
func (r raftLogger) Errorf(format string, args ...any)   { r.logf(slog.LevelError, format, args...) }
