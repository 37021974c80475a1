package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/server"
	"github.com/raftd/raftd/core/statemachine"
	"github.com/raftd/raftd/core/storage"
	"github.com/raftd/raftd/core/transport"
	"github.com/raftd/raftd/plugin/host"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Daemon is one running node: storage, state machine (plugin process or in
// process), transport, Raft node, client API and, if configured, the
// metrics endpoint. Its methods are safe for concurrent use; Stop is
// idempotent.
type Daemon struct {
	cfg      Config
	n        *node.Node
	fsm      *fsmSlot
	apiAddr  string
	raftAddr string

	done     chan struct{}
	errOnce  sync.Once
	err      error
	stopOnce sync.Once
	stopErr  error
	stop     func() error
}

// ID returns the node id.
func (d *Daemon) ID() uint64 { return d.cfg.ID }

// ClusterID returns the cluster id in use.
func (d *Daemon) ClusterID() string { return d.cfg.ClusterID }

// APIAddr returns the bound client API address.
func (d *Daemon) APIAddr() string { return d.apiAddr }

// RaftAddr returns the bound peer address.
func (d *Daemon) RaftAddr() string { return d.raftAddr }

// Node returns the Raft node, for embedding programs that propose and read
// without going through the client API.
func (d *Daemon) Node() *node.Node { return d.n }

// Done is closed when the node stops on its own (fail-stop); Err then tells
// why. A Stop does not close it.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err is the reason the node stopped on its own, once Done is closed.
func (d *Daemon) Err() error {
	select {
	case <-d.done:
		return d.err
	default:
		return nil
	}
}

func (d *Daemon) fail(err error) {
	d.errOnce.Do(func() {
		d.err = err
		close(d.done)
	})
}

// Stop stops the node and releases everything Start acquired, in order: a
// leader hands leadership over (thesis §3.10; unless Config.NoHandOver);
// the client API refuses new requests as not applied and lets those in
// flight finish (up to 5 s); the node finishes applying what it committed
// (up to 10 s); then the transport, the state machine and the storage are
// closed. It returns the first errors of those steps; a node that had
// already failed reports that through Err, not here.
func (d *Daemon) Stop() error {
	d.stopOnce.Do(func() { d.stopErr = d.stop() })
	return d.stopErr
}

// cleanup runs deferred close functions in reverse order on a failed start.
type cleanup []func()

func (c *cleanup) add(f func()) { *c = append(*c, f) }
func (c cleanup) run() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// Start builds and starts a node from cfg and returns once it serves
// clients: after the restart replay (the state machine has applied what
// was committed when it started) and, for a cluster of one voter, after
// it leads. On error nothing is left running or bound. The error is one
// line naming what failed (a listen address in use, a data dir of another
// node or cluster, a missing plugin, corrupt storage...).
func Start(ctx context.Context, cfg Config) (d *Daemon, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var undo cleanup
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	if cfg.FSMPath != "" {
		if _, err = CheckPlugin(cfg.FSMPath, cfg.FSMSHA256); err != nil {
			return nil, err
		}
	}
	log := cfg.Logger.With("node", cfg.ID)
	sec, err := cfg.security()
	if err != nil {
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
	if len(cfg.Peers) == 0 && !cfg.Join {
		cfg.Peers = []node.Peer{{ID: cfg.ID, RaftAddr: advertised(cfg.RaftAddr, raftLis)}}
	}
	if cfg.ClusterID == "" {
		if cfg.ClusterID = storedClusterID(cfg.DataDir); cfg.ClusterID == "" {
			cfg.ClusterID = ClusterIDFor(cfg.Peers)
		}
	}
	if _, err := checkDataDir(cfg.DataDir, cfg.ID, cfg.ClusterID); err != nil {
		return nil, err
	}
	warnDataDirMode(log, cfg.DataDir)
	sec.warnPlaintext(log, raftLis, apiLis, metricsLis)

	// The plugin process starts while the storage opens (it only needs
	// its binary, checked above); it is stopped if the storage fails.
	type started struct {
		plug *host.Client
		err  error
	}
	var plugc chan started
	if cfg.FSM == nil {
		plugc = make(chan started, 1)
		go func() {
			plug, err := host.Start(ctx, host.Config{Path: cfg.FSMPath, SHA256: cfg.FSMSHA256, Logger: log,
				ApplyTimeout: cfg.PluginApplyTimeout, CallTimeout: cfg.PluginCallTimeout})
			plugc <- started{plug, err}
		}()
	}
	awaitPlugin := func() (*host.Client, error) {
		r := <-plugc
		if r.err != nil {
			return nil, fmt.Errorf("fsm plugin %s: %s", cfg.FSMPath, firstLine(r.err.Error()))
		}
		return r.plug, nil
	}

	// The log is checked while the plugin restores the snapshot;
	// node.New waits for the verdict before it starts Raft.
	st, err := openStorage(cfg.DataDir, &storage.Options{ClusterID: cfg.ClusterID, NodeID: cfg.ID, DisableSync: cfg.NoSync, Logger: log,
		CheckLogLater: true})
	if err != nil {
		if plugc != nil {
			if plug, perr := awaitPlugin(); perr == nil {
				_ = plug.Close()
			}
		}
		return nil, err
	}
	undo.add(func() { st.Close() })

	// One adapter for both: an FSM in this process, or the plugin host's
	// client (an fsm.FSM too) for a plugin process.
	slot := &fsmSlot{cfg: cfg, log: log}
	f := cfg.FSM
	if f == nil {
		plug, err := awaitPlugin()
		if err != nil {
			return nil, err
		}
		f, slot.plug = plug, plug
	}
	sm := statemachine.New(f)
	slot.sm = sm
	undo.add(func() { slot.close() })

	h := &lateHandler{}
	topts := transport.Options{ID: cfg.ID, ClusterID: cfg.ClusterID, Handler: h, Snapshots: h, Logger: log}
	if sec.peer != nil {
		topts.PeerDialOptions, topts.Authorize = sec.peer.DialOptions, sec.peer.Authorize
	}
	tr := transport.New(topts)
	undo.add(func() { tr.Close() })

	peers := cfg.Peers
	if cfg.Join {
		// A joining node learns the membership from the log once added;
		// until then it answers the leader through the Peers addresses.
		for _, p := range cfg.Peers {
			if p.ID != cfg.ID {
				tr.AddPeer(p.ID, p.RaftAddr)
			}
		}
		peers = nil
	}
	peersLate := &latePeers{}
	n, err := node.New(node.Config{
		ID: cfg.ID, Peers: peers, Storage: nodeStore{st}, Transport: tr, StateMachine: sm,
		HeartbeatInterval: cfg.HeartbeatInterval, ElectionTimeout: cfg.ElectionTimeout,
		SnapshotEntries: cfg.SnapshotEntries, SnapshotTrailing: cfg.SnapshotTrailing, MaxEntryBytes: cfg.MaxEntryBytes,
		CheckpointEntries: cfg.CheckpointEntries, CheckpointPeers: peersLate,
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
	}
	h.n.Store(n)
	slot.n = n
	undo.add(func() {
		sctx, cancel := context.WithTimeout(context.Background(), nodeStopTimeout)
		defer cancel()
		_ = n.Stop(sctx)
	})
	// The operator endpoint serves from here on, so that /healthz and
	// pprof answer during a long restart replay too.
	var ms *metricsServer
	if metricsLis != nil {
		lis, scheme := metricsLis, "http://"
		if sec.client != nil {
			lis, scheme = tls.NewListener(metricsLis, sec.client), "https://"
		}
		if ms, err = newMetricsServer(lis, n, slog.NewLogLogger(log.Handler(), slog.LevelWarn), cfg.EnablePprof, tr.Collector()); err != nil {
			return nil, err
		}
		ms.readyMaxLag = uint64(cfg.ReadyMaxApplyLag)
		ms.Start()
		undo.add(func() { _ = ms.Close() })
		log.Info("metrics: serving the status page, /metrics, /healthz and /readyz", "url", scheme+ms.Addr(), "pprof", cfg.EnablePprof)
	}

	raftAddr, apiAddr := raftLis.Addr().String(), apiLis.Addr().String()
	scfg := server.Config{Node: n, RaftAddr: raftAddr, APIAddr: apiAddr, ClusterID: cfg.ClusterID,
		FSMSHA256: slot.binarySHA256, MaxEntryBytes: cfg.MaxEntryBytes, SnapshotNeedsClientCert: sec.client != nil}
	if slot.plug != nil {
		scfg.ReloadFSM = slot.reload
	}
	// The peer port answers Raft traffic and requests forwarded by other
	// members (whose answers, query results, are not size-limited); the
	// client API is only on the api address.
	raftOpts := append(tr.ServerOptions(), grpc.MaxSendMsgSize(server.MaxResponseBytes))
	if sec.peer != nil {
		raftOpts = append(raftOpts, grpc.Creds(sec.peer.ServerCredentials()))
		scfg.PeerDialOptions, scfg.AuthorizePeer = sec.peer.DialOptions, sec.peer.Authorize
	}
	srv := server.New(scfg)
	peersLate.s.Store(srv)
	raftSrv := grpc.NewServer(raftOpts...)
	tr.Register(raftSrv)
	srv.RegisterForward(raftSrv)
	apiOpts := server.ServerOptions(cfg.MaxEntryBytes)
	if sec.client != nil {
		apiOpts = append(apiOpts, grpc.Creds(credentials.NewTLS(sec.client)))
	}
	apiSrv := grpc.NewServer(apiOpts...)
	srv.Register(apiSrv)
	// grpc.health.v1 on the API address, with /readyz's meaning.
	hw := startHealth(n, uint64(cfg.ReadyMaxApplyLag), cfg.healthInterval())
	healthpb.RegisterHealthServer(apiSrv, hw.hs)
	undo.add(hw.stop)
	if ms != nil {
		ms.SetAPI(srv)
	}
	go raftSrv.Serve(raftLis)
	undo.add(raftSrv.Stop)

	// Serve clients only once the restart replay is over.
	if err := awaitReplay(ctx, n, log, cfg.ReplayProgressInterval); err != nil {
		return nil, err
	}
	go apiSrv.Serve(apiLis)
	campaignAlone(ctx, n)
	hw.update() // ready now, not at the next tick

	d = &Daemon{cfg: cfg, n: n, fsm: slot, apiAddr: apiAddr, raftAddr: raftAddr, done: make(chan struct{})}
	d.stop = func() error {
		if ms != nil {
			ms.SetStopping()
		}
		hw.stop()
		// 0. A leader hands over first, so that the cluster need not wait
		// an election timeout and other nodes stop forwarding to this one.
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
		// 4. State machine, then storage.
		perr := slot.close()
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
			d.fail(fmt.Errorf("node %d stopped: %w", cfg.ID, err))
		}
	}()
	return d, nil
}

// replayingNode is what awaitReplay reads; *node.Node implements it.
type replayingNode interface {
	ID() uint64
	Ready() <-chan struct{}
	Done() <-chan struct{}
	Err() error
	Applied() uint64
	ReplayTarget() uint64
	Halted() *node.Halt
}

// haltPoll is how often awaitReplay looks for a halt during the replay.
const haltPoll = 50 * time.Millisecond

// replayQuiet is how long a restart replay runs before awaitReplay says
// so: a short one (a few entries, the bootstrap) is not worth a line.
const replayQuiet = time.Second

// awaitReplay returns once n has replayed its log (Ready), or once its
// apply halted during the replay: a halted node serves its API so that
// the halt can be seen and resolved (fsm skip), which a node that is
// still waiting for its replay could not. A replay still running after
// replayQuiet is logged then, every interval after, and at its end, so
// that a long replay after a restart shows progress rather than silence.
func awaitReplay(ctx context.Context, n replayingNode, log *slog.Logger, every time.Duration) error {
	select {
	case <-n.Ready():
		return nil
	default:
	}
	target, t0 := n.ReplayTarget(), time.Now()
	from := min(n.Applied(), target)
	done := func() uint64 { return min(n.Applied(), target) - from }
	quiet := time.NewTimer(replayQuiet)
	defer quiet.Stop()
	var tick <-chan time.Time // from the end of the quiet period
	poll := time.NewTicker(haltPoll)
	defer poll.Stop()
	for {
		select {
		case <-poll.C:
			if h := n.Halted(); h != nil {
				log.Warn("apply halted during the replay: serving the API with the state before the halt", "index", h.Index,
					"replayed", done(), "of", target-from)
				return nil
			}
		case <-n.Ready():
			if tick != nil {
				log.Info("replayed the log", "entries", target-from, "elapsed", time.Since(t0).Round(time.Millisecond).String())
			}
			return nil
		case <-quiet.C:
			log.Info("replaying the log", "from", from, "to", target, "entries", target-from, "replayed", done())
			t := time.NewTicker(every)
			defer t.Stop()
			tick = t.C
		case <-tick:
			log.Info("replaying the log", "replayed", done(), "of", target-from, "index", n.Applied(),
				"percent", done()*100/max(target-from, 1))
		case <-n.Done():
			return fmt.Errorf("node %d stopped during start: %w", n.ID(), n.Err())
		case <-ctx.Done():
			return errors.New("interrupted during start")
		}
	}
}

// campaignAlone makes a lone voter lead at once rather than after an
// election timeout, and returns once it does (or ctx ends).
func campaignAlone(ctx context.Context, n *node.Node) {
	ms, err := n.Members(ctx)
	if err != nil || len(ms) != 1 || ms[0].ID != n.ID() || ms[0].Learner || n.Leader() != 0 {
		return
	}
	if n.Campaign(ctx) != nil {
		return
	}
	// NB: a lone voter wins inside Campaign; the loop publishes the new
	// leader when it handles the resulting Ready, before it runs the next
	// call, so one more round trip through the loop makes Leader current.
	_, _ = n.Status(ctx)
}

// handOver transfers leadership to the most up-to-date active voter if n
// leads a cluster of more than one voter. Failure is not an error: the
// others elect a leader after an election timeout.
func handOver(n *node.Node, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), handOverTimeout)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil || st.Role != "leader" {
		return
	}
	var best, bestMatch uint64
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
		log.Warn("shutdown: leadership transfer failed", "peer", best, "err", err)
		return
	}
	log.Info("shutdown: handed leadership over", "peer", best)
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

// listen opens addr with a clear error when it is taken.
func listen(what, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%s %s is already in use (another raftd running?)", what, addr)
		}
		return nil, fmt.Errorf("%s %s: %v", what, addr, err)
	}
	return l, nil
}

// advertised is the peer address to record for this node: addr as
// configured, or the bound address when addr is empty or asks for any free
// port.
func advertised(addr string, l net.Listener) string {
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "0" {
		return addr
	}
	return l.Addr().String()
}
