package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/raftd/raftd/core/client"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
)

// cluster is a local cluster of `raftd run` processes with the kv plugin,
// on loopback, with its data in a temporary directory. Only the processes
// it started are ever signalled: the nodes, and the plugin processes the
// nodes started (by pid and start time).
type cluster struct {
	dir   string
	nodes []*node
	// seen are the nodes' children (the plugins) seen by notePlugins, for
	// stop.
	seen map[procKey]bool
}

type node struct {
	apiAddr string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// startCluster starts n nodes from the binaries in binDir (raftd,
// raftd-fsm-kv) with the extra `raftd run` flags, in a fresh directory
// under os.TempDir. The caller must call stop, also when it fails.
func startCluster(binDir string, n int, extra []string) (*cluster, error) {
	dir, err := os.MkdirTemp("", "raftd-bench-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, seen: map[procKey]bool{}}
	addrs, err := freeAddrs(2 * n)
	if err != nil {
		return c, err
	}
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("%d=%s", i+1, addrs[2*i]))
	}
	for i := range n {
		id := strconv.Itoa(i + 1)
		args := append([]string{"run", "--fsm", filepath.Join(binDir, "raftd-fsm-kv"), "--id", id,
			"--data-dir", filepath.Join(dir, "n"+id), "--raft-addr", addrs[2*i], "--api-addr", addrs[2*i+1],
			"--peers", strings.Join(peers, ",")}, extra...)
		log, err := os.Create(filepath.Join(dir, "n"+id+".log"))
		if err != nil {
			return c, err
		}
		cmd := exec.Command(filepath.Join(binDir, "raftd"), args...)
		cmd.Stdout, cmd.Stderr = log, log
		err = cmd.Start()
		log.Close() // the child has its own descriptor
		if err != nil {
			return c, fmt.Errorf("start node %s: %w", id, err)
		}
		nd := &node{apiAddr: addrs[2*i+1], cmd: cmd, exited: make(chan struct{})}
		go func() { cmd.Wait(); close(nd.exited) }()
		c.nodes = append(c.nodes, nd)
	}
	return c, nil
}

// freeAddrs returns n distinct loopback addresses that were free a moment
// ago, with ports below the kernel's ephemeral range (32768 and up by
// default), so that no outgoing connection takes one before a node binds it.
func freeAddrs(n int) ([]string, error) {
	var out []string
	used := map[int]bool{}
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			return nil, errors.New("no free loopback port found")
		}
		p := 20000 + rand.IntN(12000)
		if used[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		used[p] = true
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// apiAddrs are the nodes' client API addresses.
func (c *cluster) apiAddrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.apiAddr)
	}
	return out
}

// nodePIDs are the pids of the raftd processes.
func (c *cluster) nodePIDs() []int {
	var out []int
	for _, n := range c.nodes {
		out = append(out, n.cmd.Process.Pid)
	}
	return out
}

// exited returns an error if a node has exited.
func (c *cluster) exited() error {
	for i, n := range c.nodes {
		select {
		case <-n.exited:
			return fmt.Errorf("node %d exited: %v (log: %s)", i+1, n.cmd.ProcessState, filepath.Join(c.dir, fmt.Sprintf("n%d.log", i+1)))
		default:
		}
	}
	return nil
}

// notePlugins records the nodes' children in s, so that stop can end them
// if they outlive their node.
func (c *cluster) notePlugins(s cpuSample) {
	nodes := map[int]bool{}
	for _, p := range c.nodePIDs() {
		nodes[p] = true
	}
	for k, st := range s.procs {
		if nodes[st.ppid] {
			c.seen[k] = true
		}
	}
}

// pluginPIDs are the pids of the nodes' children seen so far, in order.
func (c *cluster) pluginPIDs() []int {
	var out []int
	for k := range c.seen {
		out = append(out, k.pid)
	}
	slices.Sort(out)
	return out
}

// leader waits until the cluster has a leader that accepts a put, and
// returns its client API address.
func (c *cluster) leader(ctx context.Context, wait time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	cl := &client.Client{Addrs: c.apiAddrs(), Timeout: 2 * time.Second}
	var last error
	for {
		if err := c.exited(); err != nil {
			return "", err
		}
		addr, err := tryLeader(ctx, cl)
		if err == nil {
			return addr, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no leader accepting puts after %s: %v", wait, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tryLeader(ctx context.Context, cl *client.Client) (string, error) {
	st, err := client.Do(ctx, cl, apiv1.RaftdClient.Status, &apiv1.StatusRequest{})
	if err != nil {
		return "", err
	}
	addr, err := client.LeaderAPIAddr(st)
	if err != nil {
		return "", err
	}
	cc, err := client.Dial(addr, nil)
	if err != nil {
		return "", err
	}
	defer cc.Close()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := apiv1.NewRaftdClient(cc).Apply(pctx, &apiv1.ApplyRequest{Command: []byte(`{"op":"put","key":"raftd-bench","value":"ready"}`)}); err != nil {
		return "", err
	}
	return addr, nil
}

// stop ends every process the cluster started: SIGTERM to the nodes, then
// SIGKILL to a node still running after 10 s, and to a plugin process that
// outlived its node. It removes the data directory unless keep.
func (c *cluster) stop(keep bool) {
	for _, n := range c.nodes {
		n.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, n := range c.nodes {
		select {
		case <-n.exited:
		case <-time.After(10 * time.Second):
			n.cmd.Process.Kill()
			<-n.exited
		}
	}
	if len(c.seen) > 0 {
		if s, err := sampleCPU("/proc"); err == nil {
			for k := range c.seen {
				if _, alive := s.procs[k]; alive {
					syscall.Kill(k.pid, syscall.SIGKILL)
				}
			}
		}
	}
	if !keep {
		os.RemoveAll(c.dir)
	}
}

// dialN dials n connections to addr.
func dialN(addr string, n int) ([]*grpc.ClientConn, error) {
	var out []*grpc.ClientConn
	for range n {
		cc, err := client.Dial(addr, nil)
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, err
		}
		out = append(out, cc)
	}
	return out, nil
}
