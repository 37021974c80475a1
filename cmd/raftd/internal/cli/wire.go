package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/server"
	"github.com/raftd/raftd/core/storage"
	"github.com/raftd/raftd/core/transport"
	"github.com/raftd/raftd/plugin/host"
	"google.golang.org/grpc"
)

// Shutdown budgets.
const (
	drainTimeout    = 5 * time.Second  // in-flight client calls
	nodeStopTimeout = 10 * time.Second // node.Stop
)

// logger implements raft.Logger on a writer with a level filter.
type logger struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	level  int // 0 debug, 1 info, 2 warn, 3 error
}

func newLogger(w io.Writer, prefix, level string) *logger {
	lv := map[string]int{"debug": 0, "info": 1, "warn": 2, "error": 3}[level]
	return &logger{mu: &sync.Mutex{}, w: w, prefix: prefix, level: lv}
}

func (l *logger) logf(lv int, tag, format string, args ...any) {
	if lv < l.level {
		return
	}
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	fmt.Fprintf(l.w, "%s %s%s %s\n", time.Now().UTC().Format("15:04:05.000"), l.prefix, tag, strings.TrimRight(msg, "\n"))
	l.mu.Unlock()
}

func (l *logger) Debugf(f string, a ...any)   { l.logf(0, "DEBUG", f, a...) }
func (l *logger) Infof(f string, a ...any)    { l.logf(1, "INFO", f, a...) }
func (l *logger) Warningf(f string, a ...any) { l.logf(2, "WARN", f, a...) }
func (l *logger) Errorf(f string, a ...any)   { l.logf(3, "ERROR", f, a...) }

// cleanup runs deferred close functions in reverse order on a failed start.
type cleanup []func()

func (c *cleanup) add(f func()) { *c = append(*c, f) }
func (c cleanup) run() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// startNode builds a node from its parts: storage, plugin host, transport,
// node driver and the client API (on --api-addr, and on --raft-addr for
// forwarding between nodes). On error nothing is left running.
func startNode(ctx context.Context, cfg nodeConfig) (rn *runningNode, err error) {
	var undo cleanup
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	if cfg.LogOut == nil {
		cfg.LogOut = io.Discard
	}
	log := newLogger(cfg.LogOut, cfg.LogPrefix, cfg.LogLevel)
	sum, err := checkPlugin(cfg.FSMPath, cfg.FSMSHA256)
	if err != nil {
		return nil, err
	}
	if cfg.clusterIDDefault {
		if id := storedClusterID(cfg.DataDir); id != "" {
			cfg.ClusterID = id
		}
	}
	if _, err := checkDataDir(cfg.DataDir, cfg.ID, cfg.ClusterID); err != nil {
		return nil, err
	}

	// Listeners first: an address in use fails fast, before any process starts.
	raftLis, apiLis := cfg.RaftListener, cfg.APIListener
	if raftLis == nil {
		if raftLis, err = listen("raft address (--raft-addr)", cfg.RaftAddr); err != nil {
			return nil, err
		}
	}
	undo.add(func() { raftLis.Close() })
	if apiLis == nil {
		if apiLis, err = listen("api address (--api-addr)", cfg.APIAddr); err != nil {
			return nil, err
		}
	}
	undo.add(func() { apiLis.Close() })
	var metricsLis net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLis, err = listen("metrics address (--metrics-addr)", cfg.MetricsAddr); err != nil {
			return nil, err
		}
		undo.add(func() { metricsLis.Close() })
	}

	st, err := storage.Open(cfg.DataDir, &storage.Options{ClusterID: cfg.ClusterID, NodeID: cfg.ID, DisableSync: cfg.NoSync, Logger: log})
	if err != nil {
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, withCode(ExitFailure, fmt.Errorf("data dir %s is in use by another raftd process", cfg.DataDir))
		}
		return nil, withCode(ExitFailure, fmt.Errorf("data dir %s: %w", cfg.DataDir, err))
	}
	undo.add(func() { st.Close() })

	hlevel := map[string]hclog.Level{"debug": hclog.Debug, "info": hclog.Info, "warn": hclog.Warn, "error": hclog.Error}[cfg.LogLevel]
	hlog := hclog.New(&hclog.LoggerOptions{Name: strings.TrimSpace(cfg.LogPrefix + "plugin"), Output: cfg.LogOut, Level: hlevel})
	plug, err := host.Start(ctx, host.Config{Path: cfg.FSMPath, SHA256: cfg.FSMSHA256, Logger: hlog,
		ApplyTimeout: cfg.PluginApplyTimeout, CallTimeout: cfg.PluginCallTimeout})
	if err != nil {
		return nil, withCode(ExitFailure, fmt.Errorf("fsm plugin %s: %s", cfg.FSMPath, firstLine(err.Error())))
	}
	undo.add(func() { plug.Close() })

	h := &lateHandler{}
	tr := transport.New(transport.Options{ID: cfg.ID, ClusterID: cfg.ClusterID, Handler: h, Snapshots: h, Logger: log})
	undo.add(func() { tr.Close() })

	var peers []node.Peer
	for id, addr := range cfg.peers {
		peers = append(peers, node.Peer{ID: id, RaftAddr: addr})
	}
	if cfg.Join {
		// A joining node learns the membership from the log once added;
		// until then it answers the leader through the --peers addresses.
		for id, addr := range cfg.peers {
			if id != cfg.ID {
				tr.AddPeer(id, addr)
			}
		}
		peers = nil
	}
	snapEntries, snapTrailing := int(cfg.SnapshotEntries), int(cfg.SnapshotTrailing)
	if snapEntries == 0 {
		snapEntries = -1
	}
	if snapTrailing == 0 {
		snapTrailing = -1
	}
	n, err := node.New(node.Config{
		ID: cfg.ID, Peers: peers, Storage: nodeStore{st}, Transport: tr, StateMachine: pluginSM{plug},
		HeartbeatInterval: cfg.HeartbeatInterval, ElectionTimeout: cfg.ElectionTimeout,
		SnapshotEntries: snapEntries, SnapshotTrailing: snapTrailing, MaxEntryBytes: cfg.MaxEntryBytes,
		Logger: log,
	})
	if err != nil {
		return nil, withCode(ExitFailure, fmt.Errorf("node %d: %w", cfg.ID, err))
	}
	h.n.Store(n)
	undo.add(func() {
		sctx, cancel := context.WithTimeout(context.Background(), nodeStopTimeout)
		defer cancel()
		_ = n.Stop(sctx)
	})
	// The operator endpoint serves from here on, so that /healthz and
	// pprof answer during a long restart replay too.
	var ms *metricsServer
	if metricsLis != nil {
		if ms, err = newMetricsServer(metricsLis, n, stdLogger(log), tr.Collector()); err != nil {
			return nil, withCode(ExitFailure, err)
		}
		ms.Start()
		undo.add(func() { _ = ms.Close() })
		log.Infof("metrics: serving /metrics, /healthz and /debug/pprof/ on http://%s", ms.Addr())
	}

	an := &apiNode{n: n, raftAddr: raftLis.Addr().String(), apiAddr: apiLis.Addr().String(), clusterID: cfg.ClusterID, fsmSHA256: sum}
	srv := server.New(server.Config{
		Node: an, APIAddr: an.apiAddr, ClusterID: cfg.ClusterID, MaxEntryBytes: cfg.MaxEntryBytes,
		ForwardAddr: func(id uint64) (string, bool) {
			// Members serve the client API on their peer address too.
			ms, err := n.Members(context.Background())
			if err != nil {
				return "", false
			}
			for _, m := range ms {
				if m.ID == id && m.RaftAddr != "" {
					return m.RaftAddr, true
				}
			}
			return "", false
		},
	})
	// The peer port also answers forwarded client calls, whose answers
	// (query results) are not size-limited.
	raftSrv := grpc.NewServer(append(tr.ServerOptions(), grpc.MaxSendMsgSize(server.MaxResponseBytes))...)
	tr.Register(raftSrv)
	srv.Register(raftSrv)
	apiSrv := grpc.NewServer(server.ServerOptions()...)
	srv.Register(apiSrv)
	go raftSrv.Serve(raftLis)

	// Serve clients only once the restart replay is over.
	select {
	case <-n.Ready():
	case <-n.Done():
		return nil, withCode(ExitFailure, fmt.Errorf("node %d stopped during start: %w", cfg.ID, n.Err()))
	case <-ctx.Done():
		raftSrv.Stop()
		return nil, withCode(ExitFailure, errors.New("interrupted during start"))
	}
	go apiSrv.Serve(apiLis)
	// A single voter need not wait an election timeout to lead.
	if ms, err := n.Members(ctx); err == nil && len(ms) == 1 && ms[0].ID == cfg.ID && !ms[0].Learner && n.Leader() == 0 {
		_ = n.Campaign(ctx)
	}

	rn = &runningNode{id: cfg.ID, clusterID: cfg.ClusterID, apiAddr: an.apiAddr, raftAddr: an.raftAddr, done: make(chan struct{})}
	rn.stop = func() error {
		if ms != nil {
			ms.SetStopping()
		}
		// 0. A leader hands over first (thesis §3.10), so that the cluster
		// need not wait an election timeout and other nodes stop
		// forwarding to this one.
		if !cfg.NoHandOver {
			handOver(n, log)
		}
		// 1. Refuse new client calls on both ports (not applied, so clients
		// retry elsewhere) and let the ones in flight finish, including
		// those forwarded by other nodes.
		dctx, dcancel := context.WithTimeout(context.Background(), drainTimeout)
		_ = srv.Drain(dctx)
		dcancel()
		gracefulStop(apiSrv, time.Second)
		// 2. Stop the node: it finishes applying what it committed.
		sctx, cancel := context.WithTimeout(context.Background(), nodeStopTimeout)
		nerr := n.Stop(sctx)
		cancel()
		if ms != nil {
			_ = ms.Close()
		}
		// 3. Peers and forwarded calls.
		raftSrv.Stop()
		_ = tr.Close()
		_ = srv.Close()
		// 4. Plugin, then storage.
		perr := plug.Close()
		serr := st.Close()
		if nerr != nil && errors.Is(nerr, context.DeadlineExceeded) {
			nerr = fmt.Errorf("node %d did not stop within %s", cfg.ID, nodeStopTimeout)
		} else if nerr != nil && n.Err() != nil {
			nerr = nil // reported through Err
		}
		return errors.Join(nerr, perr, serr)
	}
	go func() {
		<-n.Done()
		if err := n.Err(); err != nil {
			rn.fail(fmt.Errorf("node %d stopped: %w", cfg.ID, err))
		}
	}()
	return rn, nil
}

// handOverTimeout bounds the leadership transfer at shutdown.
const handOverTimeout = 3 * time.Second

// handOver transfers leadership to the most up-to-date active voter if n
// leads a cluster of more than one voter. Failure is not an error: the
// others elect a leader after an election timeout.
func handOver(n *node.Node, log *logger) {
	ctx, cancel := context.WithTimeout(context.Background(), handOverTimeout)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil || st.Role != "leader" {
		return
	}
	var best uint64
	var bestMatch uint64
	for id, p := range st.Progress {
		if id == st.ID || p.Learner || !p.RecentActive {
			continue
		}
		if best == 0 || p.Match > bestMatch {
			best, bestMatch = id, p.Match
		}
	}
	if best == 0 {
		return
	}
	if err := n.TransferLeader(ctx, best); err != nil {
		log.Warningf("shutdown: leadership transfer to node %d: %v", best, err)
		return
	}
	log.Infof("shutdown: handed leadership to node %d", best)
}

// gracefulStop stops s, waiting up to d for in-flight calls.
func gracefulStop(s *grpc.Server, d time.Duration) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		s.Stop()
		<-done
	}
}

// firstLine returns s up to its first line break.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}

// gateWriter holds log output back until the node has started: a failed
// start then prints only its one-line error. It is safe for concurrent use.
type gateWriter struct {
	mu   sync.Mutex
	out  io.Writer
	buf  []byte
	open bool
	drop bool
}

const gateMaxBytes = 1 << 20

func newGate(out io.Writer) *gateWriter { return &gateWriter{out: out} }

func (g *gateWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.open:
		return g.out.Write(p)
	case g.drop:
		return len(p), nil
	}
	if len(g.buf)+len(p) <= gateMaxBytes {
		g.buf = append(g.buf, p...)
	}
	return len(p), nil
}

// Open writes what was held back and passes later output through.
func (g *gateWriter) Open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		_, _ = g.out.Write(g.buf)
		g.buf, g.open = nil, true
	}
}

// Discard drops what was held back and everything later.
func (g *gateWriter) Discard() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf, g.drop = nil, true
}
