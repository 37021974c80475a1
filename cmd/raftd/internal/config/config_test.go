package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

type vals struct {
	addr, peers, level string
	hb                 time.Duration
	id                 uint64
	nosync             bool
}

func newFlags(v *vals) *pflag.FlagSet {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	fs.StringVar(&v.addr, "metrics-addr", "", "")
	fs.StringVar(&v.peers, "peers", "", "")
	fs.StringVar(&v.level, "log-level", "info", "")
	fs.DurationVar(&v.hb, "heartbeat-interval", 100*time.Millisecond, "")
	fs.Uint64Var(&v.id, "id", 1, "")
	fs.BoolVar(&v.nosync, "unsafe-no-fsync", false, "")
	fs.String("config", "", "")
	return fs
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "raftd.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{"metrics-addr": "RAFTD_METRICS_ADDR", "log-format": "RAFTD_LOG_FORMAT", "id": "RAFTD_ID", "unsafe-no-fsync": "RAFTD_UNSAFE_NO_FSYNC"} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPrecedence: command line > environment > file > default, flag by flag.
func TestPrecedence(t *testing.T) {
	file := writeFile(t, `
metrics-addr: 127.0.0.1:9003   # file only: wins over the default
log-level: debug               # env and file: env wins
heartbeat-interval: 300ms      # flag, env and file: flag wins
peers: ["1=127.0.0.1:7101", "2=127.0.0.1:7201"]
unsafe-no-fsync: true
`)
	env := map[string]string{"RAFTD_LOG_LEVEL": "warn", "RAFTD_HEARTBEAT_INTERVAL": "200ms", "RAFTD_ID": "7"}
	var v vals
	fs := newFlags(&v)
	if err := fs.Parse([]string{"--heartbeat-interval", "150ms"}); err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, func(k string) string { return env[k] }, file, "config"); err != nil {
		t.Fatal(err)
	}
	want := vals{addr: "127.0.0.1:9003", level: "warn", hb: 150 * time.Millisecond, id: 7,
		peers: "1=127.0.0.1:7101,2=127.0.0.1:7201", nosync: true}
	if v != want {
		t.Fatalf("got %+v, want %+v", v, want)
	}
	// A flag set from the environment or the file counts as set (run
	// checks whether --raft-addr was given).
	for _, name := range []string{"metrics-addr", "log-level", "id", "heartbeat-interval"} {
		if !fs.Changed(name) {
			t.Errorf("%s not marked changed", name)
		}
	}
}

// TestNoSources leaves the defaults alone.
func TestNoSources(t *testing.T) {
	var v vals
	fs := newFlags(&v)
	if err := Apply(fs, func(string) string { return "" }, ""); err != nil {
		t.Fatal(err)
	}
	if v != (vals{level: "info", hb: 100 * time.Millisecond, id: 1}) {
		t.Fatalf("defaults changed: %+v", v)
	}
	if err := Apply(fs, nil, writeFile(t, "# nothing but a comment\n")); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}

// TestErrors: every error is one line naming the source, and nothing is
// set from a file with a bad key.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		env        map[string]string
		want       []string
	}{
		{name: "unknown key", file: "log-level: debug\nmetrics-adr: x:1\n", want: []string{"raftd.yaml:2", `unknown key "metrics-adr"`, `did you mean "metrics-addr"`}},
		{name: "underscore key", file: "metrics_addr: x:1\n", want: []string{`unknown key "metrics_addr"`, `did you mean "metrics-addr"`}},
		{name: "skipped key", file: "config: other.yaml\n", want: []string{`unknown key "config"`}},
		{name: "bad duration", file: "heartbeat-interval: soon\n", want: []string{"raftd.yaml:1", "heartbeat-interval", `"soon"`}},
		{name: "bad bool", file: "unsafe-no-fsync: maybe\n", want: []string{"raftd.yaml:1", "unsafe-no-fsync"}},
		{name: "negative id", file: "id: -1\n", want: []string{"raftd.yaml:1", "id"}},
		{name: "mapping value", file: "peers:\n  1: a:1\n", want: []string{"raftd.yaml:2", "not a mapping"}},
		{name: "null value", file: "metrics-addr:\n", want: []string{"raftd.yaml:1", "no value"}},
		{name: "duplicate", file: "id: 1\nid: 2\n", want: []string{"raftd.yaml:2", "already given on line 1"}},
		{name: "not a mapping", file: "- id\n- 2\n", want: []string{"raftd.yaml:1", "mapping"}},
		{name: "bad yaml", file: "id: [1\n", want: []string{"raftd.yaml"}},
		{name: "bad env", env: map[string]string{"RAFTD_HEARTBEAT_INTERVAL": "fast"}, want: []string{`RAFTD_HEARTBEAT_INTERVAL="fast"`}},
		{name: "missing file", want: []string{"config:", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "missing.yaml")
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			var v vals
			err := Apply(newFlags(&v), func(k string) string { return tc.env[k] }, path, "config")
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if v.level != "info" {
				t.Errorf("log-level set to %q from a file with an unknown key", v.level)
			}
		})
	}
}

func TestLargeFile(t *testing.T) {
	p := writeFile(t, "id: 1\n#"+strings.Repeat("x", maxFileBytes)+"\n")
	var v vals
	if err := Apply(newFlags(&v), nil, p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("got %v", err)
	}
}
