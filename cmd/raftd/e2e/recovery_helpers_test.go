package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/raftd/raftd/core/server"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// rcluster is a cluster for the recovery tests: nodes may carry their own
// environment (for the misbehaving test plugin) and some may be left
// unstarted at first (a member listed in --peers that boots late).
type rcluster struct {
	*cluster
}

// rclusterOpts configures newRCluster.
type rclusterOpts struct {
	n     int
	fsm   string
	extra []string
	// fsmFor overrides the plugin of some nodes.
	fsmFor map[uint64]string
	// env is added to the environment of a node's process.
	env map[uint64][]string
	// later lists nodes that are not started by newRCluster.
	later []uint64
}

// newRCluster starts a cluster like newCluster, with per-node environment
// and late nodes, and waits for a leader among the started nodes.
func newRCluster(t *testing.T, o rclusterOpts) *rcluster {
	t.Helper()
	c := &cluster{t: t, fsm: o.fsm, nodes: map[uint64]*proc{}, conns: map[string]*grpc.ClientConn{}}
	r := &rcluster{cluster: c}
	var peers []string
	dir := t.TempDir()
	for i := 1; i <= o.n; i++ {
		p := &proc{id: uint64(i), apiAddr: freeAddr(t), raftAddr: freeAddr(t),
			dataDir: filepath.Join(dir, fmt.Sprintf("n%d", i)), logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i))}
		p.env = o.env[p.id]
		c.nodes[p.id] = p
		c.ids = append(c.ids, p.id)
		peers = append(peers, fmt.Sprintf("%d=%s", i, p.raftAddr))
	}
	for _, id := range c.ids {
		p := c.nodes[id]
		fsm := o.fsm
		if f, ok := o.fsmFor[id]; ok {
			fsm = f
		}
		p.args = append([]string{"run", "--fsm", fsm, "--id", fmt.Sprint(id), "--data-dir", p.dataDir,
			"--raft-addr", p.raftAddr, "--api-addr", p.apiAddr, "--peers", strings.Join(peers, ","), "--log-level", "info"}, o.extra...)
	}
	t.Cleanup(c.cleanup)
	for _, id := range c.ids {
		if !contains(o.later, id) {
			r.start(id)
		}
	}
	c.waitLeader(30*time.Second, 0, o.later...)
	return r
}

// pid returns node id's raftd process id (0 if not running).
func (r *rcluster) pid(id uint64) int {
	p := r.nodes[id]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	select {
	case <-p.exited:
		return 0
	default:
	}
	return p.cmd.Process.Pid
}

// exitedCh returns the channel closed when node id's process exits.
func (r *rcluster) exitedCh(id uint64) <-chan struct{} {
	p := r.nodes[id]
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// exitErr returns how node id's last process ended.
func (r *rcluster) exitErr(id uint64) error {
	p := r.nodes[id]
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// childPIDs lists the child processes of pid, from /proc/<pid>/task/*/children.
func childPIDs(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	sort.Ints(out)
	return out
}

// pluginPID returns the pid of node id's plugin process: the child of its
// raftd process whose command line is the --fsm binary. 0 if none.
func (r *rcluster) pluginPID(id uint64) int {
	pid := r.pid(id)
	if pid == 0 {
		return 0
	}
	fsm := ""
	args := r.nodes[id].args
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--fsm" {
			fsm = args[i+1]
		}
	}
	for _, c := range childPIDs(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c))
		if err != nil {
			continue
		}
		argv0, _, _ := strings.Cut(string(b), "\x00")
		if argv0 == fsm {
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
			if err == nil && procState(st) == "Z" {
				continue // reaped soon; not the live plugin
			}
			return c
		}
	}
	return 0
}

// procState is the state field of a /proc/<pid>/stat line.
func procState(stat []byte) string {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// waitPluginPID waits until node id runs a plugin process other than not.
func (r *rcluster) waitPluginPID(id uint64, not int, d time.Duration) int {
	r.t.Helper()
	var pid int
	waitFor(r.t, d, func() (bool, string) {
		pid = r.pluginPID(id)
		return pid != 0 && pid != not, fmt.Sprintf("node %d plugin pid %d (old %d)", id, pid, not)
	})
	return pid
}

// vmHWM returns the peak resident set size of pid in bytes (VmHWM).
func vmHWM(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			fs := strings.Fields(v)
			if len(fs) > 0 {
				kb, _ := strconv.ParseInt(fs[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// waitFor polls cond until it holds, failing the test with cond's last
// description after d.
func waitFor(t *testing.T, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for {
		ok, desc := cond()
		if ok {
			return
		}
		last = desc
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logText returns node id's log file.
func (r *rcluster) logText(id uint64) string {
	b, _ := os.ReadFile(r.nodes[id].logPath)
	return string(b)
}

// logSince returns node id's log after its last "=== start" line.
func (r *rcluster) logSince(id uint64) string {
	s := r.logText(id)
	if i := strings.LastIndex(s, "=== start "); i >= 0 {
		return s[i:]
	}
	return s
}

// restoredSnapshotAt returns the index of the last "restored snapshot" that
// raft logged on node id since its last start (0 if none).
func (r *rcluster) restoredSnapshotAt(id uint64) uint64 {
	var idx uint64
	for _, line := range strings.Split(r.logSince(id), "\n") {
		_, rest, ok := strings.Cut(line, "restored snapshot [index ")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		if v, err := strconv.ParseUint(n, 10, 64); err == nil {
			idx = v
		}
	}
	return idx
}

// mustStatus returns node id's local status.
func (r *rcluster) mustStatus(id uint64) *apiv1.NodeStatus {
	r.t.Helper()
	var st *apiv1.NodeStatus
	waitFor(r.t, 10*time.Second, func() (bool, string) {
		var err error
		st, err = r.localStatus(id, time.Second)
		return err == nil, fmt.Sprintf("status of node %d: %v", id, err)
	})
	return st
}

// leader returns the current leader among the running nodes.
func (r *rcluster) leader(skip ...uint64) uint64 {
	r.t.Helper()
	l, _ := r.waitLeader(30*time.Second, 0, skip...)
	return l
}

// loadStats counts the outcomes of a load run.
type loadStats struct {
	acked, notApplied, unknown atomic.Int64
}

// putLoad applies the commands cmd(0..n-1) with `clients` concurrent
// clients against the nodes returned by target, retrying refusals that
// certainly were not applied and outcomes that are unknown (the commands
// must be idempotent). It returns when every command is acknowledged or
// fails the test after d.
func (r *rcluster) putLoad(n, clients int, d time.Duration, target func() uint64, cmd func(i int) []byte) *loadStats {
	r.t.Helper()
	st := &loadStats{}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failMu sync.Mutex
	var failErr error
	for cl := 0; cl < clients; cl++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c := cmd(i)
				for {
					if ctx.Err() != nil {
						failMu.Lock()
						if failErr == nil {
							failErr = fmt.Errorf("command %d not acknowledged within %s", i, d)
						}
						failMu.Unlock()
						return
					}
					id := target()
					actx, acancel := context.WithTimeout(ctx, 5*time.Second)
					var tr metadata.MD
					_, err := r.client(id).Apply(actx, &apiv1.ApplyRequest{Command: c}, grpc.Trailer(&tr))
					acancel()
					if err == nil {
						st.acked.Add(1)
						break
					}
					if server.IsNotApplied(tr) {
						st.notApplied.Add(1)
					} else {
						st.unknown.Add(1)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if failErr != nil {
		r.t.Fatalf("load: %v (acked %d, refused %d, unknown %d)", failErr, st.acked.Load(), st.notApplied.Load(), st.unknown.Load())
	}
	return st
}

// kvPut encodes a kv put.
func kvPut(key, value string) []byte {
	b, _ := json.Marshal(map[string]string{"op": "put", "key": key, "value": value})
	return b
}

// leaderTarget returns a target function for putLoad: the leader it last
// saw among the nodes not in skip, re-resolved every 256 calls and
// whenever that node's process is gone (followers forward in between).
func (r *rcluster) leaderTarget(skip ...uint64) func() uint64 {
	var cur atomic.Uint64
	var calls atomic.Int64
	cur.Store(r.leader(skip...))
	resolve := func() {
		for _, id := range r.ids {
			if contains(skip, id) || r.pid(id) == 0 {
				continue
			}
			st, err := r.localStatus(id, 300*time.Millisecond)
			if err == nil && st.GetLeader() != 0 && !contains(skip, st.GetLeader()) && r.pid(st.GetLeader()) != 0 {
				cur.Store(st.GetLeader())
				return
			}
		}
		// No leader known: any running node refuses or forwards.
		for _, id := range r.ids {
			if !contains(skip, id) && r.pid(id) != 0 {
				cur.Store(id)
				return
			}
		}
	}
	return func() uint64 {
		if calls.Add(1)%256 == 0 || r.pid(cur.Load()) == 0 {
			resolve()
		}
		return cur.Load()
	}
}

// killPID sends SIGKILL to exactly pid.
func killPID(t *testing.T, pid int) {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("refusing to kill pid %d", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
}

// snapFiles lists the committed and temporary snapshot files of a data dir.
func snapFiles(dataDir string) (committed, tmp []string) {
	ents, _ := os.ReadDir(filepath.Join(dataDir, "snapshots"))
	for _, e := range ents {
		switch {
		case strings.HasSuffix(e.Name(), ".snap"):
			committed = append(committed, filepath.Join(dataDir, "snapshots", e.Name()))
		case strings.HasSuffix(e.Name(), ".tmp"):
			tmp = append(tmp, filepath.Join(dataDir, "snapshots", e.Name()))
		}
	}
	sort.Strings(committed)
	return committed, tmp
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// logTime returns the time of the first line of node id's log since its
// last start that contains substr (log lines begin with a local
// "15:04:05.000" time of day); ok is false if there is none.
func (r *rcluster) logTime(id uint64, substr string) (time.Time, bool) {
	for _, line := range strings.Split(r.logSince(id), "\n") {
		if !strings.Contains(line, substr) || len(line) < 12 {
			continue
		}
		tod, err := time.ParseInLocation("15:04:05.000", line[:12], time.Local)
		if err != nil {
			continue
		}
		now := time.Now()
		t := time.Date(now.Year(), now.Month(), now.Day(), tod.Hour(), tod.Minute(), tod.Second(), tod.Nanosecond(), time.Local)
		if t.After(now.Add(time.Minute)) {
			t = t.AddDate(0, 0, -1) // logged before midnight
		}
		return t, true
	}
	return time.Time{}, false
}
