package nodekv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/raftd/raftd/fsms/internal/fsmtest"
	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/host"
	fsmv1 "github.com/raftd/raftd/proto/fsm/v1"
)

// The handshake cookie (docs/plugin-protocol.md section 1).
const (
	cookieKey   = "RAFTD_PLUGIN"
	cookieValue = "fsm-6f1c7a2e9b0d4e58"
)

// helperEnv makes the test binary act as a short-lived parent of the plugin
// (TestExitsWhenParentDies).
const helperEnv = "NODEKV_TEST_PARENT_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(parentHelper())
	}
	os.Exit(m.Run())
}

// parentHelper starts the plugin, waits for its handshake line, prints the
// plugin's PID and exits without stopping it, orphaning the plugin.
func parentHelper() int {
	cmd := exec.Command(wrapper())
	cmd.Env = append(os.Environ(), cookieKey+"="+cookieValue, "PLUGIN_PROTOCOL_VERSIONS=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "no handshake line:", err)
		return 1
	}
	fmt.Println(cmd.Process.Pid)
	return 0
}

func wrapper() string {
	p, err := filepath.Abs("raftd-fsm-node-kv")
	if err != nil {
		panic(err)
	}
	return p
}

// requireNode skips the test when the plugin cannot run here.
func requireNode(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		tb.Skip("node-kv: node is not installed (need Node.js >= 20 on PATH)")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "@grpc", "grpc-js", "package.json")); err != nil {
		tb.Skip("node-kv: node_modules missing; run `npm ci` in fsms/node-kv (or `make node`)")
	}
}

func logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// snapshotTo captures c's state and writes its body to w.
func snapshotTo(ctx context.Context, c *host.Client, w io.Writer) (fsm.SnapshotHeader, error) {
	s, err := c.Snapshot(ctx)
	if err != nil {
		return fsm.SnapshotHeader{}, err
	}
	defer s.Release()
	return s.Header(), s.WriteTo(ctx, w)
}

// start launches the Node plugin through plugin/host and stops it (and
// checks that its process is gone) when the test ends.
func start(tb testing.TB) *host.Client {
	tb.Helper()
	return startWith(tb, host.Config{})
}

// startWith is start with a custom host configuration (Path, Logger and
// StartTimeout are filled in).
func startWith(tb testing.TB, cfg host.Config) *host.Client {
	tb.Helper()
	requireNode(tb)
	cfg.Path, cfg.Logger, cfg.StartTimeout = wrapper(), logger(), 20*time.Second
	c, err := host.Start(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("start node-kv: %v", err)
	}
	pid := c.PID()
	tb.Cleanup(func() {
		pid := c.PID()
		if pid == 0 {
			return
		}
		if err := c.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
		waitGone(tb, pid, 5*time.Second)
	})
	if pid <= 0 {
		tb.Fatalf("no plugin pid")
	}
	return c
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

func waitGone(tb testing.TB, pid int, d time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			tb.Fatalf("process %d still running %v after it should have exited", pid, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestInfoAndProcess(t *testing.T) {
	c := start(t)
	ctx := context.Background()
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The build names the JavaScript the launcher runs (lib/build.js).
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(info.Build) {
		t.Fatalf("Info.Build = %q, want a hex SHA-256", info.Build)
	}
	want := fsm.Info{Name: "kv", MinVersion: 1, MaxVersion: 2, DowngradeSafeTo: 1, Build: info.Build}
	if info != want {
		t.Fatalf("Info = %+v, want %+v", info, want)
	}
	// The wrapper execs node: the PID the host holds is node itself.
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.PID()))
	if err == nil && strings.TrimSpace(string(comm)) != "node" {
		t.Errorf("plugin pid %d runs %q, want node (the wrapper must exec)", c.PID(), strings.TrimSpace(string(comm)))
	}
	// SIGINT is ignored.
	pid := c.PID()
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if _, err := c.Info(ctx); err != nil {
			t.Fatalf("after SIGINT: %v", err)
		}
	}
	if !alive(pid) {
		t.Fatal("plugin died on SIGINT")
	}
	// Close (controller Shutdown) leaves no process behind.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 3*time.Second)
}

func TestKillAndRestart(t *testing.T) {
	c := start(t)
	ctx := context.Background()
	if _, err := c.ApplyBatch(ctx, []fsm.Entry{{Index: 1, Term: 1, Data: []byte(`{"op":"put","key":"a","value":"1"}`)}}); err != nil {
		t.Fatal(err)
	}
	pid := c.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Broken():
	case <-time.After(10 * time.Second):
		t.Fatal("host did not notice the killed plugin")
	}
	if !errors.Is(c.Err(), host.ErrBroken) {
		t.Fatalf("Err = %v, want ErrBroken", c.Err())
	}
	waitGone(t, pid, 3*time.Second)
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if c.PID() == pid {
		t.Fatal("restart kept the old pid")
	}
	info, err := c.Info(ctx)
	if err != nil || info.AppliedIndex != 0 {
		t.Fatalf("fresh plugin Info = %+v, %v; want applied 0", info, err)
	}
}

// TestHandshakeMTLS runs the plugin by hand with a client certificate and
// checks the handshake line, the server certificate, and that a client
// without the certificate is refused while one with it is served.
func TestHandshakeMTLS(t *testing.T) {
	requireNode(t)
	clientCert, clientPEM := selfSigned(t)
	cmd := exec.Command(wrapper())
	cmd.Env = append(os.Environ(), cookieKey+"="+cookieValue, "PLUGIN_PROTOCOL_VERSIONS=3,1",
		"PLUGIN_MIN_PORT=0", "PLUGIN_MAX_PORT=0", "PLUGIN_CLIENT_CERT="+string(clientPEM))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("handshake line: %v", err)
	}
	parts := strings.Split(strings.TrimSuffix(line, "\n"), "|")
	if len(parts) != 6 || parts[0] != "1" || parts[1] != "1" || parts[2] != "tcp" || parts[4] != "grpc" {
		t.Fatalf("handshake line %q, want 1|1|tcp|ADDR|grpc|CERT", line)
	}
	if !strings.HasPrefix(parts[3], "127.0.0.1:") {
		t.Fatalf("address %q is not on 127.0.0.1", parts[3])
	}
	der, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil {
		t.Fatalf("certificate field is not unpadded standard base64: %v", err)
	}
	serverCert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := serverCert.CheckSignatureFrom(serverCert); err != nil {
		t.Fatalf("server certificate is not properly self-signed: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(serverCert)
	if _, err := serverCert.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("server certificate does not verify for localhost: %v", err)
	}

	dial := func(certs []tls.Certificate) error {
		conn, err := grpc.NewClient(parts[3], grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			Certificates: certs, RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = fsmv1.NewStateMachineClient(conn).Info(ctx, &fsmv1.InfoRequest{})
		return err
	}
	if err := dial(nil); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	_, otherPEM := selfSigned(t)
	other, err := tls.X509KeyPair(otherPEM, otherPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial([]tls.Certificate{other}); err == nil {
		t.Fatal("a client with a foreign certificate was served")
	}
	if err := dial([]tls.Certificate{clientCert}); err != nil {
		t.Fatalf("the host's certificate was refused: %v", err)
	}
}

// selfSigned returns a go-plugin-like client certificate and its PEM
// (certificate followed by key).
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, append(certPEM, keyPEM...)
}

func TestRefusesToRunByHand(t *testing.T) {
	requireNode(t)
	for _, env := range [][]string{
		{},
		{cookieKey + "=wrong"},
		{cookieKey + "=" + cookieValue, "PLUGIN_PROTOCOL_VERSIONS=2,3"},
	} {
		cmd := exec.Command(wrapper())
		cmd.Env = append(os.Environ(), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("env %v: err %v, want exit status 1", env, err)
		}
		if stdout.Len() != 0 {
			t.Errorf("env %v: stdout %q, want nothing", env, stdout.String())
		}
		if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); stderr.Len() == 0 || lines > 0 {
			t.Errorf("env %v: stderr %q, want one line", env, stderr.String())
		}
	}
}

func TestExitsWhenParentDies(t *testing.T) {
	requireNode(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("helper printed %q", out)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	// The helper has exited; the plugin polls its parent every 250 ms. The
	// deadline is generous for a loaded 2-core CI machine.
	waitGone(t, pid, 10*time.Second)
}

// TestCopiedOutOfRepo copies the plugin's files to a directory outside the
// repository (node_modules linked, not copied) and runs it from there: a
// template that an author copies must carry everything it loads.
func TestCopiedOutOfRepo(t *testing.T) {
	requireNode(t)
	dst := t.TempDir()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, path), 0o755)
		}
		if strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, path), b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	modules, err := filepath.Abs("node_modules")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(modules, filepath.Join(dst, "node_modules")); err != nil {
		t.Fatal(err)
	}
	c, err := host.Start(context.Background(), host.Config{Path: filepath.Join(dst, "raftd-fsm-node-kv"), Logger: logger(), StartTimeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("start the copy: %v", err)
	}
	defer c.Close()
	res, err := c.Apply(context.Background(), fsm.Entry{Index: 1, Term: 1, Version: 2, Data: []byte(`{"op":"incr","key":"n","delta":5}`)})
	if err != nil || string(res) != `{"value":5}` {
		t.Fatalf("apply from the copy: %q, %v", res, err)
	}
	// The copy runs the same code as the original: the same build, until
	// one of its source files changes.
	fsmtest.CheckBuildFollowsSources(t, start(t), c, filepath.Join(dst, "lib", "kv.js"), "// a local change")
}

// ---- same behaviour as the Go kv -------------------------------------------

var keys = []string{"a", "b", "ab", "abc", "", "k1", "k2", "é", "\U0001F600", "\ue000", "\uffff", "n", "m", "x<y", "q\"\\"}

var values = []string{"", "1", "0", "-5", "42", "9007199254740991", "-0", "01", "x", "<&>", "line\nbreak\u0001\u001f", "é\U0001F600", "\u2028\u007f"}

// short quotes b for a failure message, cut to 200 bytes.
func short(b []byte) string {
	if len(b) > 200 {
		return fmt.Sprintf("%q... (%d bytes)", b[:200], len(b))
	}
	return fmt.Sprintf("%q", b)
}

func jstr(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// genCommand returns a random apply command, valid or not.
func genCommand(r *mrand.Rand) []byte {
	k, v, w := jstr(keys[r.IntN(len(keys))]), jstr(values[r.IntN(len(values))]), jstr(values[r.IntN(len(values))])
	deltas := []string{"1", "-1", "7", "0", "-0", "2.0", "1e1", "1.5", "\"1\"", "9007199254740991", "-9007199254740991", "1e400", "null",
		"1e-400", "-1e-400", "4.9e-324", "0.1e1", "9007199254740990.5", "1E2", "true"}
	d := deltas[r.IntN(len(deltas))]
	switch r.IntN(16) {
	case 0, 1, 2, 3:
		return []byte(`{"op":"put","key":` + k + `,"value":` + v + `}`)
	case 4:
		return []byte(`{"op":"delete","key":` + k + `}`)
	case 5:
		return []byte(`{"op":"cas","key":` + k + `,"old":null,"new":` + w + `}`)
	case 6:
		return []byte(`{"op":"cas","key":` + k + `,"old":` + v + `,"new":` + w + `}`)
	case 7, 8, 9:
		return []byte(`{"op":"incr","key":` + k + `,"delta":` + d + `}`)
	case 10:
		return []byte(`{ "value" : ` + v + ` , "op":"put", "key":` + k + `, "key":"dup"}`)
	case 11:
		return []byte(`{"op":"put","key":"s\ud800\udc00\udc00","value":"\ud83d\ude00\ud800"}`)
	case 12:
		if r.IntN(8) == 0 {
			// Go's encoding/json refuses nesting deeper than 10000.
			d := 9998 + r.IntN(4)
			return []byte(`{"op":"put","key":"deep","value":` + v + `,"x":` + strings.Repeat("[", d) + strings.Repeat("]", d) + `}`)
		}
		return []byte(`{"op":"put","key":` + k + `,"value":` + v + `,"x":{"y":[1,2,{"z":null}]}}`)
	default:
		bad := []string{``, `{`, `[]`, `null`, `"put"`, `{"op":1}`, `{"op":"nope"}`, `{"op":"get","key":"a"}`,
			`{"op":"put","key":1,"value":"v"}`, `{"op":"put","key":"k"}`, `{"op":"cas","key":"k","new":"v"}`,
			`{"op":"cas","key":"k","old":3,"new":"v"}`, `{"op":"cas","key":"k","old":"v"}`, "{\"op\":\"put\",\"key\":\"\xff\",\"value\":\"v\"}",
			`{"op":"put","key":"k","value":"v"} trailing`, `{"op":"put","key":"k","value":"v",}`, `{"OP":"put"}`,
			`{"op":"put","key":"k","value":"v","x":[1,{"y":[true,false,null]}]}`, `{"op":"x\"<\u0001"}`}
		return []byte(bad[r.IntN(len(bad))])
	}
}

func genQuery(r *mrand.Rand) []byte {
	k := jstr(keys[r.IntN(len(keys))])
	switch r.IntN(6) {
	case 0, 1:
		return []byte(`{"op":"get","key":` + k + `}`)
	case 2:
		return []byte(`{"op":"list"}`)
	case 3:
		p := []rune(keys[r.IntN(len(keys))])
		return []byte(`{"op":"list","prefix":` + jstr(string(p[:min(1, len(p))])) + `,"limit":` + strconv.Itoa(r.IntN(4)) + `}`)
	case 4:
		return []byte(`{"op":"list","prefix":` + k + `}`)
	default:
		bad := []string{`{"op":"list","limit":-1}`, `{"op":"list","limit":1.5}`, `{"op":"list","prefix":null}`, `x`, `{"op":"put"}`, `{"op":"get"}`,
			`{"op":"list","limit":-0}`, `{"op":"list","limit":2.0,"prefix":"k"}`, `{"op":"list","limit":1e-400}`, `{"op":"list","limit":"1"}`, `{"op":"get","key":"a","op":"list","limit":1}`}
		return []byte(bad[r.IntN(len(bad))])
	}
}

// genEntries returns n entries starting after index from: gaps in the
// indexes, version 1 (or 0) before activateAt and 2 from it on.
func genEntries(r *mrand.Rand, from uint64, n int, activateAt uint64) []fsm.Entry {
	es := make([]fsm.Entry, n)
	idx := from
	for i := range es {
		idx += 1 + uint64(r.IntN(3)/2)
		ver := uint32(1)
		if idx >= activateAt {
			ver = 2
		} else if r.IntN(2) == 0 {
			ver = 0
		}
		es[i] = fsm.Entry{Index: idx, Term: 1 + idx/500, Data: genCommand(r), Version: ver}
	}
	return es
}

func goSnapshot(t *testing.T, g *kv.FSM) (fsm.SnapshotHeader, []byte) {
	t.Helper()
	s, err := g.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	var buf bytes.Buffer
	if err := s.WriteTo(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	return s.Header(), buf.Bytes()
}

// goPlugin starts the Go kv plugin binary when $RAFTD_BIN (set by make
// test) holds it, else returns nil.
func goPlugin(t *testing.T) *host.Client {
	t.Helper()
	bin := os.Getenv("RAFTD_BIN")
	if bin == "" {
		return nil
	}
	path := filepath.Join(bin, "raftd-fsm-kv")
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	c, err := host.Start(context.Background(), host.Config{Path: path, Logger: logger()})
	if err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestSameAsGoKV feeds one seeded command stream to the Node plugin, to
// fsms/kv in process and, when $RAFTD_BIN has it, to the Go kv plugin
// binary, and requires identical results, queries, digests and snapshots.
func TestSameAsGoKV(t *testing.T) {
	node := start(t)
	ctx := context.Background()
	g := kv.New()
	gp := goPlugin(t)
	if gp == nil {
		t.Log("RAFTD_BIN/raftd-fsm-kv not found: comparing with fsms/kv in process only")
	}
	r := mrand.New(mrand.NewPCG(1, 2))
	var last uint64
	for round, n := range []int{1, 7, 300, 2000, 50, 1500} {
		es := genEntries(r, last, n, 1200)
		last = es[len(es)-1].Index
		got, err := node.ApplyBatch(ctx, es)
		if err != nil {
			t.Fatalf("round %d: node apply: %v", round, err)
		}
		want, err := g.ApplyBatch(ctx, es)
		if err != nil {
			t.Fatalf("round %d: go apply: %v", round, err)
		}
		for i := range es {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("entry %d (version %d) %s:\n node %s\n go   %s", es[i].Index, es[i].Version, short(es[i].Data), got[i], want[i])
			}
		}
		if gp != nil {
			viaPlugin, err := gp.ApplyBatch(ctx, es)
			if err != nil {
				t.Fatalf("round %d: go plugin apply: %v", round, err)
			}
			for i := range es {
				if !bytes.Equal(got[i], viaPlugin[i]) {
					t.Fatalf("entry %d %s:\n node      %s\n go plugin %s", es[i].Index, short(es[i].Data), got[i], viaPlugin[i])
				}
			}
			pidx, pd, err := gp.DigestAt(ctx)
			if err != nil {
				t.Fatal(err)
			}
			nidx, nd, err := node.DigestAt(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if pidx != nidx || !bytes.Equal(pd, nd) {
				t.Fatalf("after index %d: node digest %x at %d, go plugin %x at %d", last, nd, nidx, pd, pidx)
			}
		}
		for range 40 {
			q := genQuery(r)
			gq, err := node.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			wq, _ := g.Query(ctx, q)
			if !bytes.Equal(gq, wq) {
				t.Fatalf("query %s after index %d:\n node %s\n go   %s", q, last, gq, wq)
			}
		}
		idx, d, err := node.DigestAt(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wd, _ := g.Digest(ctx)
		if idx != last || !bytes.Equal(d, wd) {
			t.Fatalf("after index %d: node digest %x at %d, go %x", last, d, idx, wd)
		}
	}
	if g.Len() < 5 {
		t.Fatalf("the stream left only %d keys; the test is too weak", g.Len())
	}

	// Snapshot: same header and the same body bytes as the Go kv.
	var body bytes.Buffer
	h, err := snapshotTo(ctx, node, &body)
	if err != nil {
		t.Fatal(err)
	}
	wh, wbody := goSnapshot(t, g)
	if h != wh {
		t.Fatalf("snapshot header node %+v, go %+v", h, wh)
	}
	if !bytes.Equal(body.Bytes(), wbody) {
		t.Fatalf("snapshot bodies differ: node %d bytes, go %d bytes", body.Len(), len(wbody))
	}

	// Restore into a fresh plugin; it continues exactly like the Go kv.
	node2 := start(t)
	if err := node2.Restore(ctx, h, bytes.NewReader(body.Bytes())); err != nil {
		t.Fatal(err)
	}
	info, err := node2.Info(ctx)
	if err != nil || info.AppliedIndex != h.Index || info.AppliedTerm != h.Term {
		t.Fatalf("after restore Info = %+v, %v; want index %d term %d", info, err, h.Index, h.Term)
	}
	es := genEntries(r, last, 500, 0)
	got, err := node2.ApplyBatch(ctx, es)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := g.ApplyBatch(ctx, es)
	for i := range es {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("after restore, entry %d %s:\n node %s\n go   %s", es[i].Index, short(es[i].Data), got[i], want[i])
		}
	}
	d, _ := node2.Digest(ctx)
	wd, _ := g.Digest(ctx)
	if !bytes.Equal(d, wd) {
		t.Fatalf("after restore and apply: node digest %x, go %x", d, wd)
	}
}

func TestSnapshotLargeValues(t *testing.T) {
	// Records larger than a 1 MiB chunk span chunks both ways.
	node := start(t)
	ctx := context.Background()
	g := kv.New()
	big := strings.Repeat("v", 1<<20+100)
	var es []fsm.Entry
	for i := range 3 {
		es = append(es, fsm.Entry{Index: uint64(i + 1), Term: 1, Version: 1,
			Data: []byte(fmt.Sprintf(`{"op":"put","key":"big%d","value":"%s%d"}`, i, big, i))})
	}
	if _, err := node.ApplyBatch(ctx, es); err != nil {
		t.Fatal(err)
	}
	if _, err := g.ApplyBatch(ctx, es); err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	h, err := snapshotTo(ctx, node, &body)
	if err != nil {
		t.Fatal(err)
	}
	_, wbody := goSnapshot(t, g)
	if !bytes.Equal(body.Bytes(), wbody) {
		t.Fatalf("snapshot bodies differ: node %d bytes, go %d bytes", body.Len(), len(wbody))
	}
	node2 := start(t)
	if err := node2.Restore(ctx, h, bytes.NewReader(body.Bytes())); err != nil {
		t.Fatal(err)
	}
	d, _ := node2.Digest(ctx)
	wd, _ := g.Digest(ctx)
	if !bytes.Equal(d, wd) {
		t.Fatalf("digest after restore: node %x, go %x", d, wd)
	}
}

func TestRestoreRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	node := start(t)
	rec := func(s string) []byte {
		return append([]byte{0, 0, 0, byte(len(s))}, s...)
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name   string
		format string
		body   []byte
		code   codes.Code
	}{
		{"unknown format", "raftd.queue.v1", nil, codes.InvalidArgument},
		{"truncated", "raftd.kv.v1", cat(rec("a"), rec("1"), []byte{0, 0}), codes.DataLoss},
		{"missing value", "raftd.kv.v1", cat(rec("a"), rec("1"), rec("b")), codes.DataLoss},
		{"keys out of order", "raftd.kv.v1", cat(rec("b"), rec("1"), rec("a"), rec("1")), codes.DataLoss},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := node.Restore(ctx, fsm.SnapshotHeader{Index: 5, Term: 1, Format: tc.format}, bytes.NewReader(tc.body))
			if status.Code(errors.Unwrap(err)) != tc.code && status.Code(err) != tc.code {
				t.Fatalf("restore: %v, want code %v", err, tc.code)
			}
			// The previous (empty) state is kept.
			if info, err := node.Info(ctx); err != nil || info.AppliedIndex != 0 {
				t.Fatalf("after failed restore Info = %+v, %v", info, err)
			}
		})
	}
	// An empty body is a valid empty state.
	if err := node.Restore(ctx, fsm.SnapshotHeader{Index: 5, Term: 2, Version: 2, Format: "raftd.kv.v1"}, bytes.NewReader(nil)); err != nil {
		t.Fatalf("restore of an empty body: %v", err)
	}
	if info, err := node.Info(ctx); err != nil || info.AppliedIndex != 5 || info.AppliedTerm != 2 {
		t.Fatalf("after empty restore Info = %+v, %v; want index 5 term 2", info, err)
	}
}

func TestApplyRejectsHostBugs(t *testing.T) {
	ctx := context.Background()
	put := []byte(`{"op":"put","key":"a","value":"1"}`)
	for _, tc := range []struct {
		name string
		es   []fsm.Entry
	}{
		{"index not increasing", []fsm.Entry{{Index: 5, Term: 1, Data: put}, {Index: 5, Term: 1, Data: put}}},
		{"version 3", []fsm.Entry{{Index: 1, Term: 1, Data: put, Version: 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := start(t)
			_, err := node.ApplyBatch(ctx, tc.es)
			if !errors.Is(err, host.ErrBroken) || !strings.Contains(err.Error(), "FailedPrecondition") {
				t.Fatalf("apply: %v, want a broken plugin with FailedPrecondition", err)
			}
		})
	}
}

// ---- benchmark --------------------------------------------------------------

// BenchmarkNodeKVApply measures committed 128-byte kv puts delivered
// through plugin/host to the Node plugin (entries/s), 4096 entries per
// Apply call (the host cuts ~1 MiB requests, 8 in flight).
func BenchmarkNodeKVApply(b *testing.B) {
	benchApply(b, wrapper(), true)
}

// BenchmarkGoKVPluginApply is the same through the Go kv plugin binary
// ($RAFTD_BIN/raftd-fsm-kv, built by make build), for comparison.
func BenchmarkGoKVPluginApply(b *testing.B) {
	bin := os.Getenv("RAFTD_BIN")
	if bin == "" {
		b.Skip("RAFTD_BIN not set (make bench sets it)")
	}
	benchApply(b, filepath.Join(bin, "raftd-fsm-kv"), false)
}

func benchApply(b *testing.B, path string, isNode bool) {
	var c *host.Client
	if isNode {
		c = start(b)
	} else {
		var err error
		c, err = host.Start(context.Background(), host.Config{Path: path, Logger: logger()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
	}
	ctx := context.Background()
	const batch = 4096
	es := make([]fsm.Entry, batch)
	prefix := `{"op":"put","key":"key-`
	idx := uint64(0)
	fill := func() {
		for i := range es {
			idx++
			k := fmt.Sprintf("%012d", idx%1000003*7919%1000003)
			cmd := prefix + k + `","value":"`
			cmd += strings.Repeat("v", 128-len(cmd)-2) + `"}`
			es[i] = fsm.Entry{Index: idx, Term: 1, Version: 1, Data: []byte(cmd)}
		}
	}
	fill()
	if len(es[0].Data) != 128 {
		b.Fatalf("command is %d bytes, want 128", len(es[0].Data))
	}
	b.SetBytes(128)
	cpu0 := procCPU(c.PID())
	b.ResetTimer()
	done := 0
	for done < b.N {
		n := min(batch, b.N-done)
		b.StopTimer()
		fill()
		b.StartTimer()
		if _, err := c.ApplyBatch(ctx, es[:n]); err != nil {
			b.Fatal(err)
		}
		done += n
	}
	b.ReportMetric(float64(done)/b.Elapsed().Seconds(), "entries/s")
	if cpu0 >= 0 {
		// CPU time is less sensitive than wall time to a busy machine.
		b.ReportMetric(float64((procCPU(c.PID())-cpu0).Microseconds())/float64(done), "plugin-cpu-µs/entry")
	}
}

// procCPU returns the user+system CPU time pid has used, or -1.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	// Fields after the command: state is f[0]; utime and stime are fields
	// 14 and 15 of /proc/PID/stat, i.e. f[11] and f[12].
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}

var _ io.Reader = (*bytes.Reader)(nil)

// vmHWM returns the peak resident set size of pid in bytes (0 if unknown).
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkNodeKVSnapshotRestore fills the Node plugin with
// $NODEKV_BENCH_STATE_MB MiB (default 64) of 1 KiB values, then streams a
// snapshot out and restores it into a second process. It reports MB/s of
// both and the plugins' peak RSS.
func BenchmarkNodeKVSnapshotRestore(b *testing.B) {
	stateMB := 64
	if s := os.Getenv("NODEKV_BENCH_STATE_MB"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("NODEKV_BENCH_STATE_MB=%q", s)
		}
		stateMB = v
	}
	ctx := context.Background()
	// Digest of a large state can outlast the default 10 s call deadline
	// on a busy machine.
	cfg := host.Config{CallTimeout: 10 * time.Minute}
	src := startWith(b, cfg)
	val := strings.Repeat("v", 1000)
	n := stateMB << 10 // 1 KiB per pair (key + value + framing)
	idx := uint64(0)
	for done := 0; done < n; {
		es := make([]fsm.Entry, 0, 4096)
		for ; done < n && len(es) < cap(es); done++ {
			idx++
			es = append(es, fsm.Entry{Index: idx, Term: 1, Version: 1,
				Data: []byte(fmt.Sprintf(`{"op":"put","key":"key-%012d","value":"%s"}`, idx, val))})
		}
		if _, err := src.ApplyBatch(ctx, es); err != nil {
			b.Fatal(err)
		}
	}
	f, err := os.CreateTemp(b.TempDir(), "snap")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ResetTimer()
	for range b.N {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		h, err := snapshotTo(ctx, src, f)
		if err != nil {
			b.Fatal(err)
		}
		size, _ := f.Seek(0, io.SeekCurrent)
		snapDur := time.Since(t0)
		dst := startWith(b, cfg)
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := dst.Restore(ctx, h, io.LimitReader(f, size)); err != nil {
			b.Fatal(err)
		}
		restDur := time.Since(t1)
		b.ReportMetric(float64(size)/1e6/snapDur.Seconds(), "snapshot-MB/s")
		b.ReportMetric(float64(size)/1e6/restDur.Seconds(), "restore-MB/s")
		b.ReportMetric(float64(size)/(1<<20), "state-MiB")
		b.ReportMetric(float64(vmHWM(src.PID()))/(1<<20), "src-peak-RSS-MiB")
		b.ReportMetric(float64(vmHWM(dst.PID()))/(1<<20), "dst-peak-RSS-MiB")
		t2 := time.Now()
		sd, err := src.Digest(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(size)/1e6/time.Since(t2).Seconds(), "digest-MB/s")
		dd, err := dst.Digest(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(sd, dd) {
			b.Fatalf("digest after restore %x, want %x", dd, sd)
		}
		if err := dst.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNodeKVQuery measures the round trip of one small Query through
// plugin/host (latency-bound: one call at a time).
func BenchmarkNodeKVQuery(b *testing.B) {
	benchQuery(b, start(b))
}

// BenchmarkGoKVPluginQuery is the same through the Go kv plugin binary.
func BenchmarkGoKVPluginQuery(b *testing.B) {
	bin := os.Getenv("RAFTD_BIN")
	if bin == "" {
		b.Skip("RAFTD_BIN not set (make bench sets it)")
	}
	c, err := host.Start(context.Background(), host.Config{Path: filepath.Join(bin, "raftd-fsm-kv"), Logger: logger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	benchQuery(b, c)
}

func benchQuery(b *testing.B, c *host.Client) {
	ctx := context.Background()
	if _, err := c.ApplyBatch(ctx, []fsm.Entry{{Index: 1, Term: 1, Data: []byte(`{"op":"put","key":"a","value":"1"}`)}}); err != nil {
		b.Fatal(err)
	}
	q := []byte(`{"op":"get","key":"a"}`)
	cpu0 := procCPU(c.PID())
	b.ResetTimer()
	for range b.N {
		if _, err := c.Query(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	if cpu0 >= 0 {
		b.ReportMetric(float64((procCPU(c.PID())-cpu0).Microseconds())/float64(b.N), "plugin-cpu-µs/op")
	}
}
