package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Member identities in certificates (see the package comment).
const (
	// URIScheme and nodeURIHost make the URI SAN raftd://node/N.
	URIScheme   = "raftd"
	nodeURIHost = "node"
	// CommonNamePrefix + N is the common name of member N's certificate.
	CommonNamePrefix = "raftd-node-"
)

// NodeURI returns the URI SAN naming member id: raftd://node/<id>.
func NodeURI(id uint64) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: nodeURIHost, Path: "/" + strconv.FormatUint(id, 10)}
}

// NodeCommonName returns the common name naming member id: raftd-node-<id>.
func NodeCommonName(id uint64) string { return CommonNamePrefix + strconv.FormatUint(id, 10) }

// ErrNoMemberID is wrapped by MemberID's error for a certificate that names
// no member, or more than one.
var ErrNoMemberID = errors.New("pki: certificate names no single member id")

// ErrWrongMember is wrapped by the errors of a peer whose certificate does
// not name the member id it claims (or is expected) to be, or whose common
// name is not the allowed one.
var ErrWrongMember = errors.New("pki: peer certificate does not match")

// MemberID returns the member id that cert speaks for: N of its URI SAN
// raftd://node/N; or, if it has no raftd:// URI SAN at all, N of the
// common name raftd-node-N. A certificate naming two different ids, or
// none, is an error wrapping ErrNoMemberID.
func MemberID(cert *x509.Certificate) (uint64, error) {
	var id uint64
	raftdURI := false
	for _, u := range cert.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		raftdURI = true
		if u.Host != nodeURIHost {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimPrefix(u.Path, "/"), 10, 64)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("%w: bad member URI %s", ErrNoMemberID, u)
		}
		if id != 0 && id != n {
			return 0, fmt.Errorf("%w: it names members %d and %d", ErrNoMemberID, id, n)
		}
		id = n
	}
	if id != 0 {
		return id, nil
	}
	if !raftdURI {
		if s, ok := strings.CutPrefix(cert.Subject.CommonName, CommonNamePrefix); ok {
			if n, err := strconv.ParseUint(s, 10, 64); err == nil && n != 0 {
				return n, nil
			}
		}
	}
	return 0, fmt.Errorf("%w (subject %q; want the URI SAN raftd://node/<id> or the common name %s<id>)", ErrNoMemberID,
		cert.Subject.CommonName, CommonNamePrefix)
}

// PeerAuth is the TLS of the peer port, both ways: the server side of
// --raft-addr, and the client side of every connection to another member
// (Raft streams, snapshot streams, forwarded requests). Every peer must
// present a certificate from the trusted CA. A nil *PeerAuth is plaintext.
type PeerAuth struct {
	server    *tls.Config
	client    *tls.Config
	allowedCN string
	pinID     bool
}

// NewPeerAuth loads f (certificate, key and trusted CA are all required).
// allowedCN, if set, is the only subject common name a peer certificate
// may have (both ways). pinID requires every peer certificate to name a
// member id (MemberID): a caller must be the member it claims to be
// (Authorize), and a dialed member must be the one expected (DialOptions).
func NewPeerAuth(f Files, allowedCN string, pinID bool) (*PeerAuth, error) {
	if f.CertFile == "" || f.KeyFile == "" || f.TrustedCAFile == "" {
		return nil, fmt.Errorf("%w: peer TLS needs a certificate, a key and a trusted CA file (got cert %q, key %q, CA %q)",
			ErrBadFiles, f.CertFile, f.KeyFile, f.TrustedCAFile)
	}
	server, err := ServerConfig(f, true)
	if err != nil {
		return nil, err
	}
	client, err := ClientConfig(f)
	if err != nil {
		return nil, err
	}
	a := &PeerAuth{server: server, client: client, allowedCN: allowedCN, pinID: pinID}
	// Inbound: a certificate that names no member (a client's, say) fails
	// the handshake when pinning is on; which member it names is checked
	// per call (Authorize), where the claimed id is known.
	server.VerifyConnection = func(cs tls.ConnectionState) error { return a.check(cs, 0) }
	return a, nil
}

// PinID reports whether member ids are pinned to certificates.
func (a *PeerAuth) PinID() bool { return a != nil && a.pinID }

// check verifies the peer certificate of cs: the allowed common name and,
// when pinning, that it names a member, and member want if want != 0.
func (a *PeerAuth) check(cs tls.ConnectionState, want uint64) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: no peer certificate", ErrWrongMember)
	}
	leaf := cs.PeerCertificates[0]
	if a.allowedCN != "" && leaf.Subject.CommonName != a.allowedCN {
		return fmt.Errorf("%w: common name %q is not the allowed %q", ErrWrongMember, leaf.Subject.CommonName, a.allowedCN)
	}
	if !a.pinID {
		return nil
	}
	id, err := MemberID(leaf)
	if err != nil {
		return err
	}
	if want != 0 && id != want {
		return fmt.Errorf("%w: certificate of member %d presented as member %d", ErrWrongMember, id, want)
	}
	return nil
}

// ServerCredentials returns the gRPC credentials of the peer listener.
func (a *PeerAuth) ServerCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(a.server)
}

// DialOptions returns the gRPC dial options of a connection to member id:
// the peer TLS credentials, which, when pinning, also require the server's
// certificate to name member id. Nil for a nil PeerAuth.
func (a *PeerAuth) DialOptions(id uint64) []grpc.DialOption {
	if a == nil {
		return nil
	}
	cfg := a.client.Clone()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { return a.check(cs, id) }
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
}

// Authorize checks that the caller of an inbound peer call (its context)
// is member from, as it claims: with pinning, its certificate must name
// from. Without pinning, or for a nil PeerAuth, it returns nil (the TLS
// handshake has already required a certificate from the trusted CA).
func (a *PeerAuth) Authorize(ctx context.Context, from uint64) error {
	if !a.PinID() {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return fmt.Errorf("%w: no peer information", ErrWrongMember)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return fmt.Errorf("%w: the connection is not TLS", ErrWrongMember)
	}
	return a.check(info.State, from)
}

// VerifiedClient reports whether the caller of an inbound call (its
// context) presented a client certificate that chains to the trusted CA.
func VerifiedClient(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return ok && len(info.State.VerifiedChains) > 0
}
