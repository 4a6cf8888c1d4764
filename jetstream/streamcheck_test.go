package jetstream_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/conformance"
	"github.com/zerolossmq/zeroloss/jetstream"
)

// createStream creates a stream the way an operator would before the
// adapter opens it: name, its subject, file storage, and whatever set
// changes.
func createStream(t *testing.T, nc *nats.Conn, name, subject string, set func(*natsjs.StreamConfig)) {
	t.Helper()
	js, err := natsjs.New(nc)
	require.NoError(t, err)
	cfg := natsjs.StreamConfig{Name: name, Subjects: []string{subject}, Storage: natsjs.FileStorage}
	if set != nil {
		set(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.CreateStream(ctx, cfg)
	require.NoError(t, err, "creating %s", name)
}

// TestInterestRetentionNoConsumer is the scenario of issue 16, path 1: the
// stream exists with interest retention and no consumer, so nats-server
// answers a publish with a PubAck and stores nothing (and remembers the ID,
// so a resend is a duplicate). Under Strict, with everything else verified,
// a Send must not return SendOK for a message no group will ever receive:
// either Open refuses the stream, or every SendOK message is delivered. The
// same for the dead letters: with the <stream>_DLQ stream on interest
// retention, a message dead-lettered by a Nack must be readable in
// DeadLetters, or Open must refuse.
func TestInterestRetentionNoConsumer(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "n1", dir, serverConfig("n1", dir, true, ""))
	nc, sys := connect(t, "app", s), connect(t, "sys", s)
	interest := func(cfg *natsjs.StreamConfig) { cfg.Retention = natsjs.InterestPolicy }

	t.Run("messages", func(t *testing.T) {
		createStream(t, nc, "INTEREST", "INTEREST.messages.*.*", interest)
		b, err := jetstream.Open(context.Background(), nc, &jetstream.Options{Stream: "INTEREST", SystemConn: sys, Strict: true})
		if err != nil {
			require.ErrorIs(t, err, jetstream.ErrGuaranteeNotMet)
			assert.Contains(t, err.Error(), "interest")
			return
		}
		defer b.Close()
		conformance.CheckSendOK(t, b, 0)
	})

	t.Run("dead letters", func(t *testing.T) {
		createStream(t, nc, "INTDLQ_DLQ", "INTDLQ.dlq.*", interest)
		b, err := jetstream.Open(context.Background(), nc, &jetstream.Options{Stream: "INTDLQ", SystemConn: sys, Strict: true})
		if err != nil {
			require.ErrorIs(t, err, jetstream.ErrGuaranteeNotMet)
			assert.Contains(t, err.Error(), "interest")
			return
		}
		defer b.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := b.Send(ctx, &zeroloss.Message{ID: "poison", Body: []byte("x")})
		require.NoError(t, err)
		require.Equal(t, zeroloss.SendOK, res.Status)
		sub, err := b.Consumer("g", &zeroloss.ConsumerOptions{AckTimeout: time.Second, MaxDeliveries: 1})
		require.NoError(t, err)
		d, err := sub.Receive(ctx)
		require.NoError(t, err)
		require.NoError(t, d.Nack(0)) // the last allowed delivery: dead-lettered
		dead, err := b.DeadLetters("g")
		require.NoError(t, err)
		require.Len(t, dead, 1, "the message confirmed with SendOK was terminated and is not among the dead letters")
		assert.Equal(t, res.Seq, dead[0].Seq)
	})
}

// streamSetting is one setting of an existing stream for TestStreamSettings.
type streamSetting struct {
	name string
	// set changes the configuration of the stream; subject is the one the
	// adapter publishes or dead-letters to (wildcard for the dead letters).
	set func(cfg *natsjs.StreamConfig, subject string)
	// sealed seals the stream after creating it (only an update can).
	sealed bool
	// require is Options.Require (AcceptBackgroundSync is always set: the
	// test isolates the stream's settings).
	require jetstream.Requirement
	// short is a word of the shortfall; empty: the setting is accepted.
	short string
	// messagesOnly: the setting is checked on the messages' stream only.
	messagesOnly bool
	// noSend: the stream never answers a publish, so Sends would only wait.
	noSend bool
	// wait is how long CheckSendOK lets the stream's time limits act.
	wait time.Duration
}

var streamSettings = []streamSetting{
	// Weaker: refused under Strict, reported otherwise.
	{name: "InterestRetention", short: "interest retention",
		set: func(c *natsjs.StreamConfig, _ string) { c.Retention = natsjs.InterestPolicy }},
	{name: "WorkQueueRetention", short: "work-queue retention",
		set: func(c *natsjs.StreamConfig, _ string) { c.Retention = natsjs.WorkQueuePolicy }},
	{name: "MaxAge", short: "MaxAge", wait: 2 * time.Second,
		set: func(c *natsjs.StreamConfig, _ string) { c.MaxAge = time.Second }},
	{name: "DiscardOldMaxMsgs", short: "DiscardOld",
		set: func(c *natsjs.StreamConfig, _ string) { c.Discard, c.MaxMsgs = natsjs.DiscardOld, 2 }},
	{name: "DiscardOldMaxBytes", short: "DiscardOld",
		set: func(c *natsjs.StreamConfig, _ string) { c.Discard, c.MaxBytes = natsjs.DiscardOld, 300 }},
	{name: "MaxMsgsPerSubject", short: "MaxMsgsPerSubject",
		set: func(c *natsjs.StreamConfig, _ string) { c.MaxMsgsPerSubject = 1 }},
	{name: "DiscardNewMaxMsgsPerSubjectEvicts", short: "MaxMsgsPerSubject",
		set: func(c *natsjs.StreamConfig, _ string) { c.Discard, c.MaxMsgsPerSubject = natsjs.DiscardNew, 1 }},
	{name: "ShortDuplicates", short: "Duplicates", wait: 1500 * time.Millisecond,
		set: func(c *natsjs.StreamConfig, _ string) { c.Duplicates = time.Second }},
	{name: "SubjectTransform", short: "rewrites the subjects",
		set: func(c *natsjs.StreamConfig, subject string) {
			// Every wildcard of the source, moved under "moved".
			dest := "moved"
			for i := range strings.Count(subject, "*") {
				dest += fmt.Sprintf(".{{wildcard(%d)}}", i+1)
			}
			c.SubjectTransform = &natsjs.SubjectTransformConfig{Source: subject, Destination: dest}
		}},
	{name: "Sealed", short: "sealed", sealed: true},
	{name: "NoAck", short: "NoAck", noSend: true,
		set: func(c *natsjs.StreamConfig, _ string) { c.NoAck = true }},
	{name: "ConsumerInactiveThreshold", short: "InactiveThreshold", messagesOnly: true,
		set: func(c *natsjs.StreamConfig, _ string) { c.ConsumerLimits.InactiveThreshold = time.Minute }},

	// Not weaker: accepted under Strict, and SendOK keeps its promise.
	{name: "DiscardNewLimits",
		set: func(c *natsjs.StreamConfig, _ string) {
			c.Discard, c.MaxMsgs, c.MaxBytes = natsjs.DiscardNew, 100, 1<<20
			c.MaxMsgsPerSubject, c.DiscardNewPerSubject = 100, true
		}},
	{name: "LongerDuplicates",
		set: func(c *natsjs.StreamConfig, _ string) { c.Duplicates = 10 * time.Minute }},
	{name: "AllowMsgTTL",
		set: func(c *natsjs.StreamConfig, _ string) { c.AllowMsgTTL = true }},
	{name: "RePublish",
		set: func(c *natsjs.StreamConfig, subject string) {
			c.RePublish = &natsjs.RePublish{Source: subject, Destination: "republished.{{wildcard(1)}}"}
			if subject[len(subject)-1] != '*' {
				c.RePublish.Destination = "republished.one"
			}
		}},
	{name: "DenyDeleteDenyPurge",
		set: func(c *natsjs.StreamConfig, _ string) { c.DenyDelete, c.DenyPurge = true, true }},
	{name: "AllowRollup",
		set: func(c *natsjs.StreamConfig, _ string) { c.AllowRollup = true }},
	{name: "MaxAgeAccepted", require: jetstream.Requirement{AcceptEviction: true},
		set: func(c *natsjs.StreamConfig, _ string) { c.MaxAge = time.Hour }},
	{name: "DiscardOldAccepted", require: jetstream.Requirement{AcceptEviction: true},
		set: func(c *natsjs.StreamConfig, _ string) {
			c.Discard, c.MaxMsgs, c.MaxMsgsPerSubject = natsjs.DiscardOld, 100, 100
		}},
}

// TestStreamSettings creates, before the adapter opens it, the messages'
// stream or the dead letters' stream with each setting that can make a
// PubAck mean less than "stored until read" (and some that cannot), and
// checks that Open under Strict refuses the weaker ones naming the setting,
// that without Strict Guarantee reports them and Send does not return
// SendOK, and that every message confirmed with SendOK is kept
// (conformance.CheckSendOK).
func TestStreamSettings(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "n1", dir, serverConfig("n1", dir, true, ""))
	nc := connect(t, "app", s)
	ctx := context.Background()
	n := 0
	for _, tt := range streamSettings {
		for _, target := range []string{"messages", "dead letters"} {
			if tt.messagesOnly && target != "messages" {
				continue
			}
			n++
			t.Run(tt.name+"/"+target, func(t *testing.T) {
				stream := fmt.Sprintf("SET%d", n)
				name, subject := stream, stream+".messages.*.*"
				if target != "messages" {
					name, subject = stream+"_DLQ", stream+".dlq.*"
				}
				createStream(t, nc, name, subject, func(c *natsjs.StreamConfig) {
					if tt.set != nil {
						tt.set(c, subject)
					}
				})
				if tt.sealed {
					seal(t, nc, name)
				}
				req := tt.require
				req.AcceptBackgroundSync = true
				opts := func(strict bool) *jetstream.Options {
					return &jetstream.Options{Stream: stream, Require: req, Strict: strict, Timeout: 2 * time.Second}
				}

				b, err := jetstream.Open(ctx, nc, opts(true))
				if tt.short == "" {
					require.NoError(t, err)
					defer b.Close()
					assert.Empty(t, b.Guarantee().Shortfalls)
					assert.True(t, b.Guarantee().KeepsMessages)
					conformance.CheckSendOK(t, b, tt.wait)
					return
				}
				require.ErrorIs(t, err, jetstream.ErrGuaranteeNotMet)
				assert.Contains(t, err.Error(), tt.short)
				assert.Contains(t, err.Error(), "stream "+name+" ")

				b, err = jetstream.Open(ctx, nc, opts(false))
				require.NoError(t, err)
				defer b.Close()
				g := b.Guarantee()
				assert.False(t, g.KeepsMessages)
				assert.Contains(t, strings.Join(g.Shortfalls, "; "), tt.short)
				if tt.noSend {
					return
				}
				send, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				res, err := b.Send(send, &zeroloss.Message{ID: "first", Body: []byte("x")})
				if err == nil {
					assert.Equal(t, zeroloss.FlushDiskTimeout, res.Status)
				} else {
					assert.ErrorIs(t, err, jetstream.ErrNotStored)
				}
				conformance.CheckSendOK(t, b, tt.wait)
			})
		}
	}
}

// seal seals the stream called name: only an update can.
func seal(t *testing.T, nc *nats.Conn, name string) {
	t.Helper()
	js, err := natsjs.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.Sealed = true
	_, err = js.UpdateStream(ctx, cfg)
	require.NoError(t, err)
}

// TestDiscardNewRefuses checks why DiscardNew limits are accepted: a full
// stream refuses the publish, and Send says nothing was stored
// (ErrNotStored), rather than confirming a message it then deletes. And a
// Mirror, which has no subjects of its own, is refused by Open.
func TestDiscardNewRefuses(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "n1", dir, serverConfig("n1", dir, true, ""))
	nc, sys := connect(t, "app", s), connect(t, "sys", s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	createStream(t, nc, "FULL", "FULL.messages.*.*", func(c *natsjs.StreamConfig) {
		c.Discard, c.MaxMsgs = natsjs.DiscardNew, 1
	})
	b, err := jetstream.Open(ctx, nc, &jetstream.Options{Stream: "FULL", SystemConn: sys, Strict: true})
	require.NoError(t, err)
	defer b.Close()
	res, err := b.Send(ctx, &zeroloss.Message{ID: "one", Body: []byte("x")})
	require.NoError(t, err)
	assert.Equal(t, zeroloss.SendOK, res.Status)
	_, err = b.Send(ctx, &zeroloss.Message{ID: "two", Body: []byte("y")})
	require.ErrorIs(t, err, jetstream.ErrNotStored)
	sub, err := b.Consumer("g", nil)
	require.NoError(t, err)
	d, err := sub.Receive(ctx)
	require.NoError(t, err)
	assert.Equal(t, "one", d.Message.ID, "the confirmed message is kept")

	createStream(t, nc, "ORIGIN", "ORIGIN.messages.*.*", nil)
	js, err := natsjs.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, natsjs.StreamConfig{Name: "MIRROR", Storage: natsjs.FileStorage,
		Mirror: &natsjs.StreamSource{Name: "ORIGIN"}})
	require.NoError(t, err)
	for _, strict := range []bool{true, false} {
		_, err = jetstream.Open(ctx, nc, &jetstream.Options{Stream: "MIRROR", SystemConn: sys, Strict: strict})
		require.ErrorIs(t, err, zeroloss.ErrInvalidOptions, "strict=%v", strict)
		assert.Contains(t, err.Error(), "does not capture")
	}
}
