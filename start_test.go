package zeroloss

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestStartIsPerSubscription: ConsumerOptions.Start is the per-subscription
// start position Watermill calls NewSubscriberReceivesOldMessages. A group
// that does not exist yet starts where its first Consumer's Start says
// (StartOldest, the default: every retained message, those sent before it
// existed included; StartLatest: only later ones), each group on its own; a
// group that exists keeps its position whatever Start a later Consumer
// names, in this process and after a restart.
func TestStartIsPerSubscription(t *testing.T) {
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, nil)
	sendN(t, q, "old", 3)

	oldest, err := q.Consumer("oldest", nil) // the default is StartOldest
	require.NoError(t, err)
	latest, err := q.Consumer("latest", &ConsumerOptions{Start: StartLatest})
	require.NoError(t, err)
	sendN(t, q, "new", 1)

	for _, want := range []string{"old-000", "old-001", "old-002", "new-000"} {
		d := receive(t, oldest)
		require.Equal(t, want, d.Message.ID, "a new group receives the messages sent before it existed")
		require.NoError(t, d.Ack())
	}
	d := receive(t, latest)
	require.Equal(t, "new-000", d.Message.ID, "StartLatest skips what was sent before the group existed")
	require.NoError(t, d.Ack())
	nothing(t, latest)

	// A second subscription to an existing group continues it, whatever
	// its Start: the group's position is durable, not the Consumer's.
	again, err := q.Consumer("latest", &ConsumerOptions{Start: StartOldest})
	require.NoError(t, err)
	nothing(t, again)
	require.NoError(t, q.Close())

	q = consumerQueue(t, fs, nil)
	defer q.Close()
	sendN(t, q, "after", 1)
	for _, name := range []string{"oldest", "latest"} {
		c, err := q.Consumer(name, &ConsumerOptions{Start: StartOldest})
		require.NoError(t, err)
		d := receive(t, c)
		assert.Equal(t, "after-000", d.Message.ID, "group %s continues where it stopped after a restart", name)
		require.NoError(t, d.Ack())
		nothing(t, c)
	}
	late, err := q.Consumer("late", nil)
	require.NoError(t, err)
	for _, want := range []string{"old-000", "old-001", "old-002", "new-000", "after-000"} {
		d := receive(t, late)
		require.Equal(t, want, d.Message.ID, "a group created after a restart receives every retained message")
		require.NoError(t, d.Ack())
	}
}
