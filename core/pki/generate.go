package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Defaults of InitCluster.
const (
	// DefaultValidFor is how long generated certificates are valid.
	DefaultValidFor = 365 * 24 * time.Hour
	// ClientCommonName is the common name of the generated client
	// certificate; its URI SAN is raftd://client/admin.
	ClientCommonName = "raftd-client"
)

// DefaultHosts are the names and addresses generated node certificates
// are valid for when none are given: this machine's loopback.
var DefaultHosts = []string{"127.0.0.1", "::1", "localhost"}

// ClusterFiles lists the files InitCluster wrote. Every Files value names
// the CA certificate as its TrustedCAFile.
type ClusterFiles struct {
	// Dir is the directory they are in.
	Dir string
	// CACert and CAKey are the CA's certificate and private key.
	CACert, CAKey string
	// Nodes[i] is member i+1's certificate and key (for both the peer
	// port and the client API).
	Nodes []Files
	// Client is a client certificate and key (raftd client commands).
	Client Files
}

// InitCluster makes a CA and certificates for members 1..nodes and one
// client in dir (created 0700 if missing; every file is written 0600 and
// none may exist already): ca.crt, ca.key, node-<id>.crt, node-<id>.key,
// client.crt, client.key. Keys are ECDSA P-256. Member certificates name
// their member (MemberID) and are valid for hosts (DNS names or IP
// addresses, blanks ignored; nil means DefaultHosts) as server and
// client; validFor <= 0 means DefaultValidFor. It is meant for test clusters: production
// clusters should use certificates from the team's own CA.
func InitCluster(dir string, nodes int, hosts []string, validFor time.Duration) (*ClusterFiles, error) {
	if nodes < 1 {
		return nil, fmt.Errorf("pki: init: need at least one node, got %d", nodes)
	}
	if hosts == nil {
		hosts = DefaultHosts
	}
	if validFor <= 0 {
		validFor = DefaultValidFor
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: init: %w", err)
	}
	names := ClusterFilesIn(dir, nodes)
	// Refuse before writing anything, so that a rerun cannot replace a CA
	// whose certificates are in use.
	for _, n := range append([]string{names.CACert, names.CAKey, names.Client.CertFile, names.Client.KeyFile}, names.nodeFiles()...) {
		if _, err := os.Lstat(n); err == nil {
			return nil, fmt.Errorf("pki: init: %s exists; refusing to overwrite certificates (use an empty directory)", n)
		}
	}
	out := &ClusterFiles{Dir: dir, CACert: names.CACert, CAKey: names.CAKey}
	now := time.Now()
	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "raftd test CA", Organization: []string{"raftd"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := sign(caTmpl, caTmpl, caKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("pki: init: %w", err)
	}
	if err := writeCert(out.CACert, caDER); err != nil {
		return nil, err
	}
	if err := writeKey(out.CAKey, caKey); err != nil {
		return nil, err
	}
	leaf := func(cn string, uri *url.URL, usage []x509.ExtKeyUsage, hosts []string, certFile, keyFile string) (Files, error) {
		key, err := newKey()
		if err != nil {
			return Files{}, err
		}
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn, Organization: []string{"raftd"}},
			NotBefore:   now.Add(-time.Hour),
			NotAfter:    now.Add(validFor),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: usage,
			URIs:        []*url.URL{uri},
		}
		for _, h := range hosts {
			if h = strings.TrimSpace(h); h == "" {
				continue
			}
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		der, err := sign(tmpl, ca, key, caKey)
		if err != nil {
			return Files{}, err
		}
		if err := writeCert(certFile, der); err != nil {
			return Files{}, err
		}
		if err := writeKey(keyFile, key); err != nil {
			return Files{}, err
		}
		return Files{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: out.CACert}, nil
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for i := 1; i <= nodes; i++ {
		id := uint64(i)
		f, err := leaf(NodeCommonName(id), NodeURI(id), both, hosts, names.Nodes[i-1].CertFile, names.Nodes[i-1].KeyFile)
		if err != nil {
			return nil, err
		}
		out.Nodes = append(out.Nodes, f)
	}
	out.Client, err = leaf(ClientCommonName, &url.URL{Scheme: URIScheme, Host: "client", Path: "/admin"},
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, names.Client.CertFile, names.Client.KeyFile)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ClusterFilesIn returns the names InitCluster(dir, nodes, ...) writes,
// without touching the file system.
func ClusterFilesIn(dir string, nodes int) *ClusterFiles {
	ca := filepath.Join(dir, "ca.crt")
	cf := &ClusterFiles{Dir: dir, CACert: ca, CAKey: filepath.Join(dir, "ca.key"),
		Client: Files{CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key"), TrustedCAFile: ca}}
	for i := 1; i <= nodes; i++ {
		cf.Nodes = append(cf.Nodes, Files{CertFile: filepath.Join(dir, fmt.Sprintf("node-%d.crt", i)),
			KeyFile: filepath.Join(dir, fmt.Sprintf("node-%d.key", i)), TrustedCAFile: ca})
	}
	return cf
}

func (cf *ClusterFiles) nodeFiles() []string {
	var out []string
	for _, f := range cf.Nodes {
		out = append(out, f.CertFile, f.KeyFile)
	}
	return out
}

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	return k, nil
}

// sign signs tmpl (given a random serial number) with the parent's key.
func sign(tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

func writeCert(path string, der []byte) error {
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: encode key: %w", err)
	}
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// writeNew creates path (which must not exist) with mode 0600 and writes b
// durably.
func writeNew(path string, b []byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("pki: %w", cerr)
		}
	}()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}
