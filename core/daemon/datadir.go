package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/storage"
)

// identityFile records which node of which cluster a data dir belongs to.
const identityFile = "raftd-node.json"

type identity struct {
	NodeID    uint64 `json:"node_id"`
	ClusterID string `json:"cluster_id"`
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

// checkDataDir creates dir if needed and checks (or, on first boot, writes)
// its identity. It reports whether this is the first boot.
func checkDataDir(dir string, id uint64, clusterID string) (first bool, err error) {
	// The data dir holds the replicated state: the owner's only.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("data dir %s: %w", dir, err)
	}
	p := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		ents, _ := os.ReadDir(dir)
		if len(ents) > 0 {
			return false, fmt.Errorf("data dir %s is not empty and has no %s: not a raftd data dir", dir, identityFile)
		}
		b, _ := json.Marshal(identity{NodeID: id, ClusterID: clusterID})
		if err := writeFileSync(p, b); err != nil {
			return false, fmt.Errorf("data dir %s: %w", dir, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("data dir %s: %w", dir, err)
	}
	var got identity
	if err := json.Unmarshal(b, &got); err != nil {
		return false, fmt.Errorf("data dir %s: corrupt %s: %v", dir, identityFile, err)
	}
	if got.NodeID != id {
		return false, fmt.Errorf("data dir %s belongs to node %d, not node %d (--id)", dir, got.NodeID, id)
	}
	if got.ClusterID != clusterID {
		return false, fmt.Errorf("data dir %s belongs to cluster %s, not %s (check --peers or --cluster-id)", dir, got.ClusterID, clusterID)
	}
	return false, nil
}

func writeFileSync(p string, b []byte) error {
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
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

// openStorage opens the Pebble store in dir, naming a data dir that another
// process holds.
func openStorage(dir string, o *storage.Options) (*storage.Store, error) {
	st, err := storage.Open(dir, o)
	if err != nil {
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another raftd process", dir)
		}
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	return st, nil
}

// RestoreSnapshot seeds the empty data dir dir from a snapshot body r (as
// downloaded from a node's client API) for disaster recovery: a Start on
// it with the same ID, DataDir, RaftAddr (and ClusterID) runs a one-member
// cluster of self holding the snapshot's state. clusterID "" means
// ClusterIDFor([]node.Peer{self}), what Start derives for a lone node.
// It returns the snapshot's header and the cluster id used.
func RestoreSnapshot(dir string, self node.Peer, clusterID string, r io.Reader) (node.SnapshotHeader, string, error) {
	if clusterID == "" {
		clusterID = ClusterIDFor([]node.Peer{self})
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return node.SnapshotHeader{}, clusterID, fmt.Errorf("data dir %s is not empty", dir)
	}
	if _, err := checkDataDir(dir, self.ID, clusterID); err != nil {
		return node.SnapshotHeader{}, clusterID, err
	}
	st, err := openStorage(dir, &storage.Options{ClusterID: clusterID, NodeID: self.ID})
	if err != nil {
		return node.SnapshotHeader{}, clusterID, err
	}
	hdr, err := node.SeedFromSnapshot(nodeStore{st}, self, r)
	cerr := st.Close()
	if err != nil {
		return hdr, clusterID, err
	}
	if cerr != nil {
		return hdr, clusterID, fmt.Errorf("close %s: %w", dir, cerr)
	}
	return hdr, clusterID, nil
}
