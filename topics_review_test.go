package zeroloss

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// watchedContext reports each time a Receive is about to wait on it: Receive
// evaluates Done in its select, after its look at the log.
type watchedContext struct {
	context.Context
	waiting chan struct{}
}

func (c watchedContext) Done() <-chan struct{} {
	select {
	case c.waiting <- struct{}{}:
	default:
	}
	return c.Context.Done()
}

// TestSyncerBeforeIndexWakesWaitingReceive: under FlushAsync the background
// syncer may fdatasync (and publish as committed) a batch's frames after
// the committer wrote them and before it added them to the topic index. A
// Receive woken by that publication finds nothing of its group's in the
// index and waits for the committed seq to move again; once the frames are
// indexed it must look again, or the message waits for the next Send
// (forever on a quiet queue).
func TestSyncerBeforeIndexWakesWaitingReceive(t *testing.T) {
	var window atomic.Pointer[func()]
	opts := &Options{Flush: FlushAsync, FlushInterval: time.Hour, SegmentSize: 64 << 10, MaxMessageSize: 1024, fs: vfs.NewMem()}
	opts.afterAppend = func() {
		if f := window.Swap(nil); f != nil {
			(*f)()
		}
	}
	q, err := Open("/q", opts)
	require.NoError(t, err)
	t.Cleanup(func() { q.Close() })
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	wctx := watchedContext{Context: ctx, waiting: make(chan struct{}, 8)}
	received := make(chan error, 1)
	var body string
	go func() {
		d, err := c.Receive(wctx)
		if err == nil {
			body = string(d.Message.Body)
			err = d.Ack()
		}
		received <- err
	}()
	within(t, wctx.waiting, "the Receive to wait on an empty queue")

	looked := make(chan bool, 1)
	publish := func() {
		// The syncer's tick, between the write and the indexing.
		synced, err := q.log.Sync()
		if err != nil {
			looked <- false
			return
		}
		q.setSynced(synced)
		select {
		case <-wctx.waiting: // woken, it looked and waits again
			looked <- true
		case <-time.After(5 * time.Second):
			looked <- false
		}
	}
	window.Store(&publish)
	res, err := q.Send(context.Background(), &Message{Body: []byte("m")})
	require.NoError(t, err)
	require.Equal(t, SendOK, res.Status)
	require.True(t, within(t, looked, "the syncer's window"), "the woken Receive did not look in the window")

	require.NoError(t, within(t, received, "the Receive"), "the message, published and then indexed, was not delivered")
	require.Equal(t, "m", body)
}

// TestGroupDeclaredDuringRetentionKeepsItsTopic: a topic no group reads keeps
// its messages for a group declared later. Retention takes the groups'
// floors from its checkpoint; a group declared on such a topic after that
// checkpoint, before the segments go, is in neither the floors nor the
// topics without a group, unless both come from one look at the ledger.
func TestGroupDeclaredDuringRetentionKeepsItsTopic(t *testing.T) {
	opts := &Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10, fs: vfs.NewMem()}
	var declare atomic.Pointer[func()]
	opts.afterCheckpoint = func() {
		if f := declare.Swap(nil); f != nil {
			(*f)()
		}
	}
	q, err := Open("/q", opts)
	require.NoError(t, err)
	defer q.Close()
	ctx := context.Background()
	fast, err := q.Consumer("fast", &ConsumerOptions{Topic: "a"})
	require.NoError(t, err)
	send := func(topic string, n int) {
		t.Helper()
		for range n {
			_, err := q.Send(ctx, &Message{Topic: topic, Body: make([]byte, 500)})
			require.NoError(t, err)
		}
	}
	for range 3 {
		send("a", 40) // segments retention may delete
		drainNow(t, fast)
	}
	send("c", 3) // no group reads c yet: its messages are kept
	for range 10 {
		send("a", 40)
		drainNow(t, fast)
	}
	require.NoError(t, q.flushMarks(ctx))
	var late *Consumer
	var lateErr error
	declareLate := func() { late, lateErr = q.Consumer("late", &ConsumerOptions{Topic: "c"}) }
	declare.Store(&declareLate)
	require.NoError(t, q.retain())
	require.Nil(t, declare.Load(), "retention wrote a checkpoint")
	require.NoError(t, lateErr)
	assert.Len(t, drainNow(t, late), 3, "the group declared on c while retention ran gets c's messages")
}

// TestGroupRedeclaredOnAnotherTopic: a group deleted and declared again on
// another topic reads that topic from its oldest message and none of the
// old one's, and after restarts (the new group taking the deleted one's
// stream id, with a checkpoint between) nothing is delivered again.
func TestGroupRedeclaredOnAnotherTopic(t *testing.T) {
	fs := vfs.NewMem()
	q := consumerQueue(t, fs, nil)
	ctx := context.Background()
	send := func(q *Queue, topic string, ids ...string) {
		t.Helper()
		for _, id := range ids {
			_, err := q.Send(ctx, &Message{ID: id, Topic: topic, Body: []byte(id)})
			require.NoError(t, err)
		}
	}
	send(q, "a", "a1", "a2")
	send(q, "b", "b1", "b2")
	keep, err := q.Consumer("keep", &ConsumerOptions{Topic: "a"})
	require.NoError(t, err)
	require.Equal(t, []string{"a1", "a2"}, drainIDs(t, keep, "a"))
	g, err := q.Consumer("g", &ConsumerOptions{Topic: "a"}) // stream 2
	require.NoError(t, err)
	require.Equal(t, []string{"a1", "a2"}, drainIDs(t, g, "a"))
	require.NoError(t, q.DeleteGroup("g"))
	require.NoError(t, q.Close())

	q = consumerQueue(t, fs, nil)
	g, err = q.Consumer("g", &ConsumerOptions{Topic: "b"}) // stream 2 again
	require.NoError(t, err)
	require.Equal(t, uint16(2), g.g.id, "the deleted group's stream id is reused after a restart")
	require.Equal(t, []string{"b1", "b2"}, drainIDs(t, g, "b"))
	send(q, "a", "a3")
	send(q, "b", "b3")
	require.Equal(t, []string{"b3"}, drainIDs(t, g, "b"))
	_, _, err = q.checkpoint(ctx)
	require.NoError(t, err)
	send(q, "b", "b4")
	require.Equal(t, []string{"b4"}, drainIDs(t, g, "b"))
	require.NoError(t, q.flushMarks(ctx))
	require.NoError(t, q.Close())

	for round, wantKeep := range [][]string{{"a3"}, nil} {
		q = consumerQueue(t, fs, nil)
		g, err = q.Consumer("g", &ConsumerOptions{Topic: "b"})
		require.NoError(t, err)
		assert.Empty(t, drainIDs(t, g, "b"), "round %d: nothing again after a restart", round)
		keep, err = q.Consumer("keep", &ConsumerOptions{Topic: "a"})
		require.NoError(t, err)
		assert.Equal(t, wantKeep, drainIDs(t, keep, "a"), "round %d: keep had not read a3 before the first", round)
		require.NoError(t, q.Close())
	}
}

// TestTopicsConcurrentFlushAsync: producers send to several topics while
// each topic's group, and a tag-filtered group, consume concurrently, with
// the FlushAsync syncer publishing every millisecond (racing the committer's
// indexing). Every group gets exactly its messages, each once. Run with
// -race for the topic index's lock against the committer.
func TestTopicsConcurrentFlushAsync(t *testing.T) {
	q, err := Open("/q", &Options{Flush: FlushAsync, FlushInterval: time.Millisecond, SegmentSize: 64 << 10, MaxMessageSize: 1024, fs: vfs.NewMem()})
	require.NoError(t, err)
	defer q.Close()
	topics := []string{"", "t1", "t2", "t3"}
	tags := []string{"", "x", "y"}
	const producers, perProducer = 4, 300
	message := func(p, i int) topicMessage {
		return topicMessage{id: fmt.Sprintf("p%d-%04d", p, i), topic: topics[(p+i)%len(topics)], tag: tags[i%len(tags)]}
	}
	type groupSpec struct {
		name, topic string
		tags        []string
		want        map[string]bool
	}
	groups := []groupSpec{{"g0", "", nil, nil}, {"g1", "t1", nil, nil}, {"g2", "t2", nil, nil}, {"g3", "t3", nil, nil}, {"tagged", "t1", []string{"x"}, nil}}
	for i := range groups {
		gs := &groups[i]
		gs.want = map[string]bool{}
		for p := range producers {
			for n := range perProducer {
				if m := message(p, n); m.topic == gs.topic && (len(gs.tags) == 0 || slices.Contains(gs.tags, m.tag)) {
					gs.want[m.id] = true
				}
			}
		}
	}
	consumers := make([]*Consumer, len(groups))
	for i, gs := range groups {
		consumers[i], err = q.Consumer(gs.name, &ConsumerOptions{Topic: gs.topic, Tags: gs.tags})
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for p := range producers {
		go func() {
			for n := range perProducer {
				m := message(p, n)
				if _, err := q.Send(ctx, &Message{ID: m.id, Topic: m.topic, Tag: m.tag}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Each consumer stops once it has every message its group is owed.
	results := make(chan error, len(groups))
	for i, c := range consumers {
		gs := groups[i]
		go func() {
			got := map[string]bool{}
			for len(got) < len(gs.want) {
				d, err := c.Receive(ctx)
				if err != nil {
					results <- fmt.Errorf("group %s, %d of %d messages: %w", gs.name, len(got), len(gs.want), err)
					return
				}
				id := d.Message.ID
				switch {
				case !gs.want[id]:
					results <- fmt.Errorf("group %s got %s (topic %q, tag %q)", gs.name, id, d.Message.Topic, d.Message.Tag)
					return
				case got[id]:
					results <- fmt.Errorf("group %s got %s twice", gs.name, id)
					return
				}
				got[id] = true
				if err := d.Ack(); err != nil {
					results <- err
					return
				}
			}
			results <- nil
		}()
	}
	for range groups {
		require.NoError(t, within(t, results, "a group to get its messages"))
	}
	for i, c := range consumers {
		assert.Empty(t, drainNow(t, c), "group %s: nothing more", groups[i].name)
	}
}
