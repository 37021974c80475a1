package client_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/raftd/raftd/core/client"
	"github.com/raftd/raftd/core/daemon"
	"github.com/raftd/raftd/core/pki"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
)

// TestTLS: a client with a certificate from the node's CA is served; one
// without is not, and the error says that the server wanted a
// certificate.
func TestTLS(t *testing.T) {
	cf, err := pki.InitCluster(filepath.Join(t.TempDir(), "ca"), 1, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	d := start(t, daemon.Config{ID: 1, ClientTLS: cf.Nodes[0], ClientCertAuth: true})
	ctx := context.Background()
	tc, err := pki.ClientConfig(cf.Client)
	if err != nil {
		t.Fatal(err)
	}
	c := &client.Client{Addrs: []string{d.APIAddr()}, Timeout: 5 * time.Second, TLS: tc}
	if _, err := client.Do(ctx, c, apiv1.RaftdClient.Status, &apiv1.StatusRequest{Local: true}); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	anon, err := pki.ClientConfig(pki.Files{TrustedCAFile: cf.CACert})
	if err != nil {
		t.Fatal(err)
	}
	c = &client.Client{Addrs: []string{d.APIAddr()}, Timeout: 5 * time.Second, TLS: anon}
	_, err = client.Do(ctx, c, apiv1.RaftdClient.Status, &apiv1.StatusRequest{Local: true})
	var ue *client.UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(ue.List(), "certificate required") {
		t.Fatalf("without a client certificate: %v, want UnreachableError saying certificate required", err)
	}
	// Plaintext to a TLS node: unreachable too.
	c = &client.Client{Addrs: []string{d.APIAddr()}, Timeout: 5 * time.Second}
	if _, err := client.Do(ctx, c, apiv1.RaftdClient.Status, &apiv1.StatusRequest{Local: true}); !errors.As(err, &ue) {
		t.Fatalf("plaintext: %v, want UnreachableError", err)
	}
}

func TestBench(t *testing.T) {
	d := start(t, daemon.Config{ID: 1})
	cc, err := client.Dial(d.APIAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	res := client.Bench(context.Background(), []*grpc.ClientConn{cc}, client.BenchConfig{
		Clients: 4, Duration: 300 * time.Millisecond, KeySize: 8, ValueSize: 16, Seed: 1, Timeout: 5 * time.Second})
	if res.Ops == 0 || res.Errors != 0 || res.FirstErr != nil {
		t.Fatalf("bench: %+v", res)
	}
	if !(res.P50 <= res.P99 && res.P99 <= res.Max && res.Max > 0) {
		t.Fatalf("percentiles out of order: %+v", res)
	}
	st, err := d.Node().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Applied < uint64(res.Ops) {
		t.Fatalf("%d puts acknowledged, applied index %d", res.Ops, st.Applied)
	}
}
