package server_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/raftd/raftd/core/daemon"
	"github.com/raftd/raftd/fsms/kv"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// cpuTime is the CPU time (user + system) of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchAPI runs op from clients concurrent callers against the leader of a
// 3-node cluster in this process (kv FSM in process, no fsync, real gRPC
// on loopback for the client API and between the nodes) and reports the
// process's CPU time per operation next to the wall time: on a shared
// machine the CPU figure is the steadier one. It measures the request path
// (gRPC, server, node, raft, transport, storage writes, apply) of all three
// nodes and the client together.
func benchAPI(b *testing.B, clients int, prepare func(apiv1.RaftdClient), op func(context.Context, apiv1.RaftdClient, int) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ds, err := daemon.StartCluster(ctx, 3, b.TempDir(), 0, func(cfg *daemon.Config) {
		cfg.FSM, cfg.NoSync = kv.New(), true
		cfg.ElectionTimeout = 2 * time.Second
	})
	if err != nil {
		b.Fatal(err)
	}
	defer daemon.StopAll(ds)
	if err := ds[0].Node().Campaign(ctx); err != nil {
		b.Fatal(err)
	}
	for _, d := range ds {
		for d.Node().Leader() != 1 {
			if ctx.Err() != nil {
				b.Fatal("no leader")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	conns := make([]apiv1.RaftdClient, min(clients, 8))
	for i := range conns {
		cc, err := grpc.NewClient("passthrough:///"+ds[0].APIAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		conns[i] = apiv1.NewRaftdClient(cc)
	}
	if prepare != nil {
		prepare(conns[0])
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := conns[c%len(conns)]
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if err := op(context.Background(), cl, int(i)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func benchPutCmd(i int) []byte {
	return fmt.Appendf(nil, `{"op":"put","key":"k%015d","value":"%0128d"}`, i%10000, i)
}

// BenchmarkAPIApply measures kv puts through the client API of the leader
// of a 3-node in-process cluster.
//
//	go test -run '^$' -bench APIApply -benchtime 20000x ./core/server
func BenchmarkAPIApply(b *testing.B) {
	for _, clients := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchAPI(b, clients, nil, func(ctx context.Context, cl apiv1.RaftdClient, i int) error {
				_, err := cl.Apply(ctx, &apiv1.ApplyRequest{Command: benchPutCmd(i)})
				return err
			})
		})
	}
}

// BenchmarkAPIQuery measures linearizable kv gets through the client API
// of the leader of a 3-node in-process cluster.
func BenchmarkAPIQuery(b *testing.B) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchAPI(b, clients, func(cl apiv1.RaftdClient) {
				for i := range 100 {
					if _, err := cl.Apply(context.Background(), &apiv1.ApplyRequest{Command: benchPutCmd(i)}); err != nil {
						b.Fatal(err)
					}
				}
			}, func(ctx context.Context, cl apiv1.RaftdClient, i int) error {
				q := fmt.Appendf(nil, `{"op":"get","key":"k%015d"}`, i%100)
				_, err := cl.Query(ctx, &apiv1.QueryRequest{Query: q})
				return err
			})
		})
	}
}
