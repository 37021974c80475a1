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
}

// sampleCPU reads every process under root (normally "/proc").
func sampleCPU(root string) (cpuSample, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return cpuSample{}, err
	}
	s := cpuSample{at: time.Now(), procs: make(map[procKey]procStat, len(ents))}
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
func cpuBetween(a, b cpuSample, self int, srv []int) cpuUse {
	isSrv := make(map[int]bool, len(srv))
	for _, p := range srv {
		isSrv[p] = true
	}
	var srvT, lgT, kernT, othT uint64
	for k, st := range b.procs {
		prev, seen := a.procs[k] // a process started in the window counts whole
		used := func(t, t0 uint64) uint64 {
			if !seen || t < t0 {
				return t
			}
			return t - t0
		}
		switch {
		case k.pid == self:
			lgT += used(st.ticks, prev.ticks)
		case isSrv[k.pid] || isSrv[st.ppid]:
			srvT += used(st.ticks, prev.ticks)
		case k.pid == 2 || st.ppid == 2:
			kernT += used(st.ticks, prev.ticks)
		default:
			othT += used(st.ticks, prev.ticks) + used(st.reaped, prev.reaped)
		}
	}
	sec := b.at.Sub(a.at).Seconds()
	if sec <= 0 {
		return cpuUse{}
	}
	cores := func(t uint64) float64 { return float64(t) / clockTicks / sec }
	return cpuUse{Srv: cores(srvT), LG: cores(lgT), Kern: cores(kernT), Oth: cores(othT)}
}
