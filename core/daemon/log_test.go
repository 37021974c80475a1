package daemon

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

func TestTextHandler(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(NewTextHandler(&buf, slog.LevelInfo)).With("node", 2)
	l.Debug("hidden")
	l.Info("storage: opened", "dir", "/tmp/a b", "last", 7)
	l.WithGroup("g").Warn("transport: stream down\n", "err", `dial "x": refused`, "empty", "")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	want := []string{
		`^\d\d:\d\d:\d\d\.\d\d\d INFO storage: opened node=2 dir="/tmp/a b" last=7$`,
		`^\d\d:\d\d:\d\d\.\d\d\d WARN transport: stream down node=2 g\.err="dial \\"x\\": refused" g\.empty=""$`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, re := range want {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("line %d: %q does not match %s", i, lines[i], re)
		}
	}
}

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	l, err := NewLogger(&buf, LogFormatJSON, "warn")
	if err != nil {
		t.Fatal(err)
	}
	l = l.With("node", 3)
	l.Info("hidden")
	l.Warn("transport: stream down", "peer", 2, "term", 7)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON object: %q: %v", buf.String(), err)
	}
	for k, want := range map[string]any{"level": "WARN", "msg": "transport: stream down", "node": 3.0, "peer": 2.0, "term": 7.0} {
		if rec[k] != want {
			t.Errorf("%s = %v, want %v (%s)", k, rec[k], want, buf.String())
		}
	}
	if _, ok := rec["time"]; !ok {
		t.Errorf("no time in %s", buf.String())
	}
	buf.Reset()
	if l, err = NewLogger(&buf, LogFormatText, "debug"); err != nil {
		t.Fatal(err)
	}
	l.Debug("shown")
	if !strings.Contains(buf.String(), "DEBUG shown") {
		t.Errorf("text debug line: %q", buf.String())
	}
	for _, bad := range [][2]string{{"xml", "info"}, {"json", "verbose"}, {"", "info"}} {
		if _, err := NewLogger(&buf, bad[0], bad[1]); err == nil {
			t.Errorf("NewLogger(%q, %q) accepted", bad[0], bad[1])
		}
	}
}
