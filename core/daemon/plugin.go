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

	"github.com/hashicorp/go-hclog"
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
