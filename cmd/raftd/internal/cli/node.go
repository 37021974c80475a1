package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// nodeConfig is one node to start: the validated run options plus, for
// `raftd dev`, listeners opened in advance.
type nodeConfig struct {
	RunOptions
	RaftListener net.Listener
	APIListener  net.Listener
	LogOut       io.Writer
	LogPrefix    string
	// NoHandOver skips the leadership transfer at shutdown. raftd dev sets
	// it: it stops every node at once, so there is no one to hand over to.
	NoHandOver bool
}

// storedClusterID returns the cluster id recorded in dir, or "".
func storedClusterID(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if err != nil {
		return ""
	}
	var id identity
	if json.Unmarshal(b, &id) != nil {
		return ""
	}
	return id.ClusterID
}

// identityFile records which node of which cluster a data dir belongs to.
const identityFile = "raftd-node.json"

type identity struct {
	NodeID    uint64 `json:"node_id"`
	ClusterID string `json:"cluster_id"`
}

// checkDataDir creates dir if needed and checks (or, on first boot, writes)
// its identity. It reports whether this is the first boot.
func checkDataDir(dir string, id uint64, clusterID string) (first bool, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, withCode(ExitFailure, fmt.Errorf("data dir %s: %w", dir, err))
	}
	p := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		ents, _ := os.ReadDir(dir)
		if len(ents) > 0 {
			return false, withCode(ExitFailure, fmt.Errorf("data dir %s is not empty and has no %s: not a raftd data dir", dir, identityFile))
		}
		b, _ := json.Marshal(identity{NodeID: id, ClusterID: clusterID})
		if err := writeFileSync(p, b); err != nil {
			return false, withCode(ExitFailure, fmt.Errorf("data dir %s: %w", dir, err))
		}
		return true, nil
	}
	if err != nil {
		return false, withCode(ExitFailure, fmt.Errorf("data dir %s: %w", dir, err))
	}
	var got identity
	if err := json.Unmarshal(b, &got); err != nil {
		return false, withCode(ExitFailure, fmt.Errorf("data dir %s: corrupt %s: %v", dir, identityFile, err))
	}
	if got.NodeID != id {
		return false, withCode(ExitFailure, fmt.Errorf("data dir %s belongs to node %d, not node %d (--id)", dir, got.NodeID, id))
	}
	if got.ClusterID != clusterID {
		return false, withCode(ExitFailure, fmt.Errorf("data dir %s belongs to cluster %s, not %s (check --peers or --cluster-id)", dir, got.ClusterID, clusterID))
	}
	return false, nil
}

func writeFileSync(p string, b []byte) error {
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(p)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// checkPlugin verifies that path is an executable regular file and, if
// want is set, that its SHA-256 matches. It returns the hex digest.
func checkPlugin(path, want string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", withCode(ExitFailure, fmt.Errorf("fsm plugin %s: no such file", path))
		}
		return "", withCode(ExitFailure, fmt.Errorf("fsm plugin %s: %v", path, err))
	}
	if !fi.Mode().IsRegular() {
		return "", withCode(ExitFailure, fmt.Errorf("fsm plugin %s: not a regular file", path))
	}
	if fi.Mode()&0o111 == 0 {
		return "", withCode(ExitFailure, fmt.Errorf("fsm plugin %s: not executable", path))
	}
	f, err := os.Open(path)
	if err != nil {
		return "", withCode(ExitFailure, fmt.Errorf("fsm plugin %s: %v", path, err))
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", withCode(ExitFailure, fmt.Errorf("fsm plugin %s: %v", path, err))
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		return "", withCode(ExitFailure, fmt.Errorf("fsm plugin %s: sha256 is %s, --fsm-sha256 wants %s", path, sum, want))
	}
	return sum, nil
}

// listen opens addr with a clear error when it is taken.
func listen(what, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, withCode(ExitFailure, fmt.Errorf("%s %s is already in use (another raftd running?)", what, addr))
		}
		return nil, withCode(ExitFailure, fmt.Errorf("%s %s: %v", what, addr, err))
	}
	return l, nil
}

// runningNode is a started node. Stop is idempotent.
type runningNode struct {
	id        uint64
	clusterID string
	apiAddr   string
	raftAddr  string

	done     chan struct{}
	errOnce  sync.Once
	err      error
	stopOnce sync.Once
	stopErr  error
	stop     func() error
}

// ID returns the node id.
func (n *runningNode) ID() uint64 { return n.id }

// APIAddr returns the bound client API address.
func (n *runningNode) APIAddr() string { return n.apiAddr }

// RaftAddr returns the bound peer address.
func (n *runningNode) RaftAddr() string { return n.raftAddr }

// Done is closed when the node stops on its own (fail-stop).
func (n *runningNode) Done() <-chan struct{} { return n.done }

// Err is the reason the node stopped on its own, after Done is closed.
func (n *runningNode) Err() error { return n.err }

func (n *runningNode) fail(err error) {
	n.errOnce.Do(func() {
		n.err = err
		close(n.done)
	})
}

// Stop stops the node: stop accepting, finish in-flight requests, stop the
// plugin, close storage.
func (n *runningNode) Stop() error {
	n.stopOnce.Do(func() { n.stopErr = n.stop() })
	return n.stopErr
}
