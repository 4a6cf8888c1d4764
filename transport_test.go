package zeroloss

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
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// testPKI is a throwaway certificate authority with a follower (server)
// and a leader (client) certificate, and a second, untrusted authority with
// certificates of its own.
type testPKI struct {
	pool           *x509.CertPool // trusts ca only
	roguePool      *x509.CertPool // trusts the rogue authority only
	server, client tls.Certificate
	rogueServer    tls.Certificate
	rogueClient    tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, caKey := newTestCA(t, "zeroloss test CA")
	rogue, rogueKey := newTestCA(t, "rogue CA")
	p := &testPKI{pool: x509.NewCertPool(), roguePool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.roguePool.AddCert(rogue)
	p.server = issueTestCert(t, ca, caKey, "follower", true)
	p.client = issueTestCert(t, ca, caKey, "leader", false)
	p.rogueServer = issueTestCert(t, rogue, rogueKey, "follower", true)
	p.rogueClient = issueTestCert(t, rogue, rogueKey, "leader", false)
	return p
}

// serverTLS is the follower's side of mutual TLS.
func (p *testPKI) serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: p.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
}

// clientTLS is the leader's side: its certificate (none if nil) and the
// authorities it trusts.
func clientTLS(cert *tls.Certificate, roots *x509.CertPool) *tls.Config {
	c := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

func newTestCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert, key
}

func issueTestCert(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// shortTempDir is a temporary directory with a short path: socket paths are
// limited to about 104 bytes.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "zlt")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// syncBuffer is a bytes.Buffer for a logger written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newCapturingLogger() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

// servedFollower is ServeFollower running in the background.
type servedFollower struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

func serveFollower(t *testing.T, dir string, ln net.Listener, opts *ServeOptions) *servedFollower {
	t.Helper()
	var o ServeOptions
	if opts != nil {
		o = *opts
	}
	logger, logs := newCapturingLogger()
	if o.Follow.Logger == nil {
		o.Follow.Logger = logger
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &servedFollower{addr: ln.Addr().Network() + ":" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { f.done <- ServeFollower(ctx, dir, ln, &o) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-f.done:
		case <-time.After(10 * time.Second):
			t.Error("ServeFollower did not return within 10s of its context ending")
		}
		if t.Failed() {
			t.Logf("the follower's log:\n%s", logs)
		}
	})
	return f
}

// stop ends ServeFollower and returns its error.
func (f *servedFollower) stop(t *testing.T) error {
	t.Helper()
	f.cancel()
	select {
	case err := <-f.done:
		f.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("ServeFollower did not return within 10s of its context ending")
		return nil
	}
}

func waitReplicatorAttached(t *testing.T, r *Replicator) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	require.NoError(t, r.WaitAttached(ctx), "replicator stats: %+v", r.Stats())
}

// checkFollowerHolds opens the stopped follower's directory as a Queue and
// checks that it holds every message of want (seq -> ID), with its body.
func checkFollowerHolds(t *testing.T, dir string, want map[uint64]string) {
	t.Helper()
	promoted, err := Open(dir, nil)
	require.NoError(t, err, "a stopped follower's directory opens as a Queue")
	defer promoted.Close()
	got := map[uint64]stored{}
	for _, s := range readBack(t, promoted) {
		got[s.Seq] = s
	}
	for seq, id := range want {
		s, ok := got[seq]
		require.True(t, ok, "SendOK message %s at seq %d is missing on the follower", id, seq)
		require.Equal(t, id, s.Msg.ID, "seq %d", seq)
		require.Equal(t, bodyFor(id), s.Msg.Body, "body of %s", id)
	}
}

// sendConcurrently sends n messages from producers goroutines, each body derived
// from its ID, and returns the seq -> ID of each SendOK and the count of
// each status.
func sendConcurrently(t *testing.T, q *Queue, prefix string, producers, n int) (ok map[uint64]string, statuses map[SendStatus]int) {
	t.Helper()
	ok, statuses = map[uint64]string{}, map[SendStatus]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += producers {
				id := fmt.Sprintf("%s-%d", prefix, i)
				res, err := q.Send(context.Background(), &Message{ID: id, Body: bodyFor(id)})
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				statuses[res.Status]++
				if res.Status == SendOK {
					ok[res.Seq] = id
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ok, statuses
}

// leaderMessageIDs returns the IDs of every synced message in q's log,
// acknowledged by a follower or not.
func leaderMessageIDs(t *testing.T, q *Queue) []string {
	t.Helper()
	var ids []string
	for _, s := range readBackUncapped(t, q) {
		ids = append(ids, s.Msg.ID)
	}
	return ids
}

// Under ReplicateSync, over each transport, every Send returns SendOK and
// the stopped follower's directory opens as a Queue holding every one of
// them, bodies intact.
func TestTransportEverySendOKIsOnTheFollower(t *testing.T) {
	pki := newTestPKI(t)
	// connect links q to a follower in dir and returns what stops it.
	type connect func(t *testing.T, q *Queue, dir string) (stop func() error)
	direct := func(pair func(*testing.T) (io.ReadWriteCloser, io.ReadWriteCloser)) connect {
		return func(t *testing.T, q *Queue, dir string) func() error {
			la, lb := pair(t)
			f := startFollower(t, dir, lb, nil)
			require.NoError(t, q.AttachReplica(la))
			return f.stop
		}
	}
	listening := func(addr func(t *testing.T) string, serverTLS, leaderTLS *tls.Config) connect {
		return func(t *testing.T, q *Queue, dir string) func() error {
			ln, err := ListenFollower(addr(t), serverTLS)
			require.NoError(t, err)
			f := serveFollower(t, dir, ln, nil)
			r, err := q.ReplicateTo(f.addr, leaderTLS)
			require.NoError(t, err)
			t.Cleanup(func() { r.Close() })
			waitReplicatorAttached(t, r)
			return func() error { return f.stop(t) }
		}
	}
	unixAddr := func(t *testing.T) string { return "unix:" + filepath.Join(shortTempDir(t), "follower.sock") }
	loopback := func(*testing.T) string { return "tcp:127.0.0.1:0" }
	kinds := []struct {
		name    string
		connect connect
	}{
		{"net.Pipe", direct(func(*testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) { a, b := net.Pipe(); return a, b })},
		{"os.Pipe pair", direct(osPipePair)},
		{"unix socket", listening(unixAddr, nil, nil)},
		{"tcp loopback mutual TLS", listening(loopback, pki.serverTLS(pki.server), clientTLS(&pki.client, pki.pool))},
	}
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			q := openLeader(t, Options{Replication: ReplicateSync})
			fdir := t.TempDir()
			stop := kind.connect(t, q, fdir)
			ok, statuses := sendConcurrently(t, q, "m", 8, 400)
			require.Equal(t, map[SendStatus]int{SendOK: 400}, statuses)
			require.ErrorIs(t, stop(), context.Canceled)
			checkFollowerHolds(t, fdir, ok)
		})
	}
}

func TestListenFollowerUnixSocket(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "f.sock")
	ln, err := ListenFollower("unix:"+path, nil)
	require.NoError(t, err)
	assert.Equal(t, path, ln.Addr().String())
	info, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSocket, info.Mode().Type())
	if runtime.GOOS != "windows" {
		assert.Equal(t, fs.FileMode(0o600), info.Mode().Perm(), "only the owner may connect")
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "the private directory it was bound in is gone")

	// It accepts.
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	c.Close()
	require.NoError(t, <-accepted)

	// A second listener on a live socket is refused; the socket stays.
	_, err = ListenFollower("unix:"+path, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "another process is listening")
	assert.Contains(t, err.Error(), path)
	_, err = os.Lstat(path)
	require.NoError(t, err)

	// Close removes the socket file.
	require.NoError(t, ln.Close())
	_, err = os.Lstat(path)
	require.ErrorIs(t, err, fs.ErrNotExist)

	// A stale socket (its listener died without removing it) is replaced,
	// and the new one is 0600 again.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	stale.SetUnlinkOnClose(false)
	require.NoError(t, os.Chmod(path, 0o666))
	require.NoError(t, stale.Close())
	_, err = os.Lstat(path)
	require.NoError(t, err, "the stale socket file is there")
	ln, err = ListenFollower("unix:"+path, nil)
	require.NoError(t, err, "a stale socket is replaced")
	info, err = os.Lstat(path)
	require.NoError(t, err)
	if runtime.GOOS != "windows" {
		assert.Equal(t, fs.FileMode(0o600), info.Mode().Perm())
	}
	c, err = net.Dial("unix", path)
	require.NoError(t, err, "the new socket listens")
	c.Close()
	require.NoError(t, ln.Close())

	// A file that is not a socket is left alone.
	regular := filepath.Join(dir, "data")
	require.NoError(t, os.WriteFile(regular, []byte("keep me"), 0o644))
	_, err = ListenFollower("unix:"+regular, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is not a socket")
	b, err := os.ReadFile(regular)
	require.NoError(t, err)
	assert.Equal(t, "keep me", string(b))
}

// Plain TCP is refused off loopback, on both sides, with an error naming the
// address; malformed addresses are refused too.
func TestTransportAddressChecks(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync})
	refused := []struct {
		addr string
		want string
	}{
		{"tcp:0.0.0.0:9000", "0.0.0.0 is not one"},
		{"tcp::9000", "every interface"},
		{"tcp:192.0.2.7:9000", "192.0.2.7 is not one"},
		{"tcp:[2001:db8::1]:9000", "2001:db8::1 is not one"},
		{"tcp:127.0.0.1", "want tcp:HOST:PORT"},
		{"tcp:127.0.0.1:", "port is empty"},
		{"udp:127.0.0.1:9000", `network "udp"`},
		{"127.0.0.1:9000", `network "127.0.0.1"`},
		{"/tmp/sock", `want "unix:PATH" or "tcp:HOST:PORT"`},
		{"unix:", "socket path is empty"},
	}
	for _, c := range refused {
		t.Run(c.addr, func(t *testing.T) {
			ln, err := ListenFollower(c.addr, nil)
			if err == nil {
				ln.Close()
			}
			require.ErrorIs(t, err, ErrInvalidOptions)
			assert.Contains(t, err.Error(), fmt.Sprintf("%q", c.addr))
			assert.Contains(t, err.Error(), c.want)
			_, err = q.ReplicateTo(c.addr, nil)
			require.ErrorIs(t, err, ErrInvalidOptions)
			assert.Contains(t, err.Error(), fmt.Sprintf("%q", c.addr))
			assert.Contains(t, err.Error(), c.want)
		})
	}
	_, err := ListenFollower("tcp:0.0.0.0:0", nil)
	assert.Contains(t, err.Error(), "pass a *tls.Config", "the error says what to do")

	// Loopback without TLS is allowed, and with TLS anything is.
	ln, err := ListenFollower("tcp:127.0.0.1:0", nil)
	require.NoError(t, err)
	ln.Close()
	ln, err = ListenFollower("tcp:localhost:0", nil)
	require.NoError(t, err, "localhost resolves to loopback addresses only")
	assert.True(t, ln.Addr().(*net.TCPAddr).IP.IsLoopback())
	ln.Close()
	pki := newTestPKI(t)
	ln, err = ListenFollower("tcp:0.0.0.0:0", pki.serverTLS(pki.server))
	require.NoError(t, err)
	ln.Close()
	r, err := q.ReplicateTo("tcp:192.0.2.7:9000", clientTLS(&pki.client, pki.pool))
	require.NoError(t, err)
	require.NoError(t, r.Close())

	// A TLS config that cannot serve, and a queue that does not replicate.
	_, err = ListenFollower("tcp:127.0.0.1:0", &tls.Config{})
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Contains(t, err.Error(), "no certificate")
	none := openLeader(t, Options{})
	_, err = none.ReplicateTo("tcp:127.0.0.1:9000", nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Contains(t, err.Error(), "ReplicateNone")
}

// Mutual TLS: a leader without a certificate, with one the follower does
// not trust, or that does not trust the follower's, never attaches; its
// ReplicateSync Sends get ReplicaNotAvailable and the follower keeps
// serving, then takes a leader with the right certificate.
func TestMutualTLSRefusesUnauthenticatedPeers(t *testing.T) {
	pki := newTestPKI(t)
	cases := []struct {
		name       string
		serverCert tls.Certificate
		leaderTLS  *tls.Config
		// trusting verifies the follower's certificate, for the leader
		// that is then let in
		trusting *x509.CertPool
	}{
		{"leader without a certificate", pki.server, clientTLS(nil, pki.pool), pki.pool},
		{"leader certificate from another CA", pki.server, clientTLS(&pki.rogueClient, pki.pool), pki.pool},
		{"follower certificate from another CA", pki.rogueServer, clientTLS(&pki.client, pki.pool), pki.roguePool},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ln, err := ListenFollower("tcp:127.0.0.1:0", pki.serverTLS(c.serverCert))
			require.NoError(t, err)
			fdir := t.TempDir()
			f := serveFollower(t, fdir, ln, nil)

			q := openLeader(t, Options{Replication: ReplicateSync})
			r, err := q.ReplicateTo(f.addr, c.leaderTLS)
			require.NoError(t, err)
			require.Eventually(t, func() bool { return r.Stats().Dials >= 2 }, 10*time.Second, time.Millisecond,
				"the replicator tries again after a refusal")
			st := r.Stats()
			assert.False(t, st.Attached)
			assert.Zero(t, st.Attaches)
			require.Error(t, st.LastError)
			assert.Contains(t, st.LastError.Error(), "tls")
			assert.False(t, q.Stats().ReplicaAttached)
			res, err := q.Send(context.Background(), &Message{ID: "x", Body: []byte("x")})
			require.NoError(t, err)
			assert.Equal(t, ReplicaNotAvailable, res.Status)
			require.NoError(t, r.Close())

			require.Eventually(t, func() bool { return strings.Contains(f.logs.String(), "refused a leader connection") }, 10*time.Second, time.Millisecond)
			assert.NotContains(t, f.logs.String(), "leader connected", "no Follow ran on an unauthenticated link")

			// The follower still serves, and takes a leader that trusts its
			// certificate and has a trusted one.
			r, err = q.ReplicateTo(f.addr, clientTLS(&pki.client, c.trusting))
			require.NoError(t, err)
			defer r.Close()
			waitReplicatorAttached(t, r)
			res, err = q.Send(context.Background(), &Message{ID: "y", Body: bodyFor("y")})
			require.NoError(t, err)
			assert.Equal(t, SendOK, res.Status)
		})
	}
}

// slowListener holds back, while hold is set, every write of the
// connections it accepts: the follower's acks.
type slowListener struct {
	net.Listener
	hold atomic.Pointer[chan struct{}] // closed to release the writes
}

func (l *slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &slowConn{Conn: c, l: l}, nil
}

// slow holds the writes back until the returned function is called.
func (l *slowListener) slow() (release func()) {
	ch := make(chan struct{})
	l.hold.Store(&ch)
	return func() {
		l.hold.Store(nil)
		close(ch)
	}
}

type slowConn struct {
	net.Conn
	l *slowListener
}

func (c *slowConn) Write(p []byte) (int, error) {
	if ch := c.l.hold.Load(); ch != nil {
		<-*ch
	}
	return c.Conn.Write(p)
}

// The follower down, slow, disconnected and back: ReplicaNotAvailable while
// it is down, FlushReplicaTimeout while its acks are late, every message
// kept on the leader; after the Replicator re-dials, the follower catches
// up from the leader's disk: its log equals the leader's seq for seq, byte
// for byte, nothing duplicated, and Sends are SendOK again.
func TestFollowerDownSlowAndReconnecting(t *testing.T) {
	// Long enough for a follower to open its directory (fdatasyncs
	// included) and say hello on a loaded machine.
	const timeout = 2 * time.Second
	q := openLeader(t, Options{Replication: ReplicateSync, ReplicaTimeout: timeout})
	addr := "unix:" + filepath.Join(shortTempDir(t), "f.sock")
	fdir := t.TempDir()
	total := 0
	send := func(prefix string, n int, want SendStatus) {
		t.Helper()
		before := len(leaderMessageIDs(t, q))
		_, statuses := sendConcurrently(t, q, prefix, 4, n)
		require.Equal(t, map[SendStatus]int{want: n}, statuses, prefix)
		total += n
		require.Len(t, leaderMessageIDs(t, q), before+n, "every message is kept on the leader")
	}

	// Down: nothing listens yet.
	r, err := q.ReplicateTo(addr, nil)
	require.NoError(t, err)
	defer r.Close()
	send("down", 20, ReplicaNotAvailable)
	require.Eventually(t, func() bool { return r.Stats().LastError != nil }, 10*time.Second, time.Millisecond)
	assert.Contains(t, r.Stats().LastError.Error(), "f.sock")
	assert.GreaterOrEqual(t, q.Stats().ReplicaLag, uint64(20))

	// Up: the replicator finds it, it catches up from disk.
	start := func() (*servedFollower, *slowListener) {
		ln, err := ListenFollower(addr, nil)
		require.NoError(t, err)
		slow := &slowListener{Listener: ln}
		f := serveFollower(t, fdir, slow, nil)
		waitReplicatorAttached(t, r)
		waitAcked(t, q, q.Stats().LastSeq)
		return f, slow
	}
	f, slow := start()
	assert.Zero(t, q.Stats().ReplicaLag)
	send("up", 20, SendOK)

	// Slow: acks arrive after ReplicaTimeout.
	release := slow.slow()
	began := time.Now()
	send("slow", 4, FlushReplicaTimeout)
	assert.GreaterOrEqual(t, time.Since(began), timeout-50*time.Millisecond)
	assert.Equal(t, uint64(4), q.Stats().ReplicaTimeouts)
	release()
	waitAcked(t, q, q.Stats().LastSeq) // the late acks come
	send("fast again", 8, SendOK)

	// Disconnected: the follower stops; Sends are ReplicaNotAvailable and
	// the lag grows.
	require.ErrorIs(t, f.stop(t), context.Canceled)
	require.Eventually(t, func() bool { return !q.Stats().ReplicaAttached && !r.Stats().Attached }, 10*time.Second, time.Millisecond)
	lag := q.Stats().ReplicaLag
	send("away", 30, ReplicaNotAvailable)
	assert.Equal(t, lag+30, q.Stats().ReplicaLag)

	// Back: the replicator re-dials, the follower resumes from its own
	// position and catches up.
	f, _ = start()
	assert.Zero(t, q.Stats().ReplicaLag)
	send("back", 20, SendOK)
	waitAcked(t, q, q.Stats().LastSeq)
	assert.GreaterOrEqual(t, r.Stats().Attaches, uint64(2))
	require.ErrorIs(t, f.stop(t), context.Canceled)
	assert.Contains(t, f.logs.String(), "leader connected")

	wantSeqs, want := rawFrames(t, q)
	promoted, err := Open(fdir, nil)
	require.NoError(t, err)
	defer promoted.Close()
	gotSeqs, got := rawFrames(t, promoted)
	// Opening the directory may append records of its own (promotion),
	// above the leader's seqs.
	require.GreaterOrEqual(t, len(gotSeqs), len(wantSeqs))
	require.Equal(t, wantSeqs, gotSeqs[:len(wantSeqs)], "the follower's log has the leader's seqs, each once")
	require.Equal(t, want, got[:len(want)], "and the same frames, byte for byte")
	for _, seq := range gotSeqs[len(wantSeqs):] {
		require.Greater(t, seq, wantSeqs[len(wantSeqs)-1])
	}
	assert.Len(t, readBack(t, promoted), total)
}

// A new connection replaces the one Follow runs on: a leader that re-dials
// is served even when its old link was never seen to close (half-open TCP;
// here a peer that connected and went silent).
func TestServeFollowerTakesTheNewerConnection(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "f.sock")
	ln, err := ListenFollower("unix:"+path, nil)
	require.NoError(t, err)
	f := serveFollower(t, t.TempDir(), ln, nil)
	q := openLeader(t, Options{Replication: ReplicateSync})

	// A link that completes the handshake as q (the old link of the
	// leader), then goes silent: Follow runs on it.
	silent, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer silent.Close()
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(silent)
	pos, err := fakeLeaderHandshake(silent, br, nil, q.identity.Queue, q.epochs[len(q.epochs)-1])
	require.NoError(t, err)
	require.NoError(t, repl.WriteMessage(silent, &repl.Message{Type: repl.TypeWelcome,
		Welcome: repl.Welcome{Version: repl.Version, From: pos.LastSeq + 1, Epochs: q.epochs}}))
	silent.SetReadDeadline(time.Time{})

	r, err := q.ReplicateTo("unix:"+path, nil)
	require.NoError(t, err)
	defer r.Close()
	waitReplicatorAttached(t, r)
	res, err := q.Send(context.Background(), &Message{ID: "m", Body: bodyFor("m")})
	require.NoError(t, err)
	assert.Equal(t, SendOK, res.Status)
	// Closed by the follower: EOF, or a reset when the follower closed it
	// with bytes of the silent side still unread.
	if _, err = io.ReadAll(br); err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET, "the silent link was closed by the follower")
	}
	assert.Contains(t, f.logs.String(), "replaces the current one")
}

// ServeFollower returns, rather than waits for the next leader, when the
// directory is damaged, in use, or its fdatasync fails.
func TestServeFollowerStopsWhenContinuingIsUnsafe(t *testing.T) {
	listen := func(t *testing.T) net.Listener {
		ln, err := ListenFollower("unix:"+filepath.Join(shortTempDir(t), "f.sock"), nil)
		require.NoError(t, err)
		return ln
	}
	t.Run("locked", func(t *testing.T) {
		dir := t.TempDir()
		q, err := Open(dir, nil)
		require.NoError(t, err)
		defer q.Close()
		err = ServeFollower(context.Background(), dir, listen(t), nil)
		require.ErrorIs(t, err, ErrLocked)
	})
	t.Run("corrupt", func(t *testing.T) {
		dir := t.TempDir()
		q, err := Open(dir, &Options{SegmentSize: 64 << 10, MaxMessageSize: 4096})
		require.NoError(t, err)
		for i := range 200 {
			_, err := q.Send(context.Background(), &Message{Body: bytes.Repeat([]byte{'x'}, 500+i)})
			require.NoError(t, err)
		}
		require.NoError(t, q.Close())
		segments, err := filepath.Glob(filepath.Join(dir, "*.wal"))
		require.NoError(t, err)
		require.Greater(t, len(segments), 1)
		f, err := os.OpenFile(segments[0], os.O_RDWR, 0)
		require.NoError(t, err)
		_, err = f.WriteAt([]byte{0xff, 0xff}, 4096+600) // inside a frame of a sealed segment
		require.NoError(t, err)
		require.NoError(t, f.Close())
		ln := listen(t)
		err = ServeFollower(context.Background(), dir, ln, nil)
		require.ErrorIs(t, err, ErrCorrupt)
		_, err = ln.Accept()
		require.ErrorIs(t, err, net.ErrClosed, "ServeFollower closed the listener")
	})
	t.Run("fdatasync fails during a connection", func(t *testing.T) {
		fault := vfs.NewFault(vfs.OS)
		ln := listen(t)
		f := serveFollower(t, t.TempDir(), ln, &ServeOptions{Follow: FollowOptions{fs: fault}})
		q := openLeader(t, Options{Replication: ReplicateSync})
		r, err := q.ReplicateTo(f.addr, nil)
		require.NoError(t, err)
		defer r.Close()
		waitReplicatorAttached(t, r)
		fault.FailFrom(vfs.OpSync, 1, syscall.EIO) // every fdatasync from now on
		res, err := q.Send(context.Background(), &Message{Body: []byte("x")})
		require.NoError(t, err)
		assert.NotEqual(t, SendOK, res.Status)
		select {
		case err := <-f.done:
			f.done <- err
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrPoisoned) || errors.Is(err, syscall.EIO), "got %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("ServeFollower went on after its fdatasync failed")
		}
	})
}

func TestFollowErrorIsFatal(t *testing.T) {
	for err, fatal := range map[error]bool{
		fmt.Errorf("x: %w", io.EOF):                 false,
		fmt.Errorf("x: %w", ErrReplication):         false,
		linkErr("writing an ack", io.ErrClosedPipe): false,
		context.Canceled:                            false,
		fmt.Errorf("open: %w", ErrCorrupt):          true,
		fmt.Errorf("open: %w", ErrLocked):           true,
		fmt.Errorf("sync: %w", ErrPoisoned):         true,
		fmt.Errorf("x: %w", ErrInvalidOptions):      true,
		errors.New("append: no space left"):         true,
		fmt.Errorf("append: %w", ErrDiskFull):       true,
		fmt.Errorf("append: %w", fs.ErrInvalid):     true,
	} {
		assert.Equal(t, fatal, followErrorIsFatal(err), "%v", err)
	}
}

// The Replicator stops with the queue (without its own Close) and with its
// Close; Close detaches the follower and stops dialing.
func TestReplicatorStops(t *testing.T) {
	t.Run("queue closed while dialing", func(t *testing.T) {
		q, err := Open(t.TempDir(), &Options{Replication: ReplicateSync})
		require.NoError(t, err)
		r, err := q.ReplicateTo("unix:"+filepath.Join(shortTempDir(t), "nobody.sock"), nil)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return r.Stats().Dials >= 2 }, 10*time.Second, time.Millisecond)
		require.NoError(t, q.Close())
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Fatal("the replicator goes on dialing after the queue closed")
		}
		require.ErrorIs(t, r.WaitAttached(context.Background()), ErrClosed)
		require.NoError(t, r.Close())
		require.NoError(t, r.Close(), "idempotent")
		_, err = q.ReplicateTo("tcp:127.0.0.1:1", nil)
		require.ErrorIs(t, err, ErrClosed)
	})
	t.Run("queue closed while attached", func(t *testing.T) {
		q, err := Open(t.TempDir(), &Options{Replication: ReplicateSync})
		require.NoError(t, err)
		ln, err := ListenFollower("unix:"+filepath.Join(shortTempDir(t), "f.sock"), nil)
		require.NoError(t, err)
		f := serveFollower(t, t.TempDir(), ln, nil)
		r, err := q.ReplicateTo(f.addr, nil)
		require.NoError(t, err)
		waitReplicatorAttached(t, r)
		require.NoError(t, q.Close())
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Fatal("the replicator goes on after the queue closed")
		}
		assert.Equal(t, uint64(1), r.Stats().Dials, "no dial after the queue closed")
	})
	t.Run("replicator closed", func(t *testing.T) {
		q := openLeader(t, Options{Replication: ReplicateSync})
		ln, err := ListenFollower("unix:"+filepath.Join(shortTempDir(t), "f.sock"), nil)
		require.NoError(t, err)
		f := serveFollower(t, t.TempDir(), ln, nil)
		r, err := q.ReplicateTo(f.addr, nil)
		require.NoError(t, err)
		waitReplicatorAttached(t, r)
		require.NoError(t, r.Close())
		require.Eventually(t, func() bool { return !q.Stats().ReplicaAttached }, 5*time.Second, time.Millisecond)
		res, err := q.Send(context.Background(), &Message{Body: []byte("x")})
		require.NoError(t, err)
		assert.Equal(t, ReplicaNotAvailable, res.Status)
		assert.Equal(t, uint64(1), r.Stats().Dials)
		assert.False(t, r.Stats().Attached)
	})
}

// The wait between dials doubles: four dials to a follower that is not
// there take at least 50+100+200ms.
func TestReplicatorBacksOff(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync})
	began := time.Now()
	r, err := q.ReplicateTo("unix:"+filepath.Join(shortTempDir(t), "nobody.sock"), nil)
	require.NoError(t, err)
	defer r.Close()
	require.Eventually(t, func() bool { return r.Stats().Dials >= 4 }, 10*time.Second, time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(began), 350*time.Millisecond)
	assert.Equal(t, ReplicatorMinBackoff, 50*time.Millisecond)
}

// OnAck reports the follower's durable seq: the directory's at start, then
// each ack.
func TestServeFollowerOnAck(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync})
	ln, err := ListenFollower("unix:"+filepath.Join(shortTempDir(t), "f.sock"), nil)
	require.NoError(t, err)
	var mu sync.Mutex
	var acks []uint64
	f := serveFollower(t, t.TempDir(), ln, &ServeOptions{Follow: FollowOptions{OnAck: func(seq uint64) {
		mu.Lock()
		acks = append(acks, seq)
		mu.Unlock()
	}}})
	r, err := q.ReplicateTo(f.addr, nil)
	require.NoError(t, err)
	defer r.Close()
	waitReplicatorAttached(t, r)
	var last uint64
	for i := range 5 {
		res, err := q.Send(context.Background(), &Message{Body: []byte{byte(i)}})
		require.NoError(t, err)
		require.Equal(t, SendOK, res.Status)
		last = res.Seq
	}
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, acks)
	assert.Equal(t, uint64(0), acks[0], "the empty directory's position first")
	assert.Equal(t, last, acks[len(acks)-1])
	assert.IsNonDecreasing(t, acks)
}

// A dial, TLS handshake included, gives up after ReplicaTimeout: a follower
// address whose listener never accepts (the kernel completes the TCP
// connect, nobody answers the handshake) does not hang the replicator.
func TestReplicatorDialTimesOut(t *testing.T) {
	pki := newTestPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0") // never accepts
	require.NoError(t, err)
	defer ln.Close()
	q := openLeader(t, Options{Replication: ReplicateSync, ReplicaTimeout: 200 * time.Millisecond})
	r, err := q.ReplicateTo("tcp:"+ln.Addr().String(), clientTLS(&pki.client, pki.pool))
	require.NoError(t, err)
	defer r.Close()
	require.Eventually(t, func() bool { return r.Stats().Dials >= 2 }, 10*time.Second, time.Millisecond,
		"the first dial ended")
	err = r.Stats().LastError
	require.Error(t, err)
	var netErr net.Error
	require.ErrorAs(t, err, &netErr)
	assert.True(t, netErr.Timeout(), "%v", err)
}
