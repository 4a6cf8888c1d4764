package jetstream_test

import (
	"context"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/jetstream"
)

// TestTopicRefusals: what the topics mapping cannot take is refused with
// an error that says why: a stream created before topics (its subject
// carries no topic), a group whose durable consumer filters on something
// other than a topic's subjects, and an ID a NATS header would change (and
// so deduplicate with another).
func TestTopicRefusals(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "n1", dir, serverConfig("n1", dir, true, ""))
	nc, sys := connect(t, "app", s), connect(t, "sys", s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("stream before topics", func(t *testing.T) {
		createStream(t, nc, "OLD", "OLD.messages", nil)
		_, err := jetstream.Open(ctx, nc, &jetstream.Options{Stream: "OLD", SystemConn: sys, Strict: true})
		require.ErrorIs(t, err, zeroloss.ErrInvalidOptions)
		assert.Contains(t, err.Error(), "does not capture the subjects OLD.messages.*.*")
	})

	b, err := jetstream.Open(ctx, nc, &jetstream.Options{Stream: "NEW", SystemConn: sys, Strict: true})
	require.NoError(t, err)
	defer b.Close()

	t.Run("consumer not on a topic", func(t *testing.T) {
		js, err := natsjs.New(nc)
		require.NoError(t, err)
		stream, err := js.Stream(ctx, "NEW")
		require.NoError(t, err)
		for _, filter := range []string{"NEW.messages.>", "NEW.messages.*.*", ""} {
			_, err = stream.CreateOrUpdateConsumer(ctx, natsjs.ConsumerConfig{
				Durable: "foreign", AckPolicy: natsjs.AckExplicitPolicy, FilterSubject: filter})
			require.NoError(t, err)
			_, err = b.Consumer("foreign", nil)
			require.ErrorIs(t, err, zeroloss.ErrInvalidOptions, "filter %q", filter)
			assert.Contains(t, err.Error(), "ConsumerOptions.Topic")
			info, err := stream.Consumer(ctx, "foreign")
			require.NoError(t, err)
			assert.Equal(t, filter, info.CachedInfo().Config.FilterSubject, "left as it was")
			require.NoError(t, stream.DeleteConsumer(ctx, "foreign"))
		}
	})

	t.Run("ID a header changes", func(t *testing.T) {
		for _, id := range []string{"trailing ", "tab\t", "line\nbreak", "cr\r"} {
			m := &zeroloss.Message{ID: id, Body: []byte("x")}
			_, err := b.Send(ctx, m)
			require.ErrorIs(t, err, zeroloss.ErrInvalidMessage, "ID %q", id)
			assert.Contains(t, err.Error(), "Message.ID")
			_, err = b.SendBatch(ctx, []*zeroloss.Message{m})
			require.ErrorIs(t, err, zeroloss.ErrInvalidMessage, "ID %q", id)
		}
		// Leading white space is carried: the topic's token comes first.
		res, err := b.Send(ctx, &zeroloss.Message{ID: " leading", Body: []byte("x")})
		require.NoError(t, err)
		sub, err := b.Consumer("g", nil)
		require.NoError(t, err)
		d, err := sub.Receive(ctx)
		require.NoError(t, err)
		assert.Equal(t, res.Seq, d.Seq)
		assert.Equal(t, " leading", d.Message.ID)
		require.NoError(t, d.Ack())
	})
}
