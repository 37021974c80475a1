// Command etcdbench puts 128 B values under random 16 B keys into an etcd
// cluster from N concurrent clients against the leader, and prints ops/s,
// p50 and p99 in the same shape as `raftd bench`, so the two can be run
// side by side on one machine (see run.sh). It is a separate module so that
// raftd itself does not depend on the etcd client.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	addrs := flag.String("addr", "127.0.0.1:2379", "endpoints")
	clients := flag.Int("clients", 64, "")
	dur := flag.Duration("duration", 10*time.Second, "")
	flag.Parse()
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*addrs, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	// Bench against the leader, as raftd bench does.
	leader := ""
	for i := 0; i < 100 && leader == ""; i++ {
		for _, ep := range strings.Split(*addrs, ",") {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := cli.Status(ctx, ep)
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				leader = ep
			}
		}
		if leader == "" {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if leader == "" {
		panic("no leader")
	}
	cli.Close()
	cli, err = clientv3.New(clientv3.Config{Endpoints: []string{leader}, DialTimeout: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	defer cli.Close()
	val := strings.Repeat("v", 128)
	var mu sync.Mutex
	var lats []time.Duration
	errs := 0
	end := time.Now().Add(*dur)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 1))
			var mine []time.Duration
			e := 0
			for time.Now().Before(end) {
				key := fmt.Sprintf("%016x", r.Uint64())
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := cli.Put(ctx, key, val)
				cancel()
				if err != nil {
					e++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += e
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	el := time.Since(start)
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	p := func(q float64) time.Duration { return lats[int(q*float64(len(lats)-1))] }
	fmt.Printf("etcd: %d clients, ops %d in %.2fs, errors %d\nthroughput: %.0f ops/s\nlatency: p50 %v p99 %v\n", *clients, len(lats), el.Seconds(), errs, float64(len(lats))/el.Seconds(), p(0.5).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond))
}
