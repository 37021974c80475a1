package daemon

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/raftd/raftd/core/node"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
)

// Budgets of the observability endpoint (--metrics-addr).
const (
	// metricsStatusTimeout bounds how long a scrape waits for the node's
	// loop to answer Status. A busy or wedged loop costs a scrape at most
	// this long; the counters, which need no loop, are served regardless.
	metricsStatusTimeout = time.Second
	// metricsShutdownTimeout bounds in-flight requests (a running CPU
	// profile, say) when the node stops; they are then cut off.
	metricsShutdownTimeout = time.Second
)

// metricsNode is what the endpoint reads from the node. *node.Node
// implements it; tests use fakes.
type metricsNode interface {
	Status(ctx context.Context) (node.Status, error)
	Metrics() node.Metrics
	Latencies() node.Latencies
	// Leader, CommitIndex and Applied are read without the loop (readyz).
	Leader() uint64
	CommitIndex() uint64
	Applied() uint64
	// Ready is closed when the restart replay is over.
	Ready() <-chan struct{}
	// Done is closed when the node has stopped; Err then tells why (nil
	// for a requested stop).
	Done() <-chan struct{}
	Err() error
	// Halted returns the halt of the node's apply, or nil.
	Halted() *node.Halt
}

// metricsServer is the operator endpoint of one node: /metrics
// (Prometheus text format, on a private registry), /healthz, /readyz, the
// status page at / with its /status.json and, if enabled, /debug/pprof/
// (on a private mux, not http.DefaultServeMux). Close is idempotent.
type metricsServer struct {
	n        metricsNode
	srv      *http.Server
	lis      net.Listener
	stopping atomic.Bool
	served   chan struct{} // closed when Serve returns
	started  atomic.Bool
	// api is the node's client API server, set once it exists (SetAPI):
	// the status fan-out and its refusal counts. Nil before.
	api atomic.Pointer[apiServer]
	// readyMaxLag is the readiness bound on commit - applied (see
	// readiness). Set before Start.
	readyMaxLag uint64
}

// apiServer is what the endpoint uses of the client API server
// (*server.Server implements it).
type apiServer interface {
	Status(ctx context.Context, req *apiv1.StatusRequest) (*apiv1.StatusResponse, error)
	Refused() map[string]uint64
}

// newMetricsServer prepares the endpoint for n on lis (a TLS listener for
// HTTPS). extra collectors (the transport's) are registered next to the
// Go, process and node collectors. errLog (nil: none) receives HTTP and
// scrape errors. /debug/pprof/ is served only with pprof. It does not
// serve until Start.
func newMetricsServer(lis net.Listener, n metricsNode, errLog *log.Logger, pprof bool, extra ...prometheus.Collector) (*metricsServer, error) {
	reg := prometheus.NewRegistry()
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfoCollector(),
	}
	m := &metricsServer{n: n, lis: lis, served: make(chan struct{}), readyMaxLag: DefaultReadyMaxApplyLag}
	cs = append(cs, nodeCollector{n: n, timeout: metricsStatusTimeout, api: &m.api})
	for _, c := range append(cs, extra...) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register collector: %w", err)
		}
	}
	mux := http.NewServeMux()
	hopts := promhttp.HandlerOpts{
		// A failed collector (say, Status timed out) costs its own
		// metrics, not the whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
	}
	if errLog != nil {
		hopts.ErrorLog = errLog // NB: a nil *log.Logger in the interface would be called
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, hopts))
	mux.HandleFunc("/healthz", m.healthz)
	mux.HandleFunc("/readyz", m.readyz)
	mux.HandleFunc("GET /{$}", statusPage)
	mux.HandleFunc("GET /status.json", m.statusJSON)
	if pprof {
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", httppprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", httppprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", httppprof.Trace)
	}
	// NB: no WriteTimeout: /debug/pprof/profile and /trace stream for as
	// long as the caller asks (?seconds=N).
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	return m, nil
}

// Start serves in the background until Close.
func (m *metricsServer) Start() {
	if !m.started.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer close(m.served)
		_ = m.srv.Serve(m.lis)
	}()
}

// Addr returns the bound address.
func (m *metricsServer) Addr() string { return m.lis.Addr().String() }

// SetAPI gives the endpoint the node's client API server, for the status
// page and the refusal counts.
func (m *metricsServer) SetAPI(a apiServer) { m.api.Store(&a) }

// SetStopping makes /healthz and /readyz answer 503 "stopping" from now on.
func (m *metricsServer) SetStopping() { m.stopping.Store(true) }

// Close stops serving: in-flight requests get metricsShutdownTimeout, then
// their connections are closed. The listener is closed even if Start was
// never called.
func (m *metricsServer) Close() error {
	m.stopping.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		_ = m.srv.Close()
	}
	_ = m.lis.Close()
	if m.started.Load() {
		<-m.served
	}
	return nil
}

// health reports whether the node serves clients: 200 "ok", or 503 with a
// one-line reason (stopping, stopped, failed, apply halted, still
// replaying its log).
func (m *metricsServer) health() (int, string) {
	select {
	case <-m.n.Done():
		if err := m.n.Err(); err != nil {
			return http.StatusServiceUnavailable, "failed: " + firstLine(err.Error())
		}
		return http.StatusServiceUnavailable, "stopped"
	default:
	}
	if m.stopping.Load() {
		return http.StatusServiceUnavailable, "stopping"
	}
	if h := m.n.Halted(); h != nil {
		if h.Checkpoint != 0 {
			return http.StatusServiceUnavailable, fmt.Sprintf("halted: diverged at the checkpoint at index %d (raftd status; rebuild the node): %s", h.Checkpoint, firstLine(h.Reason))
		}
		return http.StatusServiceUnavailable, fmt.Sprintf("halted: apply halted at index %d (raftd status; raftd fsm skip %d): %s", h.Index, h.Index, firstLine(h.Reason))
	}
	select {
	case <-m.n.Ready():
	default:
		return http.StatusServiceUnavailable, "starting: replaying the log"
	}
	return http.StatusOK, "ok"
}

func (m *metricsServer) healthz(w http.ResponseWriter, _ *http.Request) {
	code, msg := m.health()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// nodeCollector exposes the node's status (gauges) and counters as
// raftd_* metrics, read at every scrape. The counters are atomics and
// always served; the status needs the node's loop and is skipped (the
// scrape reports an error for it) when the loop does not answer within
// timeout. A stopped node reports its last known status.
type nodeCollector struct {
	n       metricsNode
	timeout time.Duration
	api     *atomic.Pointer[apiServer] // its Refused counts, once set
}

func gaugeDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("raftd_"+name, help, labels, nil)
}

var (
	descTerm          = gaugeDesc("term", "Current Raft term.")
	descCommitIndex   = gaugeDesc("commit_index", "Highest log index known to be committed.")
	descAppliedIndex  = gaugeDesc("applied_index", "Highest log index applied to the state machine.")
	descLastIndex     = gaugeDesc("last_index", "Index of the last entry in the local log.")
	descSnapshotIndex = gaugeDesc("snapshot_index", "Index of the latest local snapshot (0: none).")
	descIsLeader      = gaugeDesc("is_leader", "1 if this node is the leader.")
	descLeaderID      = gaugeDesc("leader_id", "Id of the leader this node knows (0: none).")
	descRole          = gaugeDesc("role", "1 for the node's current role (leader, follower, candidate, learner, stopped).", "role")
	descReady         = gaugeDesc("ready", "1 once the restart replay is over and the node serves clients.")
	descFSMVersion    = gaugeDesc("fsm_version", "Active FSM version.")
	descMembers       = gaugeDesc("members", "Members of the configuration in effect, by kind.", "kind")
	descMatchIndex    = gaugeDesc("follower_match_index", "Leader only: highest index known to be replicated on each member.", "peer")
	descSendingSnap   = gaugeDesc("sending_snapshots", "Leader only: followers being sent a snapshot.")
	descNodeInfo      = gaugeDesc("node_info", "Always 1; labels name the node and its state machine.", "node_id", "fsm")
	descApplyHalted   = gaugeDesc("apply_halted", "Index at which the node's apply is halted (the state machine keeps failing on that command, and raftd fsm skip INDEX resumes it; or the node's state diverged at a digest checkpoint); 0 when applying.")
	descCheckpoint    = gaugeDesc("checkpoint_agreed_index", "Index of the last digest checkpoint whose verdict this node applied and matched (0: none since it started).")
)

// counterDef maps one node.Metrics field to a raftd_*_total counter.
type counterDef struct {
	desc *prometheus.Desc
	get  func(node.Metrics) uint64
}

func counter(name, help string, get func(node.Metrics) uint64) counterDef {
	return counterDef{prometheus.NewDesc("raftd_"+name+"_total", help, nil, nil), get}
}

var nodeCounters = []counterDef{
	counter("proposals", "Commands and membership changes handed to the Raft loop.", func(m node.Metrics) uint64 { return m.Proposals }),
	counter("proposals_dropped", "Proposals refused by Raft (no leader, throttled, ...).", func(m node.Metrics) uint64 { return m.ProposalsDropped }),
	counter("storage_saves", "Log store Save calls.", func(m node.Metrics) uint64 { return m.Saves }),
	counter("storage_syncs", "Log store Save calls that fsync'ed.", func(m node.Metrics) uint64 { return m.Syncs }),
	counter("entries_saved", "Log entries written to the log store.", func(m node.Metrics) uint64 { return m.EntriesSaved }),
	counter("messages_sent", "Raft messages handed to the transport.", func(m node.Metrics) uint64 { return m.MessagesSent }),
	counter("read_index_rounds", "ReadIndex rounds started for linearizable reads.", func(m node.Metrics) uint64 { return m.ReadIndexRounds }),
	counter("reads", "Linearizable reads served a read index.", func(m node.Metrics) uint64 { return m.Reads }),
	counter("apply_batches", "State machine Apply calls.", func(m node.Metrics) uint64 { return m.ApplyBatches }),
	counter("commands_applied", "Commands applied to the state machine.", func(m node.Metrics) uint64 { return m.CommandsApplied }),
	counter("snapshots_taken", "Local snapshots completed.", func(m node.Metrics) uint64 { return m.SnapshotsTaken }),
	counter("snapshots_started", "Local snapshots whose body was written in the background.", func(m node.Metrics) uint64 { return m.SnapshotsStarted }),
	counter("snapshots_installed", "Snapshots restored into the state machine.", func(m node.Metrics) uint64 { return m.SnapshotsInstalled }),
	counter("snapshots_sent", "Snapshot messages handed to the transport (leader).", func(m node.Metrics) uint64 { return m.SnapshotsSent }),
	counter("compactions", "Log compactions.", func(m node.Metrics) uint64 { return m.Compactions }),
	counter("fsm_restarts", "State machine (plugin) restarts.", func(m node.Metrics) uint64 { return m.StateMachineRestarts }),
	counter("fsm_reloads", "State machine (plugin) replacements by fsm reload.", func(m node.Metrics) uint64 { return m.StateMachineReloads }),
	counter("step_errors", "Inbound Raft messages that Raft refused.", func(m node.Metrics) uint64 { return m.StepErrors }),
	counter("throttled_rounds", "Proposals refused because the apply backlog was over --max-apply-backlog-bytes (backpressure).", func(m node.Metrics) uint64 { return m.ThrottledRounds }),
	counter("apply_spills", "Committed batches left in storage for the state machine to read back (apply backlog full, or apply halted).", func(m node.Metrics) uint64 { return m.ApplySpills }),
	counter("apply_halts", "Times apply halted on a command the state machine kept failing on.", func(m node.Metrics) uint64 { return m.Halts }),
	counter("commands_skipped", "Commands skipped on an fsm skip entry while apply was halted there.", func(m node.Metrics) uint64 { return m.CommandsSkipped }),
	counter("checkpoints", "Digest checkpoint entries applied (the state hashed at each).", func(m node.Metrics) uint64 { return m.Checkpoints }),
	counter("checkpoints_agreed", "Checkpoint verdicts applied whose majority digest matched this node's.", func(m node.Metrics) uint64 { return m.CheckpointsAgreed }),
	counter("divergence_halts", "Times apply halted because this node's digest differed from the majority's at a checkpoint (or none had a majority).", func(m node.Metrics) uint64 { return m.Divergences }),
}

// Histograms and counters by label, from node.Latencies, node.Metrics and
// the API server.
var (
	descProposalCommit  = prometheus.NewDesc("raftd_proposal_commit_seconds", "Time from a proposal on this node until its entry is committed.", nil, nil)
	descCommitApply     = prometheus.NewDesc("raftd_commit_apply_seconds", "Time from an entry's commit until the state machine (plugin) has applied it, per entry.", nil, nil)
	descStorageFsync    = prometheus.NewDesc("raftd_storage_fsync_seconds", "Duration of log store Save calls that fsync (write and sync).", nil, nil)
	descSnapshotCreate  = prometheus.NewDesc("raftd_snapshot_create_seconds", "Duration of local snapshots, from capturing the state machine until the body is stored.", nil, nil)
	descSnapshotRestore = prometheus.NewDesc("raftd_snapshot_restore_seconds", "Duration of state machine restores from a snapshot (from the leader, at start, after a plugin restart).", nil, nil)
	descRead            = prometheus.NewDesc("raftd_read_seconds", "Duration of successful reads served by this node, by consistency (linearizable: ReadIndex round, wait for apply, query; stale: query).", []string{"consistency"}, nil)
	descLeaderChanges   = prometheus.NewDesc("raftd_leader_changes_total", "Times this node learnt of a new leader (including itself).", nil, nil)
	descRefused         = prometheus.NewDesc("raftd_proposals_refused_total", "Proposals refused before they entered the log (certainly not applied), by reason.", []string{"reason"}, nil)
	descDigest          = prometheus.NewDesc("raftd_checkpoint_digest_seconds", "Time spent hashing the state at digest checkpoints (off the apply path).", nil, nil)
)

// histogramBuckets are node.HistogramBounds in seconds.
var histogramBuckets = func() []float64 {
	out := make([]float64, len(node.HistogramBounds))
	for i, b := range node.HistogramBounds {
		out[i] = b.Seconds()
	}
	return out
}()

// constHistogram converts a node histogram (per-bucket counts) to a
// Prometheus one (cumulative counts).
func constHistogram(d *prometheus.Desc, h node.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(histogramBuckets))
	var cum uint64
	for i, ub := range histogramBuckets {
		cum += h.Counts[i]
		buckets[ub] = cum
	}
	cum += h.Counts[len(histogramBuckets)]
	return prometheus.MustNewConstHistogram(d, cum, h.Sum.Seconds(), buckets, labels...)
}

var nodeGauges = []*prometheus.Desc{descTerm, descCommitIndex, descAppliedIndex, descLastIndex, descSnapshotIndex,
	descIsLeader, descLeaderID, descRole, descReady, descFSMVersion, descMembers, descMatchIndex, descSendingSnap, descNodeInfo,
	descApplyHalted, descCheckpoint}

// roles are the values of raftd_role's label, all reported so that a
// change of role shows as 1 -> 0 rather than a vanished series.
var roles = []string{"leader", "follower", "candidate", "learner", "stopped"}

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range nodeGauges {
		ch <- d
	}
	for _, d := range nodeCounters {
		ch <- d.desc
	}
	for _, d := range []*prometheus.Desc{descProposalCommit, descCommitApply, descStorageFsync, descSnapshotCreate,
		descSnapshotRestore, descRead, descLeaderChanges, descRefused, descDigest} {
		ch <- d
	}
}

// collectObservations sends the latency histograms and the counters by
// reason; none of them needs the node's loop.
func (c nodeCollector) collectObservations(ch chan<- prometheus.Metric, m node.Metrics) {
	l := c.n.Latencies()
	ch <- constHistogram(descProposalCommit, l.ProposalCommit)
	ch <- constHistogram(descCommitApply, l.CommitApply)
	ch <- constHistogram(descStorageFsync, l.StorageSync)
	ch <- constHistogram(descSnapshotCreate, l.SnapshotCreate)
	ch <- constHistogram(descSnapshotRestore, l.SnapshotRestore)
	ch <- constHistogram(descRead, l.ReadLinearizable, "linearizable")
	ch <- constHistogram(descRead, l.ReadStale, "stale")
	ch <- prometheus.MustNewConstMetric(descLeaderChanges, prometheus.CounterValue, float64(m.LeaderChanges))
	ch <- prometheus.MustNewConstSummary(descDigest, m.CheckpointDigests, m.CheckpointDigestTime.Seconds(), nil)
	// One series per reason, the node's and the API server's added up
	// (each refusal is counted once, where it happened).
	refused := map[string]uint64{}
	for r := range node.NumRefusals {
		refused[r.String()] += m.Refused[r]
	}
	if a := c.api.Load(); a != nil {
		for k, v := range (*a).Refused() {
			refused[k] += v
		}
	}
	for reason, v := range refused {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(v), reason)
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.n.Metrics()
	for _, d := range nodeCounters {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(d.get(m)))
	}
	var halted uint64 // needs no loop either
	if h := c.n.Halted(); h != nil {
		halted = h.Index
	}
	ch <- prometheus.MustNewConstMetric(descApplyHalted, prometheus.GaugeValue, float64(halted))
	c.collectObservations(ch, m)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	st, err := c.n.Status(ctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("node status: no answer within %s", c.timeout)
		}
		ch <- prometheus.NewInvalidMetric(descTerm, err)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	b := func(ok bool) float64 {
		if ok {
			return 1
		}
		return 0
	}
	gauge(descTerm, float64(st.Term))
	gauge(descCommitIndex, float64(st.Commit))
	gauge(descAppliedIndex, float64(st.Applied))
	var agreed uint64
	if st.Checkpoint != nil {
		agreed = st.Checkpoint.Index
	}
	gauge(descCheckpoint, float64(agreed))
	gauge(descLastIndex, float64(st.LastIndex))
	gauge(descSnapshotIndex, float64(st.SnapshotIndex))
	gauge(descIsLeader, b(st.Role == "leader"))
	gauge(descLeaderID, float64(st.Lead))
	for _, r := range roles {
		gauge(descRole, b(st.Role == r), r)
	}
	gauge(descReady, b(st.Ready))
	gauge(descFSMVersion, float64(st.FSMVersion))
	gauge(descNodeInfo, 1, strconv.FormatUint(st.ID, 10), st.FSM.Name)
	if st.Role == "stopped" {
		return // membership and progress are unknown
	}
	var voters, learners int
	for _, mb := range st.Members {
		if mb.Learner {
			learners++
		} else {
			voters++
		}
	}
	gauge(descMembers, float64(voters), "voter")
	gauge(descMembers, float64(learners), "learner")
	if st.Role == "leader" {
		for id, p := range st.Progress {
			gauge(descMatchIndex, float64(p.Match), strconv.FormatUint(id, 10))
		}
		gauge(descSendingSnap, float64(len(st.SendingSnapshot)))
	}
}
