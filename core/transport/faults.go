package transport

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Faults injects network faults into the Transports it is given to, for
// tests: partitions, random loss and delay, per peer. A nil *Faults injects
// nothing. All methods are safe for concurrent use.
//
// A partitioned peer's messages are dropped silently in both directions
// (as a real network would lose them; no ReportUnreachable), its inbound
// streams are refused, and snapshot transfers to it fail.
type Faults struct {
	mu    sync.Mutex
	rnd   *rand.Rand
	cut   map[uint64]bool
	loss  map[uint64]float64
	delay map[uint64]time.Duration
}

// NewFaults returns a Faults with no fault active; seed drives the random
// loss decisions.
func NewFaults(seed uint64) *Faults {
	return &Faults{
		rnd:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		cut:   make(map[uint64]bool),
		loss:  make(map[uint64]float64),
		delay: make(map[uint64]time.Duration),
	}
}

// Partition cuts all traffic to and from the given peers.
func (f *Faults) Partition(ids ...uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		f.cut[id] = true
	}
}

// Heal removes every fault for the given peers, or for all peers if none
// is given.
func (f *Faults) Heal(ids ...uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(ids) == 0 {
		clear(f.cut)
		clear(f.loss)
		clear(f.delay)
		return
	}
	for _, id := range ids {
		delete(f.cut, id)
		delete(f.loss, id)
		delete(f.delay, id)
	}
}

// SetLoss drops each outbound message to id with probability p.
func (f *Faults) SetLoss(id uint64, p float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loss[id] = p
}

// SetDelay delays every outbound batch to id by d (messages stay in order;
// the queue fills and overflows as with a slow link).
func (f *Faults) SetDelay(id uint64, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay[id] = d
}

func (f *Faults) dropOut(id uint64) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut[id] {
		return true
	}
	p := f.loss[id]
	return p > 0 && f.rnd.Float64() < p
}

func (f *Faults) isCut(id uint64) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cut[id]
}

func (f *Faults) delayFor(id uint64) time.Duration {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delay[id]
}

// Set replaces every fault with those of spec, a space-separated list of
//
//	partition=ID[,ID...]   cut all traffic to and from the peers
//	loss=ID:P              drop outbound messages to ID with probability P
//	delay=ID:DURATION      delay outbound batches to ID (Go duration)
//
// for example "partition=3 delay=2:50ms". An empty spec heals everything.
// It lets a process take faults from a flag, a file or an environment
// variable. On error nothing changes.
func (f *Faults) Set(spec string) error {
	cut := map[uint64]bool{}
	loss := map[uint64]float64{}
	delay := map[uint64]time.Duration{}
	for _, item := range strings.Fields(spec) {
		key, val, ok := strings.Cut(item, "=")
		if !ok {
			return fmt.Errorf("transport: fault %q: want key=value", item)
		}
		switch key {
		case "partition":
			for _, s := range strings.Split(val, ",") {
				id, err := parseID(s)
				if err != nil {
					return fmt.Errorf("transport: fault %q: %w", item, err)
				}
				cut[id] = true
			}
		case "loss", "delay":
			idS, arg, ok := strings.Cut(val, ":")
			if !ok {
				return fmt.Errorf("transport: fault %q: want %s=ID:VALUE", item, key)
			}
			id, err := parseID(idS)
			if err != nil {
				return fmt.Errorf("transport: fault %q: %w", item, err)
			}
			if key == "loss" {
				p, err := strconv.ParseFloat(arg, 64)
				if err != nil || p < 0 || p > 1 {
					return fmt.Errorf("transport: fault %q: loss must be a probability in [0, 1]", item)
				}
				loss[id] = p
			} else {
				d, err := time.ParseDuration(arg)
				if err != nil || d < 0 {
					return fmt.Errorf("transport: fault %q: bad delay %q", item, arg)
				}
				delay[id] = d
			}
		default:
			return fmt.Errorf("transport: fault %q: unknown kind %q (want partition, loss or delay)", item, key)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut, f.loss, f.delay = cut, loss, delay
	return nil
}

func parseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("bad node id %q", s)
	}
	return id, nil
}
