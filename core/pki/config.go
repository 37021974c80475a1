package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Files names the PEM files of one side of a TLS connection. The zero
// value means plaintext.
type Files struct {
	// CertFile and KeyFile are this side's certificate (chain, leaf first)
	// and its private key.
	CertFile, KeyFile string
	// TrustedCAFile holds the CA certificates that the other side's
	// certificate must chain to. Empty: for a server, client certificates
	// are not asked for; for a client, the system's roots.
	TrustedCAFile string
}

// Enabled reports whether any file is named.
func (f Files) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" || f.TrustedCAFile != "" }

// ErrBadFiles is wrapped by the errors of ServerConfig, ClientConfig and
// NewPeerAuth for a missing, unreadable or invalid certificate, key or CA
// file, and for an incomplete combination of files.
var ErrBadFiles = errors.New("pki: bad TLS files")

// minVersion is the oldest TLS version raftd speaks.
const minVersion = tls.VersionTLS12

// ServerConfig returns the TLS configuration of a listener with f's
// certificate. clientCertAuth requires every client to present a
// certificate that chains to f.TrustedCAFile; without it, a client
// certificate is verified if the client offers one (and f names a CA), so
// that calls reserved to authenticated clients (DownloadSnapshot) can tell.
// The files are read once: a changed certificate takes effect on restart.
func ServerConfig(f Files, clientCertAuth bool) (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, fmt.Errorf("%w: a server needs both a certificate and a key file (got cert %q, key %q)", ErrBadFiles, f.CertFile, f.KeyFile)
	}
	cert, err := loadKeyPair(f)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: minVersion, Certificates: []tls.Certificate{cert}}
	switch {
	case clientCertAuth && f.TrustedCAFile == "":
		return nil, fmt.Errorf("%w: client certificate authentication needs a trusted CA file", ErrBadFiles)
	case f.TrustedCAFile != "":
		if cfg.ClientCAs, err = loadPool(f.TrustedCAFile); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if clientCertAuth {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return cfg, nil
}

// ClientConfig returns the TLS configuration of a client of a raftd port:
// the server's certificate must chain to f.TrustedCAFile (or to the
// system's roots when it is empty) and name the host dialed; f's
// certificate and key, if set, are presented to the server.
func ClientConfig(f Files) (*tls.Config, error) {
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, fmt.Errorf("%w: a client certificate needs both a certificate and a key file (got cert %q, key %q)", ErrBadFiles, f.CertFile, f.KeyFile)
	}
	cfg := &tls.Config{MinVersion: minVersion}
	if f.CertFile != "" {
		cert, err := loadKeyPair(f)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if f.TrustedCAFile != "" {
		pool, err := loadPool(f.TrustedCAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func loadKeyPair(f Files) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return cert, fmt.Errorf("%w: certificate %s with key %s: %v", ErrBadFiles, f.CertFile, f.KeyFile, err)
	}
	return cert, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: trusted CA file: %v", ErrBadFiles, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%w: trusted CA file %s holds no PEM certificate", ErrBadFiles, file)
	}
	return pool, nil
}

// Probe connects to addr with cfg (a ClientConfig) and returns why a TLS
// connection to it fails, or nil if the server accepts it within timeout.
// Clients use it to explain a connection gRPC reports only as
// unavailable: a server certificate from an unknown CA, a client
// certificate refused.
func Probe(addr string, cfg *tls.Config, timeout time.Duration) error {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	// In TLS 1.3 the server checks the client's certificate after the
	// client finished its side: its verdict comes with the first read.
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	}
	return nil
}
