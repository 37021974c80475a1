package daemon

import (
	"crypto/tls"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"

	"github.com/raftd/raftd/core/pki"
)

// security is the TLS of a node's listeners, built from its Config.
type security struct {
	// client serves the client API and the metrics endpoint; nil:
	// plaintext.
	client *tls.Config
	// peer secures the raft address both ways; nil: plaintext.
	peer *pki.PeerAuth
}

// security loads the certificates that cfg names. Errors name the flags.
func (cfg Config) security() (security, error) {
	var sec security
	if cfg.ClientTLS.Enabled() || cfg.ClientCertAuth {
		c, err := pki.ServerConfig(cfg.ClientTLS, cfg.ClientCertAuth)
		if err != nil {
			return sec, fmt.Errorf("client TLS (--cert-file, --key-file, --trusted-ca-file, --client-cert-auth): %w", err)
		}
		sec.client = c
	}
	switch {
	case cfg.PeerTLS.Enabled():
		a, err := pki.NewPeerAuth(cfg.PeerTLS, cfg.PeerCertAllowedCN, cfg.PeerCertPinID)
		if err != nil {
			return sec, fmt.Errorf("peer TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file): %w", err)
		}
		sec.peer = a
	case cfg.PeerCertAllowedCN != "" || cfg.PeerCertPinID:
		return sec, fmt.Errorf("peer TLS: --peer-cert-allowed-cn and --peer-cert-pin-id need --peer-cert-file, --peer-key-file and --peer-trusted-ca-file")
	}
	return sec, nil
}

// warnPlaintext logs a warning for every listener that serves plaintext
// on an address other hosts can reach.
func (sec security) warnPlaintext(log *slog.Logger, raft, api, metrics net.Listener) {
	warn := func(what string, l net.Listener, flags string) {
		if l != nil && !isLoopback(l.Addr()) {
			log.Warn("serving "+what+" without TLS on a non-loopback address: anyone who can reach it "+
				"can read and change the cluster's state; set "+flags, "addr", l.Addr().String())
		}
	}
	if sec.peer == nil {
		warn("raft traffic", raft, "--peer-cert-file, --peer-key-file and --peer-trusted-ca-file")
	}
	if sec.client == nil {
		warn("the client API", api, "--cert-file, --key-file, --trusted-ca-file and --client-cert-auth")
		warn("metrics", metrics, "--cert-file and --key-file")
	}
}

// isLoopback reports whether a is a loopback address (127.0.0.0/8, ::1).
// The unspecified address (all interfaces) is not.
func isLoopback(a net.Addr) bool {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.IsLoopback()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// warnDataDirMode logs a warning if the existing data dir dir can be
// entered or read by its group or others (a new one is created 0700).
func warnDataDirMode(log *slog.Logger, dir string) {
	fi, err := os.Stat(dir)
	if err != nil {
		return
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		log.Warn("data dir is accessible to its group or others; it holds the replicated state: chmod 700 it",
			"dir", dir, "mode", fs.FileMode(perm).String())
	}
}
