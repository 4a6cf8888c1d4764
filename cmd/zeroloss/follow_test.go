package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// followChildEnv, set in the environment of the re-executed test binary,
// makes it run the command line it was given instead of the tests.
const followChildEnv = "ZEROLOSS_FOLLOW_CHILD"

func init() {
	if os.Getenv(followChildEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
}

func TestFollowUsageErrors(t *testing.T) {
	dir := t.TempDir()
	sock := "unix:" + filepath.Join(dir, "s")
	pemFile := filepath.Join(dir, "x.pem")
	require.NoError(t, os.WriteFile(pemFile, []byte("not a certificate"), 0o600))
	shortKey := filepath.Join(dir, "short.key")
	require.NoError(t, os.WriteFile(shortKey, []byte("0123456789"), 0o600))
	openKey := filepath.Join(dir, "open.key")
	require.NoError(t, os.WriteFile(openKey, bytes.Repeat([]byte{'k'}, 32), 0o600))
	require.NoError(t, os.Chmod(openKey, 0o644)) // whatever the umask
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no dir", []string{"follow", "--listen", sock}, exitUsage, "--dir is required"},
		{"no listen", []string{"follow", "--dir", dir}, exitUsage, "--listen is required"},
		{"positional", []string{"follow", "--dir", dir, "--listen", sock, "extra"}, exitUsage, `unexpected arguments ["extra"]`},
		{"bad flush", []string{"follow", "--dir", dir, "--listen", sock, "--flush", "never"}, exitUsage, `--flush is "never", want sync or async`},
		{"bad interval", []string{"follow", "--dir", dir, "--listen", sock, "--interval", "0s"}, exitUsage, "--interval is 0s"},
		{"half of TLS", []string{"follow", "--dir", dir, "--listen", "tcp:127.0.0.1:0", "--tls-cert", pemFile, "--tls-key", pemFile}, exitUsage, "go together"},
		{"unreadable TLS", []string{"follow", "--dir", dir, "--listen", "tcp:127.0.0.1:0", "--tls-cert", pemFile, "--tls-key", pemFile, "--tls-ca", pemFile}, exitFailure, "--tls-cert " + pemFile},
		{"plain TCP off loopback", []string{"follow", "--dir", dir, "--listen", "tcp:0.0.0.0:7000"}, exitUsage, `"tcp:0.0.0.0:7000"`},
		{"bad address", []string{"follow", "--dir", dir, "--listen", "udp:127.0.0.1:7000"}, exitUsage, `network "udp"`},
		{"plain TCP without a secret", []string{"follow", "--dir", dir, "--listen", "tcp:127.0.0.1:0"}, exitUsage, "--secret-file"},
		{"short secret", []string{"follow", "--dir", dir, "--listen", "tcp:127.0.0.1:0", "--secret-file", shortKey}, exitFailure, "10 bytes, want at least 32"},
		{"missing secret file", []string{"follow", "--dir", dir, "--listen", "tcp:127.0.0.1:0", "--secret-file", filepath.Join(dir, "none")}, exitFailure, "--secret-file"},
	}
	if runtime.GOOS != "windows" {
		// Checked on readSecretFile itself: were the check gone, follow
		// would start serving and the run would not end.
		_, err := readSecretFile(openKey)
		require.Error(t, err, "a secret readable by others")
		assert.Contains(t, err.Error(), "chmod 600")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runTool(tt.args...)
			assert.Equal(t, tt.code, r.code, "stderr: %s", r.stderr)
			assert.Contains(t, r.stderr, tt.stderr)
			assert.Empty(t, r.stdout)
		})
	}
	r := runTool("help", "follow")
	assert.Equal(t, exitOK, r.code)
	assert.Contains(t, r.stdout, "usage: zeroloss follow --dir DIR --listen unix:PATH|tcp:HOST:PORT")
	assert.Contains(t, r.stdout, "-tls-ca")
}

// bodyFor derives a message body from its ID, so the promoted follower's
// copy can be checked.
func bodyFor(id string) []byte {
	sum := sha256.Sum256([]byte(id))
	return bytes.Repeat(sum[:], 1+len(id)%7)
}

// sendSync sends n messages from 8 goroutines and returns the ID of each
// SendOK by seq; every status must be SendOK.
func sendSync(t *testing.T, q *zeroloss.Queue, prefix string, n int) map[uint64]string {
	t.Helper()
	ok := map[uint64]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += 8 {
				id := fmt.Sprintf("%s-%d", prefix, i)
				res, err := q.Send(context.Background(), &zeroloss.Message{ID: id, Body: bodyFor(id)})
				if assert.NoError(t, err) && assert.Equal(t, zeroloss.SendOK, res.Status, id) {
					mu.Lock()
					ok[res.Seq] = id
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	require.Len(t, ok, n)
	return ok
}

// checkPromoted opens dir as a queue and checks that it holds each message
// of want, once, with its body.
func checkPromoted(t *testing.T, dir string, want map[uint64]string) {
	t.Helper()
	q, err := zeroloss.Open(dir, nil)
	require.NoError(t, err, "the follower's directory opens as a queue")
	defer q.Close()
	c, err := q.Consumer("check", nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := map[uint64]bool{}
	for len(seen) < len(want) {
		d, err := c.Receive(ctx)
		require.NoError(t, err, "%d of %d messages read", len(seen), len(want))
		id, wanted := want[d.Seq]
		if !wanted {
			continue
		}
		require.False(t, seen[d.Seq], "seq %d delivered twice", d.Seq)
		seen[d.Seq] = true
		assert.Equal(t, id, d.Message.ID, "seq %d", d.Seq)
		assert.Equal(t, bodyFor(id), d.Message.Body, "body of %s", id)
		require.NoError(t, d.Ack())
	}
}

var (
	startLine = regexp.MustCompile(`^following in .* from seq (\d+), listening on (\S+) \(`)
	atLine    = regexp.MustCompile(`^at seq (\d+)$`)
	stopLine  = regexp.MustCompile(`^stopped at seq (\d+)$`)
)

// `zeroloss follow` as its own process, with the leader in this one over a
// Unix socket: every ReplicateSync Send is SendOK, the follower reports its
// position, stops cleanly on SIGTERM, and its directory opens as a queue
// holding every SendOK message.
func TestFollowCommandInItsOwnProcess(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("SIGTERM cannot be sent to a process on Windows")
	}
	sockDir, err := os.MkdirTemp("", "zlf")
	require.NoError(t, err)
	defer os.RemoveAll(sockDir)
	sock := "unix:" + filepath.Join(sockDir, "f.sock")
	fdir := t.TempDir()
	cmd := exec.Command(os.Args[0], "follow", "--dir", fdir, "--listen", sock, "--interval", "20ms")
	cmd.Env = append(os.Environ(), followChildEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr syncWriter
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			require.True(t, ok, "follow exited early; stderr:\n%s", stderr.String())
			return l
		case <-time.After(20 * time.Second):
			t.Fatalf("no output from follow within 20s; stderr:\n%s", stderr.String())
			return ""
		}
	}
	m := startLine.FindStringSubmatch(next())
	require.NotNil(t, m)
	assert.Equal(t, "0", m[1])
	assert.Equal(t, sock, m[2])

	q, err := zeroloss.Open(t.TempDir(), &zeroloss.Options{Replication: zeroloss.ReplicateSync})
	require.NoError(t, err)
	defer q.Close()
	r, err := q.ReplicateTo(sock, nil)
	require.NoError(t, err)
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, r.WaitAttached(ctx))
	ok := sendSync(t, q, "m", 300)
	last := q.Stats().LastSeq

	// The position line catches up with the last SendOK.
	for {
		m := atLine.FindStringSubmatch(next())
		require.NotNil(t, m, "only position lines while it runs")
		if seq, _ := strconv.ParseUint(m[1], 10, 64); seq >= last {
			break
		}
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	var stopped string
	for l := range lines {
		stopped = l
	}
	require.NoError(t, cmd.Wait(), "exit status 0 after SIGTERM; stderr:\n%s", stderr.String())
	m = stopLine.FindStringSubmatch(stopped)
	require.NotNil(t, m, "last line %q", stopped)
	seq, _ := strconv.ParseUint(m[1], 10, 64)
	assert.GreaterOrEqual(t, seq, last)
	assert.Contains(t, stderr.String(), "leader connected")

	require.NoError(t, r.Close())
	require.NoError(t, q.Close())
	checkPromoted(t, fdir, ok)
}

// follow with mutual TLS from certificate files: a leader with a
// certificate from --tls-ca is served, one without is refused.
func TestFollowCommandMutualTLS(t *testing.T) {
	files := writeTestPKI(t)
	fdir := t.TempDir()
	var stderr syncWriter
	cfg, status, ok := parseFollow([]string{"--dir", fdir, "--listen", "tcp:127.0.0.1:0",
		"--tls-cert", files.serverCert, "--tls-key", files.serverKey, "--tls-ca", files.ca, "--interval", "10ms"}, &stderr)
	require.True(t, ok, "status %d: %s", status, stderr.String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, stdout, done := startFollow(t, ctx, cfg, &stderr)
	assert.Contains(t, stdout.String(), "(mutual TLS, flush=sync)")

	q, err := zeroloss.Open(t.TempDir(), &zeroloss.Options{Replication: zeroloss.ReplicateSync})
	require.NoError(t, err)
	defer q.Close()

	// Without a client certificate: refused.
	r, err := q.ReplicateTo(addr, &tls.Config{RootCAs: files.pool, MinVersion: tls.VersionTLS13})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return r.Stats().Dials >= 2 }, 10*time.Second, time.Millisecond)
	require.NoError(t, r.Close())
	assert.False(t, r.Stats().Attached)
	assert.Contains(t, stderr.String(), "refused a leader connection")

	// With one.
	r, err = q.ReplicateTo(addr, &tls.Config{RootCAs: files.pool, Certificates: []tls.Certificate{files.client}, MinVersion: tls.VersionTLS13})
	require.NoError(t, err)
	defer r.Close()
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	require.NoError(t, r.WaitAttached(wctx))
	sent := sendSync(t, q, "tls", 50)
	require.NoError(t, r.Close())
	require.NoError(t, q.Close())

	cancel()
	select {
	case code := <-done:
		assert.Equal(t, exitOK, code, "stderr: %s", stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not return after its context ended")
	}
	assert.Regexp(t, `(?m)^stopped at seq \d+$`, stdout.String())
	checkPromoted(t, fdir, sent)
}

// follow on loopback TCP with --secret-file: a leader holding the same
// key is served, one with another key is refused.
func TestFollowCommandSecret(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 32)
	keyFile := filepath.Join(t.TempDir(), "replica.key")
	require.NoError(t, os.WriteFile(keyFile, key, 0o600))
	fdir := t.TempDir()
	var stderr syncWriter
	cfg, status, ok := parseFollow([]string{"--dir", fdir, "--listen", "tcp:127.0.0.1:0", "--secret-file", keyFile, "--interval", "10ms"}, &stderr)
	require.True(t, ok, "status %d: %s", status, stderr.String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, stdout, done := startFollow(t, ctx, cfg, &stderr)
	assert.Contains(t, stdout.String(), "(plain TCP on loopback + shared secret, flush=sync)")

	// Another key: refused.
	wrong, err := zeroloss.Open(t.TempDir(), &zeroloss.Options{Replication: zeroloss.ReplicateSync, ReplicaSecret: bytes.Repeat([]byte{1}, 32)})
	require.NoError(t, err)
	defer wrong.Close()
	r, err := wrong.ReplicateTo(addr, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return r.Stats().Dials >= 2 }, 10*time.Second, time.Millisecond)
	require.NoError(t, r.Close())
	assert.False(t, r.Stats().Attached)
	assert.Contains(t, stderr.String(), "did not prove it holds")

	// The same key.
	q, err := zeroloss.Open(t.TempDir(), &zeroloss.Options{Replication: zeroloss.ReplicateSync, ReplicaSecret: key})
	require.NoError(t, err)
	defer q.Close()
	r, err = q.ReplicateTo(addr, nil)
	require.NoError(t, err)
	defer r.Close()
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	require.NoError(t, r.WaitAttached(wctx))
	sent := sendSync(t, q, "secret", 50)
	require.NoError(t, r.Close())
	require.NoError(t, q.Close())

	cancel()
	select {
	case code := <-done:
		assert.Equal(t, exitOK, code, "stderr: %s", stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not return after its context ended")
	}
	checkPromoted(t, fdir, sent)
}

// syncWriter is a bytes.Buffer written from several goroutines.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// testPKIFiles is a throwaway authority and certificates in PEM files.
type testPKIFiles struct {
	ca, serverCert, serverKey string
	pool                      *x509.CertPool
	client                    tls.Certificate
}

func writeTestPKI(t *testing.T) testPKIFiles {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	issue := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "peer"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		return der, key
	}
	write := func(name, kind string, der []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600))
		return path
	}
	f := testPKIFiles{pool: x509.NewCertPool()}
	f.pool.AddCert(ca)
	f.ca = write("ca.pem", "CERTIFICATE", caDER)
	serverDER, serverKey := issue(2, x509.ExtKeyUsageServerAuth)
	f.serverCert = write("server.pem", "CERTIFICATE", serverDER)
	keyDER, err := x509.MarshalECPrivateKey(serverKey)
	require.NoError(t, err)
	f.serverKey = write("server.key", "EC PRIVATE KEY", keyDER)
	clientDER, clientKey := issue(3, x509.ExtKeyUsageClientAuth)
	f.client = tls.Certificate{Certificate: [][]byte{clientDER}, PrivateKey: clientKey}
	return f
}

// startFollow runs the follow command with cfg until ctx ends and waits for
// the line saying where it listens. It returns that address, the command's
// output, and a channel that receives its exit status.
func startFollow(t *testing.T, ctx context.Context, cfg followConfig, stderr *syncWriter) (string, *syncWriter, chan int) {
	t.Helper()
	stdout := &syncWriter{}
	done := make(chan int, 1)
	go func() { done <- follow(ctx, cfg, stdout, stderr) }()
	var addr string
	require.Eventually(t, func() bool {
		m := startLine.FindStringSubmatch(stdout.String())
		if m != nil {
			addr = m[2]
		}
		return m != nil
	}, 10*time.Second, time.Millisecond)
	return addr, stdout, done
}
