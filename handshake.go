package zeroloss

import (
	"bufio"
	"fmt"
	"io"

	"github.com/zerolossmq/zeroloss/internal/repl"
)

// The follower's side of the handshake's checks (see the package repl
// comment for the messages): greet checks a leader before the connection
// may act, adopt makes the directory the leader's follower copy once the
// handshake is done.

// handshake is the first half of a handshake with a leader: the follower's
// hello and the leader's auth, checked (greet).
type handshake struct {
	br    *bufio.Reader // reads link, past the auth
	nonce [repl.NonceSize]byte
	auth  repl.Auth
}

// greet does the first half of the handshake on link: it sends the hello
// and checks the leader's answer: the protocol version, the leader's proof
// of the secret, the queue it copies, and that the leader's epoch is not
// older than the latest this follower has seen. It reads only from link and
// writes nothing to dir, so a connection that fails it disturbs nothing.
func (fl *followerLog) greet(link io.ReadWriteCloser) (*handshake, error) {
	hs := &handshake{br: bufio.NewReaderSize(link, 64<<10)}
	var err error
	if hs.nonce, err = repl.NewNonce(); err != nil {
		return nil, err
	}
	if err := repl.WriteMessage(link, &repl.Message{Type: repl.TypeHello,
		Hello: repl.Hello{Version: repl.Version, Nonce: hs.nonce}}); err != nil {
		return nil, linkErr("writing the hello", err)
	}
	m, err := repl.ReadMessage(hs.br, repl.ControlBody)
	if err == nil {
		err = repl.Expect(&m, repl.TypeAuth)
	}
	if err != nil {
		if !isProtocolError(err) {
			return nil, linkErr("reading the leader's auth", err)
		}
		return nil, protoErr("reading the leader's auth: %v", fmtErr(err))
	}
	hs.auth = m.Auth
	refuse := func(format string, args ...any) (*handshake, error) {
		reason := fmt.Sprintf(format, args...)
		tellBriefly(link, reason)
		return nil, protoErr("%s", reason)
	}
	if !repl.VerifyLeader(fl.secret, hs.nonce, &hs.auth) {
		return refuse("the leader did not prove it holds the follower's secret (FollowOptions.Secret and Options.ReplicaSecret must be the same key, or both unset)")
	}
	fl.mu.Lock()
	held := fl.identity.Queue
	fl.mu.Unlock()
	if queueID(hs.auth.Queue).isZero() {
		return refuse("the leader's auth names no queue ID")
	}
	if queue := queueID(hs.auth.Queue); !held.isZero() && queue != held {
		return refuse("this follower holds a copy of queue %s; the leader is queue %s (empty the follower's directory to copy another queue)", held, queue)
	}
	if err := fl.checkEpoch(hs.auth.Epoch); err != nil {
		return refuse("%v", err)
	}
	return hs, nil
}

// checkEpoch returns an error if a leader whose latest epoch is leader is
// stale: older than the latest epoch this follower has seen. greet checks
// it, and the welcome again: ServeFollower greets a connection while
// another leader's session runs, and that session may take a later epoch
// before the greeted connection's starts.
func (fl *followerLog) checkEpoch(leader repl.Epoch) error {
	fl.mu.Lock()
	latest := fl.seen
	if n := len(fl.epochs); n > 0 {
		latest = max(latest, fl.epochs[n-1].Num)
	}
	fl.mu.Unlock()
	if leader.Num < latest {
		return fmt.Errorf("%w: the follower has seen epoch %d, the leader's latest is %d; restart the leader as a follower",
			repl.ErrStaleLeader, latest, leader.Num)
	}
	return nil
}

// adopt makes dir the leader's follower copy, once the handshake is done and
// before the follower cuts or appends anything: its IDENTITY file takes the
// leader's queue ID (an empty follower, or an older directory without one)
// and the follower kind (a queue rejoining as its new leader's follower),
// and the promotion marker is written.
func (fl *followerLog) adopt(queue queueID) error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if held := fl.identity.Queue; !held.isZero() && held != queue {
		return protoErr("this follower holds a copy of queue %s; the leader is queue %s", held, queue)
	}
	if !fl.marked {
		if err := markFollower(fl.fs, fl.dir); err != nil {
			return fmt.Errorf("zeroloss: follow: marking %s as a follower's: %w", fl.dir, err)
		}
		fl.marked = true
	}
	want := identity{Kind: kindFollower, Queue: queue}
	if fl.identity != want {
		if err := writeIdentity(fl.fs, fl.dir, want); err != nil {
			return fmt.Errorf("zeroloss: follow: %w", err)
		}
		if fl.identity.Queue.isZero() {
			fl.logger.Info("zeroloss: follow: this directory now holds a copy of queue " + queue.String())
		}
		fl.identity = want
	}
	return nil
}
