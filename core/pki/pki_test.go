package pki_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/raftd/raftd/core/pki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func initCluster(t *testing.T, nodes int) *pki.ClusterFiles {
	t.Helper()
	cf, err := pki.InitCluster(filepath.Join(t.TempDir(), "certs"), nodes, nil, 0)
	if err != nil {
		t.Fatalf("InitCluster: %v", err)
	}
	return cf
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestInitClusterFiles(t *testing.T) {
	cf := initCluster(t, 3)
	fi, err := os.Stat(cf.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(cf.Dir)
	if len(ents) != 2+2*3+2 {
		t.Errorf("%d files, want 10", len(ents))
	}
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	for i, f := range cf.Nodes {
		c := readCert(t, f.CertFile)
		id, err := pki.MemberID(c)
		if err != nil || id != uint64(i+1) {
			t.Errorf("%s names member %d (%v), want %d", f.CertFile, id, err, i+1)
		}
		if err := c.VerifyHostname("127.0.0.1"); err != nil {
			t.Errorf("%s: %v", f.CertFile, err)
		}
	}
	if id, err := pki.MemberID(readCert(t, cf.Client.CertFile)); !errors.Is(err, pki.ErrNoMemberID) {
		t.Errorf("client certificate names member %d (err %v), want ErrNoMemberID", id, err)
	}
	if names := pki.ClusterFilesIn(cf.Dir, 3); !reflect.DeepEqual(names, cf) {
		t.Errorf("ClusterFilesIn = %+v, InitCluster wrote %+v", names, cf)
	}
	// A second run into the same directory must not replace the CA.
	before, _ := os.ReadFile(cf.CAKey)
	if _, err := pki.InitCluster(cf.Dir, 3, nil, 0); err == nil {
		t.Fatal("InitCluster over existing files succeeded")
	}
	after, _ := os.ReadFile(cf.CAKey)
	if string(before) != string(after) {
		t.Fatal("InitCluster replaced the CA key")
	}
}

func TestMemberID(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name string
		cn   string
		uris []*url.URL
		want uint64 // 0: ErrNoMemberID
	}{
		{"uri", "whatever", []*url.URL{u("raftd://node/7")}, 7},
		{"cn", "raftd-node-12", nil, 12},
		{"uri wins over cn", "raftd-node-1", []*url.URL{u("raftd://node/2")}, 2},
		{"same id twice", "", []*url.URL{u("raftd://node/3"), u("raftd://node/3")}, 3},
		{"two ids", "", []*url.URL{u("raftd://node/3"), u("raftd://node/4")}, 0},
		{"client uri hides node cn", "raftd-node-1", []*url.URL{u("raftd://client/admin")}, 0},
		{"other scheme ignored", "raftd-node-5", []*url.URL{u("spiffe://example/node/9")}, 5},
		{"zero", "raftd-node-0", nil, 0},
		{"bad uri id", "", []*url.URL{u("raftd://node/x")}, 0},
		{"plain cn", "node1.example.com", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pki.MemberID(&x509.Certificate{Subject: pkix.Name{CommonName: tc.cn}, URIs: tc.uris})
			if tc.want == 0 {
				if !errors.Is(err, pki.ErrNoMemberID) {
					t.Fatalf("MemberID = %d, %v; want ErrNoMemberID", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("MemberID = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// handshake runs a TLS handshake between server and client configs over
// a pipe and returns both sides' errors.
func handshake(t *testing.T, server, client *tls.Config) (serr, cerr error, state tls.ConnectionState) {
	t.Helper()
	// A TCP pair, not net.Pipe: a side that fails writes an alert that
	// nobody may read.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	b, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	s := tls.Server(a, server)
	go func() {
		err := s.HandshakeContext(ctx)
		if err != nil {
			a.Close()
		}
		done <- err
	}()
	client = client.Clone()
	client.ServerName = "127.0.0.1"
	c := tls.Client(b, client)
	cerr = c.HandshakeContext(ctx)
	if cerr == nil {
		// In TLS 1.3 the client is done before the server has checked its
		// certificate; a read sees the server's verdict.
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		var buf [1]byte
		if _, err := c.Read(buf[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			cerr = err
		}
	} else {
		b.Close()
	}
	serr = <-done
	return serr, cerr, s.ConnectionState()
}

func TestServerConfigClientAuth(t *testing.T) {
	cf := initCluster(t, 1)
	other := initCluster(t, 1)
	strict, err := pki.ServerConfig(cf.Nodes[0], true)
	if err != nil {
		t.Fatal(err)
	}
	lax, err := pki.ServerConfig(cf.Nodes[0], false)
	if err != nil {
		t.Fatal(err)
	}
	client := func(f pki.Files) *tls.Config {
		c, err := pki.ClientConfig(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good := client(cf.Client)
	noCert := client(pki.Files{TrustedCAFile: cf.CACert})
	foreign := client(pki.Files{CertFile: other.Client.CertFile, KeyFile: other.Client.KeyFile, TrustedCAFile: cf.CACert})
	wrongRoots := client(other.Client)

	if serr, cerr, st := handshake(t, strict, good); serr != nil || cerr != nil || len(st.VerifiedChains) == 0 {
		t.Errorf("good client: server %v, client %v, verified chains %d", serr, cerr, len(st.VerifiedChains))
	}
	if serr, _, _ := handshake(t, strict, noCert); serr == nil {
		t.Error("client without a certificate passed client-cert-auth")
	}
	if serr, _, _ := handshake(t, strict, foreign); serr == nil {
		t.Error("client certificate of another CA passed client-cert-auth")
	}
	if _, cerr, _ := handshake(t, strict, wrongRoots); cerr == nil {
		t.Error("client accepted a server certificate of another CA")
	}
	// Without client-cert-auth a certificate is optional but, if given,
	// verified: VerifiedChains tells an authenticated client.
	if serr, cerr, st := handshake(t, lax, noCert); serr != nil || cerr != nil || len(st.VerifiedChains) != 0 {
		t.Errorf("anonymous client, lax server: server %v, client %v, chains %d", serr, cerr, len(st.VerifiedChains))
	}
	if serr, cerr, st := handshake(t, lax, good); serr != nil || cerr != nil || len(st.VerifiedChains) == 0 {
		t.Errorf("good client, lax server: server %v, client %v, chains %d", serr, cerr, len(st.VerifiedChains))
	}
	if serr, _, _ := handshake(t, lax, foreign); serr == nil {
		t.Error("lax server accepted a client certificate of another CA")
	}
}

func TestConfigErrors(t *testing.T) {
	cf := initCluster(t, 1)
	n := cf.Nodes[0]
	for name, f := range map[string]func() error{
		"server without key": func() error { _, err := pki.ServerConfig(pki.Files{CertFile: n.CertFile}, false); return err },
		"client auth without CA": func() error {
			_, err := pki.ServerConfig(pki.Files{CertFile: n.CertFile, KeyFile: n.KeyFile}, true)
			return err
		},
		"client cert without key": func() error { _, err := pki.ClientConfig(pki.Files{CertFile: n.CertFile}); return err },
		"missing CA file": func() error {
			_, err := pki.ClientConfig(pki.Files{TrustedCAFile: filepath.Join(cf.Dir, "nope.crt")})
			return err
		},
		"key does not match": func() error {
			_, err := pki.ServerConfig(pki.Files{CertFile: n.CertFile, KeyFile: cf.Client.KeyFile}, false)
			return err
		},
		"CA file not PEM": func() error {
			_, err := pki.ClientConfig(pki.Files{TrustedCAFile: n.KeyFile + ".missing"})
			return err
		},
		"peer without CA": func() error {
			_, err := pki.NewPeerAuth(pki.Files{CertFile: n.CertFile, KeyFile: n.KeyFile}, "", false)
			return err
		},
	} {
		if err := f(); !errors.Is(err, pki.ErrBadFiles) {
			t.Errorf("%s: err %v, want ErrBadFiles", name, err)
		}
	}
}

func peerAuth(t *testing.T, f pki.Files, cn string, pin bool) *pki.PeerAuth {
	t.Helper()
	a, err := pki.NewPeerAuth(f, cn, pin)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// serveHealth serves the gRPC health service with a's credentials; every
// call is authorized as the member named by the "claim" metadata.
func serveHealth(t *testing.T, a *pki.PeerAuth) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(a.ServerCredentials()), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			var claim uint64
			if v := md.Get("claim"); len(v) == 1 {
				for _, c := range v[0] {
					claim = claim*10 + uint64(c-'0')
				}
			}
			if err := a.Authorize(ctx, claim); err != nil {
				return nil, status.Error(codes.PermissionDenied, err.Error())
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// call makes a health check on addr as member claim with opts.
func call(t *testing.T, addr, claim string, opts []grpc.DialOption) error {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "claim", claim)
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
	return err
}

func TestPeerAuthPinning(t *testing.T) {
	cf := initCluster(t, 3)
	other := initCluster(t, 3)
	n1 := peerAuth(t, cf.Nodes[0], "", true)
	addr := serveHealth(t, n1) // node 1 serves
	n2 := peerAuth(t, cf.Nodes[1], "", true)

	if err := call(t, addr, "2", n2.DialOptions(1)); err != nil {
		t.Fatalf("node 2 calling node 1 as itself: %v", err)
	}
	// Node 2's valid certificate cannot pose as member 3.
	if err := call(t, addr, "3", n2.DialOptions(1)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("node 2 posing as 3: %v, want PermissionDenied", err)
	}
	// Dialing node 1 while expecting member 3 there fails the handshake.
	if err := call(t, addr, "2", n2.DialOptions(3)); status.Code(err) != codes.Unavailable {
		t.Errorf("node 2 dialing node 1 as member 3: %v, want Unavailable (handshake)", err)
	}
	// A client certificate of the same CA names no member: refused at the
	// handshake when pinning.
	clientAsPeer, err := pki.ClientConfig(cf.Client)
	if err != nil {
		t.Fatal(err)
	}
	if err := call(t, addr, "2", []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(clientAsPeer))}); status.Code(err) != codes.Unavailable {
		t.Errorf("client certificate on the peer port: %v, want Unavailable (handshake)", err)
	}
	// A member certificate of another CA fails the handshake.
	foreign := peerAuth(t, pki.Files{CertFile: other.Nodes[1].CertFile, KeyFile: other.Nodes[1].KeyFile, TrustedCAFile: cf.CACert}, "", true)
	if err := call(t, addr, "2", foreign.DialOptions(1)); status.Code(err) != codes.Unavailable {
		t.Errorf("foreign certificate: %v, want Unavailable (handshake)", err)
	}
	// Without pinning, any certificate of the CA may claim any id.
	lax := peerAuth(t, cf.Nodes[0], "", false)
	laxAddr := serveHealth(t, lax)
	if err := call(t, laxAddr, "3", peerAuth(t, cf.Nodes[1], "", false).DialOptions(1)); err != nil {
		t.Errorf("without pinning: %v", err)
	}
}

func TestPeerAuthAllowedCN(t *testing.T) {
	cf := initCluster(t, 2)
	n1 := peerAuth(t, cf.Nodes[0], "raftd-node-2", false)
	addr := serveHealth(t, n1)
	if err := call(t, addr, "2", peerAuth(t, cf.Nodes[1], "raftd-node-1", false).DialOptions(1)); err != nil {
		t.Fatalf("allowed common name: %v", err)
	}
	// Node 1's own certificate has a common name node 1 does not allow.
	if err := call(t, addr, "1", peerAuth(t, cf.Nodes[0], "", false).DialOptions(1)); status.Code(err) != codes.Unavailable {
		t.Errorf("other common name: %v, want Unavailable (handshake)", err)
	}
}

func TestVerifiedClient(t *testing.T) {
	if pki.VerifiedClient(context.Background()) {
		t.Error("no peer: verified")
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}})
	if pki.VerifiedClient(ctx) {
		t.Error("TLS without a client certificate: verified")
	}
	ctx = peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{}}}}})
	if !pki.VerifiedClient(ctx) {
		t.Error("verified chain: not verified")
	}
}

func TestProbe(t *testing.T) {
	cf := initCluster(t, 1)
	other := initCluster(t, 1)
	srv, err := pki.ServerConfig(cf.Nodes[0], true)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if c.(*tls.Conn).Handshake() == nil {
					_, _ = c.Write([]byte("x")) // like a gRPC server's preface
				}
			}()
		}
	}()
	probe := func(f pki.Files) error {
		c, err := pki.ClientConfig(f)
		if err != nil {
			t.Fatal(err)
		}
		return pki.Probe(lis.Addr().String(), c, 2*time.Second)
	}
	if err := probe(cf.Client); err != nil {
		t.Errorf("good client: %v", err)
	}
	if err := probe(pki.Files{TrustedCAFile: cf.CACert}); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("no client certificate: %v, want certificate required", err)
	}
	if err := probe(other.Client); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("server of another CA: %v, want unknown authority", err)
	}
}
