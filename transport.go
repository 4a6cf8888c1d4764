package zeroloss

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Transports for replication: addresses, the follower's listener
// (ListenFollower), the follower serving one leader connection after another
// (ServeFollower), and the leader dialing its follower and re-dialing when
// the link fails (ReplicateTo). Underneath, AttachReplica and Follow do the
// protocol over whatever connection these make.
//
// An address is "unix:PATH" or "tcp:HOST:PORT". Security:
//
//   - A Unix socket is created with mode 0600 with no moment at which it is
//     more permissive: it is bound inside a fresh directory of mode 0700 next
//     to PATH, given mode 0600, then renamed to PATH. On Windows, where file
//     modes do not govern AF_UNIX sockets, it is bound at PATH directly and
//     access is what the directory's ACL allows. Some older BSD systems ignore
//     a socket's mode: there, put PATH in a directory only the user can enter.
//   - TCP requires a *tls.Config, except on a loopback address (127.0.0.0/8,
//     ::1, or a name all of whose addresses are loopback), where plain TCP is
//     allowed when tlsConf is nil and both ends hold a shared secret
//     (Options.ReplicaSecret, FollowOptions.Secret): each proves it in the
//     handshake, but nothing is encrypted. Off loopback use mutual TLS: the
//     follower's config should set ClientAuth to
//     tls.RequireAndVerifyClientCert and ClientCAs, the leader's
//     Certificates and RootCAs. A follower appends whatever an accepted
//     leader sends, so who may connect is who may write its log.
//
// A follower checks each connection's handshake (TLS, the secret, protocol
// version, queue ID, epoch) on its own goroutine, at most MaxHandshakes at a
// time, within HandshakeTimeout; only a connection that passed may replace
// the current leader's. One that fails is closed and logged, and has touched
// neither the session nor the directory.

// Defaults of the transports.
const (
	// DefaultHandshakeTimeout bounds a leader's handshake with its
	// follower (AttachReplica: at least this, or ReplicaTimeout), which
	// may be opening its log first.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultServeHandshakeTimeout bounds the handshake of a connection
	// to ServeFollower, TLS included (ServeOptions.HandshakeTimeout): its
	// log is open already, so a leader answers at once.
	DefaultServeHandshakeTimeout = 5 * time.Second
	// DefaultMaxHandshakes bounds the connections ServeFollower checks at
	// once (ServeOptions.MaxHandshakes); more are closed at once.
	DefaultMaxHandshakes = 8
	// MinSecretSize is the least length of a replication secret
	// (Options.ReplicaSecret, FollowOptions.Secret).
	MinSecretSize = 32
	// ReplicatorMinBackoff and ReplicatorMaxBackoff bound the wait of a
	// Replicator between two dials: it doubles after each failure, from
	// the minimum to the maximum.
	ReplicatorMinBackoff = 50 * time.Millisecond
	ReplicatorMaxBackoff = 5 * time.Second
)

// splitAddr parses "unix:PATH" or "tcp:HOST:PORT" into a network and an
// address for package net.
func splitAddr(addr string) (network, address string, err error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("zeroloss: address %q: %w: %s", addr, ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	network, address, ok := strings.Cut(addr, ":")
	if !ok {
		return "", "", invalid(`want "unix:PATH" or "tcp:HOST:PORT"`)
	}
	switch network {
	case "unix":
		if address == "" {
			return "", "", invalid("the socket path is empty")
		}
	case "tcp":
		_, port, err := net.SplitHostPort(address)
		if err != nil {
			return "", "", invalid("want tcp:HOST:PORT: %v", err)
		}
		if port == "" {
			return "", "", invalid("the port is empty")
		}
	default:
		return "", "", invalid(`network %q: want "unix" or "tcp"`, network)
	}
	return network, address, nil
}

// plainTCPAddress checks that a TCP address without TLS is on loopback and
// returns it with the host replaced by a loopback IP, so that what is
// dialed or listened on is what was checked (a name is resolved once).
func plainTCPAddress(ctx context.Context, addr, address string) (string, error) {
	host, port, _ := net.SplitHostPort(address)
	refuse := func(why string) error {
		return fmt.Errorf("zeroloss: address %q: %w: plain TCP (no tls.Config) is allowed only on a loopback address (with a shared secret), and %s; pass a *tls.Config (mutual TLS) or use a unix: address",
			addr, ErrInvalidOptions, why)
	}
	if host == "" {
		return "", refuse("an empty host means every interface")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !ip.IsLoopback() {
			return "", refuse(fmt.Sprintf("%s is not one", host))
		}
		return address, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return "", refuse(fmt.Sprintf("%s does not resolve (%v)", host, err))
	}
	if len(ips) == 0 {
		return "", refuse(fmt.Sprintf("%s resolves to no address", host))
	}
	chosen := ips[0]
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return "", refuse(fmt.Sprintf("%s resolves to %s, which is not one", host, ip))
		}
		if ip.Unmap().Is4() && !chosen.Unmap().Is4() {
			chosen = ip // prefer IPv4, as net.Listen does
		}
	}
	return net.JoinHostPort(chosen.Unmap().String(), port), nil
}

// checkServerTLS returns an error naming addr if tlsConf cannot serve.
func checkServerTLS(addr string, tlsConf *tls.Config) error {
	if tlsConf.Certificates == nil && tlsConf.GetCertificate == nil && tlsConf.GetConfigForClient == nil {
		return fmt.Errorf("zeroloss: listen %s: %w: the tls.Config has no certificate (Certificates, GetCertificate or GetConfigForClient)", addr, ErrInvalidOptions)
	}
	return nil
}

// ListenFollower returns a listener for a follower at addr, "unix:PATH" or
// "tcp:HOST:PORT", for ServeFollower. With a non-nil tlsConf every
// connection is TLS (on either network); on TCP, ServeFollower then requires
// FollowOptions.Secret unless tlsConf.ClientAuth is
// RequireAndVerifyClientCert (mutual TLS). Without tlsConf, TCP is refused
// unless the host is a loopback address (the error, matching
// ErrInvalidOptions, names the address), and ServeFollower then requires
// FollowOptions.Secret.
//
// A Unix socket is created with mode 0600, never more permissive in between
// (see the comment at the top of transport.go for how, and for Windows). A
// socket file left at PATH by a follower that died is replaced; a live one
// (something accepts connections on it) or a file that is not a socket is an
// error, and is left alone. Closing the listener removes the socket file.
func ListenFollower(addr string, tlsConf *tls.Config) (net.Listener, error) {
	network, address, err := splitAddr(addr)
	if err != nil {
		return nil, err
	}
	if tlsConf != nil {
		if err := checkServerTLS(addr, tlsConf); err != nil {
			return nil, err
		}
	}
	var ln net.Listener
	switch network {
	case "unix":
		ln, err = listenUnix(address)
	case "tcp":
		if tlsConf == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			address, err = plainTCPAddress(ctx, addr, address)
			cancel()
			if err != nil {
				return nil, err
			}
		}
		ln, err = net.Listen("tcp", address)
	}
	if err != nil {
		return nil, fmt.Errorf("zeroloss: listen %s: %w", addr, err)
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
		if network == "tcp" && tlsConf.ClientAuth != tls.RequireAndVerifyClientCert {
			return unauthenticatedListener{ln, "TLS without client certificates (tls.Config.ClientAuth is not RequireAndVerifyClientCert)"}, nil
		}
		return ln, nil
	}
	if network == "tcp" {
		return unauthenticatedListener{ln, "plain TCP"}, nil
	}
	return ln, nil
}

// unauthenticatedListener marks a listener of ListenFollower on TCP that
// does not authenticate the leader by itself (plain TCP, or TLS that does
// not verify a client certificate): ServeFollower refuses it without a
// secret.
type unauthenticatedListener struct {
	net.Listener
	what string
}

// listenUnix binds a Unix socket at path with mode 0600.
func listenUnix(path string) (net.Listener, error) {
	if err := clearStaleSocket(path); err != nil {
		return nil, err
	}
	if runtime.GOOS == "windows" {
		// File modes do not govern AF_UNIX sockets on Windows; the
		// directory's ACL does. Bind in place (Go removes it on Close).
		return net.Listen("unix", path)
	}
	// Bind inside a private directory (MkdirTemp: mode 0700), so nobody
	// else can connect while the socket still has the mode the umask gave
	// it, set 0600, then rename it into place (replacing a stale socket
	// atomically).
	private, err := os.MkdirTemp(filepath.Dir(path), ".zl")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		if len(tmp) > 100 {
			err = fmt.Errorf("%w (the socket is bound at %s first, %d bytes: socket paths are limited to about 104 bytes)", err, tmp, len(tmp))
		}
		return nil, err
	}
	ul.SetUnlinkOnClose(false) // it will not be at tmp
	fail := func(err error) (net.Listener, error) {
		ul.Close()
		return nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	info, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: ul, addr: &net.UnixAddr{Name: path, Net: "unix"}, info: info}, nil
}

// clearStaleSocket checks what is at path: nothing, or a socket nobody
// listens on, is fine; anything else is an error.
func clearStaleSocket(path string) error {
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if info.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket (%v): not replacing it", path, info.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: another process is listening on it (a follower already running?)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && runtime.GOOS != "windows" {
		return fmt.Errorf("%s: cannot tell whether it is in use: %w", path, err)
	}
	if runtime.GOOS == "windows" {
		return os.Remove(path) // no rename over it there: bound in place
	}
	return nil // stale: the rename replaces it
}

// unixListener is a Unix socket listener bound elsewhere and renamed to
// addr; Close removes the socket file if it is still the one it created.
type unixListener struct {
	*net.UnixListener
	addr *net.UnixAddr
	info os.FileInfo
	once sync.Once
}

func (l *unixListener) Addr() net.Addr { return l.addr }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if info, serr := os.Lstat(l.addr.Name); serr == nil && os.SameFile(info, l.info) {
			os.Remove(l.addr.Name)
		}
	})
	return err
}

// ServeOptions configure ServeFollower. The zero value, like nil, means
// every default.
type ServeOptions struct {
	// Follow configures the follower as for Follow: its flush policy,
	// segment size and logger. The logger also receives ServeFollower's
	// reports: leader connections, their end and why, refused handshakes.
	Follow FollowOptions
	// HandshakeTimeout bounds the handshake of a connecting leader, TLS
	// included. Default DefaultServeHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the connections whose handshake is in progress;
	// more are closed at once. Default DefaultMaxHandshakes.
	MaxHandshakes int
}

// ServeFollower runs a follower of dir on ln (ListenFollower) until ctx
// ends: it takes one leader connection at a time and runs Follow on it;
// when the link drops it takes the next one (the leader re-dialing), and
// the follower resumes from its own last durable seq. A new connection
// replaces the current one (the leader re-dialed, so the old link is dead
// even if no FIN said so), but only once its handshake is done and valid,
// within HandshakeTimeout: TLS (with a TLS listener), the shared secret
// (FollowOptions.Secret; required on plain TCP), the protocol version, the
// queue's ID (the one dir holds a copy of, if any) and a leader epoch not
// older than the latest dir has seen. One that fails is closed and logged,
// and the current leader keeps its link. Who may complete a handshake is
// who may write dir's log: use mutual TLS, a Unix socket or a secret.
//
// It opens dir's log once, before the first connection, and keeps it open
// across connections (so a leader's handshake never waits for recovery), so
// a damaged or locked directory fails at once. A connection that ends
// because the leader closed it or because of a link or protocol error
// (io.EOF, a failed link, ErrReplication) is
// logged and the next is awaited; any other error — ErrCorrupt, ErrLocked,
// ErrPoisoned (a failed fdatasync on the follower), ErrInvalidOptions,
// a failed write — makes continuing unsafe or useless and is returned.
// ServeFollower closes ln before returning, and returns ctx's error when ctx
// ended; dir then opens as a normal Queue (promotion).
func ServeFollower(ctx context.Context, dir string, ln net.Listener, opts *ServeOptions) error {
	defer ln.Close()
	var o ServeOptions
	if opts != nil {
		o = *opts
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultServeHandshakeTimeout
	}
	if o.HandshakeTimeout < 0 {
		return fmt.Errorf("zeroloss: serve follower: %w: HandshakeTimeout is %v", ErrInvalidOptions, o.HandshakeTimeout)
	}
	if o.MaxHandshakes == 0 {
		o.MaxHandshakes = DefaultMaxHandshakes
	}
	if o.MaxHandshakes < 0 {
		return fmt.Errorf("zeroloss: serve follower: %w: MaxHandshakes is %d", ErrInvalidOptions, o.MaxHandshakes)
	}
	if u, ok := ln.(unauthenticatedListener); ok && len(o.Follow.Secret) == 0 {
		return fmt.Errorf("zeroloss: serve follower: %w: %s on %s authenticates no leader: it needs FollowOptions.Secret (or mutual TLS, or a Unix socket)", ErrInvalidOptions, u.what, ln.Addr())
	}
	if o.Follow.Logger == nil {
		o.Follow.Logger = slog.New(slog.DiscardHandler)
	}
	logger := o.Follow.Logger
	fl, err := openFollower(dir, &o.Follow)
	if err != nil {
		return fmt.Errorf("zeroloss: serve follower: %w", err)
	}
	defer fl.close() // after the deferred wait below: no session is running
	logger.Info("zeroloss: follower serving", "dir", dir, "addr", ln.Addr().String(), "last_seq", fl.log.LastSeq())

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		ln.Close()
		wg.Wait()
	}()
	conns := make(chan greeted)
	acceptErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		acceptLeaders(ctx, ln, fl, &o, conns, acceptErr, &wg)
	}()

	// cur is the session: the connection Follow runs on, if any.
	type session struct {
		remote string
		cancel context.CancelFunc
		done   chan error
	}
	var cur *session
	start := func(g greeted) {
		sctx, scancel := context.WithCancel(ctx)
		s := &session{remote: remoteName(g.conn), cancel: scancel, done: make(chan error, 1)}
		go func() { s.done <- fl.serve(sctx, g.conn, g.hs) }()
		logger.Info("zeroloss: leader connected", "remote", s.remote)
		cur = s
	}
	// ended handles the end of the current session; a non-nil result ends
	// ServeFollower.
	ended := func(err error) error {
		s := cur
		cur = nil
		s.cancel()
		if parent.Err() != nil {
			return parent.Err()
		}
		if followErrorIsFatal(err) {
			logger.Error("zeroloss: follower stopped", "remote", s.remote, "error", err)
			return err
		}
		if errors.Is(err, io.EOF) {
			logger.Info("zeroloss: leader closed the link", "remote", s.remote)
		} else if !errors.Is(err, context.Canceled) {
			logger.Warn("zeroloss: leader link ended", "remote", s.remote, "error", err)
		}
		return nil
	}
	stopCurrent := func() error {
		if cur == nil {
			return nil
		}
		cur.cancel()
		return ended(<-cur.done)
	}
	for {
		var done chan error
		if cur != nil {
			done = cur.done
		}
		select {
		case <-parent.Done():
			stopCurrent()
			return parent.Err()
		case err := <-acceptErr:
			if serr := stopCurrent(); serr != nil {
				return serr
			}
			return fmt.Errorf("zeroloss: serve follower: accept on %s: %w", ln.Addr(), err)
		case g := <-conns:
			if cur != nil {
				logger.Warn("zeroloss: a new leader connection, its handshake checked, replaces the current one", "remote", remoteName(g.conn), "replaced", cur.remote)
				if err := stopCurrent(); err != nil {
					g.conn.Close()
					return err
				}
			}
			start(g)
		case err := <-done:
			if err := ended(err); err != nil {
				return err
			}
		}
	}
}

// greeted is a connection whose handshake's first half passed its checks.
type greeted struct {
	conn net.Conn
	hs   *handshake
}

// acceptLeaders accepts connections on ln, checks their handshake each in
// its own goroutine (counted in wg; at most o.MaxHandshakes at once), and
// hands over those that passed on conns until ctx ends. A failure of ln
// other than a transient one goes to errc.
func acceptLeaders(ctx context.Context, ln net.Listener, fl *followerLog, o *ServeOptions, conns chan<- greeted, errc chan<- error, wg *sync.WaitGroup) {
	logger := o.Follow.Logger
	slots := make(chan struct{}, o.MaxHandshakes)
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				errc <- err
				return
			}
			// Out of file descriptors and the like: wait and retry.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			logger.Warn("zeroloss: follower accept failed; retrying", "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			continue
		}
		delay = 0
		select {
		case slots <- struct{}{}:
		default:
			logger.Warn("zeroloss: refused a connection: too many handshakes in progress", "remote", remoteName(c), "limit", o.MaxHandshakes)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hs, err := checkHandshake(ctx, fl, c, o.HandshakeTimeout)
			<-slots
			if err != nil {
				if ctx.Err() == nil {
					logger.Warn("zeroloss: refused a leader connection", "remote", remoteName(c), "error", err)
				}
				c.Close() // after the log: the other end sees the close last
				return
			}
			select {
			case conns <- greeted{c, hs}:
			case <-ctx.Done():
				c.Close()
			}
		}()
	}
}

// checkHandshake does the TLS handshake (for a TLS connection) and the
// first half of the replication handshake on c (greet), within timeout. It
// refuses plain TCP when the follower has no secret.
func checkHandshake(ctx context.Context, fl *followerLog, c net.Conn, timeout time.Duration) (*handshake, error) {
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(hctx, func() { c.Close() })
	tc, isTLS := c.(*tls.Conn)
	var hs *handshake
	var err error
	switch {
	case isTLS:
		if err = tc.HandshakeContext(hctx); err != nil {
			err = fmt.Errorf("TLS handshake failed: %w", err)
		}
	case c.LocalAddr().Network() == "tcp" && len(fl.secret) == 0:
		err = errors.New("plain TCP without a secret (FollowOptions.Secret) is not accepted")
	}
	if err == nil {
		hs, err = fl.greet(c)
	}
	if !stop() && ctx.Err() == nil {
		// The timeout closed c, whatever greet made of it.
		return nil, fmt.Errorf("handshake not done within %v", timeout)
	}
	return hs, err
}

// remoteName names the other end of c for the log. The client end of a
// Unix socket has no name.
func remoteName(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.Network() + ":" + a.String()
	}
	return "a local process"
}

// followErrorIsFatal tells whether a connection's end makes serving unsafe
// or useless: everything but the leader closing the link, a link or
// protocol error, and the session being stopped.
func followErrorIsFatal(err error) bool {
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, errLink), errors.Is(err, ErrReplication), errors.Is(err, context.Canceled):
		return false
	}
	return true
}

// Replicator keeps a leader queue's follower attached: it dials the
// follower's address and attaches the connection (AttachReplica), and when
// the link fails, or the dial or the handshake does, it dials again after a
// backoff (ReplicatorMinBackoff doubling up to ReplicatorMaxBackoff; back to
// the minimum after a link that lasted ReplicatorMaxBackoff), until Close or
// the queue's Close. Each dial, TLS handshake included, is bounded by the
// queue's ReplicaTimeout. Failures are logged through Options.Logger (the
// first of a series as a warning, then at debug level).
//
// Replication's state is in Queue.Stats (ReplicaAttached, ReplicaAckedSeq,
// ReplicaLag); Replicator.Stats adds the dials and the last error. Its
// methods are safe for concurrent use.
type Replicator struct {
	q      *Queue
	addr   string
	dial   func(context.Context) (net.Conn, error)
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{} // closed when the dialing goroutine has returned

	minBackoff, maxBackoff time.Duration

	mu       sync.Mutex
	link     *trackedConn  // the current connection, nil if none
	attached bool          // link is attached
	changed  chan struct{} // closed and replaced when attached changes
	lastErr  error

	dials, attaches atomic.Uint64
}

// ReplicatorStats are a Replicator's counters.
type ReplicatorStats struct {
	Attached  bool   // a connection it made is attached now
	Dials     uint64 // connection attempts
	Attaches  uint64 // of which were attached (handshake done)
	LastError error  // why the last dial, handshake or link failed; nil if none has
}

// ReplicateTo makes q replicate to the follower at addr ("unix:PATH" or
// "tcp:HOST:PORT", served by ServeFollower or `zeroloss follow`), now and
// whenever the link fails, until the returned Replicator is closed or q is.
// It returns at once; dialing happens in the background (WaitAttached
// waits for it). tlsConf is the client side of TLS: Certificates for the
// leader's certificate, RootCAs to check the follower's (and ServerName
// over a Unix socket). A nil tlsConf is refused for a TCP address that is
// not loopback, and on loopback without Options.ReplicaSecret.
//
// It fails with ErrInvalidOptions (naming the address) for a malformed or
// insecure address or when q's Replication is ReplicateNone, and with
// ErrClosed when q is closed. Run one Replicator per queue: a queue holds
// one follower, and a second would be refused at each attempt.
func (q *Queue) ReplicateTo(addr string, tlsConf *tls.Config) (*Replicator, error) {
	return q.replicateTo(addr, tlsConf, ReplicatorMinBackoff, ReplicatorMaxBackoff)
}

func (q *Queue) replicateTo(addr string, tlsConf *tls.Config, minBackoff, maxBackoff time.Duration) (*Replicator, error) {
	if q.opts.Replication == ReplicateNone {
		return nil, fmt.Errorf("zeroloss: replicate to %s: %w: Replication is ReplicateNone", addr, ErrInvalidOptions)
	}
	network, address, err := splitAddr(addr)
	if err != nil {
		return nil, err
	}
	select {
	case <-q.done:
		return nil, fmt.Errorf("zeroloss: replicate to %s: %w", addr, ErrClosed)
	default:
	}
	if network == "tcp" && tlsConf == nil {
		ctx, cancel := context.WithTimeout(context.Background(), q.opts.ReplicaTimeout)
		address, err = plainTCPAddress(ctx, addr, address)
		cancel()
		if err != nil {
			return nil, err
		}
		if len(q.opts.ReplicaSecret) == 0 {
			return nil, fmt.Errorf("zeroloss: address %q: %w: plain TCP (no tls.Config) needs Options.ReplicaSecret, even on loopback; pass a *tls.Config (mutual TLS) or use a unix: address",
				addr, ErrInvalidOptions)
		}
	}
	netDialer := &net.Dialer{Timeout: q.opts.ReplicaTimeout}
	dial := func(ctx context.Context) (net.Conn, error) { return netDialer.DialContext(ctx, network, address) }
	if tlsConf != nil {
		tlsDialer := &tls.Dialer{NetDialer: netDialer, Config: tlsConf}
		dial = func(ctx context.Context) (net.Conn, error) { return tlsDialer.DialContext(ctx, network, address) }
	}
	r := &Replicator{q: q, addr: addr, dial: dial, done: make(chan struct{}), changed: make(chan struct{}),
		minBackoff: minBackoff, maxBackoff: maxBackoff}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Add(2)
	go func() { // the queue's Close stops r too
		defer r.wg.Done()
		select {
		case <-q.done:
			r.stop()
		case <-r.ctx.Done():
		}
	}()
	go func() {
		defer r.wg.Done()
		defer close(r.done)
		defer r.cancel()
		r.run()
	}()
	return r, nil
}

// run dials, attaches and waits for the link to fail, until r.ctx ends.
func (r *Replicator) run() {
	logger := r.q.logger
	backoff := r.minBackoff
	failures := 0
	for {
		r.dials.Add(1)
		conn, err := r.dial(r.ctx)
		if err == nil {
			link := &trackedConn{Conn: conn, closed: make(chan struct{})}
			r.mu.Lock()
			r.link = link
			r.mu.Unlock()
			if r.ctx.Err() != nil { // Close may have missed it
				link.Close()
			}
			err = r.q.AttachReplica(link)
			if err == nil {
				r.attaches.Add(1)
				r.setAttached(true)
				failures = 0
				start := time.Now()
				<-link.closed // the queue closes the link when it detaches the follower
				r.setAttached(false)
				if time.Since(start) >= r.maxBackoff {
					backoff = r.minBackoff
				}
				err = errors.New("the link to the follower failed (see the queue's log)")
			}
			r.mu.Lock()
			r.link = nil
			r.mu.Unlock()
		}
		if r.ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return
		}
		r.mu.Lock()
		r.lastErr = err
		r.mu.Unlock()
		failures++
		level := slog.LevelDebug
		if failures == 1 {
			level = slog.LevelWarn
		}
		logger.Log(r.ctx, level, "zeroloss: replicator: follower not attached; dialing again", "addr", r.addr, "error", err, "retry_in", backoff, "failures", failures)
		select {
		case <-time.After(backoff):
		case <-r.ctx.Done():
			return
		}
		backoff = min(2*backoff, r.maxBackoff)
	}
}

func (r *Replicator) setAttached(v bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attached = v
	close(r.changed)
	r.changed = make(chan struct{})
}

// WaitAttached blocks until a connection r made is attached, ctx ends (its
// error), or r stops (ErrClosed: r or the queue was closed).
func (r *Replicator) WaitAttached(ctx context.Context) error {
	for {
		r.mu.Lock()
		attached, changed := r.attached, r.changed
		r.mu.Unlock()
		if attached {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return fmt.Errorf("zeroloss: replicator for %s: %w", r.addr, ErrClosed)
		}
	}
}

// Stats returns r's counters. It does not block on I/O.
func (r *Replicator) Stats() ReplicatorStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ReplicatorStats{Attached: r.attached, Dials: r.dials.Load(), Attaches: r.attaches.Load(), LastError: r.lastErr}
}

// Close stops r: it closes r's connection (the follower is detached: Sends
// waiting for it under ReplicateSync get ReplicaNotAvailable), stops
// dialing and waits for r's goroutines. It is idempotent and always returns
// nil. The queue's Close also stops r, but does not wait for it; Close
// after the queue's Close waits.
func (r *Replicator) Close() error {
	r.stop()
	r.wg.Wait()
	return nil
}

// stop ends dialing and closes r's connection, without waiting.
func (r *Replicator) stop() {
	r.cancel()
	r.mu.Lock()
	if r.link != nil {
		r.link.Close()
	}
	r.mu.Unlock()
}

// trackedConn is a net.Conn that tells when it was closed: the queue closes
// a follower's link when it detaches it.
type trackedConn struct {
	net.Conn
	closed chan struct{}
	once   sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
