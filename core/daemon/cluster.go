package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"

	"github.com/raftd/raftd/core/node"
)

// StartCluster starts nodes 1..n of a new cluster in this process (raftd
// dev, tests of programs that embed raftd). Node i keeps its data in
// dir/node<i> and listens on loopback: on free ports, or with basePort > 0
// its client API on basePort+2(i-1) and its Raft port on the next one.
// configure fills in each node's Config (at least FSM or FSMPath; a Go FSM
// value must not be shared between nodes); ID, DataDir, the listeners,
// Peers and NoHandOver (every node stops at once) are set when it is
// called. On error the nodes already started are stopped.
func StartCluster(ctx context.Context, n int, dir string, basePort int, configure func(*Config)) ([]*Daemon, error) {
	// Reserve every port first so that the peer list is complete.
	raftLis := make([]net.Listener, n)
	apiLis := make([]net.Listener, n)
	closeFrom := func(i int) {
		for ; i < n; i++ {
			for _, l := range []net.Listener{raftLis[i], apiLis[i]} {
				if l != nil {
					l.Close()
				}
			}
		}
	}
	peers := make([]node.Peer, n)
	for i := range n {
		port := func(off int) int {
			if basePort == 0 {
				return 0
			}
			return basePort + 2*i + off
		}
		var err error
		if apiLis[i], err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port(0))); err != nil {
			closeFrom(0)
			return nil, fmt.Errorf("node %d api address: %w", i+1, err)
		}
		if raftLis[i], err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port(1))); err != nil {
			closeFrom(0)
			return nil, fmt.Errorf("node %d raft address: %w", i+1, err)
		}
		peers[i] = node.Peer{ID: uint64(i + 1), RaftAddr: raftLis[i].Addr().String()}
	}
	ds := make([]*Daemon, 0, n)
	for i := range n {
		cfg := Config{ID: uint64(i + 1), DataDir: filepath.Join(dir, fmt.Sprintf("node%d", i+1)),
			RaftListener: raftLis[i], APIListener: apiLis[i], Peers: peers, NoHandOver: true}
		configure(&cfg)
		d, err := Start(ctx, cfg)
		if err != nil {
			closeFrom(i + 1)
			_ = StopAll(ds)
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// StopAll stops ds concurrently and returns their errors joined.
func StopAll(ds []*Daemon) error {
	errs := make([]error, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.Stop()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// WaitCluster waits until ctx ends or one of ds stops on its own, then
// stops them all. It returns the failed node's error (naming it), or the
// errors of stopping.
func WaitCluster(ctx context.Context, ds []*Daemon) error {
	failed := make(chan *Daemon, len(ds))
	for _, d := range ds {
		go func() {
			<-d.Done()
			failed <- d
		}()
	}
	select {
	case <-ctx.Done():
		return StopAll(ds)
	case d := <-failed:
		err := d.Err()
		stopErr := StopAll(ds)
		if err != nil {
			return fmt.Errorf("node %d stopped: %w", d.ID(), err)
		}
		return stopErr
	}
}
