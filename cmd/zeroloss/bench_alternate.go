package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/hist"
	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// Alternating cases (cmd/zeroloss bench): a replicated leader, the strict
// producer or transactions take turns with plain flush=sync Sends to another
// queue, so their ratio to it is free of the disk's drift.

// benchRound is how long one side of a kindAlternating case sends before
// the other side's turn.
const benchRound = 250 * time.Millisecond

// alternated is what runAlternating measured.
type alternated struct {
	h              *hist.Histogram // the variant's Sends
	sent, baseSent int64           // acknowledged messages of each side
	elapsed        time.Duration   // the variant's rounds, in total
	baseElapsed    time.Duration   // the baseline's rounds, in total
	groupAvg       float64         // the variant's queue: Sends per fdatasync
	verified       string          // "ok" or what either side's directories got wrong
}

// benchSender is one side of a kindAlternating case: a queue (and what
// comes with it: a follower, a spool) in its own directories.
type benchSender struct {
	// send sends one 1 KiB message and returns nil once it is acknowledged
	// as the side promises (SendOK; Sent; a committed transaction).
	send func(ctx context.Context) error
	// stats is the side's queue's Stats.
	stats func() zeroloss.Stats
	// stop waits for whatever is still settling (a follower catching up),
	// then closes everything; it returns an error if that fails.
	stop func() error
	// verify checks, once stopped, that the directories hold exactly sent
	// messages.
	verify func(sent int64) error
	// cleanup, if not nil, removes what the side keeps outside the case's
	// directory; it runs last.
	cleanup func()
}

// runAlternating runs case c (kindAlternating) in dir for d: plain
// flush=sync Sends to one queue and the case's variant to another, from
// c.producers goroutines each, in alternating rounds of about benchRound,
// d/2 each side in all, then stops both and verifies what they hold.
// The variant stops early once it has sent benchMaxMessages.
func runAlternating(ctx context.Context, c benchCase, dir string, d time.Duration) (a alternated, err error) {
	a.h = hist.New()
	base, err := openPlainSender(filepath.Join(dir, "base"))
	if err != nil {
		return a, err
	}
	var variant *benchSender
	switch c.variant {
	case variantReplicateAsync:
		variant, err = openReplicatedSender(filepath.Join(dir, "variant"), zeroloss.ReplicateAsync)
	case variantReplicateSync:
		variant, err = openReplicatedSender(filepath.Join(dir, "variant"), zeroloss.ReplicateSync)
	case variantStrict:
		variant, err = openStrictSender(filepath.Join(dir, "variant"))
	case variantTx:
		variant, err = openTxSender(filepath.Join(dir, "variant"))
	default:
		err = fmt.Errorf("unknown variant %d", c.variant)
	}
	if err != nil {
		return a, errors.Join(err, base.stop())
	}
	if variant.cleanup != nil {
		defer variant.cleanup()
	}
	rounds := max(1, int(d/(2*benchRound)))
	slice := d / time.Duration(2*rounds)
	for i := 0; i < rounds && ctx.Err() == nil && err == nil && a.sent < benchMaxMessages; i++ {
		var (
			n       int64
			elapsed time.Duration
		)
		n, elapsed, err = sendFor(ctx, base.send, c.producers, slice, nil)
		a.baseSent, a.baseElapsed = a.baseSent+n, a.baseElapsed+elapsed
		if err != nil {
			break
		}
		n, elapsed, err = sendFor(ctx, variant.send, c.producers, slice, a.h)
		a.sent, a.elapsed = a.sent+n, a.elapsed+elapsed
	}
	a.groupAvg = variant.stats().GroupAvg
	if err = errors.Join(err, base.stop(), variant.stop()); err != nil {
		return a, err
	}
	a.verified = "ok"
	if verr := errors.Join(base.verify(a.baseSent), variant.verify(a.sent)); verr != nil {
		a.verified = verr.Error()
	}
	return a, nil
}

// errEnough, returned by a send function, stops its producer quietly: the
// case has sent as many messages as it may.
var errEnough = errors.New("enough messages sent")

// sendFor calls send from producers goroutines, each one call at a time,
// until d has passed, and returns how many returned nil and how long it
// took until the last returned. Each call's latency goes to h unless h is
// nil. An error that is not ctx's stops the round and is returned.
func sendFor(ctx context.Context, send func(context.Context) error, producers int, d time.Duration, h *hist.Histogram) (sent int64, elapsed time.Duration, err error) {
	hists := make([]*hist.Histogram, producers)
	errs := make([]error, producers)
	var (
		count atomic.Int64
		wg    sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for p := range producers {
		hists[p] = hist.New()
		wg.Go(func() {
			for now := time.Now(); now.Before(deadline) && ctx.Err() == nil; {
				err := send(ctx)
				end := time.Now()
				if errors.Is(err, errEnough) {
					return
				}
				if err != nil {
					if ctx.Err() == nil {
						errs[p] = fmt.Errorf("producer %d: %w", p, err)
					}
					return
				}
				hists[p].Record(end.Sub(now))
				count.Add(1)
				now = end
			}
		})
	}
	wg.Wait()
	elapsed = time.Since(start)
	if h != nil {
		for _, ph := range hists {
			h.Merge(ph)
		}
	}
	return count.Load(), elapsed, errors.Join(errs...)
}

// sendOK is the error of a Send that returned status instead of SendOK.
func sendOK(res zeroloss.SendResult, err error) error {
	if err == nil && res.Status != zeroloss.SendOK {
		err = fmt.Errorf("status %v, want SendOK", res.Status)
	}
	return err
}

// openPlainSender opens a flush=sync queue in dir (default options) whose
// send is one Send.
func openPlainSender(dir string) (*benchSender, error) {
	q, err := zeroloss.Open(dir, &zeroloss.Options{Flush: zeroloss.FlushSync})
	if err != nil {
		return nil, err
	}
	body := benchBody(benchMessageSize)
	return &benchSender{
		send:   func(ctx context.Context) error { return sendOK(q.Send(ctx, &zeroloss.Message{Body: body})) },
		stats:  q.Stats,
		stop:   q.Close,
		verify: func(sent int64) error { return verifyMessages(dir, sent) },
	}, nil
}

// openStrictSender opens a flush=sync queue in dir/queue and a strict
// Producer over it spooling to dir/spool; its send is Producer.Send, which
// must answer Sent. The spool must be empty when it stops.
func openStrictSender(dir string) (*benchSender, error) {
	queueDir := filepath.Join(dir, "queue")
	q, err := zeroloss.Open(queueDir, &zeroloss.Options{Flush: zeroloss.FlushSync})
	if err != nil {
		return nil, err
	}
	p, err := zeroloss.NewProducer(q, &zeroloss.ProducerOptions{Strict: true, SpoolDir: filepath.Join(dir, "spool")})
	if err != nil {
		return nil, errors.Join(err, q.Close())
	}
	body := benchBody(benchMessageSize)
	spooled := 0
	return &benchSender{
		send: func(ctx context.Context) error {
			res, err := p.Send(ctx, &zeroloss.Message{Body: body})
			if err == nil && res.Outcome != zeroloss.Sent {
				err = fmt.Errorf("strict producer: outcome %v, want Sent", res.Outcome)
			}
			return err
		},
		stats: q.Stats,
		stop: func() error {
			spooled = p.Spooled()
			return errors.Join(p.Close(), q.Close())
		},
		verify: func(sent int64) error {
			if spooled != 0 {
				return fmt.Errorf("the strict producer's spool holds %d messages, want 0", spooled)
			}
			return verifyMessages(queueDir, sent)
		},
	}, nil
}

// openTxSender opens a flush=sync queue in dir whose send is
// SendInTransaction with a local transaction that commits: a half, then
// its commit. No half may be left pending.
func openTxSender(dir string) (*benchSender, error) {
	q, err := zeroloss.Open(dir, &zeroloss.Options{Flush: zeroloss.FlushSync})
	if err != nil {
		return nil, err
	}
	body := benchBody(benchMessageSize)
	commit := func(context.Context) zeroloss.TxState { return zeroloss.TxCommit }
	pending := 0
	return &benchSender{
		send: func(ctx context.Context) error {
			res, state, err := q.SendInTransaction(ctx, &zeroloss.Message{Body: body}, commit)
			if err == nil && state != zeroloss.TxCommit {
				err = fmt.Errorf("transaction: state %v, want TxCommit", state)
			}
			return sendOK(res, err)
		},
		stats: q.Stats,
		stop: func() error {
			pending = q.Stats().TxPending
			return q.Close()
		},
		verify: func(sent int64) error {
			if pending != 0 {
				return fmt.Errorf("%d transactions pending after every one committed", pending)
			}
			return verifyTransactions(dir, sent)
		},
	}, nil
}

// verifyTransactions reopens the closed queue's log in dir and checks that
// it recovers cleanly and holds exactly want halves and want commits (the
// messages that name a half), each commit naming a distinct half that
// precedes it, and every body of the bench's size.
func verifyTransactions(dir string, want int64) error {
	halves := map[uint64]bool{} // seq -> committed
	var commits int64
	rec, err := wal.ReadDurable(dir, wal.Options{}, func(r record.Record) error {
		if r.Type != record.TypeMessage && r.Type != record.TypeHalf {
			return nil
		}
		m, err := record.DecodeMessage(r.Payload)
		if err != nil {
			return fmt.Errorf("seq %d: %w", r.Seq, err)
		}
		if len(m.Body) != benchMessageSize {
			return fmt.Errorf("seq %d: body of %d bytes, want %d", r.Seq, len(m.Body), benchMessageSize)
		}
		if r.Type == record.TypeHalf {
			halves[r.Seq] = false
			return nil
		}
		committed, ok := halves[m.HalfSeq]
		switch {
		case m.HalfSeq == 0:
			return fmt.Errorf("seq %d: a message outside any transaction", r.Seq)
		case !ok:
			return fmt.Errorf("seq %d commits half %d, which the log does not hold before it", r.Seq, m.HalfSeq)
		case committed:
			return fmt.Errorf("seq %d commits half %d a second time", r.Seq, m.HalfSeq)
		}
		halves[m.HalfSeq] = true
		commits++
		return nil
	})
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	if rec.Unclean || rec.Torn != nil {
		return fmt.Errorf("reopen after a clean Close: unclean=%v torn=%+v", rec.Unclean, rec.Torn)
	}
	if int64(len(halves)) != want || commits != want {
		return fmt.Errorf("the log holds %d halves and %d commits, SendInTransaction committed %d", len(halves), commits, want)
	}
	return nil
}

// openReplicatedSender opens a flush=sync leader in dir/leader with
// replication mode and attaches a follower to it: zeroloss.Follow
// (FlushSync) in this process, over a Unix socket, in a new directory on
// /dev/shm when it is a tmpfs (benchTmpfs), else in dir/follower. Its send
// is one Send on the leader. stop waits (at most a minute) until the
// follower has acknowledged every seq, closes the leader, which ends
// Follow, and waits for it; verify checks both directories; cleanup removes
// the follower's directory from /dev/shm.
func openReplicatedSender(dir string, mode zeroloss.ReplicationMode) (_ *benchSender, err error) {
	var cleanups []func()
	defer func() {
		if err != nil {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
			}
		}
	}()
	leaderDir, followerDir := filepath.Join(dir, "leader"), filepath.Join(dir, "follower")
	removeFollower := func() {}
	if shm := benchTmpfs(); shm != "" {
		if followerDir, err = os.MkdirTemp(shm, "zeroloss-bench-follower-"); err != nil {
			return nil, err
		}
		removeFollower = func() { os.RemoveAll(followerDir) }
		cleanups = append(cleanups, removeFollower)
	}
	// The socket in a short directory of its own: --dir can be long, and
	// socket paths are limited to about 100 bytes.
	sockDir, err := os.MkdirTemp("", "zlb")
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() { os.RemoveAll(sockDir) })
	q, err := zeroloss.Open(leaderDir, &zeroloss.Options{Flush: zeroloss.FlushSync, Replication: mode})
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() { q.Close() })
	sock := filepath.Join(sockDir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	followCtx, cancel := context.WithCancel(context.Background())
	followed := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			followed <- fmt.Errorf("accept: %w", err)
			return
		}
		followed <- zeroloss.Follow(followCtx, followerDir, conn, nil)
	}()
	// Registered after q.Close: runs before it, so Follow ends for certain.
	cleanups = append(cleanups, func() { cancel(); ln.Close(); <-followed })
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	if err := q.AttachReplica(conn); err != nil {
		return nil, err
	}
	body := benchBody(benchMessageSize)
	return &benchSender{
		send:  func(ctx context.Context) error { return sendOK(q.Send(ctx, &zeroloss.Message{Body: body})) },
		stats: q.Stats,
		stop: func() error {
			defer os.RemoveAll(sockDir)
			err := waitReplicated(q, time.Minute)
			err = errors.Join(err, q.Close())
			select {
			case ferr := <-followed:
				if ferr != nil && !errors.Is(ferr, io.EOF) { // the leader closing the link ends Follow with io.EOF
					err = errors.Join(err, fmt.Errorf("follower: %w", ferr))
				}
			case <-time.After(30 * time.Second):
				cancel()
				<-followed
				err = errors.Join(err, errors.New("the follower did not stop within 30s of the leader's Close"))
			}
			cancel()
			return err
		},
		verify: func(sent int64) error {
			if err := verifyMessages(leaderDir, sent); err != nil {
				return fmt.Errorf("leader: %w", err)
			}
			if err := verifyMessages(followerDir, sent); err != nil {
				return fmt.Errorf("follower: %w", err)
			}
			return nil
		},
		cleanup: removeFollower,
	}, nil
}

// waitReplicated waits until the follower attached to q has acknowledged
// every seq of q's log (ReplicateAsync leaves a lag when Send returns), for
// at most timeout.
func waitReplicated(q *zeroloss.Queue, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st := q.Stats()
		switch {
		case !st.ReplicaAttached:
			return errors.New("the follower detached")
		case st.ReplicaLag == 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("the follower still lags %d seqs behind seq %d after %v", st.ReplicaLag, st.LastSeq, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// benchTmpfs returns /dev/shm if /proc/mounts lists it as a tmpfs, else "".
func benchTmpfs() string {
	const shm = "/dev/shm"
	data, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(data)) {
		// device mount-point type options dump pass
		if f := strings.Fields(line); len(f) >= 3 && f[1] == shm && f[2] == "tmpfs" {
			return shm
		}
	}
	return ""
}
