package zeroloss

import (
	"bufio"
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/repl"
)

// ServeFollower checks a connection's handshake (greet) while the current
// session runs, and starts the connection's session later. A stale leader
// greeted while the follower had not yet seen the later epoch must still be
// refused if, by the time its session starts, the follower has followed a
// later leader: otherwise its welcome cuts records the later leader's Sends
// were acknowledged on (ReplicateSync).
func TestAGreetedLeaderTurnedStaleIsRefusedBeforeItCuts(t *testing.T) {
	dirL, dirF := t.TempDir(), t.TempDir()
	opts := Options{Replication: ReplicateSync}
	q, err := Open(dirL, &opts)
	require.NoError(t, err)
	stale := q.epochs[len(q.epochs)-1] // the term a stale leader still holds
	require.NoError(t, q.Close())
	q, err = Open(dirL, &opts) // the next term
	require.NoError(t, err)
	defer q.Close()
	require.Greater(t, q.epochs[len(q.epochs)-1].Num, stale.Num)

	fl, err := openFollower(dirF, nil)
	require.NoError(t, err)
	defer fl.close()

	// The stale leader's connection passes greet: the follower is empty.
	sa, sb := net.Pipe()
	sbr := bufio.NewReader(sa)
	go func() {
		defer sa.Close()
		if _, err := fakeLeaderHandshake(sa, sbr, nil, q.identity.Queue, stale); err != nil {
			return
		}
		// The stale leader asks the follower to cut everything, then goes.
		repl.WriteMessage(sa, &repl.Message{Type: repl.TypeWelcome,
			Welcome: repl.Welcome{Version: repl.Version, From: 1, Epochs: []repl.Epoch{stale}}})
	}()
	hs, err := fl.greet(sb)
	require.NoError(t, err)

	// Meanwhile the current leader's session runs: its Sends are acked by
	// the follower.
	la, lb := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	session := make(chan error, 1)
	go func() { session <- fl.serve(ctx, lb, nil) }()
	require.NoError(t, q.AttachReplica(la))
	ids := sendIDs(t, q, "acked", 5, SendOK)
	cancel()
	<-session
	acked := fl.log.LastSeq()
	require.GreaterOrEqual(t, acked, uint64(len(ids)))

	// Then the stale connection's session starts.
	err = fl.serve(context.Background(), sb, hs)
	require.ErrorIs(t, err, ErrReplication)
	assert.ErrorContains(t, err, "stale")
	assert.Equal(t, acked, fl.log.LastSeq(), "the stale leader cut records the follower acknowledged")
}
