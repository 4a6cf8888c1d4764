package jetstream_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/jetstream"
)

// TestGuarantee checks that the status of a Send says what the
// configuration guarantees, and that Strict refuses what is weaker than
// required: against a server with sync_interval: always and one with the
// default background sync, with and without a system-account connection to
// verify it, and with more replicas required than the stream has.
func TestGuarantee(t *testing.T) {
	dir := t.TempDir()
	always := startServer(t, "always", dir, serverConfig("always", dir+"/always", true, ""))
	background := startServer(t, "background", dir, serverConfig("background", dir+"/background", false, ""))
	type conns struct{ app, sys *nats.Conn }
	servers := map[string]conns{
		"always":     {connect(t, "app", always), connect(t, "sys", always)},
		"background": {connect(t, "app", background), connect(t, "sys", background)},
	}
	tests := []struct {
		server   string
		withSys  bool
		require  jetstream.Requirement
		status   zeroloss.SendStatus // expected without Strict; Strict refuses anything but SendOK
		shortful string              // a word of the shortfall
	}{
		{"always", true, jetstream.Requirement{}, zeroloss.SendOK, ""},
		{"always", false, jetstream.Requirement{}, zeroloss.FlushDiskTimeout, "SystemConn"},
		{"always", true, jetstream.Requirement{Replicas: 3}, zeroloss.ReplicaNotAvailable, "replica"},
		{"background", true, jetstream.Requirement{}, zeroloss.FlushDiskTimeout, "sync_interval"},
		{"background", true, jetstream.Requirement{AcceptBackgroundSync: true}, zeroloss.SendOK, ""},
		{"background", false, jetstream.Requirement{AcceptBackgroundSync: true}, zeroloss.SendOK, ""},
	}
	for i, tt := range tests {
		for _, strict := range []bool{false, true} {
			name := fmt.Sprintf("server=%s/sys=%v/require=%+v/strict=%v", tt.server, tt.withSys, tt.require, strict)
			t.Run(name, func(t *testing.T) {
				c := servers[tt.server]
				opts := &jetstream.Options{Stream: fmt.Sprintf("G%d_%v", i, strict), Require: tt.require, Strict: strict}
				if tt.withSys {
					opts.SystemConn = c.sys
				}
				b, err := jetstream.Open(context.Background(), c.app, opts)
				if strict && tt.status != zeroloss.SendOK {
					require.ErrorIs(t, err, jetstream.ErrGuaranteeNotMet)
					assert.Contains(t, err.Error(), tt.shortful)
					return
				}
				require.NoError(t, err)
				defer b.Close()
				g := b.Guarantee()
				if tt.status == zeroloss.SendOK {
					assert.Empty(t, g.Shortfalls)
				} else {
					require.NotEmpty(t, g.Shortfalls)
					assert.Contains(t, fmt.Sprint(g.Shortfalls), tt.shortful)
				}
				if tt.withSys {
					assert.Equal(t, map[string]bool{tt.server: tt.server == "always"}, g.Servers, "what the server reported")
					assert.Equal(t, tt.server == "always", g.SyncVerified)
				} else {
					assert.False(t, g.SyncVerified)
				}
				res, err := b.Send(context.Background(), &zeroloss.Message{ID: "m", Body: []byte("x")})
				require.NoError(t, err)
				assert.Equal(t, tt.status, res.Status)
				results, err := b.SendBatch(context.Background(), []*zeroloss.Message{{ID: "n", Body: []byte("y")}})
				require.NoError(t, err)
				assert.Equal(t, tt.status, results[0].Status)
			})
		}
	}
}

// TestSendErrors checks the errors that say a message was not stored, and
// ErrUnconfirmed, which says it may have been: a Send while the server is
// down gets no PubAck; resent with the same ID once the server is back, the
// message is stored once.
func TestSendErrors(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "n1", dir, serverConfig("n1", dir, true, ""))
	nc, sys := connect(t, "app", s), connect(t, "sys", s)
	b, err := jetstream.Open(context.Background(), nc, &jetstream.Options{Stream: "E", SystemConn: sys, Strict: true})
	require.NoError(t, err)
	defer b.Close()
	ctx := context.Background()

	_, err = b.Send(ctx, &zeroloss.Message{Body: []byte("x"), DeliverAt: time.Now().Add(time.Hour)})
	require.ErrorIs(t, err, jetstream.ErrUnsupported)
	_, err = b.Send(ctx, &zeroloss.Message{Body: []byte("x"), Headers: map[string]string{"Nats-Msg-Id": "forged"}})
	require.ErrorIs(t, err, zeroloss.ErrInvalidMessage)
	_, err = b.Send(ctx, nil)
	require.ErrorIs(t, err, zeroloss.ErrInvalidMessage)
	for _, group := range []string{"", "a.b", "a b", "a*", "a>"} {
		_, err = b.Consumer(group, nil)
		require.ErrorIs(t, err, zeroloss.ErrInvalidOptions, "group %q", group)
	}
	_, err = b.Consumer("g", &zeroloss.ConsumerOptions{AckTimeout: -1})
	require.ErrorIs(t, err, zeroloss.ErrInvalidOptions)
	_, err = b.Consumer("g", &zeroloss.ConsumerOptions{Ordered: true})
	require.ErrorIs(t, err, zeroloss.ErrInvalidOptions)
	require.ErrorContains(t, err, "Ordered")
	_, err = jetstream.Open(ctx, nc, &jetstream.Options{Stream: "bad.name"})
	require.ErrorIs(t, err, zeroloss.ErrInvalidOptions)

	// The server stops: no PubAck.
	s.stop()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = b.Send(short, &zeroloss.Message{ID: "during-outage", Body: []byte("x")})
	cancel()
	require.ErrorIs(t, err, jetstream.ErrUnconfirmed)
	s.start(t)
	// The client reconnects on its own; resend with the same ID until it is confirmed.
	var res zeroloss.SendResult
	require.Eventually(t, func() bool {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		res, err = b.Send(attempt, &zeroloss.Message{ID: "during-outage", Body: []byte("x")})
		return err == nil
	}, 20*time.Second, 100*time.Millisecond, "last error: %v", err)
	assert.Equal(t, zeroloss.SendOK, res.Status)
	sub, err := b.Consumer("g", &zeroloss.ConsumerOptions{AckTimeout: time.Second})
	require.NoError(t, err)
	d, err := sub.Receive(ctx)
	require.NoError(t, err)
	assert.Equal(t, "during-outage", d.Message.ID)
	assert.Equal(t, res.Seq, d.Seq)
	require.NoError(t, d.Ack())
	short, cancel = context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = sub.Receive(short)
	require.ErrorIs(t, err, context.DeadlineExceeded, "stored once")
}
