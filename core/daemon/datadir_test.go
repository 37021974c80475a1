package daemon

import (
	"strings"
	"testing"
)

func TestDataDirIdentity(t *testing.T) {
	d := t.TempDir()
	if first, err := checkDataDir(d, 1, "c1"); err != nil || !first {
		t.Fatalf("first boot: %v %v", first, err)
	}
	if first, err := checkDataDir(d, 1, "c1"); err != nil || first {
		t.Fatalf("second boot: %v %v", first, err)
	}
	if _, err := checkDataDir(d, 2, "c1"); err == nil || !strings.Contains(err.Error(), "belongs to node 1") {
		t.Fatalf("other node: %v", err)
	}
	if _, err := checkDataDir(d, 1, "c2"); err == nil || !strings.Contains(err.Error(), "belongs to cluster c1") {
		t.Fatalf("other cluster: %v", err)
	}
}
