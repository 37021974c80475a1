package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/pki"
	"github.com/raftd/raftd/plugin/fsm"
)

// Defaults for Config fields left zero.
const (
	DefaultHeartbeatInterval = node.DefaultHeartbeatInterval
	DefaultElectionTimeout   = node.DefaultElectionTimeout
	// DefaultPluginApplyTimeout is the plugin host's Apply watchdog: a
	// plugin that completes no Apply request for this long is declared
	// hung, killed and restarted (plugin/host Config.ApplyTimeout).
	DefaultPluginApplyTimeout = 30 * time.Second
	// DefaultPluginCallTimeout bounds the plugin's Info, Query and Digest
	// calls (plugin/host Config.CallTimeout).
	DefaultPluginCallTimeout = 10 * time.Second
)

// Shutdown budgets (see Daemon.Stop).
const (
	drainTimeout    = 5 * time.Second  // in-flight client calls
	nodeStopTimeout = 10 * time.Second // node.Stop
	handOverTimeout = 3 * time.Second  // leadership transfer
)

// Config configures one node. ID, DataDir and one of FSM or FSMPath are
// required; every other zero field takes the documented default.
type Config struct {
	// ID is this node's id, > 0.
	ID uint64
	// DataDir holds the log, the snapshots and the node's identity file
	// (which node of which cluster it belongs to). It is created if
	// missing; a non-empty directory without an identity file is refused.
	DataDir string
	// ClusterID names the cluster. Empty: the id recorded in DataDir, or on
	// first boot ClusterIDFor(Peers).
	ClusterID string
	// Peers is the initial membership (first boot only; later boots read it
	// from the log). Empty: this node alone at RaftAddr. With Join, Peers
	// only tells the transport where the members are until this node learns
	// the membership from the log.
	Peers []node.Peer
	// Join starts a node that waits to be added by the leader instead of
	// bootstrapping a cluster.
	Join bool

	// RaftAddr is the peer listen address (Raft traffic and requests that
	// other nodes forward); APIAddr the client API's. Port 0 picks a free
	// port. RaftListener and APIListener, if set, are used instead (and
	// closed by Stop).
	RaftAddr, APIAddr         string
	RaftListener, APIListener net.Listener
	// MetricsAddr, if set, serves /metrics (Prometheus), /healthz,
	// /readyz and the status page at / (with /status.json) over HTTP
	// (HTTPS with ClientTLS), and /debug/pprof/ with EnablePprof. Empty:
	// off.
	MetricsAddr string
	// EnablePprof serves Go's profiles at /debug/pprof/ on MetricsAddr.
	// The default is off: profiles expose the process's memory layout and
	// command line, and a CPU profile costs the node.
	EnablePprof bool

	// ClientTLS, if it names a certificate and key, serves the client API
	// and the metrics endpoint over TLS; its TrustedCAFile verifies client
	// certificates. Without ClientCertAuth a client certificate is
	// optional, but DownloadSnapshot is served only to clients that present
	// one. The zero value is plaintext.
	ClientTLS pki.Files
	// ClientCertAuth requires every client of the API and the metrics
	// endpoint to present a certificate from ClientTLS.TrustedCAFile.
	ClientCertAuth bool
	// PeerTLS, if set (certificate, key and trusted CA, all required),
	// secures the raft address both ways: every connection between members
	// is TLS, and each side must present a certificate from
	// PeerTLS.TrustedCAFile, or the handshake fails before any Raft
	// message is read. The zero value is plaintext.
	PeerTLS pki.Files
	// PeerCertAllowedCN, if set, is the only common name a peer
	// certificate may have.
	PeerCertAllowedCN string
	// PeerCertPinID requires every peer certificate to name a member id
	// (core/pki MemberID: URI SAN raftd://node/<id> or common name
	// raftd-node-<id>): a node may only speak for the member its
	// certificate names, and a dialed member must present its own.
	PeerCertPinID bool
	// ReadyMaxApplyLag is how far (in entries) the state machine may be
	// behind the commit index while the node reports ready (/readyz and
	// the gRPC health service on the API address). The default is
	// DefaultReadyMaxApplyLag.
	ReadyMaxApplyLag int

	// FSM is a state machine run in this process. Exactly one of FSM and
	// FSMPath is set.
	FSM fsm.FSM
	// FSMPath is an FSM plugin executable, run as a child process through
	// plugin/host. FSMSHA256, if set, is the hex SHA-256 it must have.
	FSMPath, FSMSHA256 string
	// PluginApplyTimeout is the plugin's Apply watchdog, PluginCallTimeout
	// bounds its Info, Query and Digest calls. The defaults are
	// DefaultPluginApplyTimeout and DefaultPluginCallTimeout.
	PluginApplyTimeout, PluginCallTimeout time.Duration

	// HeartbeatInterval and ElectionTimeout are node.Config's (defaults
	// 100 ms and 1 s; the election timeout is at least two heartbeats).
	HeartbeatInterval, ElectionTimeout time.Duration
	// MaxEntryBytes is the largest command accepted. The default is 1 MiB.
	MaxEntryBytes int
	// SnapshotEntries and SnapshotTrailing are node.Config's: 0 takes the
	// default, negative disables automatic snapshots / keeps no entries.
	SnapshotEntries, SnapshotTrailing int
	// CheckpointEntries is node.Config's: how many applied entries make
	// the leader commit a digest checkpoint (every member hashes its
	// state there and a member that differs from the majority halts); 0
	// takes the default (node.DefaultCheckpointEntries), negative
	// disables automatic checkpoints (raftd fsm verify still runs one).
	CheckpointEntries int
	// NoSync skips every fsync: acknowledged writes are lost on power loss.
	// Tests and trials only.
	NoSync bool
	// NoHandOver skips the leadership transfer in Stop (for a process that
	// stops every node of a cluster at once, there is no one to hand to).
	NoHandOver bool

	// Logger receives every log line of the node (storage, transport, raft,
	// plugin). Nil discards. Start adds the attribute node=ID.
	Logger *slog.Logger
	// ReplayProgressInterval is how often Start logs the progress of a
	// restart replay ("replaying the log", replayed=N of=M) once it has
	// run for a second (a shorter replay is not logged). The default is
	// DefaultReplayProgressInterval.
	ReplayProgressInterval time.Duration
}

// DefaultReplayProgressInterval is Config.ReplayProgressInterval's default.
const DefaultReplayProgressInterval = 5 * time.Second

// withDefaults validates cfg and fills in defaults.
func (cfg Config) withDefaults() (Config, error) {
	switch {
	case cfg.ID == 0:
		return cfg, errors.New("daemon: config: ID must be > 0")
	case cfg.DataDir == "":
		return cfg, errors.New("daemon: config: DataDir is required")
	case (cfg.FSM == nil) == (cfg.FSMPath == ""):
		return cfg, errors.New("daemon: config: set exactly one of FSM and FSMPath")
	case cfg.RaftListener == nil && cfg.RaftAddr == "", cfg.APIListener == nil && cfg.APIAddr == "":
		return cfg, errors.New("daemon: config: RaftAddr and APIAddr are required")
	}
	if cfg.FSMSHA256 != "" {
		if b, err := hex.DecodeString(cfg.FSMSHA256); err != nil || len(b) != sha256.Size {
			return cfg, fmt.Errorf("daemon: config: FSMSHA256 %q is not a hex SHA-256", cfg.FSMSHA256)
		}
	}
	if cfg.PluginApplyTimeout <= 0 {
		cfg.PluginApplyTimeout = DefaultPluginApplyTimeout
	}
	if cfg.PluginCallTimeout <= 0 {
		cfg.PluginCallTimeout = DefaultPluginCallTimeout
	}
	if cfg.MaxEntryBytes <= 0 {
		cfg.MaxEntryBytes = node.DefaultMaxEntryBytes
	}
	if cfg.ReadyMaxApplyLag <= 0 {
		cfg.ReadyMaxApplyLag = DefaultReadyMaxApplyLag
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReplayProgressInterval <= 0 {
		cfg.ReplayProgressInterval = DefaultReplayProgressInterval
	}
	cfg.Peers = slices.Clone(cfg.Peers)
	return cfg, nil
}

// ClusterIDFor names a cluster after its initial membership: the first 16
// hex digits of the SHA-256 of "id=raft-addr," for each peer in id order.
func ClusterIDFor(peers []node.Peer) string {
	ps := slices.Clone(peers)
	slices.SortFunc(ps, func(a, b node.Peer) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	h := sha256.New()
	for _, p := range ps {
		fmt.Fprintf(h, "%d=%s,", p.ID, p.RaftAddr)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
