package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// statLine is a /proc/<pid>/stat line with the given fields (proc(5)).
func statLine(pid int, comm string, ppid int, utime, stime, cutime, cstime, start uint64) string {
	// fields 3..21: state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads itreal
	return fmt.Sprintf("%d (%s) S %d 1 1 0 -1 0 0 0 0 0 %d %d %d %d 20 0 4 0 %d 1000 10 18446744073709551615\n",
		pid, comm, ppid, utime, stime, cutime, cstime, start)
}

type fakeProc struct {
	pid, ppid                           int
	comm                                string
	utime, stime, cutime, cstime, start uint64
}

// writeProc writes a fake /proc with procs and a /proc/stat whose cpu line
// has busy ticks (half user, half system) besides idle time.
func writeProc(t *testing.T, busy uint64, procs []fakeProc) string {
	t.Helper()
	root := t.TempDir()
	for _, p := range procs {
		dir := filepath.Join(root, fmt.Sprint(p.pid))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(statLine(p.pid, p.comm, p.ppid, p.utime, p.stime, p.cutime, p.cstime, p.start)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stat := fmt.Sprintf("cpu  %d 0 %d 99999 77 0 0 55 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n", busy/2, busy-busy/2)
	if err := os.WriteFile(filepath.Join(root, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	// Entries that are not processes are ignored.
	if err := os.WriteFile(filepath.Join(root, "loadavg"), []byte("0.1 0.2 0.3 1/2 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestParseStat(t *testing.T) {
	k, st, err := parseStat(77, statLine(77, "a (weird) name", 5, 10, 20, 30, 40, 999))
	if err != nil {
		t.Fatal(err)
	}
	if k != (procKey{pid: 77, start: 999}) || st != (procStat{ppid: 5, ticks: 30, reaped: 70}) {
		t.Errorf("parseStat = %+v %+v", k, st)
	}
	for _, bad := range []string{"", "12 noparen S 1", "12 (x) S 1 2 3"} {
		if _, _, err := parseStat(12, bad); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func TestCPUBetween(t *testing.T) {
	const self = 100
	// Before: node 10 with its plugin 11, node 20 with its plugin 21,
	// this process, a kernel thread, a shell that runs builds, an idle
	// process, and a process that exits in the window.
	before := []fakeProc{
		{pid: 1, ppid: 0, comm: "init", utime: 500, start: 1},
		{pid: 2, ppid: 0, comm: "kthreadd", utime: 0, start: 1},
		{pid: 9, ppid: 2, comm: "kworker/0:1", utime: 100, stime: 50, start: 2},
		{pid: 10, ppid: self, comm: "raftd", utime: 1000, stime: 200, start: 50},
		{pid: 11, ppid: 10, comm: "raftd-fsm-kv", utime: 300, stime: 100, start: 51},
		{pid: 20, ppid: self, comm: "raftd", utime: 400, stime: 100, start: 50},
		{pid: 21, ppid: 20, comm: "raftd-fsm-kv", utime: 100, stime: 0, start: 51},
		{pid: self, ppid: 1, comm: "raftd-bench", utime: 60, stime: 40, start: 49},
		{pid: 30, ppid: 1, comm: "bash", utime: 5, stime: 5, cutime: 1000, start: 3},
		{pid: 31, ppid: 1, comm: "idle", utime: 7, start: 3},
		{pid: 40, ppid: 1, comm: "gone", utime: 999, start: 4},
		{pid: 50, ppid: 1, comm: "make", utime: 1, cutime: 0, start: 5},
		{pid: 51, ppid: 50, comm: "compile", utime: 3000, stime: 500, cutime: 200, start: 6},
		{pid: 60, ppid: 1, comm: "bash", utime: 4, start: 7},
		{pid: 61, ppid: 60, comm: "sh", utime: 10, start: 8},
		{pid: 62, ppid: 61, comm: "cc", utime: 500, start: 9},
	}
	// After 2 s: srv used 150+50+100+20 = 320 ticks; lg 100; kern 30;
	// oth: bash 2 + 100 reaped, a new process 40 (pid reused) 8, init 0,
	// and compile, which used 3500+200 before the window, 100 more in it
	// and was reaped by make: 4400-3700 = 700 of make's reaped time; sh
	// and the cc it ran, which used 10 and 500 before the window and 1 and
	// 20 in it, were reaped by bash: 531-510 = 21.
	after := []fakeProc{
		{pid: 1, ppid: 0, comm: "init", utime: 500, start: 1},
		{pid: 2, ppid: 0, comm: "kthreadd", utime: 0, start: 1},
		{pid: 9, ppid: 2, comm: "kworker/0:1", utime: 120, stime: 60, start: 2},
		{pid: 10, ppid: self, comm: "raftd", utime: 1100, stime: 250, start: 50},
		{pid: 11, ppid: 10, comm: "raftd-fsm-kv", utime: 350, stime: 100, start: 51},
		{pid: 20, ppid: self, comm: "raftd", utime: 480, stime: 120, start: 50},
		{pid: 21, ppid: 20, comm: "raftd-fsm-kv", utime: 115, stime: 5, start: 51},
		{pid: self, ppid: 1, comm: "raftd-bench", utime: 120, stime: 80, start: 49},
		{pid: 30, ppid: 1, comm: "bash", utime: 6, stime: 6, cutime: 1080, cstime: 20, start: 3},
		{pid: 31, ppid: 1, comm: "idle", utime: 7, start: 3},
		{pid: 40, ppid: 1, comm: "new", utime: 8, start: 300},
		{pid: 50, ppid: 1, comm: "make", utime: 1, cutime: 3850, cstime: 550, start: 5},
		{pid: 60, ppid: 1, comm: "bash", utime: 4, cutime: 531, start: 7},
	}
	a, err := sampleCPU(writeProc(t, 10000, before))
	if err != nil {
		t.Fatal(err)
	}
	b, err := sampleCPU(writeProc(t, 10000+2000, after))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.procs) != len(before) || len(b.procs) != len(after) {
		t.Fatalf("sampled %d and %d processes, want %d and %d", len(a.procs), len(b.procs), len(before), len(after))
	}
	b.at = a.at.Add(2 * time.Second)
	got := cpuBetween(a, b, self, []int{10, 20})
	want := cpuUse{Srv: 3.20 / 2, LG: 1.00 / 2, Kern: 0.30 / 2, Oth: 8.31 / 2}
	near := func(x, y float64) bool { return math.Abs(x-y) < 1e-9 }
	if !near(got.Srv, want.Srv) || !near(got.LG, want.LG) || !near(got.Kern, want.Kern) || !near(got.Oth, want.Oth) {
		t.Errorf("cpuBetween = %+v, want %+v", got, want)
	}
	// Without the server pids, the nodes and plugins are other processes.
	if got := cpuBetween(a, b, self, nil); got.Srv != 0 || !near(got.Oth, want.Oth+want.Srv) {
		t.Errorf("cpuBetween without servers = %+v", got)
	}
	// oth is at most what the machine was busy for beyond the others:
	// 500 ticks busy - 450 = 50.
	b.busy = a.busy + 500
	if got := cpuBetween(a, b, self, []int{10, 20}); !near(got.Oth, 0.50/2) || !near(got.Srv, want.Srv) {
		t.Errorf("cpuBetween with 500 ticks busy = %+v, want oth 0.25", got)
	}
}

func TestSampleCPUReal(t *testing.T) {
	s, err := sampleCPU("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	found := false
	for k := range s.procs {
		if k.pid == os.Getpid() {
			found = true
		}
	}
	if !found {
		t.Errorf("sample of /proc has no entry for this process (%d) among %d", os.Getpid(), len(s.procs))
	}
}
