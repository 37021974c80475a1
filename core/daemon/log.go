package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Log formats of NewLogger.
const (
	LogFormatText = "text"
	LogFormatJSON = "json"
)

// NewLogger returns the logger of a node writing to w in format at level
// ("debug", "info", "warn" or "error"). LogFormatText is NewTextHandler's
// lines; LogFormatJSON is one JSON object per line, slog's JSONHandler
// ("time", "level", "msg", then the attributes). Either writes each record
// with a single Write, never buffers, never drops.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	switch level {
	case "debug":
		lv = slog.LevelDebug
	case "info":
		lv = slog.LevelInfo
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("log level %q is not debug, info, warn or error", level)
	}
	switch format {
	case LogFormatText:
		return slog.New(NewTextHandler(w, lv)), nil
	case LogFormatJSON:
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	}
	return nil, fmt.Errorf("log format %q is not text or json", format)
}

// NewTextHandler returns the handler raftd logs through: one line per
// record, "15:04:05.000 LEVEL message key=value ...", the time in UTC.
// Values holding spaces, quotes or '=' are quoted. It is safe for
// concurrent use.
func NewTextHandler(w io.Writer, level slog.Leveler) slog.Handler {
	if level == nil {
		level = slog.LevelInfo
	}
	return &textHandler{mu: &sync.Mutex{}, w: w, level: level}
}

type textHandler struct {
	mu     *sync.Mutex // shared by the handlers derived with WithAttrs/WithGroup
	w      io.Writer
	level  slog.Leveler
	attrs  []byte // " k=v" of WithAttrs, already formatted
	prefix string // "group." of WithGroup
}

func (h *textHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *textHandler) Handle(_ context.Context, r slog.Record) error {
	b := make([]byte, 0, 128)
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	b = t.UTC().AppendFormat(b, "15:04:05.000")
	b = append(b, ' ')
	b = append(b, r.Level.String()...)
	b = append(b, ' ')
	b = append(b, strings.TrimRight(r.Message, "\n")...)
	b = append(b, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		b = appendAttr(b, h.prefix, a)
		return true
	})
	b = append(b, '\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.w.Write(b)
	return err
}

func (h *textHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]byte(nil), h.attrs...)
	for _, a := range as {
		c.attrs = appendAttr(c.attrs, h.prefix, a)
	}
	return &c
}

func (h *textHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix = h.prefix + name + "."
	return &c
}

func appendAttr(b []byte, prefix string, a slog.Attr) []byte {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return b
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			b = appendAttr(b, p, g)
		}
		return b
	}
	b = append(b, ' ')
	b = append(b, prefix...)
	b = append(b, a.Key...)
	b = append(b, '=')
	s := a.Value.String()
	if s == "" || strings.ContainsAny(s, " \t\n\"=") || !utf8.ValidString(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}
