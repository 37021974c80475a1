package host_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/statemachine"
	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/host"
)

// putCommands returns n kv put commands of exactly size bytes each,
// indexes from+1..from+n, keys spread over the key space.
func putCommands(from, n, size int) []fsm.Entry {
	es := make([]fsm.Entry, n)
	for i := range es {
		idx := from + i + 1
		cmd := fmt.Sprintf(`{"op":"put","key":"key-%012d","value":"`, idx%1000003*7919%1000003)
		cmd += strings.Repeat("v", size-len(cmd)-2) + `"}`
		es[i] = fsm.Entry{Index: uint64(idx), Term: 1, Version: 1, Data: []byte(cmd)}
	}
	return es
}

// BenchmarkKVPutsMillion delivers 1,000,000 committed 128-byte kv puts,
// in Apply calls of `batch` commands, through the node's state machine
// adapter (core/statemachine) to fsms/kv in this process and to
// raftd-fsm-kv through plugin/host, in the same run, and reports both
// rates and their ratio: the in-process path is the baseline. Run with
// -benchtime 1x:
//
//	go test -run '^$' -bench KVPutsMillion -benchtime 1x ./plugin/host
func BenchmarkKVPutsMillion(b *testing.B) {
	const total = 1_000_000
	for _, batch := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			ctx := context.Background()
			var inRate, plRate, inCPU, hostCPU, plugCPU float64
			for it := 0; it < b.N; it++ {
				// Commands are built outside the timed sections.
				batches := make([][]node.Command, 0, total/batch)
				for from := 0; from < total; from += batch {
					batches = append(batches, toCommands(putCommands(from, batch, 128)))
				}
				runtime.GC()
				sm := statemachine.New(kv.New())
				t0, cpu0 := time.Now(), selfCPU()
				for _, cmds := range batches {
					if _, err := sm.Apply(ctx, cmds); err != nil {
						b.Fatal(err)
					}
				}
				inRate = total / time.Since(t0).Seconds()
				inCPU = (selfCPU() - cpu0).Seconds() * 1e6 / total
				sm = nil
				runtime.GC()

				c, err := host.Start(ctx, host.Config{Path: bins["raftd-fsm-kv"], Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					b.Fatal(err)
				}
				sm = statemachine.New(c)
				t0, cpu0 = time.Now(), selfCPU()
				pcpu0 := procCPU(c.PID())
				for _, cmds := range batches {
					if _, err := sm.Apply(ctx, cmds); err != nil {
						b.Fatal(err)
					}
				}
				plRate = total / time.Since(t0).Seconds()
				hostCPU = (selfCPU() - cpu0).Seconds() * 1e6 / total
				plugCPU = (procCPU(c.PID()) - pcpu0).Seconds() * 1e6 / total
				sm.Close()
			}
			b.ReportMetric(inRate, "inproc-entries/s")
			b.ReportMetric(plRate, "plugin-entries/s")
			b.ReportMetric(100*plRate/inRate, "plugin-%")
			// CPU time per entry does not depend on how busy the machine is.
			b.ReportMetric(inCPU, "inproc-cpu-µs/entry")
			b.ReportMetric(hostCPU, "host-cpu-µs/entry")
			b.ReportMetric(plugCPU, "plugin-cpu-µs/entry")
		})
	}
}

// toCommands converts entries to the node's commands.
func toCommands(es []fsm.Entry) []node.Command {
	cmds := make([]node.Command, len(es))
	for i, e := range es {
		cmds[i] = node.Command(e)
	}
	return cmds
}

// selfCPU returns this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU returns another process's user+system CPU time from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// rssSampler records the peak resident set size of a process while it runs.
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	peak int64 // KiB
}

func readRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			v, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return v
		}
	}
	return 0
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			if v := readRSS(pid); v > s.peak {
				s.peak = v
			}
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) Stop() int64 {
	close(s.stop)
	<-s.done
	return s.peak
}

// BenchmarkSnapshotRestore builds a kv state of RAFTD_SNAPSHOT_MB MiB
// (default 64; 1024 with RAFTD_SOAK=1) in a raftd-fsm-kv plugin, streams a
// snapshot to a file and restores it into a fresh plugin, and reports MB/s
// and the peak RSS of the host and of both plugins during each phase.
//
//	go test -run '^$' -bench SnapshotRestore -benchtime 1x ./plugin/host
//	RAFTD_SOAK=1 go test -run '^$' -bench SnapshotRestore -benchtime 1x -timeout 30m ./plugin/host
func BenchmarkSnapshotRestore(b *testing.B) {
	mb := 64
	if os.Getenv("RAFTD_SOAK") == "1" {
		mb = 1024
	}
	if v, err := strconv.Atoi(os.Getenv("RAFTD_SNAPSHOT_MB")); err == nil && v > 0 {
		mb = v
	}
	ctx := context.Background()
	const valueBytes = 4000 // command ~4 KiB; body record ~4 KiB
	n := mb << 20 / (valueBytes + 30)
	for it := 0; it < b.N; it++ {
		src, err := host.Start(ctx, host.Config{Path: bins["raftd-fsm-kv"], Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer src.Close()
		for from := 0; from < n; from += 2000 {
			if _, err := src.ApplyBatch(ctx, putCommands(from, min(2000, n-from), valueBytes+40)); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		hostBase := readRSS(os.Getpid())
		srcBase := readRSS(src.PID())

		path := filepath.Join(b.TempDir(), "kv.snap")
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		hs, ps := sampleRSS(os.Getpid()), sampleRSS(src.PID())
		t0 := time.Now()
		h, err := snapshotTo(ctx, src, f)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		snapDur := time.Since(t0)
		hostSnapPeak, srcSnapPeak := hs.Stop(), ps.Stop()
		st, _ := f.Stat()
		f.Close()
		size := st.Size()
		_, wantDigest, err := src.DigestAt(ctx)
		if err != nil {
			b.Fatal(err)
		}
		src.Close()

		dst, err := host.Start(ctx, host.Config{Path: bins["raftd-fsm-kv"], Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer dst.Close()
		runtime.GC()
		dstBase := readRSS(dst.PID())
		f, err = os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		hs, ps = sampleRSS(os.Getpid()), sampleRSS(dst.PID())
		t0 = time.Now()
		if err := dst.Restore(ctx, h, f); err != nil {
			b.Fatal(err)
		}
		restDur := time.Since(t0)
		hostRestPeak, dstRestPeak := hs.Stop(), ps.Stop()
		f.Close()
		_, got, err := dst.DigestAt(ctx)
		if err != nil || string(got) != string(wantDigest) {
			b.Fatalf("restored digest differs (%v)", err)
		}
		mib := float64(size) / (1 << 20)
		b.ReportMetric(mib, "snapshot-MiB")
		b.ReportMetric(mib/snapDur.Seconds(), "snapshot-MiB/s")
		b.ReportMetric(mib/restDur.Seconds(), "restore-MiB/s")
		b.ReportMetric(float64(srcBase)/1024, "plugin-state-RSS-MiB")
		b.ReportMetric(float64(srcSnapPeak)/1024, "plugin-snapshot-peak-RSS-MiB")
		b.ReportMetric(float64(dstBase)/1024, "plugin-fresh-RSS-MiB")
		b.ReportMetric(float64(dstRestPeak)/1024, "plugin-restore-peak-RSS-MiB")
		b.ReportMetric(float64(hostBase)/1024, "host-base-RSS-MiB")
		b.ReportMetric(float64(max(hostSnapPeak, hostRestPeak))/1024, "host-peak-RSS-MiB")
		os.Remove(path)
	}
}

// BenchmarkApplyOneEntry measures the round trip of an Apply call with a
// single 128-byte put (the latency a lightly loaded node sees per entry).
func BenchmarkApplyOneEntry(b *testing.B) {
	ctx := context.Background()
	c, err := host.Start(ctx, host.Config{Path: bins["raftd-fsm-kv"], Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	es := putCommands(0, b.N, 128)
	b.ResetTimer()
	for i := range es {
		if _, err := c.ApplyBatch(ctx, es[i:i+1]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueries measures kv gets through the node's state machine
// adapter to raftd-fsm-kv from concurrent callers, alone and while another
// goroutine applies batches of 256 puts back to back (what a leader's
// linearizable reads meet under a write load). It reports the CPU time
// per query of this process (the host) and of the plugin.
//
//	go test -run '^$' -bench Queries -benchtime 20000x ./plugin/host
func BenchmarkQueries(b *testing.B) {
	for _, bc := range []struct {
		clients int
		writes  bool
	}{{1, false}, {64, false}, {64, true}} {
		b.Run(fmt.Sprintf("clients=%d/writes=%v", bc.clients, bc.writes), func(b *testing.B) {
			ctx := context.Background()
			c, err := host.Start(ctx, host.Config{Path: bins["raftd-fsm-kv"], Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			sm := statemachine.New(c)
			defer sm.Close()
			if _, err := sm.Apply(ctx, toCommands(putCommands(0, 1000, 128))); err != nil {
				b.Fatal(err)
			}
			stop := make(chan struct{})
			wdone := make(chan struct{})
			go func() {
				defer close(wdone)
				if !bc.writes {
					return
				}
				for from := 1000; ; from += 256 {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := sm.Apply(ctx, toCommands(putCommands(from, 256, 128))); err != nil {
						b.Error(err)
						return
					}
				}
			}()
			queries := make([][]byte, 1000)
			for i := range queries {
				queries[i] = []byte(fmt.Sprintf(`{"op":"get","key":"key-%012d"}`, (i+1)%1000003*7919%1000003))
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			cpu0, pcpu0 := selfCPU(), procCPU(c.PID())
			for range bc.clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						res, err := sm.Query(ctx, queries[i%int64(len(queries))])
						if err != nil || !strings.HasPrefix(string(res), `{"found":true`) {
							b.Errorf("query: %s %v", res, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			hostCPU, plugCPU := selfCPU()-cpu0, procCPU(c.PID())-pcpu0
			close(stop)
			<-wdone
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
			b.ReportMetric(hostCPU.Seconds()*1e6/float64(b.N), "host-cpu-µs/query")
			b.ReportMetric(plugCPU.Seconds()*1e6/float64(b.N), "plugin-cpu-µs/query")
		})
	}
}

// BenchmarkApplyBatches measures Apply calls of small batches of 128-byte
// kv puts through plugin/host, the sizes a node's apply goroutine hands
// over under load, and reports the CPU time per entry of the host and of
// the plugin process next to the wall time per call.
//
//	go test -run '^$' -bench ApplyBatches -benchtime 5000x ./plugin/host
func BenchmarkApplyBatches(b *testing.B) {
	for _, batch := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			ctx := context.Background()
			c, err := host.Start(ctx, host.Config{Path: bins["raftd-fsm-kv"], Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			es := putCommands(0, b.N*batch, 128)
			b.ResetTimer()
			cpu0, pcpu0 := selfCPU(), procCPU(c.PID())
			for i := 0; i < b.N; i++ {
				if _, err := c.ApplyBatch(ctx, es[i*batch:(i+1)*batch]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			n := float64(b.N * batch)
			b.ReportMetric((selfCPU()-cpu0).Seconds()*1e6/n, "host-cpu-µs/entry")
			b.ReportMetric((procCPU(c.PID())-pcpu0).Seconds()*1e6/n, "plugin-cpu-µs/entry")
		})
	}
}
