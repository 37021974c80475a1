package e2e

import (
	"bytes"
	"context"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
)

// chromiumBin returns Debian's Chromium. Without it the browser test is
// skipped, except in CI (CI=true), where .ci/run installs it.
func chromiumBin(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed; .ci/run installs Debian's chromium package")
	}
	t.Skip("chromium is not installed (apt-get install chromium); skipping the status page browser test")
	return ""
}

// chromium runs headless Chromium once on a fresh profile with args and
// returns its standard output. The browser and its helper processes run
// in a process group of their own, killed if it outlives its budget.
func chromium(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, lastLines(stderr.String(), 20))
	}
	return stdout.String()
}

// The rendered page, as --dump-dom serializes it after the script ran.
var (
	rowRE     = regexp.MustCompile(`<tr data-node-id="(\d+)" data-role="([a-z]+)"`)
	bodyAttRE = regexp.MustCompile(`<body ([^>]*)>`)
	attRE     = regexp.MustCompile(`([a-z-]+)="([^"]*)"`)
)

// renderedPage loads url in Chromium, lets its script poll for vt of
// virtual time, and returns the rows (node id -> data-role), the body's
// attributes and the markup of the page as rendered (without the script).
func renderedPage(t *testing.T, bin, url string, vt time.Duration) (map[uint64]string, map[string]string, string) {
	t.Helper()
	dom := chromium(t, bin, "--virtual-time-budget="+strconv.Itoa(int(vt.Milliseconds())), "--dump-dom", url)
	// What the page shows, not its script's source.
	dom, _, _ = strings.Cut(dom, "<script")
	rows := map[uint64]string{}
	for _, m := range rowRE.FindAllStringSubmatch(dom, -1) {
		id, _ := strconv.ParseUint(m[1], 10, 64)
		rows[id] = m[2]
	}
	attrs := map[string]string{}
	if m := bodyAttRE.FindStringSubmatch(dom); m != nil {
		for _, a := range attRE.FindAllStringSubmatch(m[1], -1) {
			attrs[a[1]] = a[2]
		}
	}
	return rows, attrs, dom
}

// screenshot saves a PNG of url to dir/name, checks that it is a real
// picture of the page (its size, more than a few colours), and logs where.
func screenshot(t *testing.T, bin, url, dir, name string) {
	t.Helper()
	path := filepath.Join(dir, name)
	chromium(t, bin, "--virtual-time-budget=5000", "--hide-scrollbars", "--window-size=1500,420", "--screenshot="+path, url)
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", path, err)
	}
	b := img.Bounds()
	colours := map[[4]uint32]bool{}
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bb, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, bb, a}] = true
		}
	}
	if b.Dx() != 1500 || b.Dy() != 420 || len(colours) < 16 {
		t.Fatalf("screenshot %s: %dx%d with %d colours; want 1500x420 showing the page", path, b.Dx(), b.Dy(), len(colours))
	}
	t.Logf("status page screenshot: %s", path)
}

// TestStatusPageInChromium renders the status page of a real 3-node
// cluster in headless Chromium (served by a follower, so the rows of the
// others come from the status fan-out): after its script ran, it lists
// every node, marks the one leader the cluster reports, and has refreshed
// more than once. With a node killed, the page lists it as unreachable;
// with apply halted on a poison command, it shows every node halted.
// Screenshots go to $RAFTD_SCREENSHOT_DIR (else the test's temp dir).
func TestStatusPageInChromium(t *testing.T) {
	bin := chromiumBin(t)
	// The kv FSM plus {"op":"panic"}, to show a halted apply.
	c, bases := metricsCluster(t, 3, misbehaveBin(t))
	c.mustApply(1, `{"op":"put","key":"page","value":"1"}`, 10*time.Second)
	lead, _ := c.waitLeader(20*time.Second, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	st, err := c.client(lead).Status(ctx, &apiv1.StatusRequest{})
	cancel()
	if err != nil || st.GetLeader() != lead {
		t.Fatalf("cluster status: leader %d, %v; want %d", st.GetLeader(), err, lead)
	}
	follower := lead%3 + 1
	url := bases[follower] + "/"

	rows, body, dom := renderedPage(t, bin, url, 7*time.Second)
	if len(rows) != 3 {
		t.Fatalf("page lists %d nodes, want 3: %v\n%s", len(rows), rows, dom)
	}
	for _, id := range c.ids {
		want := "follower"
		if id == lead {
			want = "leader"
		}
		if rows[id] != want {
			t.Errorf("page shows node %d as %q, want %q", id, rows[id], want)
		}
	}
	if !strings.Contains(dom, `<tr data-node-id="`+strconv.FormatUint(lead, 10)+`" data-role="leader" class="leader">`) {
		t.Errorf("the leader's row is not marked (class leader)")
	}
	if body["data-loaded"] != "1" || body["data-leader"] != strconv.FormatUint(lead, 10) {
		t.Errorf("page body %v: want loaded, leader %d", body, lead)
	}
	if n, _ := strconv.Atoi(body["data-renders"]); n < 2 {
		t.Errorf("page rendered %d times in 7 s of virtual time; it should refresh every 2 s", n)
	}
	if !strings.Contains(dom, "3 of 3 reachable") || !strings.Contains(dom, "★ leader") {
		t.Errorf("page misses its summary or leader badge:\n%s", dom)
	}

	dir := os.Getenv("RAFTD_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	screenshot(t, bin, url, dir, "status-page.png")

	// A follower down: still listed, as unreachable, by the page of the
	// other follower.
	down := 6 - lead - follower
	c.kill(down)
	rows, body, dom = renderedPage(t, bin, url, 3*time.Second)
	if len(rows) != 3 || rows[down] != "unreachable" || rows[lead] != "leader" || body["data-leader"] != strconv.FormatUint(lead, 10) {
		t.Errorf("with node %d killed the page shows %v (body %v); want it unreachable and %d still leader\n%s", down, rows, body, lead, dom)
	}
	screenshot(t, bin, url, dir, "status-page-node-down.png")

	// A poison command: every replica halts apply at its index; the page
	// says so on every row, and /readyz turns 503 naming the halt.
	c.start(down)
	waitReadyz(t, bases[down], http.StatusOK, "ok: leader", 30*time.Second)
	all := strings.Join([]string{c.nodes[1].apiAddr, c.nodes[2].apiAddr, c.nodes[3].apiAddr}, ",")
	if code, _, errOut := raftd(t, nil, "apply", "--addr", all, "--timeout", "60s", `{"op":"panic"}`); code != 1 || !strings.Contains(errOut, "apply halted at index") {
		t.Fatalf("apply of the poison: exit %d, %q; want 1 and the halt", code, errOut)
	}
	for _, id := range c.ids {
		waitReadyz(t, bases[id], http.StatusServiceUnavailable, "apply halted at index", 60*time.Second)
	}
	_, _, dom = renderedPage(t, bin, url, 3*time.Second)
	if got, text := strings.Count(dom, `data-halted="1"`), strings.Count(dom, "apply halted at index "); got != 3 || text != 3 {
		t.Errorf("the page shows %d halted rows (%d say so), want 3:\n%s", got, text, dom)
	}
	screenshot(t, bin, url, dir, "status-page-halted.png")
}
