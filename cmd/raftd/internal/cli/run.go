package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/raftd/raftd/cmd/raftd/internal/config"
	"github.com/raftd/raftd/core/daemon"
	"github.com/raftd/raftd/core/node"
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
	// DefaultPluginApplyTimeout and DefaultPluginCallTimeout are the
	// plugin host's watchdogs (core/daemon Config).
	DefaultPluginApplyTimeout = daemon.DefaultPluginApplyTimeout
	DefaultPluginCallTimeout  = daemon.DefaultPluginCallTimeout
)

// RunOptions configures `raftd run`. The flags that are core/daemon
// settings as they are go straight into Config; the others are resolved
// into it by validate and daemonConfig.
type RunOptions struct {
	daemon.Config
	// Peers is --peers as given; validate parses it into Config.Peers.
	Peers string
	// SnapshotEntries, SnapshotTrailing and CheckpointEntries are the
	// flags, 0 for never and none (Config's are negative for that).
	SnapshotEntries, SnapshotTrailing, CheckpointEntries uint64
	// LogLevel is debug, info, warn or error; LogFormat text or json.
	LogLevel, LogFormat string
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
close storage, exit 0.

` + config.Help,
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
	fl.BoolVar(&opts.Join, "join", false, "start empty and wait to be added (raftd members add); needs --peers, and --cluster-id unless --peers is the cluster's first")
	fl.DurationVar(&opts.HeartbeatInterval, "heartbeat-interval", DefaultHeartbeatInterval, "leader heartbeat interval")
	fl.DurationVar(&opts.ElectionTimeout, "election-timeout", DefaultElectionTimeout, "election timeout T (randomized in [T, 2T))")
	fl.IntVar(&opts.MaxEntryBytes, "max-entry-bytes", node.DefaultMaxEntryBytes, "largest command accepted")
	fl.Uint64Var(&opts.SnapshotEntries, "snapshot-entries", DefaultSnapshotEntries, "take a snapshot every this many applied entries (0: never)")
	fl.Uint64Var(&opts.SnapshotTrailing, "snapshot-trailing", DefaultSnapshotTrailing, "entries kept in the log behind a snapshot")
	fl.Uint64Var(&opts.CheckpointEntries, "checkpoint-entries", node.DefaultCheckpointEntries, "every this many applied entries, compare the nodes' state digests; a node that differs from the majority halts (0: never)")
	fl.StringVar(&opts.ClusterID, "cluster-id", "", "cluster identity (default: derived from --peers)")
	fl.BoolVar(&opts.NoSync, "unsafe-no-fsync", false, "skip fsync (testing only: loses acknowledged writes on power loss)")
	addLogFlags(cmd, &opts.LogLevel, &opts.LogFormat, "info")
	fl.StringVar(&opts.MetricsAddr, "metrics-addr", "", "serve the status page (/), /metrics (Prometheus), /healthz and /readyz on this address, over HTTPS with --cert-file (default: off)")
	fl.BoolVar(&opts.EnablePprof, "enable-pprof", false, "also serve Go profiles at /debug/pprof/ on --metrics-addr")
	fl.StringVar(&opts.ClientTLS.CertFile, "cert-file", "", "TLS certificate of the client API and metrics (with --key-file: TLS on)")
	fl.StringVar(&opts.ClientTLS.KeyFile, "key-file", "", "TLS key of the client API and metrics")
	fl.StringVar(&opts.ClientTLS.TrustedCAFile, "trusted-ca-file", "", "CA that client certificates must chain to")
	fl.BoolVar(&opts.ClientCertAuth, "client-cert-auth", false, "require a client certificate from --trusted-ca-file")
	fl.StringVar(&opts.PeerTLS.CertFile, "peer-cert-file", "", "TLS certificate of the raft port, both ways (with --peer-key-file and --peer-trusted-ca-file: peer TLS on)")
	fl.StringVar(&opts.PeerTLS.KeyFile, "peer-key-file", "", "TLS key of the raft port")
	fl.StringVar(&opts.PeerTLS.TrustedCAFile, "peer-trusted-ca-file", "", "CA that other members' certificates must chain to")
	fl.StringVar(&opts.PeerCertAllowedCN, "peer-cert-allowed-cn", "", "accept only peer certificates with this common name")
	fl.BoolVar(&opts.PeerCertPinID, "peer-cert-pin-id", false, "a peer certificate must name the member id it speaks for (URI SAN raftd://node/ID or CN raftd-node-ID)")
	addPluginTimeoutFlags(cmd, &opts.PluginApplyTimeout, &opts.PluginCallTimeout)
	bindConfig(cmd, f)
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
	if err := validateLogFlags("run", o.LogLevel, o.LogFormat); err != nil {
		return err
	}
	o.Config.Peers = nil
	if o.Join && o.Peers == "" {
		// Without addresses it could not answer the leader that adds it.
		return usageErrorf("run: --join needs --peers: the members' raft addresses (id=host:port,...), to answer the leader")
	}
	if o.Peers != "" {
		p, err := daemon.ParsePeers(o.Peers)
		if err != nil {
			return usageErrorf("run: %v", err)
		}
		i := slices.IndexFunc(p, func(p node.Peer) bool { return p.ID == o.ID })
		if i < 0 && !o.Join {
			return usageErrorf("run: --id %d is not in --peers %s", o.ID, o.Peers)
		}
		if i >= 0 {
			if raftAddrSet && p[i].RaftAddr != o.RaftAddr {
				return usageErrorf("run: --raft-addr %s differs from node %d's address %s in --peers", o.RaftAddr, o.ID, p[i].RaftAddr)
			}
			o.RaftAddr = p[i].RaftAddr
		}
		o.Config.Peers = p
		if o.ClusterID == "" {
			o.ClusterID = daemon.ClusterIDFor(p)
		}
	}
	if err := o.validateMetricsAddr(); err != nil {
		return err
	}
	// Without --cluster-id and --peers, the node keeps the cluster id its
	// data dir records, or names a new one after itself (core/daemon).
	return nil
}

// daemonConfig is the core/daemon configuration of validated options.
func (o *RunOptions) daemonConfig(log *slog.Logger) daemon.Config {
	cfg := o.Config
	cfg.SnapshotEntries, cfg.SnapshotTrailing = never(o.SnapshotEntries), never(o.SnapshotTrailing)
	cfg.CheckpointEntries = never(o.CheckpointEntries)
	cfg.Logger = log
	return cfg
}

// never is a count flag for core/daemon, where 0 means the default and a
// negative value never (or none); the flag's 0 means never.
func never(n uint64) int {
	if n == 0 {
		return -1
	}
	return int(n)
}

func runRun(ctx context.Context, f *Factory, opts *RunOptions) error {
	// Logs go straight to stderr, replay progress included; a failed start
	// ends with its one-line error (printed by Run).
	log, err := daemon.NewLogger(f.ErrOut, opts.LogFormat, opts.LogLevel)
	if err != nil {
		return usageErrorf("run: %v", err)
	}
	n, err := daemon.Start(ctx, opts.daemonConfig(log))
	if err != nil {
		return err
	}
	log = log.With("node", opts.ID)
	log.Info("serving", "api", n.APIAddr(), "raft", n.RaftAddr(), "data_dir", opts.DataDir, "fsm", opts.FSMPath, "cluster", n.ClusterID())
	select {
	case <-ctx.Done():
		log.Info("stopping")
		return n.Stop()
	case <-n.Done():
		stopErr := n.Stop()
		if err := n.Err(); err != nil {
			return withCode(ExitFailure, err)
		}
		return stopErr
	}
}

// validateMetricsAddr checks --metrics-addr (empty: off); errors are
// usage errors. Whether the address can be bound is found out at start,
// with the other listeners.
func (o *RunOptions) validateMetricsAddr() error {
	if o.MetricsAddr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(o.MetricsAddr)
	if err != nil {
		return usageErrorf("run: --metrics-addr %q is not host:port", o.MetricsAddr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return usageErrorf("run: --metrics-addr %q: port %q is not a number in [0, 65535]", o.MetricsAddr, port)
	}
	for _, a := range []struct{ name, v string }{{"--raft-addr", o.RaftAddr}, {"--api-addr", o.APIAddr}} {
		if o.MetricsAddr == a.v {
			return usageErrorf("run: --metrics-addr and %s must differ (both %s)", a.name, a.v)
		}
	}
	return nil
}
