package host_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftd/raftd/plugin/host"
)

// queriesBehindASlowOne holds the plugin with a slow query, starts n gets
// (and one failing query when fail is set) while it runs, waits until all
// of them are queued, and returns their answers once the slow one is done.
func queriesBehindASlowOne(t *testing.T, c *host.Client, n int, fail bool) (res []string, errs []error) {
	t.Helper()
	ctx := context.Background()
	slow := make(chan error, 1)
	if host.PendingQueries(c) != 0 {
		t.Fatal("queries queued before the test")
	}
	// The slow query goes alone, as a Query call. (Counted before it
	// starts: it may be sent before this goroutine looks again.)
	unary0, _ := host.QueryCalls(c)
	go func() {
		_, err := c.Query(ctx, []byte(`{"op":"sleep","ms":1500}`))
		slow <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if u, _ := host.QueryCalls(c); u > unary0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow query was not sent")
		}
		time.Sleep(time.Millisecond)
	}
	total := n
	if fail {
		total++
	}
	res, errs = make([]string, total), make([]error, total)
	var wg sync.WaitGroup
	for i := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := fmt.Sprintf(`{"op":"get","key":"k%06d"}`, i+1)
			if i == n {
				q = `{"op":"fail"}`
			}
			r, err := c.Query(ctx, []byte(q))
			res[i], errs[i] = string(r), err
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); host.PendingQueries(c) != total; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d queries queued", host.PendingQueries(c), total)
		}
		time.Sleep(time.Millisecond)
	}
	if err := <-slow; err != nil {
		t.Fatalf("slow query: %v", err)
	}
	wg.Wait()
	return res, errs
}

// Queries that arrive while one is on the wire go to the plugin together,
// in one QueryBatch call, and each gets its own answer; a query the FSM
// fails fails alone, without breaking the plugin.
func TestConcurrentQueriesShareACall(t *testing.T) {
	c, _ := start(t, "misbehave", nil)
	if _, err := c.ApplyBatch(context.Background(), puts(1, 40)); err != nil {
		t.Fatal(err)
	}
	res, errs := queriesBehindASlowOne(t, c, 40, true)
	for i := range 40 {
		if want := fmt.Sprintf(`{"found":true,"value":"v%d"}`, i+1); errs[i] != nil || res[i] != want {
			t.Fatalf("query %d: %s, %v; want %s", i, res[i], errs[i], want)
		}
	}
	if err := errs[40]; status.Code(errors.Unwrap(err)) != codes.Internal || errors.Is(err, host.ErrBroken) {
		t.Fatalf("failing query: %v; want an Internal status that does not break the plugin", err)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("plugin broken after a failed query: %v", err)
	}
	if unary, batches := host.QueryCalls(c); unary != 1 || batches != 1 {
		t.Fatalf("%d Query and %d QueryBatch calls; want the slow query alone, then one batch", unary, batches)
	}
}

// A plugin without QueryBatch (UNIMPLEMENTED) gets one Query call per
// query, with the same answers.
func TestQueriesWithoutQueryBatch(t *testing.T) {
	t.Setenv("MISBEHAVE_NO_QUERY_BATCH", "1")
	c, _ := start(t, "misbehave", nil)
	if _, err := c.ApplyBatch(context.Background(), puts(1, 10)); err != nil {
		t.Fatal(err)
	}
	res, errs := queriesBehindASlowOne(t, c, 10, false)
	for i := range 10 {
		if want := fmt.Sprintf(`{"found":true,"value":"v%d"}`, i+1); errs[i] != nil || res[i] != want {
			t.Fatalf("query %d: %s, %v; want %s", i, res[i], errs[i], want)
		}
	}
	if unary, batches := host.QueryCalls(c); unary != 11 || batches != 1 {
		t.Fatalf("%d Query and %d QueryBatch calls; want 11 and the one refused", unary, batches)
	}
	// Known from then on: every query is sent alone at once.
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.Query(context.Background(), []byte(fmt.Sprintf(`{"op":"get","key":"k%06d"}`, i+1)))
			if want := fmt.Sprintf(`{"found":true,"value":"v%d"}`, i+1); err != nil || string(r) != want {
				t.Errorf("query %d: %s, %v; want %s", i, r, err, want)
			}
		}()
	}
	wg.Wait()
	if unary, batches := host.QueryCalls(c); unary != 21 || batches != 1 {
		t.Fatalf("%d Query and %d QueryBatch calls; want 21 and 1", unary, batches)
	}
}

// A caller that gives up gets its context's error at once; the others in
// its batch are answered.
func TestQueryCallerGivesUp(t *testing.T) {
	c, _ := start(t, "misbehave", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := c.Query(ctx, []byte(`{"op":"sleep","ms":1000}`))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 900*time.Millisecond {
		t.Fatalf("query past its context: %v after %v", err, time.Since(t0))
	}
	if r, err := c.Query(context.Background(), []byte(`{"op":"get","key":"x"}`)); err != nil || string(r) != `{"found":false,"value":""}` {
		t.Fatalf("next query: %s, %v", r, err)
	}
}

// QueryBatch sends its queries in one QueryBatch call and answers each in
// order, a query the FSM fails alone; a plugin without QueryBatch gets
// them one Query call each, with the same answers.
func TestQueryBatch(t *testing.T) {
	for _, noBatch := range []bool{false, true} {
		t.Run(fmt.Sprintf("noQueryBatch=%v", noBatch), func(t *testing.T) {
			if noBatch {
				t.Setenv("MISBEHAVE_NO_QUERY_BATCH", "1")
			}
			c, _ := start(t, "misbehave", nil)
			if _, err := c.ApplyBatch(context.Background(), puts(1, 20)); err != nil {
				t.Fatal(err)
			}
			qs := make([][]byte, 21)
			for i := range 20 {
				qs[i] = []byte(fmt.Sprintf(`{"op":"get","key":"k%06d"}`, i+1))
			}
			qs[20] = []byte(`{"op":"fail"}`)
			res, errs := c.QueryBatch(context.Background(), qs)
			if len(res) != len(qs) || len(errs) != len(qs) {
				t.Fatalf("%d results and %d errors for %d queries", len(res), len(errs), len(qs))
			}
			for i := range 20 {
				if want := fmt.Sprintf(`{"found":true,"value":"v%d"}`, i+1); errs[i] != nil || string(res[i]) != want {
					t.Fatalf("query %d: %s, %v; want %s", i, res[i], errs[i], want)
				}
			}
			if status.Code(errors.Unwrap(errs[20])) != codes.Internal {
				t.Fatalf("failing query: %v; want an Internal status", errs[20])
			}
			if err := c.Err(); err != nil {
				t.Fatalf("plugin broken after a failed query: %v", err)
			}
			unary, batches := host.QueryCalls(c)
			if !noBatch && (unary != 0 || batches != 1) {
				t.Fatalf("%d Query and %d QueryBatch calls; want one QueryBatch", unary, batches)
			}
			if noBatch && (unary != 21 || batches != 1) {
				t.Fatalf("%d Query and %d QueryBatch calls; want the refused QueryBatch and 21 Query", unary, batches)
			}
		})
	}
}
