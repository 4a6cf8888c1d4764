package zeroloss

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/repl"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// testSecret is a replication secret of n bytes, each b.
func testSecret(b byte) []byte { return bytes.Repeat([]byte{b}, MinSecretSize) }

// hostile is one kind of connection a stranger makes to a follower.
type hostile struct {
	name string
	// tls, if set, is the stranger's side of TLS (over a TLS listener).
	tls *tls.Config
	// talk does what the stranger does on c once connected.
	talk func(c net.Conn, br *bufio.Reader)
}

// hostileKinds are the strangers of issue 17: garbage, a truncated or
// stalled handshake, a handshake with the wrong secret, or with the right
// secret (a confused peer) but another queue's ID or a stale epoch. leader
// is the queue the follower copies; viaTLS is the TLS config a stranger
// that got past TLS uses (nil on plain TCP); rogueTLS one with a
// certificate from another CA (nil: no such case).
func hostileKinds(key []byte, leader *Queue, viaTLS, rogueTLS *tls.Config) []hostile {
	current := leader.epochs[len(leader.epochs)-1]
	handshake := func(key []byte, queue queueID, epoch repl.Epoch) func(net.Conn, *bufio.Reader) {
		return func(c net.Conn, br *bufio.Reader) {
			pos, err := fakeLeaderHandshake(c, br, key, queue, epoch)
			if err == nil { // it should never get this far
				repl.WriteMessage(c, &repl.Message{Type: repl.TypeWelcome,
					Welcome: repl.Welcome{Version: repl.Version, From: 1, Epochs: []repl.Epoch{epoch}}})
				_ = pos
			}
		}
	}
	stale := repl.Epoch{Num: current.Num - 1, ID: 77, Start: 1}
	kinds := []hostile{
		{"garbage", nil, func(c net.Conn, _ *bufio.Reader) {
			c.Write([]byte("GET / HTTP/1.1\r\nHost: follower\r\n\r\n\x00"))
		}},
		{"truncated hello answer", viaTLS, func(c net.Conn, br *bufio.Reader) {
			if _, err := repl.ReadMessage(br, repl.ControlBody); err != nil {
				return
			}
			auth := repl.AppendMessage(nil, &repl.Message{Type: repl.TypeAuth,
				Auth: repl.Auth{Version: repl.Version, Queue: leader.identity.Queue, Epoch: current}})
			c.Write(auth[:len(auth)/2])
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
		}},
		{"stalled", viaTLS, func(net.Conn, *bufio.Reader) {}},
		{"wrong secret", viaTLS, handshake(testSecret(0xee), leader.identity.Queue, current)},
		{"no secret", viaTLS, handshake(nil, leader.identity.Queue, current)},
		{"another queue's ID", viaTLS, handshake(key, queueID{0xde, 0xad}, current)},
		{"no queue ID", viaTLS, handshake(key, queueID{}, current)},
		{"stale epoch", viaTLS, handshake(key, leader.identity.Queue, stale)},
	}
	if rogueTLS != nil {
		kinds = append(kinds, hostile{rogueName, rogueTLS, handshake(key, leader.identity.Queue, current)})
	}
	return kinds
}

const rogueName = "certificate from another CA"

// attack makes one hostile connection to addr and waits until the follower
// closed it.
func attack(t *testing.T, addr string, h hostile) {
	t.Helper()
	network, address, err := splitAddr(addr)
	require.NoError(t, err)
	raw, err := net.DialTimeout(network, address, 5*time.Second)
	require.NoError(t, err, h.name)
	defer raw.Close()
	c := raw
	if h.tls != nil {
		conf := h.tls.Clone()
		conf.ServerName = "127.0.0.1"
		tc := tls.Client(raw, conf)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			// Only a certificate the follower does not trust is refused
			// here (or at the first read: TLS 1.3 checks it later).
			assert.Equal(t, rogueName, h.name, "TLS handshake: %v", err)
			return
		}
		c = tc
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	h.talk(c, br)
	// The follower closes the connection: within its HandshakeTimeout at
	// the latest.
	_, err = io.Copy(io.Discard, br)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("%s: the follower kept the connection open for 10s", h.name)
	}
}

// snapshotDir returns every file under dir, by path, with its bytes.
func snapshotDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		files[path] = b
		return err
	})
	require.NoError(t, err)
	return files
}

// With a leader sending under ReplicateSync over a link, a loop of
// hostile connections (issue 17) produces no status but SendOK: none
// replaces the leader's session, and the follower's copy goes on without
// a cut.
func TestHostileConnectionsDoNotDisturbTheLink(t *testing.T) {
	pki := newTestPKI(t)
	key := testSecret(0x5a)
	rogue := clientTLS(&pki.rogueClient, pki.pool)
	good := clientTLS(&pki.client, pki.pool)
	for _, tc := range []struct {
		name                 string
		serverTLS, leaderTLS *tls.Config
		viaTLS, rogueTLS     *tls.Config
	}{
		{"plain tcp with a secret", nil, nil, nil, nil},
		{"mutual TLS with a secret", pki.serverTLS(pki.server), good, good, rogue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A leader in its second epoch, so that a stale one exists.
			dir := t.TempDir()
			first, err := Open(dir, nil)
			require.NoError(t, err)
			require.NoError(t, first.Close())
			q, err := Open(dir, &Options{Replication: ReplicateSync, ReplicaSecret: key})
			require.NoError(t, err)
			defer q.Close()

			ln, err := ListenFollower("tcp:127.0.0.1:0", tc.serverTLS)
			require.NoError(t, err)
			fdir := t.TempDir()
			f := serveFollower(t, fdir, ln, &ServeOptions{HandshakeTimeout: time.Second,
				Follow: FollowOptions{Secret: key}})
			r, err := q.ReplicateTo(f.addr, tc.leaderTLS)
			require.NoError(t, err)
			defer r.Close()
			waitReplicatorAttached(t, r)
			attaches := r.Stats().Attaches

			kinds := hostileKinds(key, q, tc.viaTLS, tc.rogueTLS)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range 3 {
					for _, h := range kinds {
						attack(t, f.addr, h)
					}
				}
			}()
			ok, statuses := map[uint64]string{}, map[SendStatus]int{}
			for round := 0; ; round++ {
				select {
				case <-done:
				default:
					some, st := sendConcurrently(t, q, "m"+string(rune('a'+round%26))+strings.Repeat("x", round/26), 4, 40)
					for seq, id := range some {
						ok[seq] = id
					}
					for s, n := range st {
						statuses[s] += n
					}
					continue
				}
				break
			}
			total := 0
			for _, n := range statuses {
				total += n
			}
			require.Equal(t, map[SendStatus]int{SendOK: total}, statuses, "no status but SendOK")
			st := q.Stats()
			assert.Zero(t, st.ReplicaNotAvailable)
			assert.Zero(t, st.ReplicaTimeouts)
			assert.Equal(t, attaches, r.Stats().Attaches, "the leader's link was never replaced")
			logs := f.logs.String()
			assert.NotContains(t, logs, "replaces the current one")
			assert.NotContains(t, logs, "cut records")
			assert.GreaterOrEqual(t, strings.Count(logs, "refused a leader connection"), 3*len(kinds))
			for _, want := range []string{"did not prove", "holds a copy of queue", "is stale", "handshake not done within"} {
				assert.Contains(t, logs, want)
			}
			if tc.rogueTLS != nil {
				assert.Contains(t, logs, "TLS handshake failed")
			}

			require.NoError(t, r.Close())
			require.ErrorIs(t, f.stop(t), context.Canceled)
			checkFollowerHolds(t, fdir, ok)
		})
	}
}

// A follower reached only by hostile connections never truncates, deletes
// or rewrites anything in its directory: an empty one, and one holding a
// copy of a queue (where a stranger knowing the secret tries another
// queue's ID or a stale epoch).
func TestHostileConnectionsNeverChangeTheFollowerDirectory(t *testing.T) {
	key := testSecret(0x33)
	dir := t.TempDir()
	first, err := Open(dir, nil)
	require.NoError(t, err)
	require.NoError(t, first.Close())
	q, err := Open(dir, &Options{Replication: ReplicateSync, ReplicaSecret: key})
	require.NoError(t, err)
	defer q.Close()

	// A copy of q: replicate a few messages, then stop both ends.
	copied := t.TempDir()
	a, b := net.Pipe()
	cf := startFollower(t, copied, b, &FollowOptions{Secret: key})
	require.NoError(t, q.AttachReplica(a))
	sent, statuses := sendConcurrently(t, q, "c", 2, 20)
	require.Equal(t, map[SendStatus]int{SendOK: 20}, statuses)
	require.ErrorIs(t, cf.stop(), context.Canceled)

	for _, tc := range []struct {
		name string
		dir  string
	}{
		{"empty", t.TempDir()},
		{"holding a copy", copied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := ListenFollower("tcp:127.0.0.1:0", nil)
			require.NoError(t, err)
			opened := make(chan struct{})
			var once sync.Once
			f := serveFollower(t, tc.dir, ln, &ServeOptions{HandshakeTimeout: 500 * time.Millisecond,
				Follow: FollowOptions{Secret: key, OnAck: func(uint64) { once.Do(func() { close(opened) }) }}})
			select {
			case <-opened:
			case <-time.After(10 * time.Second):
				t.Fatal("the follower did not open its directory")
			}
			before := snapshotDir(t, tc.dir)
			kinds := hostileKinds(key, q, nil, nil)
			if tc.name == "empty" {
				// An empty follower takes any queue the secret admits, at
				// any epoch.
				var some []hostile
				for _, h := range kinds {
					if h.name != "another queue's ID" && h.name != "stale epoch" {
						some = append(some, h)
					}
				}
				kinds = some
			}
			for _, h := range kinds {
				attack(t, f.addr, h)
			}
			assert.Equal(t, before, snapshotDir(t, tc.dir), "nothing in the directory changed")
			assert.NotContains(t, f.logs.String(), "leader connected")
			require.ErrorIs(t, f.stop(t), context.Canceled)
		})
	}
	checkFollowerHolds(t, copied, sent)
}

// ServeFollower checks at most MaxHandshakes connections at once: more are
// closed at once, before the follower says anything; a slot frees when a
// handshake ends.
func TestServeFollowerBoundsHandshakesInProgress(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "f.sock")
	ln, err := ListenFollower("unix:"+path, nil)
	require.NoError(t, err)
	f := serveFollower(t, t.TempDir(), ln, &ServeOptions{MaxHandshakes: 2, HandshakeTimeout: time.Minute})
	hello := func(c net.Conn) error {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := repl.ReadMessage(c, repl.ControlBody)
		return err
	}
	var stalled []net.Conn
	for range 2 {
		c, err := net.Dial("unix", path)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, hello(c), "the follower greets a connection in a free slot")
		stalled = append(stalled, c)
	}
	extra, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer extra.Close()
	require.ErrorIs(t, hello(extra), io.EOF, "closed at once, without a hello")
	assert.Contains(t, f.logs.String(), "too many handshakes in progress")

	// A stalled stranger leaves; its slot serves the next connection.
	stalled[0].Write([]byte("garbage that fails the handshake......"))
	_, err = io.Copy(io.Discard, stalled[0])
	require.NoError(t, err)
	next, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer next.Close()
	require.NoError(t, hello(next))
}

// Plain TCP needs a secret at both ends, even on loopback; a short secret
// is refused naming the field.
func TestPlainTCPNeedsASecret(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync})
	_, err := q.ReplicateTo("tcp:127.0.0.1:9000", nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Contains(t, err.Error(), "ReplicaSecret")

	ln, err := ListenFollower("tcp:127.0.0.1:0", nil)
	require.NoError(t, err)
	err = ServeFollower(context.Background(), t.TempDir(), ln, nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Contains(t, err.Error(), "FollowOptions.Secret")

	// TLS that verifies no client certificate authenticates no leader
	// either; mutual TLS does.
	pki := newTestPKI(t)
	oneWay := pki.serverTLS(pki.server)
	oneWay.ClientAuth = tls.VerifyClientCertIfGiven
	ln, err = ListenFollower("tcp:127.0.0.1:0", oneWay)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err = ServeFollower(ctx, t.TempDir(), ln, nil) // refused at once, or served until ctx ends
	cancel()
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Contains(t, err.Error(), "without client certificates")
	ln.Close()
	ln, err = ListenFollower("tcp:127.0.0.1:0", pki.serverTLS(pki.server))
	require.NoError(t, err)
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	err = ServeFollower(ctx, t.TempDir(), ln, nil)
	cancel()
	require.NotErrorIs(t, err, ErrInvalidOptions, "mutual TLS needs no secret")

	_, err = Open(t.TempDir(), &Options{Replication: ReplicateSync, ReplicaSecret: []byte("short")})
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Contains(t, err.Error(), "ReplicaSecret is 5 bytes")
	a, b := net.Pipe()
	defer a.Close()
	err = Follow(context.Background(), t.TempDir(), b, &FollowOptions{Secret: []byte("short")})
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Contains(t, err.Error(), "Secret is 5 bytes")

	// A listener that is not ListenFollower's: each plain TCP connection
	// is refused.
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := serveFollower(t, t.TempDir(), raw, nil)
	c, err := net.Dial("tcp", raw.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, c)
	require.NoError(t, err, "closed, without a hello")
	assert.Contains(t, f.logs.String(), "plain TCP without a secret")
}

// The secrets must match: a leader and a follower with different keys, or
// a key at one end only, never attach, and each side says why.
func TestMismatchedSecretsNeverAttach(t *testing.T) {
	for _, tc := range []struct {
		name           string
		leader, follow []byte
		want           string
	}{
		{"different keys", testSecret(1), testSecret(2), "did not prove"},
		{"leader only", testSecret(1), nil, "did not prove"},
		{"follower only", nil, testSecret(2), "did not prove"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := openLeader(t, Options{Replication: ReplicateSync, ReplicaSecret: tc.leader})
			a, b := net.Pipe()
			fdir := t.TempDir()
			f := startFollower(t, fdir, b, &FollowOptions{Secret: tc.follow})
			err := q.AttachReplica(a)
			require.ErrorIs(t, err, ErrReplication)
			ferr := <-f.doneOnce()
			require.ErrorIs(t, ferr, ErrReplication)
			assert.Contains(t, err.Error()+ferr.Error(), tc.want)
			id, ok, err := readIdentity(q.opts.fs, fdir)
			require.NoError(t, err)
			assert.True(t, !ok || id.Queue.isZero(), "the follower took no queue ID")
		})
	}
}

// The queue ID follows the copy: an empty follower takes its leader's at
// the handshake, a promoted follower keeps it as a queue, and the old
// leader rejoining it as follower switches kind, same ID.
func TestQueueIdentityAcrossFailover(t *testing.T) {
	adir, bdir := t.TempDir(), t.TempDir()
	a, err := Open(adir, &Options{Replication: ReplicateSync})
	require.NoError(t, err)
	leaderID := a.identity
	require.Equal(t, kindQueue, leaderID.Kind)
	require.False(t, leaderID.Queue.isZero())
	stored, ok, err := readIdentity(vfs.OS, adir)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, leaderID, stored, "Open wrote it")

	la, lb := net.Pipe()
	f := startFollower(t, bdir, lb, nil)
	require.NoError(t, a.AttachReplica(la))
	sent, statuses := sendConcurrently(t, a, "a", 2, 10)
	require.Equal(t, map[SendStatus]int{SendOK: 10}, statuses)
	got, ok, err := readIdentity(vfs.OS, bdir)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, identity{Kind: kindFollower, Queue: leaderID.Queue}, got, "the empty follower took the leader's queue ID")
	require.ErrorIs(t, f.stop(), context.Canceled)
	require.NoError(t, a.Close())

	// Failover: b is promoted, a rejoins it as follower.
	b, err := Open(bdir, &Options{Replication: ReplicateSync})
	require.NoError(t, err)
	defer b.Close()
	assert.Equal(t, identity{Kind: kindQueue, Queue: leaderID.Queue}, b.identity, "promotion keeps the queue ID")
	la, lb = net.Pipe()
	f = startFollower(t, adir, lb, nil)
	require.NoError(t, b.AttachReplica(la))
	more, statuses := sendConcurrently(t, b, "b", 2, 10)
	require.Equal(t, map[SendStatus]int{SendOK: 10}, statuses)
	got, ok, err = readIdentity(vfs.OS, adir)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, identity{Kind: kindFollower, Queue: leaderID.Queue}, got, "the old leader is now a follower's copy of the same queue")
	require.ErrorIs(t, f.stop(), context.Canceled)
	for seq, id := range more {
		sent[seq] = id
	}
	require.NoError(t, b.Close())
	checkFollowerHolds(t, adir, sent)
}

// A follower that learned of a later epoch (its leader's history written,
// no record of that epoch received yet: a crash in between) still refuses
// a stale leader after it restarts, empty or not.
func TestFollowerRemembersTheLatestEpochItSaw(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync})
	current := q.epochs[len(q.epochs)-1]
	fdir := t.TempDir()
	later := repl.Epoch{Num: current.Num + 1, ID: 99, Start: 1 << 33, PrevLast: 5}
	require.NoError(t, writeEpochs(vfs.OS, fdir, []repl.Epoch{current, later}))
	before := snapshotDir(t, fdir)

	a, b := net.Pipe()
	f := startFollower(t, fdir, b, nil)
	err := q.AttachReplica(a)
	require.ErrorIs(t, err, ErrReplication)
	ferr := <-f.doneOnce()
	require.ErrorIs(t, ferr, ErrReplication)
	assert.ErrorContains(t, ferr, "is stale")
	after := snapshotDir(t, fdir)
	assert.Equal(t, before[filepath.Join(fdir, epochsFile)], after[filepath.Join(fdir, epochsFile)])
	id, ok, err := readIdentity(vfs.OS, fdir)
	require.NoError(t, err)
	assert.True(t, !ok || id.Queue.isZero(), "no queue ID taken")
}

// A follower that says hello and then stalls is dropped by the leader after
// the handshake's bound (max(ReplicaTimeout, DefaultHandshakeTimeout)),
// and nothing is attached.
func TestLeaderDropsAStalledHandshake(t *testing.T) {
	q := openLeader(t, Options{Replication: ReplicateSync, ReplicaTimeout: 100 * time.Millisecond})
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		nonce, _ := repl.NewNonce()
		repl.WriteMessage(b, &repl.Message{Type: repl.TypeHello, Hello: repl.Hello{Version: repl.Version, Nonce: nonce}})
		io.Copy(io.Discard, b) // reads the auth, never answers
	}()
	start := time.Now()
	attached := make(chan error, 1)
	go func() { attached <- q.AttachReplica(a) }()
	var err error
	select {
	case err = <-attached:
	case <-time.After(DefaultHandshakeTimeout + 20*time.Second):
		a.Close()
		t.Fatal("AttachReplica still waits for the stalled follower")
	}
	require.ErrorIs(t, err, ErrReplication)
	assert.ErrorContains(t, err, "handshake not done within")
	assert.GreaterOrEqual(t, time.Since(start), DefaultHandshakeTimeout-50*time.Millisecond)
	assert.False(t, q.Stats().ReplicaAttached)
}
