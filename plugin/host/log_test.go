package host

import (
	"bytes"
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
	h := newSlogHclog(l).Named("raftd-fsm-kv")
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
	off := newSlogHclog(slog.New(slog.DiscardHandler))
	if off.GetLevel() != hclog.Off {
		t.Errorf("discarding logger reports level %v, want Off (go-plugin then skips parsing stderr)", off.GetLevel())
	}
}
