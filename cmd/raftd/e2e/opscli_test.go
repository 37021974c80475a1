package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// TestVersion: `raftd version` names the version, commit and Go version;
// --json carries the same fields.
func TestVersion(t *testing.T) {
	code, out, stderr := raftd(t, nil, "version")
	if code != 0 || stderr != "" || !regexp.MustCompile(`(?s)^raftd \S+\ncommit \S+.*\ngo1\.\d+\S* \w+/\w+\n$`).MatchString(out) {
		t.Fatalf("version: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	code, out, _ = raftd(t, nil, "version", "--json")
	var v struct{ Version, Commit, GoVersion, Platform string }
	if err := json.Unmarshal([]byte(out), &struct {
		Version   *string `json:"version"`
		Commit    *string `json:"commit"`
		GoVersion *string `json:"go_version"`
		Platform  *string `json:"platform"`
	}{&v.Version, &v.Commit, &v.GoVersion, &v.Platform}); code != 0 || err != nil {
		t.Fatalf("version --json: exit %d, %q: %v", code, out, err)
	}
	if v.Version == "" || v.Commit == "" || !strings.HasPrefix(v.GoVersion, "go1.") || v.Platform == "" || !strings.Contains(out, v.Version) {
		t.Fatalf("version --json: %+v", v)
	}
}

// TestCompletion: the bash script loads, and completes subcommands and
// flags through the binary; zsh and fish scripts are produced; another
// shell is a usage error.
func TestCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	complete := func(line string) string {
		t.Helper()
		// The script uses _get_comp_words_by_ref from the bash-completion
		// package; without the package, a minimal stand-in.
		script := `if [ -f /usr/share/bash-completion/bash_completion ]; then source /usr/share/bash-completion/bash_completion
else _get_comp_words_by_ref() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }; fi
source <(raftd completion bash) || exit 1
complete -p raftd >/dev/null || exit 1
COMP_LINE="` + line + `"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
__start_raftd raftd "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command(bash, "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash completion of %q: %v\n%s", line, err, out)
		}
		return string(out)
	}
	if got := complete("raftd sna"); !strings.Contains(got, "snapshot") {
		t.Errorf("raftd sna<TAB>: %q, want snapshot", got)
	}
	if got := complete("raftd snapshot "); !strings.Contains(got, "save") || !strings.Contains(got, "restore") {
		t.Errorf("raftd snapshot <TAB>: %q", got)
	}
	if got := complete("raftd run --log-f"); !strings.Contains(got, "--log-format") {
		t.Errorf("raftd run --log-f<TAB>: %q", got)
	}
	for _, sh := range []string{"zsh", "fish"} {
		if code, out, _ := raftd(t, nil, "completion", sh); code != 0 || !strings.Contains(out, "raftd") {
			t.Errorf("completion %s: exit %d, %d bytes", sh, code, len(out))
		}
	}
	if code, _, stderr := raftd(t, nil, "completion", "tcsh"); code != 2 || !strings.Contains(stderr, `unknown shell "tcsh"`) {
		t.Errorf("completion tcsh: exit %d, %q", code, stderr)
	}
}

// logRecords reads the JSON log records in a node's log file (the harness
// writes "=== start" lines between runs); every other line must be one
// JSON object with time, level, msg and node.
func logRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "=== start ") {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %q: %v", line, err)
			continue
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k].(string); !ok {
				t.Errorf("log record without %s: %q", k, line)
			}
		}
		if rec["node"] != 1.0 {
			t.Errorf("log record without node=1: %q", line)
		}
		recs = append(recs, rec)
	}
	return recs
}

func isPositive(v any) bool {
	f, ok := v.(float64)
	return ok && f > 0
}

// startOne starts node 1 alone with args (after run --fsm --data-dir
// --raft-addr --api-addr) and env, and waits for it to serve.
func startOne(t *testing.T, dir string, env []string, args ...string) (*cluster, *proc) {
	t.Helper()
	c := &cluster{t: t, nodes: map[uint64]*proc{}, conns: map[string]*grpc.ClientConn{}}
	p := &proc{id: 1, apiAddr: freeAddr(t), raftAddr: freeAddr(t), dataDir: filepath.Join(dir, "n1"), logPath: filepath.Join(dir, "n1.log"), env: env}
	p.args = append([]string{"run", "--fsm", bin("raftd-fsm-kv"), "--data-dir", p.dataDir, "--raft-addr", p.raftAddr, "--api-addr", p.apiAddr}, args...)
	c.nodes[1], c.ids = p, []uint64{1}
	t.Cleanup(c.cleanup)
	c.start(1)
	c.waitLeader(20*time.Second, 0)
	return c, p
}

// TestConfigPrecedenceAndJSONLogs runs a node whose flags come from a
// config file, the environment and the command line: the flag wins over
// the environment, which wins over the file, as its logs and endpoints
// show. Its logs are JSON (from the file): every line one object with the
// common fields; plugin records name the plugin and its pid.
func TestConfigPrecedenceAndJSONLogs(t *testing.T) {
	dir := t.TempDir()
	fileAddr, envAddr, flagAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	conf := filepath.Join(dir, "raftd.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("log-format: json\nlog-level: debug\nmetrics-addr: %s\nsnapshot-entries: 77\n", fileAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"RAFTD_CONFIG=" + conf, "RAFTD_LOG_LEVEL=info", "RAFTD_METRICS_ADDR=" + envAddr}
	c, p := startOne(t, dir, env, "--metrics-addr", flagAddr)
	c.mustApply(1, `{"op":"put","key":"a","value":"1"}`, 10*time.Second)
	if code, _, err := get(t, "http://"+flagAddr+"/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("--metrics-addr (flag) not served: %d %v", code, err)
	}
	for _, a := range []string{envAddr, fileAddr} {
		if _, _, err := get(t, "http://"+a+"/healthz"); err == nil {
			t.Fatalf("metrics served on %s too: the flag must win", a)
		}
	}
	if err := c.stop(1); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	recs := logRecords(t, p.logPath)
	msgs := map[string]map[string]any{}
	for _, r := range recs {
		msg := r["msg"].(string)
		if strings.HasPrefix(msg, "metrics: serving") {
			msg = "metrics: serving"
		}
		msgs[msg] = r
		if r["level"] == "DEBUG" {
			t.Errorf("debug record logged at RAFTD_LOG_LEVEL=info (the environment must win over the file's debug): %v", r)
		}
	}
	if r := msgs["metrics: serving"]; r == nil || r["url"] != "http://"+flagAddr {
		t.Errorf("metrics record %v, want url http://%s", r, flagAddr)
	}
	if r := msgs["serving"]; r == nil || r["api"] != p.apiAddr || r["raft"] != p.raftAddr {
		t.Errorf("serving record %v", r)
	}
	if msgs["stopping"] == nil {
		t.Errorf("no stopping record")
	}
	if r := msgs["plugin process exited"]; r == nil || r["plugin"] != "raftd-fsm-kv" || !isPositive(r["pid"]) {
		t.Errorf("plugin exit record %v, want plugin and a numeric pid", r)
	}

	// Without the flag the environment's address is the one served; the
	// file still sets what neither overrides (JSON logs).
	p.args = p.args[:len(p.args)-2]
	c.start(1)
	c.waitLeader(20*time.Second, 0)
	if code, _, err := get(t, "http://"+envAddr+"/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("RAFTD_METRICS_ADDR not served: %d %v", code, err)
	}
	if err := c.stop(1); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if n := len(logRecords(t, p.logPath)); n <= len(recs) {
		t.Fatalf("second run logged no JSON records")
	}
	// A bad key in the file: one line, exit 2, before anything starts.
	if err := os.WriteFile(conf, []byte("log-format: json\nmetrics-adress: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string(nil), p.args...)
	code, _, stderr := raftd(t, env, args...)
	if code != 2 {
		t.Fatalf("unknown config key: exit %d, %q", code, stderr)
	}
	oneLineErr(t, args, stderr, `raftd.yaml:2: unknown key "metrics-adress"`)
}

// progressLine is a plain progress line of a transfer with a known size.
var progressLine = regexp.MustCompile(`^(snapshot save|snapshot restore): [0-9.]+ [KMG]?i?B of ([0-9.]+ [KMG]?i?B) \((\d+)%\), `)

// checkProgress checks that stderr reports what in tenths up to 100%.
func checkProgress(t *testing.T, what, stderr string) {
	t.Helper()
	var pcts []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if m := progressLine.FindStringSubmatch(l); m != nil && m[1] == what {
			pcts = append(pcts, m[3])
		}
	}
	if len(pcts) < 3 || pcts[len(pcts)-1] != "100" {
		t.Fatalf("%s progress: %v in stderr %q", what, pcts, stderr)
	}
}

// TestProgressAndJSON: snapshot save of a few MB of state reports its
// progress in percent of the size the node announces (stdout stays one
// line), restore too; members, leader and bench print JSON.
func TestProgressAndJSON(t *testing.T) {
	c := newCluster(t, 3, bin("raftd-fsm-kv"))
	lead, _ := c.waitLeader(10*time.Second, 0)
	val := strings.Repeat("v", 256<<10)
	for i := range 16 { // 4 MiB of values
		c.mustApply(lead, fmt.Sprintf(`{"op":"put","key":"big%02d","value":"%s"}`, i, val), 20*time.Second)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "backup.snap")
	code, out, stderr := raftd(t, nil, "snapshot", "save", "--new", "--progress", "--addr", c.nodes[lead].apiAddr, file)
	if code != 0 {
		t.Fatalf("snapshot save: %d %q %q", code, out, stderr)
	}
	checkProgress(t, "snapshot save", stderr)
	fi, err := os.Stat(file)
	if err != nil || fi.Size() < 4<<20 {
		t.Fatalf("snapshot file: %v, %v", fi, err)
	}
	if want := fmt.Sprintf("(%d bytes) from leader %d to %s\n", fi.Size(), lead, file); !strings.HasSuffix(out, want) || strings.Count(out, "\n") != 1 {
		t.Fatalf("snapshot save stdout %q, want one line ending %q", out, want)
	}
	// Without --progress and without a terminal: nothing on stderr.
	code, _, stderr = raftd(t, nil, "snapshot", "save", "--addr", c.nodes[lead].apiAddr, filepath.Join(dir, "quiet.snap"))
	if code != 0 || stderr != "" {
		t.Fatalf("snapshot save without --progress: exit %d, stderr %q", code, stderr)
	}
	code, out, stderr = raftd(t, nil, "snapshot", "restore", "--progress", file, "--data-dir", filepath.Join(dir, "r1"), "--raft-addr", freeAddr(t))
	if code != 0 || !strings.HasPrefix(out, "restored ") {
		t.Fatalf("snapshot restore: %d %q %q", code, out, stderr)
	}
	checkProgress(t, "snapshot restore", stderr)

	all := c.nodes[1].apiAddr + "," + c.nodes[2].apiAddr + "," + c.nodes[3].apiAddr
	var members struct {
		Leader  uint64 `json:"leader"`
		Members []struct {
			ID       uint64 `json:"id"`
			RaftAddr string `json:"raft_addr"`
			Learner  *bool  `json:"learner"`
		} `json:"members"`
	}
	code, out, stderr = raftd(t, nil, "members", "--json", "--addr", all)
	if err := json.Unmarshal([]byte(out), &members); code != 0 || err != nil || members.Leader != lead || len(members.Members) != 3 ||
		members.Members[0].RaftAddr == "" || members.Members[0].Learner == nil {
		t.Fatalf("members --json: %d %q %q: %v", code, out, stderr, err)
	}
	var leader struct {
		ID      uint64 `json:"id"`
		APIAddr string `json:"api_addr"`
		Term    uint64 `json:"term"`
	}
	code, out, _ = raftd(t, nil, "leader", "--json", "--addr", all)
	if err := json.Unmarshal([]byte(out), &leader); code != 0 || err != nil || leader.ID != lead || leader.APIAddr != c.nodes[lead].apiAddr || leader.Term == 0 {
		t.Fatalf("leader --json: %d %q: %v", code, out, err)
	}
	var sum struct {
		Ops          int     `json:"ops"`
		OpsPerSecond float64 `json:"ops_per_second"`
		P99          float64 `json:"p99_ms"`
	}
	code, out, stderr = raftd(t, nil, "bench", "--json", "--progress", "--addr", all, "--clients", "4", "--duration", "2s")
	if err := json.Unmarshal([]byte(out), &sum); code != 0 || err != nil || sum.Ops == 0 || sum.OpsPerSecond <= 0 || sum.P99 <= 0 {
		t.Fatalf("bench --json: %d %q %q: %v", code, out, stderr, err)
	}
	if !regexp.MustCompile(`(?m)^bench: 2s/2s: \d+ puts \(\d+/s\), 0 errors$`).MatchString(stderr) {
		t.Fatalf("bench --progress: no progress line in %q", stderr)
	}
	// Linearizable gets of keys bench puts first.
	code, out, stderr = raftd(t, nil, "bench", "--op", "get", "--keys", "200", "--json", "--progress", "--addr", all, "--clients", "4", "--duration", "1s")
	if err := json.Unmarshal([]byte(out), &sum); code != 0 || err != nil || sum.Ops == 0 || sum.OpsPerSecond <= 0 || sum.P99 <= 0 {
		t.Fatalf("bench --op get --json: %d %q %q: %v", code, out, stderr, err)
	}
	if !strings.Contains(stderr, "putting the 200 keys the gets read") || !regexp.MustCompile(`(?m)^bench: 1s/1s: \d+ gets \(\d+/s\), 0 errors$`).MatchString(stderr) {
		t.Fatalf("bench --op get --progress: %q", stderr)
	}
	if code, _, stderr = raftd(t, nil, "bench", "--op", "scan", "--addr", all); code != 2 || !strings.HasPrefix(stderr, "raftd: bench: --op \"scan\": want put or get\n") {
		t.Fatalf("bench --op scan: exit %d, stderr %q", code, stderr)
	}
}
