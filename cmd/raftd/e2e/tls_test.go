package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/raftd/raftd/core/pki"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// certsInit runs `raftd certs init` into a new directory and returns the
// names of what it wrote.
func certsInit(t *testing.T, nodes int) *pki.ClusterFiles {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	code, out, stderr := raftd(t, nil, "certs", "init", dir, "--nodes", fmt.Sprint(nodes))
	if code != 0 || !strings.Contains(out, "RAFTD_CACERT=") {
		t.Fatalf("certs init: %d %q %q", code, out, stderr)
	}
	return pki.ClusterFilesIn(dir, nodes)
}

// tlsFlags are the `raftd run` flags of member id with certificates from
// cf: TLS on both ports, client certificates required, member ids pinned.
func tlsFlags(cf *pki.ClusterFiles, id uint64) []string {
	n := cf.Nodes[id-1]
	return []string{"--cert-file", n.CertFile, "--key-file", n.KeyFile, "--trusted-ca-file", n.TrustedCAFile, "--client-cert-auth",
		"--peer-cert-file", n.CertFile, "--peer-key-file", n.KeyFile, "--peer-trusted-ca-file", n.TrustedCAFile, "--peer-cert-pin-id"}
}

func tlsCreds(t *testing.T, f pki.Files) credentials.TransportCredentials {
	t.Helper()
	c, err := pki.ClientConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	return credentials.NewTLS(c)
}

// clientEnv is the environment giving client commands the files of f.
func clientEnv(f pki.Files) []string {
	return []string{"RAFTD_CACERT=" + f.TrustedCAFile, "RAFTD_CERT=" + f.CertFile, "RAFTD_KEY=" + f.KeyFile}
}

// TestTLSCluster runs a three-node cluster with TLS on every port, client
// certificates required and member ids pinned to certificates:
//   - a client with a certificate from the cluster's CA is served, through
//     any node;
//   - a plaintext client, a client without a certificate and a client whose
//     certificate comes from another CA are refused;
//   - the raft port answers no client or admin call, even to a member's
//     certificate;
//   - a node whose certificates come from another CA, added with `members
//     add` and started with --join, replicates nothing: its log stays empty
//     and the cluster's status shows it unreachable, not matching;
//   - no file or directory under the data dirs is open to group or others.
func TestTLSCluster(t *testing.T) {
	cf := certsInit(t, 4)
	other := certsInit(t, 4)
	c := startCluster(t, 3, bin("raftd-fsm-kv"), tlsCreds(t, cf.Client), func(id uint64) []string { return tlsFlags(cf, id) })
	all := c.nodes[1].apiAddr + "," + c.nodes[2].apiAddr + "," + c.nodes[3].apiAddr
	env := clientEnv(cf.Client)

	// Served: the CLI with RAFTD_CACERT/CERT/KEY, through every node.
	for _, id := range c.ids {
		code, out, stderr := raftd(t, env, "apply", "--addr", c.nodes[id].apiAddr, fmt.Sprintf(`{"op":"put","key":"k%d","value":"v"}`, id))
		if code != 0 || strings.TrimSpace(out) != `{"ok":true}` {
			t.Fatalf("apply through node %d with a client certificate: %d %q %q", id, code, out, stderr)
		}
	}
	code, out, stderr := raftd(t, nil, "query", "--addr", all, "--cacert", cf.CACert, "--cert", cf.Client.CertFile, "--key", cf.Client.KeyFile,
		`{"op":"get","key":"k2"}`)
	if code != 0 || !strings.Contains(out, `"found":true`) {
		t.Fatalf("query with --cacert --cert --key: %d %q %q", code, out, stderr)
	}

	// Refused, certainly not applied.
	for name, env := range map[string][]string{
		"plaintext":      nil,
		"no certificate": {"RAFTD_CACERT=" + cf.CACert},
		"other CA":       {"RAFTD_CACERT=" + cf.CACert, "RAFTD_CERT=" + other.Client.CertFile, "RAFTD_KEY=" + other.Client.KeyFile},
	} {
		code, out, stderr := raftd(t, env, "apply", "--addr", all, "--timeout", "3s", `{"op":"put","key":"evil","value":"1"}`)
		if code != 3 || out != "" {
			t.Errorf("%s client: exit %d, stdout %q, stderr %q; want exit 3", name, code, out, stderr)
		}
	}
	if code, out, stderr := raftd(t, env, "query", "--addr", all, `{"op":"get","key":"evil"}`); code != 0 || !strings.Contains(out, `"found":false`) {
		t.Fatalf("a refused client's put was applied: %d %q %q", code, out, stderr)
	}

	// The raft port: every client/admin call is Unimplemented, even with a
	// member's certificate (a client certificate does not even pass the
	// handshake: it names no member).
	lead, _ := c.waitLeader(10*time.Second, 0)
	asNode2, err := pki.NewPeerAuth(cf.Nodes[1], "", true)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+c.nodes[lead].raftAddr, asNode2.DialOptions(lead)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for m, err := range clientCalls(ctx, apiv1.NewRaftdClient(cc)) {
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("%s on node %d's raft port: %v, want Unimplemented", m, lead, err)
		}
	}
	code, _, stderr = raftd(t, env, "status", "--addr", c.nodes[lead].raftAddr, "--timeout", "3s")
	if code != 3 || !strings.Contains(stderr, "certificate") {
		t.Errorf("status with a client certificate on the raft port: exit %d %q, want 3 and a certificate error", code, stderr)
	}

	// A node with certificates from another CA, added and started with
	// --join, gets nothing.
	dir := t.TempDir()
	p := &proc{id: 4, apiAddr: freeAddr(t), raftAddr: freeAddr(t), dataDir: filepath.Join(dir, "n4"), logPath: filepath.Join(dir, "n4.log")}
	var peers []string
	for _, id := range c.ids {
		peers = append(peers, fmt.Sprintf("%d=%s", id, c.nodes[id].raftAddr))
	}
	rogue := other.Nodes[3]
	p.args = []string{"run", "--fsm", bin("raftd-fsm-kv"), "--id", "4", "--data-dir", p.dataDir, "--raft-addr", p.raftAddr,
		"--api-addr", p.apiAddr, "--peers", strings.Join(peers, ","), "--join",
		"--peer-cert-file", rogue.CertFile, "--peer-key-file", rogue.KeyFile, "--peer-trusted-ca-file", rogue.TrustedCAFile, "--peer-cert-pin-id"}
	c.nodes[4] = p
	c.ids = append(c.ids, 4)
	c.start(4)
	// Serving first, so that the leader's first attempt meets its TLS.
	waitLog(t, p.logPath, 20*time.Second, " serving ", "node=4")
	code, out, stderr = raftd(t, env, "members", "add", "--addr", all, "4", p.raftAddr)
	if code != 0 || !strings.Contains(out, p.raftAddr) {
		t.Fatalf("members add 4: %d %q %q", code, out, stderr)
	}
	for i := range 5 {
		c.mustApply(c.ids[i%3], fmt.Sprintf(`{"op":"put","key":"after%d","value":"v"}`, i), 10*time.Second)
	}
	// The leader tried node 4 and failed the handshake.
	lead, _ = c.waitLeader(10*time.Second, 0, 4)
	waitLog(t, c.nodes[lead].logPath, 20*time.Second, "peer=4", "addr="+p.raftAddr, "certificate signed by unknown authority")
	// Node 4 (its API is plaintext) holds nothing.
	cc4 := &cluster{t: t, nodes: map[uint64]*proc{4: p}, conns: map[string]*grpc.ClientConn{}}
	defer func() {
		for _, cc := range cc4.conns {
			cc.Close()
		}
	}()
	st4, err := cc4.localStatus(4, 5*time.Second)
	if err != nil {
		t.Fatalf("node 4's own status: %v", err)
	}
	if st4.GetLastIndex() != 0 || st4.GetCommitIndex() != 0 || st4.GetTerm() != 0 {
		t.Errorf("node 4 got log entries: last %d, commit %d, term %d", st4.GetLastIndex(), st4.GetCommitIndex(), st4.GetTerm())
	}
	code, out, stderr = raftd(t, env, "status", "--json", "--addr", c.nodes[lead].apiAddr)
	if code != 0 {
		t.Fatalf("status: %d %q", code, stderr)
	}
	var st struct {
		Nodes []struct {
			ID        uint64 `json:"id"`
			Error     string `json:"error"`
			Followers []struct {
				ID    uint64 `json:"id"`
				Match uint64 `json:"match_index"`
			} `json:"followers"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v: %s", err, out)
	}
	matched := map[uint64]uint64{}
	var node4Err string
	for _, n := range st.Nodes {
		if n.ID == 4 {
			node4Err = n.Error
		}
		if n.ID == lead {
			for _, f := range n.Followers {
				matched[f.ID] = f.Match
			}
		}
	}
	if node4Err == "" {
		t.Errorf("status shows node 4 reachable: %s", out)
	}
	if m, ok := matched[4]; !ok || m != 0 {
		t.Errorf("leader's progress of node 4: match %d (listed %v), want 0: %s", m, ok, out)
	}

	// Data files are the owner's only.
	for _, id := range c.ids {
		err := filepath.WalkDir(c.nodes[id].dataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: mode %v is open to group or others", path, fi.Mode().Perm())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// clientCalls makes every call of the client API and returns the errors by
// method.
func clientCalls(ctx context.Context, c apiv1.RaftdClient) map[string]error {
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

// waitLog waits until the log at path has a line holding every one of
// parts.
func waitLog(t *testing.T, path string, d time.Duration, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		b, _ := os.ReadFile(path)
		for _, line := range strings.Split(string(b), "\n") {
			found := true
			for _, p := range parts {
				found = found && strings.Contains(line, p)
			}
			if found {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no line with %q within %s", path, parts, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
