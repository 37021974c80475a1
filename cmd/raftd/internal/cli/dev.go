package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/raftd/raftd/cmd/raftd/internal/config"
	"github.com/raftd/raftd/core/daemon"
	"github.com/raftd/raftd/core/pki"
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
	// TLS generates a CA and certificates in the data dir (reused if
	// there) and runs every port over TLS with client certificates.
	TLS bool
	// PluginApplyTimeout and PluginCallTimeout are passed to every node
	// (see RunOptions).
	PluginApplyTimeout time.Duration
	PluginCallTimeout  time.Duration
	// LogLevel and LogFormat are every node's (see RunOptions).
	LogLevel, LogFormat string
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
and runs until Ctrl-C.

` + config.Help,
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
			if err := validateLogFlags("dev", opts.LogLevel, opts.LogFormat); err != nil {
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
	cmd.Flags().BoolVar(&opts.TLS, "tls", false, "TLS on every port, with a throwaway CA and certificates made in the data dir")
	addPluginTimeoutFlags(cmd, &opts.PluginApplyTimeout, &opts.PluginCallTimeout)
	addLogFlags(cmd, &opts.LogLevel, &opts.LogFormat, "warn")
	bindConfig(cmd, f)
	return cmd
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
	certs := pki.ClusterFilesIn(filepath.Join(dir, "tls"), opts.Nodes)
	if _, err := os.Stat(certs.CACert); opts.TLS && err != nil {
		if certs, err = pki.InitCluster(certs.Dir, opts.Nodes, nil, 0); err != nil {
			return withCode(ExitFailure, fmt.Errorf("dev: %w", err))
		}
	}
	log, err := daemon.NewLogger(f.ErrOut, opts.LogFormat, opts.LogLevel)
	if err != nil {
		return usageErrorf("dev: %v", err)
	}
	nodes, err := daemon.StartCluster(ctx, opts.Nodes, dir, opts.BasePort, func(cfg *daemon.Config) {
		cfg.FSMPath, cfg.NoSync, cfg.Logger = opts.FSMPath, opts.NoSync, log
		cfg.PluginApplyTimeout, cfg.PluginCallTimeout = opts.PluginApplyTimeout, opts.PluginCallTimeout
		cfg.HeartbeatInterval, cfg.ElectionTimeout = DefaultHeartbeatInterval, DefaultElectionTimeout
		cfg.SnapshotEntries, cfg.SnapshotTrailing = DefaultSnapshotEntries, DefaultSnapshotTrailing
		if opts.TLS {
			n := certs.Nodes[cfg.ID-1]
			cfg.ClientTLS, cfg.ClientCertAuth, cfg.PeerTLS, cfg.PeerCertPinID = n, true, n, true
		}
	})
	if err != nil {
		return withCode(ExitFailure, fmt.Errorf("dev: %w", err))
	}
	var addrs []string
	fmt.Fprintf(f.Out, "raftd dev: %d nodes, fsm %s, data in %s\n\n", opts.Nodes, opts.FSMPath, dir)
	for _, n := range nodes {
		fmt.Fprintf(f.Out, "  node %d  api %s  raft %s\n", n.ID(), n.APIAddr(), n.RaftAddr())
		addrs = append(addrs, n.APIAddr())
	}
	all := strings.Join(addrs, ",")
	if opts.TLS {
		fmt.Fprintf(f.Out, "\nTLS on every port; client certificate (or --cacert %s --cert %s --key %s):\n%s\n",
			certs.Client.TrustedCAFile, certs.Client.CertFile, certs.Client.KeyFile, clientTLSEnv(certs.Client))
	}
	fmt.Fprintf(f.Out, `
Try (in another terminal):
  export RAFTD_ADDR=%s
  %[3]s apply '{"op":"put","key":"a","value":"1"}'
  %[3]s query '{"op":"get","key":"a"}'
  %[3]s query --consistency stale --addr %[2]s '{"op":"list","prefix":""}'
  %[3]s status

Ctrl-C stops the cluster.
`, all, addrs[len(addrs)-1], invokedAs())
	err = daemon.WaitCluster(ctx, nodes)
	if ctx.Err() != nil {
		fmt.Fprintln(f.ErrOut, "raftd dev: stopped")
	}
	if err != nil {
		return withCode(ExitFailure, fmt.Errorf("dev: %w", err))
	}
	return nil
}

// invokedAs is how to run this binary from the current directory, for the
// hints: "./bin/raftd" under make run, "raftd" when found on $PATH.
func invokedAs() string {
	a := os.Args[0]
	if !strings.ContainsRune(a, os.PathSeparator) {
		return a
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, a); err == nil && !strings.HasPrefix(rel, "..") {
			return "./" + rel
		}
	}
	return a
}
