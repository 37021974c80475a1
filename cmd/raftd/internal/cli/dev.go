package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/raftd/raftd/core/daemon"
	"github.com/spf13/cobra"
)

// DevOptions configures `raftd dev`.
type DevOptions struct {
	FSMPath string
	Nodes   int
	DataDir string
	// BasePort, if set, puts node i's raft port at BasePort+2i-1 and its
	// API port at BasePort+2i-2; otherwise free ports are picked.
	BasePort int
	NoSync   bool
	// PluginApplyTimeout and PluginCallTimeout are passed to every node
	// (see RunOptions).
	PluginApplyTimeout time.Duration
	PluginCallTimeout  time.Duration
}

// NewCmdDev returns `raftd dev`: a local cluster in one process.
func NewCmdDev(f *Factory, runF func(*DevOptions) error) *cobra.Command {
	opts := &DevOptions{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local N-node cluster in one process, for trying raftd out",
		Long: `Dev starts --nodes nodes in this process on free loopback ports, each with
its own plugin process and its own data dir (temporary, deleted on exit,
unless --data-dir is given), prints their addresses and example commands,
and runs until Ctrl-C.`,
		Example: `  raftd dev --fsm ./bin/raftd-fsm-kv --nodes 3`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.FSMPath == "" {
				return usageErrorf("dev: --fsm is required (path to an FSM plugin binary, e.g. ./bin/raftd-fsm-kv)")
			}
			if opts.Nodes < 1 || opts.Nodes > 9 {
				return usageErrorf("dev: --nodes must be between 1 and 9")
			}
			if err := validatePluginTimeouts("dev", opts.PluginApplyTimeout, opts.PluginCallTimeout); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return runDev(cmd.Context(), f, opts)
		},
	}
	cmd.Flags().StringVar(&opts.FSMPath, "fsm", "", "path to the FSM plugin binary (required)")
	cmd.Flags().IntVar(&opts.Nodes, "nodes", 3, "number of nodes")
	cmd.Flags().StringVar(&opts.DataDir, "data-dir", "", "parent directory for the nodes' data dirs (default: a temporary directory, removed on exit)")
	cmd.Flags().IntVar(&opts.BasePort, "base-port", 0, "use fixed ports from here instead of free ones")
	cmd.Flags().BoolVar(&opts.NoSync, "unsafe-no-fsync", false, "skip fsync (faster, loses acknowledged writes on power loss)")
	addPluginTimeoutFlags(cmd, &opts.PluginApplyTimeout, &opts.PluginCallTimeout)
	return cmd
}

func listenLoopback(port int) (net.Listener, error) {
	return net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
}

func runDev(ctx context.Context, f *Factory, opts *DevOptions) error {
	if _, err := daemon.CheckPlugin(opts.FSMPath, ""); err != nil {
		return withCode(ExitFailure, err)
	}
	dir := opts.DataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "raftd-dev-")
		if err != nil {
			return withCode(ExitFailure, fmt.Errorf("dev: %w", err))
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	// Reserve every port first so that the peer list is complete.
	type lis struct{ raft, api net.Listener }
	ls := make([]lis, opts.Nodes)
	closeAll := func() {
		for _, l := range ls {
			if l.raft != nil {
				l.raft.Close()
			}
			if l.api != nil {
				l.api.Close()
			}
		}
	}
	gate := newGate(f.ErrOut)
	defer gate.Open()
	var peers []string
	for i := range ls {
		var err error
		port := func(off int) int {
			if opts.BasePort == 0 {
				return 0
			}
			return opts.BasePort + 2*i + off
		}
		if ls[i].api, err = listenLoopback(port(0)); err != nil {
			closeAll()
			return withCode(ExitFailure, fmt.Errorf("dev: api address: %w", err))
		}
		if ls[i].raft, err = listenLoopback(port(1)); err != nil {
			closeAll()
			return withCode(ExitFailure, fmt.Errorf("dev: raft address: %w", err))
		}
		peers = append(peers, fmt.Sprintf("%d=%s", i+1, ls[i].raft.Addr()))
	}
	peerList := strings.Join(peers, ",")
	nodes := make([]*daemon.Daemon, 0, opts.Nodes)
	stopAll := func() error {
		errs := make([]error, len(nodes))
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = n.Stop()
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	for i := range ls {
		ro := RunOptions{
			FSMPath: opts.FSMPath, ID: uint64(i + 1), DataDir: filepath.Join(dir, fmt.Sprintf("node%d", i+1)),
			RaftAddr: ls[i].raft.Addr().String(), APIAddr: ls[i].api.Addr().String(), Peers: peerList,
			HeartbeatInterval: DefaultHeartbeatInterval, ElectionTimeout: DefaultElectionTimeout,
			MaxEntryBytes: 1 << 20, SnapshotEntries: DefaultSnapshotEntries, SnapshotTrailing: DefaultSnapshotTrailing,
			NoSync: opts.NoSync, LogLevel: "warn",
			PluginApplyTimeout: opts.PluginApplyTimeout, PluginCallTimeout: opts.PluginCallTimeout,
		}
		if err := ro.validate(true); err != nil {
			closeAll()
			_ = stopAll()
			return err
		}
		cfg := ro.daemonConfig(newLogger(gate, ro.LogLevel))
		cfg.RaftListener, cfg.APIListener, cfg.NoHandOver = ls[i].raft, ls[i].api, true
		n, err := daemon.Start(ctx, cfg)
		if err != nil {
			gate.Discard()
			for _, l := range ls[i:] {
				l.raft.Close()
				l.api.Close()
			}
			_ = stopAll()
			return err
		}
		nodes = append(nodes, n)
	}
	gate.Open()
	var addrs []string
	fmt.Fprintf(f.Out, "raftd dev: %d nodes, fsm %s, data in %s\n\n", opts.Nodes, opts.FSMPath, dir)
	for _, n := range nodes {
		fmt.Fprintf(f.Out, "  node %d  api %s  raft %s\n", n.ID(), n.APIAddr(), n.RaftAddr())
		addrs = append(addrs, n.APIAddr())
	}
	all := strings.Join(addrs, ",")
	fmt.Fprintf(f.Out, `
Try (in another terminal):
  export RAFTD_ADDR=%s
  raftd apply '{"op":"put","key":"a","value":"1"}'
  raftd query '{"op":"get","key":"a"}'
  raftd query --consistency stale --addr %s '{"op":"list","prefix":""}'
  raftd status

Ctrl-C stops the cluster.
`, all, addrs[len(addrs)-1])
	failed := make(chan *daemon.Daemon, len(nodes))
	for _, n := range nodes {
		go func(n *daemon.Daemon) {
			<-n.Done()
			failed <- n
		}(n)
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(f.ErrOut, "raftd dev: stopping")
		return stopAll()
	case n := <-failed:
		err := n.Err()
		stopErr := stopAll()
		if err != nil {
			return withCode(ExitFailure, fmt.Errorf("dev: node %d stopped: %w", n.ID(), err))
		}
		return stopErr
	}
}
