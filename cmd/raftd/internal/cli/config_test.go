package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunConfigSources: run's flags come from the command line, then
// RAFTD_<FLAG>, then --config FILE (or $RAFTD_CONFIG); dev's too.
func TestRunConfigSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "raftd.yaml")
	if err := os.WriteFile(file, []byte("fsm: /bin/true\nlog-format: json\nlog-level: debug\nheartbeat-interval: 200ms\nmetrics-addr: 127.0.0.1:9101\npeers: [1=127.0.0.1:7101, 2=127.0.0.1:7201]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"RAFTD_LOG_LEVEL": "warn", "RAFTD_METRICS_ADDR": "127.0.0.1:9102", "RAFTD_CONFIG": file}
	var got *RunOptions
	f := &Factory{Getenv: func(k string) string { return env[k] }}
	cmd := NewCmdRun(f, func(o *RunOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"--metrics-addr", "127.0.0.1:9103"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.FSMPath != "/bin/true" || got.LogFormat != "json" || got.LogLevel != "warn" || got.MetricsAddr != "127.0.0.1:9103" ||
		got.HeartbeatInterval != 200*time.Millisecond || got.RaftAddr != "127.0.0.1:7101" || len(got.Config.Peers) != 2 {
		t.Fatalf("options %+v", got)
	}
	var dev *DevOptions
	cmd = NewCmdDev(f, func(o *DevOptions) error { dev = o; return nil })
	env["RAFTD_NODES"] = "5"
	cmd.SetArgs([]string{"--fsm", "/bin/true", "--config", filepath.Join(dir, "dev.yaml")})
	if err := os.WriteFile(filepath.Join(dir, "dev.yaml"), []byte("nodes: 4\nlog-format: json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if dev.Nodes != 5 || dev.LogFormat != "json" || dev.LogLevel != "warn" {
		t.Fatalf("dev options %+v", dev)
	}
}

// TestRunConfigErrors: a bad file, key or value is one line, exit 2.
func TestRunConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		msg  string
	}{
		{args: []string{"--config", write("a.yaml", "fsm: x\nmetrcs-addr: a:1\n")}, msg: `a.yaml:2: unknown key "metrcs-addr" (did you mean "metrics-addr"?)`},
		{args: []string{"--config", write("b.yaml", "fsm: x\nelection-timeout: soon\n")}, msg: `b.yaml:2: election-timeout: "soon"`},
		{args: []string{"--config", filepath.Join(dir, "missing.yaml")}, msg: "no such file"},
		{env: map[string]string{"RAFTD_CONFIG": write("c.yaml", "fsm: [x\n")}, msg: "c.yaml"},
		{env: map[string]string{"RAFTD_ID": "one"}, args: []string{"--fsm", "x"}, msg: `RAFTD_ID="one"`},
		{env: map[string]string{"RAFTD_LOG_FORMAT": "xml"}, args: []string{"--fsm", "x"}, msg: `log format "xml" is not text or json`},
		{args: []string{"--fsm", "x", "--log-level", "loud"}, msg: `log level "loud" is not debug, info, warn or error`},
	} {
		code, stdout, stderr := run(t, tc.env, append([]string{"run"}, tc.args...)...)
		first, rest, _ := strings.Cut(stderr, "\n")
		if code != ExitUsage || stdout != "" || !strings.HasPrefix(first, "raftd: run: ") || !strings.Contains(first, tc.msg) ||
			rest != "Run 'raftd --help' for usage.\n" {
			t.Errorf("run %v (env %v): exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tc.args, tc.env, code, stdout, stderr, tc.msg)
		}
	}
}
