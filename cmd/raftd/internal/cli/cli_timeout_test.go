package cli

import (
	"strings"
	"testing"
	"time"
)

// TestPluginTimeoutFlags checks that the plugin timeouts of `raftd run` and
// `raftd dev` reject zero, negative and unparsable values as usage errors
// (exit 2) with a one-line message naming the flag, before anything starts.
func TestPluginTimeoutFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"run", "--fsm", "x", "--plugin-apply-timeout", "0"}, "run: --plugin-apply-timeout must be positive, got 0s"},
		{[]string{"run", "--fsm", "x", "--plugin-apply-timeout", "-5s"}, "run: --plugin-apply-timeout must be positive, got -5s"},
		{[]string{"run", "--fsm", "x", "--plugin-apply-timeout", "banana"}, `invalid argument "banana" for "--plugin-apply-timeout" flag`},
		{[]string{"run", "--fsm", "x", "--plugin-call-timeout", "0s"}, "run: --plugin-call-timeout must be positive, got 0s"},
		{[]string{"run", "--fsm", "x", "--plugin-call-timeout", "banana"}, `invalid argument "banana" for "--plugin-call-timeout" flag`},
		{[]string{"dev", "--fsm", "x", "--plugin-apply-timeout", "0"}, "dev: --plugin-apply-timeout must be positive, got 0s"},
		{[]string{"dev", "--fsm", "x", "--plugin-apply-timeout", "banana"}, `invalid argument "banana" for "--plugin-apply-timeout" flag`},
	} {
		code, stdout, stderr := run(t, nil, tc.args...)
		if code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tc.args, code, ExitUsage, stderr)
		}
		if stdout != "" {
			t.Errorf("%v: stdout %q, want nothing", tc.args, stdout)
		}
		// One error line, then the usage hint every usage error gets.
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		if len(lines) != 2 || lines[1] != "Run 'raftd --help' for usage." {
			t.Errorf("%v: stderr is not one error line plus the usage hint:\n%s", tc.args, stderr)
			continue
		}
		if !strings.HasPrefix(lines[0], "raftd: ") || !strings.Contains(lines[0], tc.msg) {
			t.Errorf("%v: error line %q lacks %q", tc.args, lines[0], tc.msg)
		}
	}
}

// TestPluginTimeoutDefaults checks the documented defaults and that set
// values reach the options that configure the plugin host.
func TestPluginTimeoutDefaults(t *testing.T) {
	var got *RunOptions
	cmd := NewCmdRun(&Factory{}, func(o *RunOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"--fsm", "x"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.PluginApplyTimeout != 30*time.Second || got.PluginCallTimeout != 10*time.Second {
		t.Fatalf("defaults: apply %s, call %s; want 30s, 10s", got.PluginApplyTimeout, got.PluginCallTimeout)
	}
	cmd = NewCmdRun(&Factory{}, func(o *RunOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"--fsm", "x", "--plugin-apply-timeout", "3s", "--plugin-call-timeout", "1500ms"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.PluginApplyTimeout != 3*time.Second || got.PluginCallTimeout != 1500*time.Millisecond {
		t.Fatalf("set: apply %s, call %s; want 3s, 1.5s", got.PluginApplyTimeout, got.PluginCallTimeout)
	}

	var dev *DevOptions
	dcmd := NewCmdDev(&Factory{}, func(o *DevOptions) error { dev = o; return nil })
	dcmd.SetArgs([]string{"--fsm", "x", "--plugin-apply-timeout", "2s"})
	if err := dcmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if dev.PluginApplyTimeout != 2*time.Second || dev.PluginCallTimeout != 10*time.Second {
		t.Fatalf("dev: apply %s, call %s; want 2s, 10s", dev.PluginApplyTimeout, dev.PluginCallTimeout)
	}
}
