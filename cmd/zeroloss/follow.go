package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zerolossmq/zeroloss"
)

const followUsage = `usage: zeroloss follow --dir DIR --listen unix:PATH|tcp:HOST:PORT
                       [--tls-cert FILE --tls-key FILE --tls-ca FILE] [--secret-file FILE]
                       [--flush sync|async] [--segment-size BYTES] [--interval D]

Follow runs a replication follower as its own process: it keeps in DIR a
copy of the log of a leader queue that replicates to it (Options.Replication
set, and Queue.ReplicateTo with this address), frame for frame with the
leader's seqs, and acknowledges what it holds. It serves one leader
connection at a time; when the link drops it waits for the leader to dial
again and resumes from its own position. It runs until SIGINT or SIGTERM;
DIR then opens as a normal queue (promotion).

--listen unix:PATH creates a Unix socket with mode 0600 (a socket left by a
follower that died is replaced; a live one is an error). --listen
tcp:HOST:PORT requires mutual TLS: --tls-cert and --tls-key are the
follower's certificate, --tls-ca the authority (PEM) whose certificates
leaders must present. Only on a loopback address (127.0.0.1, ::1,
localhost) is plain TCP allowed, without the three flags, and then only
with --secret-file.

--secret-file FILE holds the key shared with the leader (its
Options.ReplicaSecret: the file's bytes as they are, at least 32; make them
random). Each end proves it holds the key in the handshake; it is never
sent. It authenticates but does not encrypt: on plain TCP, whoever can see
the traffic reads the messages. The file must not be readable by group or
others. It may be added to a Unix socket or TLS as a second check.

--flush sync (the default) acknowledges after fdatasync; --flush async after
write(2): the copy then survives the follower's process crashing but not its
machine losing power.

It prints where it starts and listens, the last seq it acknowledged (at most
once per --interval, when it changed), and where it stopped. Connection
events (a leader connected, its link ended and why, a refused handshake:
TLS, secret, queue ID or stale epoch) are logged on stderr.

Exit status: 0 stopped by a signal, 1 an error (DIR damaged or in use, a
failed fdatasync, an address that cannot be listened on, unreadable TLS
or secret files), 2 a usage error (plain TCP without --secret-file
included).
`

// followConfig is the parsed command line of follow.
type followConfig struct {
	dir, listen string
	tlsConf     *tls.Config
	secret      []byte
	flush       zeroloss.FlushMode
	segmentSize int64
	interval    time.Duration
}

func runFollow(args []string, stdout, stderr io.Writer) int {
	cfg, status, ok := parseFollow(args, stderr)
	if !ok {
		return status
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return follow(ctx, cfg, stdout, stderr)
}

// parseFollow parses follow's flags and loads the TLS files. If the command
// should stop, ok is false and status is its exit status.
func parseFollow(args []string, stderr io.Writer) (cfg followConfig, status int, ok bool) {
	fs := newFlagSet("follow", followUsage, stderr)
	fs.StringVar(&cfg.dir, "dir", "", "the follower's queue `directory` (created if missing)")
	fs.StringVar(&cfg.listen, "listen", "", "`address` to listen on for the leader: unix:PATH or tcp:HOST:PORT")
	certFile := fs.String("tls-cert", "", "the follower's TLS certificate (PEM `file`)")
	keyFile := fs.String("tls-key", "", "the key of --tls-cert (PEM `file`)")
	caFile := fs.String("tls-ca", "", "authority whose certificates leaders must present (PEM `file`)")
	secretFile := fs.String("secret-file", "", "`file` holding the key shared with the leader (Options.ReplicaSecret), at least 32 bytes, mode 0600")
	flush := fs.String("flush", "sync", "acknowledge after fdatasync (sync) or write(2) (async)")
	fs.Int64Var(&cfg.segmentSize, "segment-size", zeroloss.DefaultSegmentSize, "size of the follower's segment files in `bytes`; must exceed the leader's MaxMessageSize by the 4 KiB header")
	fs.DurationVar(&cfg.interval, "interval", 5*time.Second, "print the acknowledged seq at most this often, when it changed")
	positional, status, ok := parseArgs(fs, args)
	if !ok {
		return cfg, status, false
	}
	usageError := func(format string, args ...any) (followConfig, int, bool) {
		fmt.Fprintf(stderr, "zeroloss follow: "+format+"\n\n", args...)
		fs.Usage()
		return cfg, exitUsage, false
	}
	switch {
	case len(positional) > 0:
		return usageError("unexpected arguments %q", positional)
	case cfg.dir == "":
		return usageError("--dir is required")
	case cfg.listen == "":
		return usageError("--listen is required")
	case cfg.interval <= 0:
		return usageError("--interval is %v, want a positive duration", cfg.interval)
	}
	switch *flush {
	case "sync":
		cfg.flush = zeroloss.FlushSync
	case "async":
		cfg.flush = zeroloss.FlushAsync
	default:
		return usageError("--flush is %q, want sync or async", *flush)
	}
	tlsFlags := 0
	for _, f := range []string{*certFile, *keyFile, *caFile} {
		if f != "" {
			tlsFlags++
		}
	}
	switch tlsFlags {
	case 0:
	case 3:
		conf, err := loadFollowTLS(*certFile, *keyFile, *caFile)
		if err != nil {
			fmt.Fprintf(stderr, "zeroloss follow: %v\n", err)
			return cfg, exitFailure, false
		}
		cfg.tlsConf = conf
	default:
		return usageError("--tls-cert, --tls-key and --tls-ca go together (mutual TLS: the leader must present a certificate from --tls-ca)")
	}
	if *secretFile != "" {
		secret, err := readSecretFile(*secretFile)
		if err != nil {
			fmt.Fprintf(stderr, "zeroloss follow: %v\n", err)
			return cfg, exitFailure, false
		}
		cfg.secret = secret
	}
	if strings.HasPrefix(cfg.listen, "tcp:") && cfg.tlsConf == nil && cfg.secret == nil {
		return usageError("--listen %q: plain TCP is not authenticated; give --secret-file (the leader's Options.ReplicaSecret) or mutual TLS (--tls-cert, --tls-key, --tls-ca)", cfg.listen)
	}
	return cfg, exitOK, true
}

// readSecretFile reads the shared secret: the file's bytes, at least
// zeroloss.MinSecretSize, in a file only its owner may read.
func readSecretFile(path string) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--secret-file: %w", err)
	}
	if perm := info.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("--secret-file %s: mode %v lets group or others read or change it; chmod 600 it", path, perm)
	}
	secret, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--secret-file: %w", err)
	}
	if len(secret) < zeroloss.MinSecretSize {
		return nil, fmt.Errorf("--secret-file %s: %d bytes, want at least %d (random bytes, e.g. head -c 32 /dev/urandom)", path, len(secret), zeroloss.MinSecretSize)
	}
	return secret, nil
}

// loadFollowTLS returns the follower's side of mutual TLS.
func loadFollowTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", certFile, keyFile, err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", caFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// follow serves leaders until ctx ends and returns the exit status.
func follow(ctx context.Context, cfg followConfig, stdout, stderr io.Writer) int {
	ln, err := zeroloss.ListenFollower(cfg.listen, cfg.tlsConf)
	if err != nil {
		fmt.Fprintf(stderr, "zeroloss follow: %v\n", err)
		if errors.Is(err, zeroloss.ErrInvalidOptions) {
			return exitUsage
		}
		return exitFailure
	}
	addr := ln.Addr().Network() + ":" + ln.Addr().String()
	var acked atomic.Uint64
	started := make(chan struct{})
	var calls atomic.Int64
	opts := &zeroloss.ServeOptions{
		Follow: zeroloss.FollowOptions{
			Flush:       cfg.flush,
			SegmentSize: cfg.segmentSize,
			Secret:      cfg.secret,
			Logger:      slog.New(slog.NewTextHandler(stderr, nil)),
			OnAck: func(seq uint64) {
				acked.Store(seq)
				if calls.Add(1) == 1 {
					close(started) // the first call: the directory's position
				}
			},
		},
	}
	done := make(chan error, 1)
	go func() { done <- zeroloss.ServeFollower(ctx, cfg.dir, ln, opts) }()

	security := "plain TCP on loopback"
	switch {
	case cfg.tlsConf != nil:
		security = "mutual TLS"
	case strings.HasPrefix(addr, "unix:"):
		security = "socket mode 0600"
	}
	if cfg.secret != nil {
		security += " + shared secret"
	}
	ticker := time.NewTicker(cfg.interval)
	defer ticker.Stop()
	var printed uint64
	for {
		select {
		case <-started:
			started = nil
			printed = acked.Load()
			fmt.Fprintf(stdout, "following in %s from seq %d, listening on %s (%s, flush=%v)\n", cfg.dir, printed, addr, security, cfg.flush)
		case <-ticker.C:
			if seq := acked.Load(); seq != printed {
				printed = seq
				fmt.Fprintf(stdout, "at seq %d\n", seq)
			}
		case err := <-done:
			if ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
				fmt.Fprintf(stderr, "zeroloss follow: %v\n", err)
				if started == nil {
					fmt.Fprintf(stdout, "stopped at seq %d\n", acked.Load())
				}
				return exitFailure
			}
			fmt.Fprintf(stdout, "stopped at seq %d\n", acked.Load())
			return exitOK
		}
	}
}
