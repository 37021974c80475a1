package daemon

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/raftd/raftd/core/node"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// DefaultReadyMaxApplyLag is the default Config.ReadyMaxApplyLag.
const DefaultReadyMaxApplyLag = 10000

// readyNode is what readiness reads of the node: channels and atomics
// only, so that a probe never waits for the node's loop.
type readyNode interface {
	Ready() <-chan struct{}
	Done() <-chan struct{}
	Err() error
	Leader() uint64
	CommitIndex() uint64
	Applied() uint64
	Halted() *node.Halt
}

// readiness reports whether the node should receive client traffic, with
// a one-line reason either way. It is ready while it serves (the restart
// replay is over, it is neither stopping nor stopped), knows a leader (it
// has none during an election, and none for long when a majority is down:
// a leader without a quorum steps down after an election timeout
// (check-quorum), a follower forgets its leader when it starts an
// election), its apply is not halted, and its state machine has applied
// within maxLag entries of the commit index it knows.
func readiness(n readyNode, stopping bool, maxLag uint64) (bool, string) {
	select {
	case <-n.Done():
		if err := n.Err(); err != nil {
			return false, "failed: " + firstLine(err.Error())
		}
		return false, "stopped"
	default:
	}
	if stopping {
		return false, "stopping"
	}
	commit, applied := n.CommitIndex(), n.Applied()
	select {
	case <-n.Ready():
	default:
		return false, fmt.Sprintf("starting: replaying the log (applied %d, commit %d)", applied, commit)
	}
	if h := n.Halted(); h != nil {
		return false, fmt.Sprintf("apply halted at index %d: %s", h.Index, firstLine(h.Reason))
	}
	lead := n.Leader()
	if lead == 0 {
		return false, "no leader known (election in progress, or no quorum)"
	}
	if commit > applied && commit-applied > maxLag {
		return false, fmt.Sprintf("applied index %d is %d entries behind the commit index %d (bound %d)", applied, commit-applied, commit, maxLag)
	}
	return true, fmt.Sprintf("ok: leader %d, applied %d, commit %d", lead, applied, commit)
}

// readyz answers 200 with "ok: ..." while the node is ready (readiness),
// else 503 with the reason; the body is one line.
func (m *metricsServer) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, msg := readiness(m.n, m.stopping.Load(), m.readyMaxLag)
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// healthInterval is how often the gRPC health status is re-evaluated: a
// heartbeat interval.
func (cfg Config) healthInterval() time.Duration {
	if cfg.HeartbeatInterval > 0 {
		return cfg.HeartbeatInterval
	}
	return DefaultHeartbeatInterval
}

// healthServices are the names the gRPC health service answers for: ""
// (the server as a whole) and the client API.
var healthServices = []string{"", apiv1.Raftd_ServiceDesc.ServiceName}

// healthWatcher keeps a grpc.health.v1 server's status in step with
// readiness: SERVING while ready, NOT_SERVING otherwise, re-evaluated
// every interval and on update. Stop it with stop; it then answers
// NOT_SERVING for good.
type healthWatcher struct {
	hs     *health.Server
	n      readyNode
	maxLag uint64

	mu    sync.Mutex
	set   bool // last has been published
	last  bool
	ended bool

	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}
}

// startHealth starts following n; register the returned watcher's hs on
// the gRPC server.
func startHealth(n readyNode, maxLag uint64, interval time.Duration) *healthWatcher {
	h := &healthWatcher{hs: health.NewServer(), n: n, maxLag: maxLag, stopc: make(chan struct{}), done: make(chan struct{})}
	h.update()
	go func() {
		defer close(h.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-h.stopc:
				return
			case <-t.C:
				h.update()
			}
		}
	}()
	return h
}

// update re-evaluates readiness now and publishes a change.
func (h *healthWatcher) update() {
	ok, _ := readiness(h.n, false, h.maxLag)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended || (h.set && ok == h.last) {
		return
	}
	h.set, h.last = true, ok
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, s := range healthServices {
		h.hs.SetServingStatus(s, st)
	}
}

// stop answers NOT_SERVING from now on (to Check and to every Watch) and
// stops following the node. It is idempotent.
func (h *healthWatcher) stop() {
	h.stopOnce.Do(func() {
		close(h.stopc)
		<-h.done
		h.mu.Lock()
		h.ended = true
		h.mu.Unlock()
		h.hs.Shutdown()
	})
}
