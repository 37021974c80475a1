package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// metricsCluster starts n nodes running plugin fsm, each with its own
// --metrics-addr, and returns the cluster and each node's metrics base URL.
func metricsCluster(t *testing.T, n int, fsm string, extra ...string) (*cluster, map[uint64]string) {
	t.Helper()
	addrs := map[uint64]string{}
	for id := uint64(1); id <= uint64(n); id++ {
		addrs[id] = freeAddr(t)
	}
	c := startCluster(t, n, fsm, nil, func(id uint64) []string {
		return []string{"--metrics-addr", addrs[id]}
	}, extra...)
	bases := map[uint64]string{}
	for id, a := range addrs {
		bases[id] = "http://" + a
	}
	return c, bases
}

// healthOf returns a grpc.health.v1 client of node id's API address.
func (c *cluster) healthOf(id uint64) healthpb.HealthClient {
	c.t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+c.nodes[id].apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// waitReadyz polls base/readyz until it answers code (and, for 503, a body
// containing why), or fails the test after d. It returns the last body.
func waitReadyz(t *testing.T, base string, code int, why string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for {
		got, body, err := get(t, base+"/readyz")
		if err == nil && got == code && strings.Contains(body, why) {
			return body
		}
		last = fmt.Sprintf("%d %q %v", got, body, err)
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz: not %d %q within %s; last answer %s", base, code, why, d, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitHealth polls node id's gRPC health service, for the server and for
// the client API, until both answer want, or fails the test after d.
func waitHealth(t *testing.T, hc healthpb.HealthClient, id uint64, want healthpb.HealthCheckResponse_ServingStatus, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for _, svc := range []string{"", "raftd.api.v1.Raftd"} {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			cancel()
			if err == nil && resp.GetStatus() == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d grpc health %q: %v %v, want %v within %s", id, svc, resp.GetStatus(), err, want, d)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// watchHealth follows node id's health Watch stream and delivers each
// status it sends.
func watchHealth(t *testing.T, hc healthpb.HealthClient) <-chan healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan healthpb.HealthCheckResponse_ServingStatus, 16)
	go func() {
		defer close(ch)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			ch <- resp.GetStatus()
		}
	}()
	return ch
}

// nextStatus waits for the next status on a Watch stream.
func nextStatus(t *testing.T, ch <-chan healthpb.HealthCheckResponse_ServingStatus, want healthpb.HealthCheckResponse_ServingStatus, d time.Duration) {
	t.Helper()
	select {
	case st, ok := <-ch:
		if !ok || st != want {
			t.Fatalf("health Watch: got %v (open %v), want %v", st, ok, want)
		}
	case <-time.After(d):
		t.Fatalf("health Watch: no %v within %s", want, d)
	}
}

// TestReadyzMajorityKilled kills two of three nodes with SIGKILL (by PID):
// the survivor's /readyz turns 503 saying why, and its gRPC health service
// NOT_SERVING (pushed to a Watch stream too); once the two are restarted,
// 200 and SERVING again. It runs twice: with the leader surviving (it
// steps down for want of a quorum, check-quorum) and with a follower
// surviving (it forgets the dead leader when it starts an election).
func TestReadyzMajorityKilled(t *testing.T) {
	c, bases := metricsCluster(t, 3, bin("raftd-fsm-kv"))
	c.mustApply(1, `{"op":"put","key":"r","value":"1"}`, 10*time.Second)
	health := map[uint64]healthpb.HealthClient{}
	for _, id := range c.ids {
		health[id] = c.healthOf(id)
	}
	for round, survivorIsLeader := range []bool{true, false} {
		lead, _ := c.waitLeader(20*time.Second, 0)
		survivor := lead
		if !survivorIsLeader {
			survivor = lead%3 + 1
		}
		t.Logf("round %d: leader %d, survivor %d", round, lead, survivor)
		for _, id := range c.ids {
			body := waitReadyz(t, bases[id], http.StatusOK, "ok: leader", 20*time.Second)
			if !strings.HasSuffix(body, "\n") || strings.Count(body, "\n") != 1 {
				t.Errorf("node %d /readyz body is not one line: %q", id, body)
			}
			waitHealth(t, health[id], id, healthpb.HealthCheckResponse_SERVING, 10*time.Second)
		}
		watch := watchHealth(t, health[survivor])
		nextStatus(t, watch, healthpb.HealthCheckResponse_SERVING, 5*time.Second)

		var killed []uint64
		for _, id := range c.ids {
			if id != survivor {
				c.kill(id)
				killed = append(killed, id)
			}
		}
		t0 := time.Now()
		body := waitReadyz(t, bases[survivor], http.StatusServiceUnavailable, "no leader known", 20*time.Second)
		t.Logf("round %d: node %d /readyz 503 %.1fs after the kill: %q", round, survivor, time.Since(t0).Seconds(), body)
		nextStatus(t, watch, healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
		waitHealth(t, health[survivor], survivor, healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
		// /healthz still says the process serves: liveness is not readiness.
		if code, hbody, err := get(t, bases[survivor]+"/healthz"); err != nil || code != http.StatusOK {
			t.Errorf("node %d /healthz without a quorum: %d %q %v, want 200", survivor, code, hbody, err)
		}

		for _, id := range killed {
			c.start(id)
		}
		for _, id := range c.ids {
			waitReadyz(t, bases[id], http.StatusOK, "ok: leader", 30*time.Second)
		}
		nextStatus(t, watch, healthpb.HealthCheckResponse_SERVING, 10*time.Second)
		for _, id := range c.ids {
			waitHealth(t, health[id], id, healthpb.HealthCheckResponse_SERVING, 20*time.Second)
		}
		c.mustApply(survivor, fmt.Sprintf(`{"op":"put","key":"r","value":"%d"}`, round+2), 10*time.Second)
	}
}
