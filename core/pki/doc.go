// Package pki builds the TLS configurations of raftd's ports and the
// certificates of test clusters.
//
// raftd has three listeners: the client API (--api-addr), the peer port
// (--raft-addr: Raft traffic and node-to-node forwarding) and the
// operator endpoint (--metrics-addr). Each is plaintext unless given a
// certificate; Files names the PEM files of one side, ServerConfig and
// ClientConfig turn them into *tls.Config values.
//
// # Member identity
//
// A certificate speaks for member id N when it carries the URI SAN
// raftd://node/N or, lacking any raftd:// URI, the subject common name
// raftd-node-N (MemberID). With peer identity pinning on (PeerAuth.PinID),
// every peer connection must present such a certificate, and the member id
// a node claims in its requests must be the one its certificate names, so
// that a valid certificate of one member cannot pose as another member.
//
// # Test certificates
//
// InitCluster writes a CA and node and client certificates (ECDSA P-256)
// for a test cluster (raftd certs init, raftd dev --tls). Production
// clusters should use certificates from the team's own CA.
package pki
