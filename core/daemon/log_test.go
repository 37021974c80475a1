package daemon

import (
	"bytes"
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
