package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/raftd/raftd/core/server"
	"github.com/spf13/cobra"
)

// Defaults of `raftd run` (DESIGN "User-facing contracts").
const (
	DefaultDataDir           = "./raftd-data"
	DefaultRaftAddr          = "127.0.0.1:7001"
	DefaultAPIAddr           = "127.0.0.1:7000"
	DefaultHeartbeatInterval = 100 * time.Millisecond
	DefaultElectionTimeout   = time.Second
	DefaultSnapshotEntries   = 10000
	DefaultSnapshotTrailing  = 5000
	// DefaultPluginApplyTimeout is the plugin host's Apply watchdog: a
	// plugin that completes no Apply request for this long is declared
	// hung, killed and restarted (plugin/host Config.ApplyTimeout).
	DefaultPluginApplyTimeout = 30 * time.Second
	// DefaultPluginCallTimeout bounds the plugin's Info, Query and Digest
	// calls (plugin/host Config.CallTimeout).
	DefaultPluginCallTimeout = 10 * time.Second
)

// RunOptions configures `raftd run` (and each node of `raftd dev`).
type RunOptions struct {
	FSMPath           string
	FSMSHA256         string
	ID                uint64
	DataDir           string
	RaftAddr          string
	APIAddr           string
	Peers             string
	Join              bool
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	MaxEntryBytes     int
	SnapshotEntries   uint64
	SnapshotTrailing  uint64
	ClusterID         string
	NoSync            bool
	LogLevel          string
	// PluginApplyTimeout is the plugin's Apply watchdog (> 0).
	PluginApplyTimeout time.Duration
	// PluginCallTimeout bounds the plugin's Info, Query and Digest (> 0).
	PluginCallTimeout time.Duration
	// MetricsAddr, if set, is where /metrics, /healthz and /debug/pprof/
	// are served over HTTP (see metrics.go). Empty: off.
	MetricsAddr string

	// Resolved by validate.
	peers map[uint64]string
	// clusterIDDefault is set when neither --cluster-id nor --peers was
	// given: a data dir that already exists then keeps its own cluster id
	// (later boots read membership from the log).
	clusterIDDefault bool
}

// NewCmdRun returns `raftd run`.
func NewCmdRun(f *Factory, runF func(*RunOptions) error) *cobra.Command {
	opts := &RunOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a raftd node",
		Long: `Run starts one node: the Raft core with its log in --data-dir, the FSM
plugin --fsm, the peer transport on --raft-addr and the client API on
--api-addr. With only --fsm it is a single-node cluster on the defaults.

On first boot --peers (id=raft-addr,...) bootstraps the cluster; later boots
read membership, hard state and log from the data dir. SIGINT/SIGTERM stop
the node cleanly: stop accepting, finish in-flight applies, stop the plugin,
close storage, exit 0.`,
		Example: `  raftd run --fsm ./bin/raftd-fsm-kv
  raftd run --fsm ./bin/raftd-fsm-kv --id 1 --data-dir /tmp/n1 \
    --raft-addr 127.0.0.1:7101 --api-addr 127.0.0.1:8101 \
    --peers 1=127.0.0.1:7101,2=127.0.0.1:7201,3=127.0.0.1:7301`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.validate(cmd.Flags().Changed("raft-addr")); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return runRun(cmd.Context(), f, opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.FSMPath, "fsm", "", "path to the FSM plugin binary (required)")
	fl.StringVar(&opts.FSMSHA256, "fsm-sha256", "", "refuse to start unless the plugin binary has this SHA-256 (hex)")
	fl.Uint64Var(&opts.ID, "id", 1, "this node's id (a positive integer)")
	fl.StringVar(&opts.DataDir, "data-dir", DefaultDataDir, "directory for the log, snapshots and node identity")
	fl.StringVar(&opts.RaftAddr, "raft-addr", DefaultRaftAddr, "peer (Raft) listen address")
	fl.StringVar(&opts.APIAddr, "api-addr", DefaultAPIAddr, "client API listen address")
	fl.StringVar(&opts.Peers, "peers", "", "initial members id=raft-addr,... (first boot only; default: this node alone)")
	fl.BoolVar(&opts.Join, "join", false, "start without bootstrapping; wait to be added with raftd members add")
	fl.DurationVar(&opts.HeartbeatInterval, "heartbeat-interval", DefaultHeartbeatInterval, "leader heartbeat interval")
	fl.DurationVar(&opts.ElectionTimeout, "election-timeout", DefaultElectionTimeout, "election timeout T (randomized in [T, 2T))")
	fl.IntVar(&opts.MaxEntryBytes, "max-entry-bytes", server.DefaultMaxEntryBytes, "largest command accepted")
	fl.Uint64Var(&opts.SnapshotEntries, "snapshot-entries", DefaultSnapshotEntries, "take a snapshot every this many applied entries (0: never)")
	fl.Uint64Var(&opts.SnapshotTrailing, "snapshot-trailing", DefaultSnapshotTrailing, "entries kept in the log behind a snapshot")
	fl.StringVar(&opts.ClusterID, "cluster-id", "", "cluster identity (default: derived from --peers)")
	fl.BoolVar(&opts.NoSync, "unsafe-no-fsync", false, "skip fsync (testing only: loses acknowledged writes on power loss)")
	fl.StringVar(&opts.LogLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&opts.MetricsAddr, "metrics-addr", "", "serve /metrics (Prometheus), /healthz and /debug/pprof/ over HTTP on this address (default: off)")
	addPluginTimeoutFlags(cmd, &opts.PluginApplyTimeout, &opts.PluginCallTimeout)
	return cmd
}

// addPluginTimeoutFlags registers --plugin-apply-timeout and
// --plugin-call-timeout (shared by `raftd run` and `raftd dev`).
func addPluginTimeoutFlags(cmd *cobra.Command, apply, call *time.Duration) {
	fl := cmd.Flags()
	fl.DurationVar(apply, "plugin-apply-timeout", DefaultPluginApplyTimeout,
		"declare the FSM plugin hung (kill and restart it) when an Apply makes no progress for this long")
	fl.DurationVar(call, "plugin-call-timeout", DefaultPluginCallTimeout,
		"deadline of the FSM plugin's Info, Query and Digest calls")
}

// validatePluginTimeouts checks the plugin timeouts of cmd ("run", "dev").
func validatePluginTimeouts(cmd string, apply, call time.Duration) error {
	if apply <= 0 {
		return usageErrorf("%s: --plugin-apply-timeout must be positive, got %s", cmd, apply)
	}
	if call <= 0 {
		return usageErrorf("%s: --plugin-call-timeout must be positive, got %s", cmd, call)
	}
	return nil
}

// parsePeers parses "1=host:port,2=host:port".
func parsePeers(s string) (map[uint64]string, error) {
	peers := map[uint64]string{}
	addrs := map[string]uint64{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("--peers: %q is not id=host:port", part)
		}
		id, err := strconv.ParseUint(k, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("--peers: node id %q is not a positive integer", k)
		}
		if !strings.Contains(v, ":") {
			return nil, fmt.Errorf("--peers: address %q of node %d is not host:port", v, id)
		}
		if _, dup := peers[id]; dup {
			return nil, fmt.Errorf("--peers: node %d listed twice", id)
		}
		if other, dup := addrs[v]; dup {
			return nil, fmt.Errorf("--peers: nodes %d and %d share address %s", other, id, v)
		}
		peers[id], addrs[v] = v, id
	}
	return peers, nil
}

// validate checks flags and resolves peers; errors are usage errors.
func (o *RunOptions) validate(raftAddrSet bool) error {
	if o.FSMPath == "" {
		return usageErrorf("run: --fsm is required (path to an FSM plugin binary, e.g. ./bin/raftd-fsm-kv)")
	}
	if o.ID == 0 {
		return usageErrorf("run: --id must be a positive integer")
	}
	if o.FSMSHA256 != "" {
		if b, err := hex.DecodeString(o.FSMSHA256); err != nil || len(b) != sha256.Size {
			return usageErrorf("run: --fsm-sha256 %q is not a hex SHA-256", o.FSMSHA256)
		}
	}
	if err := validatePluginTimeouts("run", o.PluginApplyTimeout, o.PluginCallTimeout); err != nil {
		return err
	}
	if o.HeartbeatInterval <= 0 {
		return usageErrorf("run: --heartbeat-interval must be positive")
	}
	if o.ElectionTimeout < 2*o.HeartbeatInterval {
		return usageErrorf("run: --election-timeout (%s) must be at least twice --heartbeat-interval (%s)", o.ElectionTimeout, o.HeartbeatInterval)
	}
	// NB: the peer transport carries messages of up to 64 MiB; 16 MiB
	// entries leave room for batching.
	if o.MaxEntryBytes <= 0 || o.MaxEntryBytes > 16<<20 {
		return usageErrorf("run: --max-entry-bytes must be in (0, 16 MiB]")
	}
	if o.DataDir == "" {
		return usageErrorf("run: --data-dir must not be empty")
	}
	for _, a := range []struct{ name, v string }{{"--raft-addr", o.RaftAddr}, {"--api-addr", o.APIAddr}} {
		if !strings.Contains(a.v, ":") {
			return usageErrorf("run: %s %q is not host:port", a.name, a.v)
		}
	}
	if o.RaftAddr == o.APIAddr {
		return usageErrorf("run: --raft-addr and --api-addr must differ (both %s)", o.RaftAddr)
	}
	switch o.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return usageErrorf("run: --log-level %q is not debug, info, warn or error", o.LogLevel)
	}
	if o.Peers == "" {
		o.peers = map[uint64]string{o.ID: o.RaftAddr}
	} else {
		p, err := parsePeers(o.Peers)
		if err != nil {
			return usageErrorf("run: %v", err)
		}
		addr, ok := p[o.ID]
		if !ok && !o.Join {
			return usageErrorf("run: --id %d is not in --peers %s", o.ID, o.Peers)
		}
		if ok {
			if raftAddrSet && addr != o.RaftAddr {
				return usageErrorf("run: --raft-addr %s differs from node %d's address %s in --peers", o.RaftAddr, o.ID, addr)
			}
			o.RaftAddr = addr
		}
		o.peers = p
	}
	if err := o.validateMetricsAddr(); err != nil {
		return err
	}
	if o.ClusterID == "" {
		o.ClusterID = deriveClusterID(o.peers)
		o.clusterIDDefault = o.Peers == ""
	}
	return nil
}

// deriveClusterID names a cluster after its initial membership.
func deriveClusterID(peers map[uint64]string) string {
	ids := make([]uint64, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	h := sha256.New()
	for _, id := range ids {
		fmt.Fprintf(h, "%d=%s,", id, peers[id])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func runRun(ctx context.Context, f *Factory, opts *RunOptions) error {
	// Logs are held back until the node serves, so that a failed start
	// prints one line (all of it with --log-level debug).
	gate := newGate(f.ErrOut)
	n, err := startNode(ctx, nodeConfig{RunOptions: *opts, LogOut: gate})
	if err != nil {
		if opts.LogLevel == "debug" {
			gate.Open()
		} else {
			gate.Discard()
		}
		return err
	}
	gate.Open()
	fmt.Fprintf(f.ErrOut, "raftd: node %d serving: api %s, raft %s, data %s, fsm %s (cluster %s)\n",
		opts.ID, n.APIAddr(), n.RaftAddr(), opts.DataDir, opts.FSMPath, n.clusterID)
	if opts.MetricsAddr != "" {
		fmt.Fprintf(f.ErrOut, "raftd: node %d metrics on %s: /metrics, /healthz, /debug/pprof/\n", opts.ID, opts.MetricsAddr)
	}
	select {
	case <-ctx.Done():
		fmt.Fprintf(f.ErrOut, "raftd: node %d stopping\n", opts.ID)
		return n.Stop()
	case <-n.Done():
		stopErr := n.Stop()
		if err := n.Err(); err != nil {
			return withCode(ExitFailure, err)
		}
		return stopErr
	}
}

// fileExists reports whether path exists.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
