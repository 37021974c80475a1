package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPU accounting over a measurement window, from /proc, in cores (1.0 = one
// core busy for the whole window):
//
//	srv   the raftd processes and their children (the FSM plugins)
//	lg    this process, the load generator
//	kern  kernel threads (pid 2 and its children: fsync, loopback network)
//	oth   every other process, with the children it reaped in the window:
//	      anything above ~0.05 means something else ran and disturbed the
//	      step
//
// A process is known by its pid and start time, so that a reused pid is
// not taken for the process it replaced. Linux only.

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; it is 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// cpuUse is CPU time used in a window, in cores.
type cpuUse struct {
	Srv  float64 `json:"srv"`
	LG   float64 `json:"lg"`
	Kern float64 `json:"kern"`
	Oth  float64 `json:"oth"`
}

// procKey names a process across pid reuse.
type procKey struct {
	pid   int
	start uint64
}

// procStat is what a sample keeps of one /proc/<pid>/stat.
type procStat struct {
	ppid int
	// ticks is utime+stime; reaped is cutime+cstime (children that exited
	// and were waited for).
	ticks, reaped uint64
}

// cpuSample is every process's CPU time at one moment.
type cpuSample struct {
	at    time.Time
	procs map[procKey]procStat
	// busy is the machine's non-idle time (/proc/stat: user, nice,
	// system, irq, softirq), in ticks.
	busy uint64
}

// sampleCPU reads every process under root (normally "/proc").
func sampleCPU(root string) (cpuSample, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return cpuSample{}, err
	}
	s := cpuSample{at: time.Now(), procs: make(map[procKey]procStat, len(ents))}
	if s.busy, err = readBusy(filepath.Join(root, "stat")); err != nil {
		return cpuSample{}, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, e.Name(), "stat"))
		if err != nil {
			continue // exited since the directory was read
		}
		k, st, err := parseStat(pid, string(b))
		if err != nil {
			return cpuSample{}, fmt.Errorf("%s/%d/stat: %w", root, pid, err)
		}
		s.procs[k] = st
	}
	return s, nil
}

// readBusy returns the non-idle ticks of the "cpu" line of /proc/stat
// (proc(5)): user, nice, system, irq and softirq; not idle, iowait or
// steal (another machine's use).
func readBusy(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("%s: no cpu line", path)
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		busy += v
	}
	return busy, nil
}

// parseStat parses one /proc/<pid>/stat line (proc(5)): the command name,
// field 2, is in parentheses and may hold spaces and parentheses itself.
func parseStat(pid int, line string) (procKey, procStat, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return procKey{}, procStat{}, errors.New("no command name")
	}
	f := strings.Fields(line[i+1:]) // f[0] is field 3, state
	if len(f) < 20 {
		return procKey{}, procStat{}, errors.New("short line")
	}
	num := func(field int) uint64 { // proc(5) numbering, from 1
		v, _ := strconv.ParseUint(f[field-3], 10, 64)
		return v
	}
	return procKey{pid: pid, start: num(22)},
		procStat{ppid: int(num(4)), ticks: num(14) + num(15), reaped: num(16) + num(17)}, nil
}

// cpuBetween returns the CPU used between samples a and b by the process
// groups of the table: self is this process, srv the pids of the servers
// (their children count with them).
//
// NB: a process of oth that exits in the window is no longer in b; the
// reaped time of the ancestor that waited for it then holds all of its CPU
// time, also what it used before the window. That part, its time in a, is
// taken off that ancestor's reaped time again (not below zero: a parent
// that has not waited for it yet, or an orphan reaped by another process).
// oth is at most what the machine was busy for beyond the other columns.
func cpuBetween(a, b cpuSample, self int, srv []int) cpuUse {
	isSrv := make(map[int]bool, len(srv))
	for _, p := range srv {
		isSrv[p] = true
	}
	const (
		oth = iota
		srvGroup
		lg
		kern
	)
	group := func(k procKey, st procStat) int {
		switch {
		case k.pid == self:
			return lg
		case isSrv[k.pid] || isSrv[st.ppid]:
			return srvGroup
		case k.pid == 2 || st.ppid == 2:
			return kern
		}
		return oth
	}
	var used [4]int64         // ticks, by group
	reaped := map[int]int64{} // pid -> reaped ticks in the window, for oth
	for k, st := range b.procs {
		prev := a.procs[k] // zero for a process started in the window: it counts whole
		g := group(k, st)
		used[g] += int64(st.ticks - min(prev.ticks, st.ticks))
		if g == oth {
			reaped[k.pid] += int64(st.reaped - min(prev.reaped, st.reaped))
		}
	}
	// The pids of a's processes that exited in the window: the nearest
	// ancestor that did not exit reaped them, or their orphans.
	gone := map[int]procStat{}
	for k, st := range a.procs {
		if _, alive := b.procs[k]; !alive {
			gone[k.pid] = st
		}
	}
	for k, st := range a.procs {
		if _, exited := gone[k.pid]; !exited || group(k, st) != oth {
			continue
		}
		reaper := st.ppid
		for range 64 {
			up, exited := gone[reaper]
			if !exited {
				break
			}
			reaper = up.ppid
		}
		reaped[reaper] -= int64(st.ticks + st.reaped)
	}
	for _, t := range reaped {
		used[oth] += max(t, 0)
	}
	if b.busy > a.busy {
		rest := int64(b.busy-a.busy) - used[srvGroup] - used[lg] - used[kern]
		used[oth] = min(used[oth], max(rest, 0))
	}
	sec := b.at.Sub(a.at).Seconds()
	if sec <= 0 {
		return cpuUse{}
	}
	cores := func(t int64) float64 { return float64(t) / clockTicks / sec }
	return cpuUse{Srv: cores(used[srvGroup]), LG: cores(used[lg]), Kern: cores(used[kern]), Oth: cores(used[oth])}
}
