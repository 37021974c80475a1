package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/raftd/raftd/core/pki"
	"github.com/raftd/raftd/fsms/kv"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func initCerts(t *testing.T, name string, nodes int) *pki.ClusterFiles {
	t.Helper()
	cf, err := pki.InitCluster(filepath.Join(t.TempDir(), name), nodes, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return cf
}

// dialWith returns a connection to addr with opts (plaintext by default).
func dialWith(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// clientTLS returns dial options presenting f (certificate optional).
func clientTLS(t *testing.T, f pki.Files) grpc.DialOption {
	t.Helper()
	c, err := pki.ClientConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(c))
}

func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// allClientCalls makes every call of the client API on cc and returns
// their errors by method.
func allClientCalls(ctx context.Context, cc *grpc.ClientConn) map[string]error {
	c := apiv1.NewRaftdClient(cc)
	errs := map[string]error{}
	_, errs["Apply"] = c.Apply(ctx, &apiv1.ApplyRequest{Command: []byte(`{"op":"put","key":"x","value":"1"}`)})
	_, errs["Query"] = c.Query(ctx, &apiv1.QueryRequest{Query: []byte(`{"op":"get","key":"x"}`)})
	_, errs["Status"] = c.Status(ctx, &apiv1.StatusRequest{})
	_, errs["Members"] = c.Members(ctx, &apiv1.MembersRequest{})
	_, errs["AddMember"] = c.AddMember(ctx, &apiv1.AddMemberRequest{Id: 9, RaftAddr: "127.0.0.1:1"})
	_, errs["RemoveMember"] = c.RemoveMember(ctx, &apiv1.RemoveMemberRequest{Id: 9})
	_, errs["TransferLeader"] = c.TransferLeader(ctx, &apiv1.TransferLeaderRequest{Id: 1})
	_, errs["ActivateFSMVersion"] = c.ActivateFSMVersion(ctx, &apiv1.ActivateFSMVersionRequest{Version: 1})
	_, errs["SkipFSMCommand"] = c.SkipFSMCommand(ctx, &apiv1.SkipFSMCommandRequest{Index: 1})
	stream, err := c.DownloadSnapshot(ctx, &apiv1.DownloadSnapshotRequest{TakeNew: true})
	if err == nil {
		_, err = stream.Recv()
	}
	errs["DownloadSnapshot"] = err
	return errs
}

// TestRaftPortServesNoClientAPI: the raft address answers every call of
// the client and admin API with Unimplemented, and the node-to-node
// Forward service refuses a caller that does not identify as a member.
func TestRaftPortServesNoClientAPI(t *testing.T) {
	d := startLocal(t, t.TempDir(), nil)
	ctx := shortCtx(t)
	for m, err := range allClientCalls(ctx, dialWith(t, d.RaftAddr())) {
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("%s on the raft port: %v, want Unimplemented", m, err)
		}
	}
	// The same calls on the api address work (the API is there).
	if err := allClientCalls(ctx, dialWith(t, d.APIAddr()))["Status"]; err != nil {
		t.Errorf("Status on the api address: %v", err)
	}
	fw := raftv1.NewForwardClient(dialWith(t, d.RaftAddr()))
	_, err := fw.Apply(ctx, &apiv1.ApplyRequest{Command: []byte(`{"op":"put","key":"x","value":"1"}`)})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("Forward.Apply without member metadata: %v, want PermissionDenied", err)
	}
	mctx := metadata.AppendToOutgoingContext(ctx, "raftd-cluster-id", "another", "raftd-from", "2")
	if _, err := fw.Status(mctx, &apiv1.StatusRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Forward.Status from another cluster: %v, want PermissionDenied", err)
	}
	mctx = metadata.AppendToOutgoingContext(ctx, "raftd-cluster-id", d.ClusterID(), "raftd-from", "2")
	if resp, err := fw.Status(mctx, &apiv1.StatusRequest{}); err != nil || len(resp.GetNodes()) != 1 {
		t.Errorf("Forward.Status from a member: %v %v", resp, err)
	}
}

// startTLSCluster starts three in-process nodes with peer TLS (ids pinned)
// and client TLS with client-cert-auth, all from cf.
func startTLSCluster(t *testing.T, cf *pki.ClusterFiles) []*Daemon {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ds, err := StartCluster(ctx, 3, t.TempDir(), 0, func(cfg *Config) {
		f := cf.Nodes[cfg.ID-1]
		cfg.FSM, cfg.NoSync = kv.New(), true
		cfg.HeartbeatInterval, cfg.ElectionTimeout = 20*time.Millisecond, 400*time.Millisecond
		cfg.ClientTLS, cfg.ClientCertAuth = f, true
		cfg.PeerTLS, cfg.PeerCertPinID = f, true
	})
	if err != nil {
		t.Fatalf("start TLS cluster: %v", err)
	}
	t.Cleanup(func() { _ = StopAll(ds) })
	return ds
}

// waitLeader waits until every node knows the same leader, and returns
// its index in ds.
func waitLeader(t *testing.T, ds []*Daemon) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		lead := ds[0].Node().Leader()
		same := lead != 0
		for _, d := range ds {
			same = same && d.Node().Leader() == lead
		}
		if same {
			for i, d := range ds {
				if d.ID() == lead {
					return i
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no leader")
	return -1
}

func TestTLSCluster(t *testing.T) {
	cf := initCerts(t, "ca", 3)
	other := initCerts(t, "other", 3)
	ds := startTLSCluster(t, cf)
	lead := waitLeader(t, ds)
	follower := ds[(lead+1)%3]
	ctx := shortCtx(t)

	// A client with a certificate from the CA is served, also through a
	// follower (forwarded to the leader over peer TLS).
	good := apiv1.NewRaftdClient(dialWith(t, follower.APIAddr(), clientTLS(t, cf.Client)))
	if r, err := good.Apply(ctx, &apiv1.ApplyRequest{Command: []byte(`{"op":"put","key":"a","value":"1"}`)}); err != nil || string(r.GetResult()) != `{"ok":true}` {
		t.Fatalf("apply through follower %d: %v %v", follower.ID(), r, err)
	}
	if r, err := good.Query(ctx, &apiv1.QueryRequest{Query: []byte(`{"op":"get","key":"a"}`)}); err != nil || !strings.Contains(string(r.GetResult()), `"value":"1"`) {
		t.Fatalf("linearizable query through follower: %v %v", r, err)
	}
	st, err := good.Status(ctx, &apiv1.StatusRequest{})
	if err != nil || len(st.GetNodes()) != 3 {
		t.Fatalf("status: %v %v", st, err)
	}
	for _, n := range st.GetNodes() {
		if n.GetError() != "" {
			t.Errorf("status of node %d over peer TLS: %s", n.GetId(), n.GetError())
		}
	}

	// Refused: plaintext, no certificate, a certificate of another CA.
	refused := map[string]grpc.DialOption{
		"plaintext":      grpc.WithTransportCredentials(insecure.NewCredentials()),
		"no certificate": clientTLS(t, pki.Files{TrustedCAFile: cf.CACert}),
		"other CA":       clientTLS(t, pki.Files{CertFile: other.Client.CertFile, KeyFile: other.Client.KeyFile, TrustedCAFile: cf.CACert}),
	}
	for name, opt := range refused {
		c := apiv1.NewRaftdClient(dialWith(t, ds[lead].APIAddr(), opt))
		if _, err := c.Status(ctx, &apiv1.StatusRequest{Local: true}); status.Code(err) != codes.Unavailable {
			t.Errorf("%s client: %v, want Unavailable (no connection)", name, err)
		}
	}

	// The raft port: a client certificate fails the handshake (pinned ids:
	// it names no member); a member's certificate reaches no client API,
	// and may not speak for another member on Forward.
	raftAddr := ds[lead].RaftAddr()
	c := apiv1.NewRaftdClient(dialWith(t, raftAddr, clientTLS(t, cf.Client)))
	if _, err := c.Status(ctx, &apiv1.StatusRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("client certificate on the raft port: %v, want Unavailable (handshake)", err)
	}
	peer2, err := pki.NewPeerAuth(cf.Nodes[1], "", true)
	if err != nil {
		t.Fatal(err)
	}
	asNode2 := dialWith(t, raftAddr, peer2.DialOptions(ds[lead].ID())...)
	for m, err := range allClientCalls(ctx, asNode2) {
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("%s on the raft port with a member certificate: %v, want Unimplemented", m, err)
		}
	}
	fw := raftv1.NewForwardClient(asNode2)
	mctx := metadata.AppendToOutgoingContext(ctx, "raftd-cluster-id", ds[lead].ClusterID(), "raftd-from", "3")
	if _, err := fw.Status(mctx, &apiv1.StatusRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("node 2's certificate on Forward as node 3: %v, want PermissionDenied", err)
	}
	mctx = metadata.AppendToOutgoingContext(ctx, "raftd-cluster-id", ds[lead].ClusterID(), "raftd-from", "2")
	if _, err := fw.Status(mctx, &apiv1.StatusRequest{}); err != nil {
		t.Errorf("node 2's certificate on Forward as node 2: %v", err)
	}
}

// TestSnapshotNeedsClientCert: with client TLS but without
// client-cert-auth, anonymous TLS clients are served, except snapshot
// downloads, which need a verified client certificate.
func TestSnapshotNeedsClientCert(t *testing.T) {
	cf := initCerts(t, "ca", 1)
	d := startLocal(t, t.TempDir(), func(c *Config) { c.ClientTLS = cf.Nodes[0] })
	ctx := shortCtx(t)
	anon := apiv1.NewRaftdClient(dialWith(t, d.APIAddr(), clientTLS(t, pki.Files{TrustedCAFile: cf.CACert})))
	if _, err := anon.Apply(ctx, &apiv1.ApplyRequest{Command: []byte(`{"op":"put","key":"a","value":"1"}`)}); err != nil {
		t.Fatalf("anonymous TLS apply: %v", err)
	}
	download := func(c apiv1.RaftdClient) ([]byte, error) {
		stream, err := c.DownloadSnapshot(ctx, &apiv1.DownloadSnapshotRequest{TakeNew: true})
		if err != nil {
			return nil, err
		}
		var body bytes.Buffer
		for {
			ch, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return body.Bytes(), nil
			}
			if err != nil {
				return nil, err
			}
			body.Write(ch.GetData())
		}
	}
	if _, err := download(anon); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("anonymous snapshot download: %v, want PermissionDenied", err)
	}
	authed := apiv1.NewRaftdClient(dialWith(t, d.APIAddr(), clientTLS(t, cf.Client)))
	if b, err := download(authed); err != nil || len(b) == 0 {
		t.Fatalf("authenticated snapshot download: %d bytes, %v", len(b), err)
	}
}

// TestMetricsTLS: the metrics endpoint takes the client API's TLS, and
// serves pprof only when enabled.
func TestMetricsTLS(t *testing.T) {
	cf := initCerts(t, "ca", 1)
	for _, pprof := range []bool{false, true} {
		ml := loopbackListener(t)
		maddr := ml.Addr().String()
		ml.Close()
		startLocal(t, t.TempDir(), func(c *Config) {
			c.ClientTLS, c.ClientCertAuth, c.MetricsAddr, c.EnablePprof = cf.Nodes[0], true, maddr, pprof
		})
		get := func(f pki.Files, path string) (int, error) {
			c, err := pki.ClientConfig(f)
			if err != nil {
				t.Fatal(err)
			}
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: c}}
			resp, err := hc.Get("https://" + maddr + path)
			if err != nil {
				return 0, err
			}
			resp.Body.Close()
			return resp.StatusCode, nil
		}
		if code, err := get(cf.Client, "/metrics"); err != nil || code != http.StatusOK {
			t.Fatalf("/metrics over TLS with a client certificate: %d %v", code, err)
		}
		if _, err := get(pki.Files{TrustedCAFile: cf.CACert}, "/metrics"); err == nil {
			t.Errorf("/metrics without a client certificate answered")
		}
		hc := &http.Client{Timeout: 5 * time.Second}
		if resp, err := hc.Get("http://" + maddr + "/metrics"); err == nil && resp.StatusCode == http.StatusOK {
			resp.Body.Close()
			t.Errorf("/metrics over plain HTTP answered 200")
		}
		want := http.StatusNotFound
		if pprof {
			want = http.StatusOK
		}
		if code, err := get(cf.Client, "/debug/pprof/"); err != nil || code != want {
			t.Errorf("pprof %v: /debug/pprof/ %d %v, want %d", pprof, code, err, want)
		}
	}
}

// TestStartTLSConfigErrors: incomplete or unreadable TLS settings fail the
// start with a one-line error naming the flags.
func TestStartTLSConfigErrors(t *testing.T) {
	cf := initCerts(t, "ca", 1)
	n := cf.Nodes[0]
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"peer without CA":     {func(c *Config) { c.PeerTLS = pki.Files{CertFile: n.CertFile, KeyFile: n.KeyFile} }, "--peer-trusted-ca-file"},
		"pinning without TLS": {func(c *Config) { c.PeerCertPinID = true }, "--peer-cert-pin-id need"},
		"client auth no CA": {func(c *Config) {
			c.ClientTLS, c.ClientCertAuth = pki.Files{CertFile: n.CertFile, KeyFile: n.KeyFile}, true
		}, "--client-cert-auth"},
		"missing key": {func(c *Config) { c.ClientTLS = pki.Files{CertFile: n.CertFile, KeyFile: n.KeyFile + ".nope"} }, ".nope"},
	} {
		cfg := Config{ID: 1, DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", FSM: kv.New(), NoSync: true}
		tc.mod(&cfg)
		d, err := Start(context.Background(), cfg)
		if err == nil {
			_ = d.Stop()
			t.Errorf("%s: started", name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || !errors.Is(err, pki.ErrBadFiles) && name != "pinning without TLS" {
			t.Errorf("%s: %v, want one line with %q", name, err, tc.want)
		}
	}
}

// fakeListener is a listener that only has an address.
type fakeListener struct {
	net.Listener
	addr net.Addr
}

func (f fakeListener) Addr() net.Addr { return f.addr }

func TestWarnPlaintext(t *testing.T) {
	lis := func(s string) net.Listener {
		a, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatal(err)
		}
		return fakeListener{addr: a}
	}
	for _, tc := range []struct {
		name              string
		sec               security
		raft, api, metric string
		want              []string
	}{
		{"loopback", security{}, "127.0.0.1:7001", "127.0.0.1:7000", "[::1]:9000", nil},
		{"all interfaces", security{}, "0.0.0.0:7001", "127.0.0.1:7000", "", []string{"raft traffic"}},
		{"lan", security{}, "10.1.2.3:7001", "10.1.2.3:7000", "10.1.2.3:9000", []string{"raft traffic", "the client API", "metrics"}},
		{"client TLS", security{client: &tls.Config{}}, "127.0.0.1:7001", "10.1.2.3:7000", "10.1.2.3:9000", nil},
		{"peer TLS", security{peer: &pki.PeerAuth{}}, "10.1.2.3:7001", "127.0.0.1:7000", "", nil},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		var m net.Listener
		if tc.metric != "" {
			m = lis(tc.metric)
		}
		tc.sec.warnPlaintext(log, lis(tc.raft), lis(tc.api), m)
		got := strings.Count(buf.String(), "level=WARN")
		if got != len(tc.want) {
			t.Errorf("%s: %d warnings, want %d: %s", tc.name, got, len(tc.want), buf.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(buf.String(), "serving "+w+" without TLS") {
				t.Errorf("%s: no warning about %s: %s", tc.name, w, buf.String())
			}
		}
	}
}

// TestDataDirPrivate: whatever the umask, a node's data dir and everything
// in it (identity, log, snapshots) is its owner's only.
func TestDataDirPrivate(t *testing.T) {
	old := syscall.Umask(0o002)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "n1")
	d := startLocal(t, dir, func(c *Config) { c.SnapshotEntries, c.SnapshotTrailing = 3, 1 })
	ctx := shortCtx(t)
	for range 8 {
		if _, err := d.Node().Propose(ctx, []byte(`{"op":"put","key":"k","value":"v"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, rc, err := d.Node().ExportSnapshot(ctx, true); err != nil {
		t.Fatalf("take snapshot: %v", err)
	} else {
		rc.Close()
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	var files, snaps int
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if e.IsDir() {
			want = 0o700
		} else {
			files++
			if strings.HasSuffix(p, ".snap") {
				snaps++
			}
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 || snaps == 0 {
		t.Fatalf("%d files, %d snapshots under %s", files, snaps, dir)
	}
}
