package host

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestSlogHclog: hclog records (what go-plugin logs, including the lines a
// plugin writes to stderr) reach the slog logger at the mapped level with
// their key/value pairs and the plugin's attribute, and the level the
// adapter reports follows the slog handler.
func TestSlogHclog(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})).With("plugin", "mykv")
	h := newSlogHclog(l, "", nil).Named("raftd-fsm-kv")
	h.Trace("dropped trace")
	h.Debug("dropped debug", "k", 1)
	h.Info("hello", "k", 1, "odd")
	h.With("req", 7).Warn("careful")
	h.Error("bad", 42, "x")
	h.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("from a std logger")
	out := buf.String()
	for _, want := range []string{
		`level=INFO msg=hello plugin=mykv k=1 EXTRA=odd`,
		`level=WARN msg=careful plugin=mykv req=7`,
		`level=ERROR msg=bad plugin=mykv 42=x`,
		`level=ERROR msg="from a std logger" plugin=mykv`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "dropped") {
		t.Errorf("records below the handler's level were logged:\n%s", out)
	}
	if h.GetLevel() != hclog.Info || h.IsDebug() || !h.IsInfo() {
		t.Errorf("level %v, IsDebug %v, IsInfo %v; want Info, false, true", h.GetLevel(), h.IsDebug(), h.IsInfo())
	}
	if h.Name() != "raftd-fsm-kv" {
		t.Errorf("name %q", h.Name())
	}
	off := newSlogHclog(slog.New(slog.DiscardHandler), "", nil)
	if off.GetLevel() != hclog.Off {
		t.Errorf("discarding logger reports level %v, want Off (go-plugin then skips parsing stderr)", off.GetLevel())
	}
}

// TestSlogHclogStderrAndPID checks how go-plugin's records and the plugin's stderr
// reach the host's log: raw stderr lines at Info with stream=stderr, the
// plugin's hclog JSON at its own level without its timestamp, go-plugin's
// keys renamed, and the pid on every record once known.
func TestSlogHclogStderrAndPID(t *testing.T) {
	var buf bytes.Buffer
	pid := 0
	root := newSlogHclog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})).With("plugin", "kv"),
		"raftd-fsm-kv", func() int { return pid })
	root.Info("starting plugin", "path", "/bin/raftd-fsm-kv")
	pid = 4242
	stderr := root.Named("raftd-fsm-kv")
	stderr.Debug("Traceback (most recent call last):")           // raw line: shown
	stderr.Debug("plugin address", "timestamp", "2026-01-01T00") // hclog JSON at debug: hidden
	stderr.Warn("disk slow", "id", "a7", "timestamp", "2026-01-01T00")
	root.Info("plugin process exited", "plugin", "/bin/raftd-fsm-kv", "id", "4242", "error", "exit status 2")
	root.Named("stdio").Debug("stdio EOF, exiting copy loop") // not stderr: hidden
	root.Debug("configuring client automatic mTLS")           // hidden

	var got []map[string]any
	dec := json.NewDecoder(&buf)
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	want := []map[string]any{
		{"level": "INFO", "msg": "starting plugin", "plugin": "kv", "path": "/bin/raftd-fsm-kv"},
		{"level": "INFO", "msg": "Traceback (most recent call last):", "plugin": "kv", "stream": "stderr", "pid": 4242.0},
		{"level": "WARN", "msg": "disk slow", "plugin": "kv", "id": "a7", "pid": 4242.0},
		{"level": "INFO", "msg": "plugin process exited", "plugin": "kv", "path": "/bin/raftd-fsm-kv", "pid": 4242.0, "err": "exit status 2"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d:\n%v", len(got), len(want), got)
	}
	for i, w := range want {
		delete(got[i], "time")
		if len(got[i]) != len(w) {
			t.Errorf("record %d: got %v, want %v", i, got[i], w)
			continue
		}
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("record %d: %s = %v, want %v (%v)", i, k, got[i][k], v, got[i])
			}
		}
	}
}
