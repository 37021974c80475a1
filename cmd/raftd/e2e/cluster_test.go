package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// freeAddr returns a loopback address that was free a moment ago. Ports
// come from below the kernel's ephemeral range (32768+ by default), so an
// outgoing connection cannot take the port before the node binds it.
func freeAddr(t *testing.T) string {
	t.Helper()
	for i := 0; i < 200; i++ {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000)))
		if err != nil {
			continue
		}
		a := l.Addr().String()
		l.Close()
		return a
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is one raftd process (restartable with the same arguments).
type proc struct {
	id       uint64
	apiAddr  string
	raftAddr string
	dataDir  string
	logPath  string
	args     []string
	env      []string // added to the process environment
	exe      string   // the raftd binary, if not bin("raftd")

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// cluster is a set of raftd processes started by one test.
type cluster struct {
	t     *testing.T
	fsm   string
	nodes map[uint64]*proc
	ids   []uint64

	// creds, if set, are the client API's transport credentials (TLS).
	creds credentials.TransportCredentials

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn
}

// newCluster starts n nodes with plugin fsm and extra `raftd run` flags, and
// waits for a leader.
func newCluster(t *testing.T, n int, fsm string, extra ...string) *cluster {
	t.Helper()
	return startCluster(t, n, fsm, nil, nil, extra...)
}

// startCluster is newCluster with client credentials creds (nil:
// plaintext) and, if nodeArgs is set, flags of each node's own.
func startCluster(t *testing.T, n int, fsm string, creds credentials.TransportCredentials, nodeArgs func(id uint64) []string, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, fsm: fsm, nodes: map[uint64]*proc{}, conns: map[string]*grpc.ClientConn{}, creds: creds}
	var peers []string
	dir := t.TempDir()
	for i := 1; i <= n; i++ {
		p := &proc{id: uint64(i), apiAddr: freeAddr(t), raftAddr: freeAddr(t),
			dataDir: filepath.Join(dir, fmt.Sprintf("n%d", i)), logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i))}
		c.nodes[p.id] = p
		c.ids = append(c.ids, p.id)
		peers = append(peers, fmt.Sprintf("%d=%s", i, p.raftAddr))
	}
	for _, id := range c.ids {
		p := c.nodes[id]
		p.args = append([]string{"run", "--fsm", fsm, "--id", fmt.Sprint(id), "--data-dir", p.dataDir,
			"--raft-addr", p.raftAddr, "--api-addr", p.apiAddr, "--peers", strings.Join(peers, ","), "--log-level", "info"}, extra...)
		if nodeArgs != nil {
			p.args = append(p.args, nodeArgs(id)...)
		}
	}
	t.Cleanup(c.cleanup)
	for _, id := range c.ids {
		c.start(id)
	}
	c.waitLeader(20*time.Second, 0)
	return c
}

// start (re)starts node id in the background.
func (c *cluster) start(id uint64) {
	c.t.Helper()
	p := c.nodes[id]
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	fmt.Fprintf(logf, "=== start %s\n", strings.Join(p.args, " "))
	exe := bin("raftd")
	if p.exe != "" {
		exe = p.exe
	}
	cmd := exec.Command(exe, p.args...)
	if p.env != nil {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("start node %d: %v", id, err)
	}
	p.mu.Lock()
	p.cmd, p.exited, p.err = cmd, make(chan struct{}), nil
	exited := p.exited
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(exited)
	}()
}

// signal sends sig to node id's process.
func (c *cluster) signal(id uint64, sig syscall.Signal) {
	p := c.nodes[id]
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(sig)
	}
}

// kill -9s node id and waits for it to exit.
func (c *cluster) kill(id uint64) {
	c.signal(id, syscall.SIGKILL)
	c.waitExit(id, 10*time.Second)
}

// stop sends SIGTERM and waits for a clean exit.
func (c *cluster) stop(id uint64) error {
	c.signal(id, syscall.SIGTERM)
	return c.waitExit(id, 20*time.Second)
}

func (c *cluster) waitExit(id uint64, d time.Duration) error {
	p := c.nodes[id]
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return nil
	}
	select {
	case <-exited:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	case <-time.After(d):
		c.t.Fatalf("node %d did not exit within %s", id, d)
		return nil
	}
}

func (c *cluster) cleanup() {
	for _, id := range c.ids {
		p := c.nodes[id]
		p.mu.Lock()
		cmd, exited := p.cmd, p.exited
		p.mu.Unlock()
		if cmd != nil && cmd.Process != nil {
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	c.connMu.Lock()
	for _, cc := range c.conns {
		cc.Close()
	}
	c.connMu.Unlock()
	if c.t.Failed() {
		for _, id := range c.ids {
			b, _ := os.ReadFile(c.nodes[id].logPath)
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			c.t.Logf("--- node %d log (tail) ---\n%s", id, strings.Join(lines, "\n"))
		}
	}
}

// client returns an API client for node id.
func (c *cluster) client(id uint64) apiv1.RaftdClient {
	addr := c.nodes[id].apiAddr
	c.connMu.Lock()
	defer c.connMu.Unlock()
	cc, ok := c.conns[addr]
	if !ok {
		creds := c.creds
		if creds == nil {
			creds = insecure.NewCredentials()
		}
		var err error
		cc, err = grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			c.t.Fatal(err)
		}
		c.conns[addr] = cc
	}
	return apiv1.NewRaftdClient(cc)
}

// localStatus asks node id about itself.
func (c *cluster) localStatus(id uint64, d time.Duration) (*apiv1.NodeStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	resp, err := c.client(id).Status(ctx, &apiv1.StatusRequest{Local: true})
	if err != nil {
		return nil, err
	}
	if len(resp.GetNodes()) != 1 {
		return nil, fmt.Errorf("local status of node %d lists %d nodes", id, len(resp.GetNodes()))
	}
	return resp.GetNodes()[0], nil
}

// waitLeader polls the nodes until they agree on a leader other than
// notID, and returns it with its term.
func (c *cluster) waitLeader(d time.Duration, notID uint64, skip ...uint64) (uint64, uint64) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		var lead, term uint64
		agree, n := true, 0
		var seen []string
		for _, id := range c.ids {
			if contains(skip, id) {
				continue
			}
			st, err := c.localStatus(id, 200*time.Millisecond)
			if err != nil {
				seen = append(seen, fmt.Sprintf("node %d: %v", id, err))
				agree = false
				continue
			}
			n++
			seen = append(seen, fmt.Sprintf("node %d sees leader %d term %d", id, st.GetLeader(), st.GetTerm()))
			if st.GetLeader() == 0 || (lead != 0 && (st.GetLeader() != lead || st.GetTerm() != term)) {
				agree = false
				continue
			}
			lead, term = st.GetLeader(), st.GetTerm()
		}
		last = strings.Join(seen, "; ")
		if agree && n > 0 && lead != notID && !contains(skip, lead) {
			return lead, term
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("no agreed leader within %s (last: %s)", d, last)
	return 0, 0
}

func contains(xs []uint64, x uint64) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// apply sends cmd to node id and returns the FSM result.
func (c *cluster) apply(ctx context.Context, id uint64, cmd string) (string, error) {
	resp, err := c.client(id).Apply(ctx, &apiv1.ApplyRequest{Command: []byte(cmd)})
	if err != nil {
		return "", err
	}
	return string(resp.GetResult()), nil
}

// query runs q on node id.
func (c *cluster) query(ctx context.Context, id uint64, q string, stale bool) (string, error) {
	cons := apiv1.Consistency_CONSISTENCY_LINEARIZABLE
	if stale {
		cons = apiv1.Consistency_CONSISTENCY_STALE
	}
	resp, err := c.client(id).Query(ctx, &apiv1.QueryRequest{Query: []byte(q), Consistency: cons})
	if err != nil {
		return "", err
	}
	return string(resp.GetResult()), nil
}

// mustApply applies cmd through node id, retrying refusals (no leader yet)
// until d passes.
func (c *cluster) mustApply(id uint64, cmd string, d time.Duration) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		res, err := c.apply(ctx, id, cmd)
		if err == nil {
			return res
		}
		if ctx.Err() != nil {
			c.t.Fatalf("apply %s via node %d: %v", cmd, id, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitConverged waits until every node in ids reports the same applied
// index, at least min, and returns it.
func (c *cluster) waitConverged(ids []uint64, min uint64, d time.Duration) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		var idx uint64
		same := true
		for i, id := range ids {
			st, err := c.localStatus(id, 500*time.Millisecond)
			if err != nil {
				last, same = fmt.Sprintf("node %d: %v", id, err), false
				break
			}
			if i == 0 {
				idx = st.GetAppliedIndex()
			} else if st.GetAppliedIndex() != idx {
				last, same = fmt.Sprintf("node %d applied %d, node %d applied %d", ids[0], idx, id, st.GetAppliedIndex()), false
				break
			}
		}
		if same && idx >= min {
			return idx
		}
		if same {
			last = fmt.Sprintf("applied %d < %d", idx, min)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("nodes %v did not converge within %s: %s", ids, d, last)
	return 0
}

// staleList returns node id's local kv list as raw JSON.
func (c *cluster) staleList(id uint64) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.query(ctx, id, `{"op":"list","prefix":"","limit":1000000}`, true)
	if err != nil {
		c.t.Fatalf("stale list on node %d: %v", id, err)
	}
	return res
}

// kvItems decodes a kv list result.
func kvItems(t *testing.T, res string) map[string]string {
	t.Helper()
	var r struct {
		Items []struct{ Key, Value string }
	}
	if err := json.Unmarshal([]byte(res), &r); err != nil {
		t.Fatalf("kv list result %q: %v", res, err)
	}
	m := make(map[string]string, len(r.Items))
	for _, it := range r.Items {
		m[it.Key] = it.Value
	}
	return m
}

// raftd runs the raftd CLI and returns its exit code and output.
func raftd(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("raftd"), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("raftd %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("raftd %v hung", args)
	}
	return code, out.String(), errb.String()
}
