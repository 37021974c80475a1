package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// CheckPlugin verifies that path is an executable regular file and, if want
// is set, that its SHA-256 is want (hex). It returns the hex digest. Start
// runs it before anything else; a caller that starts several nodes on one
// plugin may run it once up front.
func CheckPlugin(path, want string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("fsm plugin %s: no such file", path)
		}
		return "", fmt.Errorf("fsm plugin %s: %v", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("fsm plugin %s: not a regular file", path)
	}
	if fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("fsm plugin %s: not executable", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("fsm plugin %s: %v", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("fsm plugin %s: %v", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		return "", fmt.Errorf("fsm plugin %s: sha256 is %s, --fsm-sha256 wants %s", path, sum, want)
	}
	return sum, nil
}

// firstLine returns s up to its first line break.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}
