package transport

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// countingHandler counts inbound messages and signals progress.
type countingHandler struct {
	n        atomic.Int64
	progress chan struct{}
}

func (h *countingHandler) Process(ctx context.Context, m raft.Message) error {
	h.n.Add(1)
	select {
	case h.progress <- struct{}{}:
	default:
	}
	return nil
}
func (h *countingHandler) ReportUnreachable(uint64)                   {}
func (h *countingHandler) ReportSnapshot(uint64, raft.SnapshotStatus) {}
func (h *countingHandler) ReceiveSnapshot(ctx context.Context, m raft.Message, body io.Reader) error {
	n, err := io.Copy(io.Discard, body)
	h.n.Add(n)
	return err
}

// loopbackPair starts a receiver (node 2) on 127.0.0.1 TCP and a sender
// (node 1) connected to it.
func loopbackPair(b *testing.B, h *countingHandler, src SnapshotSource, snapStatus chan raft.SnapshotStatus) *Transport {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	recv := New(Options{ID: 2, ClusterID: "bench", Handler: h, MaxBatchBytes: benchBatchBytes})
	go func() { _ = recv.Serve(lis) }()
	sh := &recorder{unreachable: make(chan uint64, 1), snapStatus: snapStatus}
	send := New(Options{ID: 1, ClusterID: "bench", Handler: sh, Snapshots: src, MaxBatchBytes: benchBatchBytes})
	send.AddPeer(2, lis.Addr().String())
	b.Cleanup(func() {
		send.Close()
		recv.Close()
	})
	return send
}

// BenchmarkMsgApp measures MsgApp throughput over loopback TCP with 128 B
// entries; MB/s counts entry payload bytes.
func BenchmarkMsgApp(b *testing.B) {
	for _, entries := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("entries=%d", entries), func(b *testing.B) { benchMsgApp(b, entries) })
	}
}

var benchWindow, benchBatchBytes = envInt("BENCH_WINDOW", 256), envInt("BENCH_BATCH", 0)

func envInt(k string, d int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return d
}

func init() { sendGenerated = os.Getenv("BENCH_GENERATED") != "" }

// cpuTime returns the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchMsgApp(b *testing.B, entries int) {
	window := benchWindow // messages in flight; the queue holds 4096
	h := &countingHandler{progress: make(chan struct{}, 1)}
	tr := loopbackPair(b, h, nil, nil)
	ents := make([]raft.Entry, entries)
	for i := range ents {
		ents[i] = raft.Entry{Term: 1, Index: uint64(i + 1), Data: make([]byte, 128)}
	}
	batch := make([]raft.Message, 64)
	for i := range batch {
		batch[i] = raft.Message{Type: raft.MsgApp, From: 1, To: 2, Term: 1, Index: 1, Commit: 1, Entries: ents}
	}
	// Warm up the stream.
	tr.Send(batch[:1])
	for h.n.Load() < 1 {
		<-h.progress
	}
	h.n.Store(0)
	dropped0 := tr.Stats().MessagesDropped

	b.SetBytes(int64(entries * 128))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	sent := 0
	inflight := func() int { return sent - int(h.n.Load()) - int(tr.Stats().MessagesDropped-dropped0) }
	wait := func() {
		select {
		case <-h.progress:
		case <-time.After(time.Millisecond):
		}
	}
	for sent < b.N {
		for inflight() >= window {
			wait()
		}
		n := min(len(batch), b.N-sent)
		tr.Send(batch[:n])
		sent += n
	}
	for inflight() > 0 {
		wait()
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(tr.Stats().MessagesDropped-dropped0), "dropped")
	b.ReportMetric(float64(tr.Stats().MessagesSent)/float64(tr.Stats().BatchesSent), "msgs/batch")
}

// BenchmarkSnapshot measures snapshot streaming over loopback TCP (64 MiB
// per transfer, 1 MiB chunks).
func BenchmarkSnapshot(b *testing.B) {
	const size = 64 << 20
	h := &countingHandler{progress: make(chan struct{}, 1)}
	status := make(chan raft.SnapshotStatus, 1)
	src := source(func(raft.SnapshotMetadata, []byte) (io.ReadCloser, error) { return &zeroReader{n: size}, nil })
	tr := loopbackPair(b, h, src, status)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		tr.Send([]raft.Message{snapMsg()})
		if st := <-status; st != raft.SnapshotFinish {
			b.Fatal("snapshot failed")
		}
	}
}

// zeroReader yields n zero bytes cheaply.
type zeroReader struct{ n int }

func (r *zeroReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n)
	clear(p[:k])
	r.n -= k
	return k, nil
}
func (r *zeroReader) Close() error { return nil }
