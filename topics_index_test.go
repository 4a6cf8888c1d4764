package zeroloss

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestIndexFramesBuildsTheRunsOfRecovery checks that the committer's
// indexing of whole batches (indexFrames, which extends the last runs
// without looking the route up while it repeats) builds exactly the index
// that recovery builds record by record: the same runs, counts and bytes,
// for every topic and tag. The messages come in streaks of one route, so
// that batches hold long runs, cut by route changes, consumer records and
// segment rolls (between batches, and within batches larger than a segment).
func TestIndexFramesBuildsTheRunsOfRecovery(t *testing.T) {
	fs := vfs.NewMem()
	open := func() *Queue {
		q, err := Open("/q", &Options{SegmentSize: 32 << 10, MaxMessageSize: 4 << 10, fs: fs})
		require.NoError(t, err)
		return q
	}
	q := open()
	rng := rand.New(rand.NewPCG(21, 3))
	routes := []topicMessage{{topic: ""}, {topic: "", tag: "a"}, {topic: "x"}, {topic: "x", tag: "a"}, {topic: "x", tag: "b"}}
	var msgs []topicMessage
	for len(msgs) < 3000 {
		route := routes[rng.IntN(len(routes))]
		for range 1 + rng.IntN(40) {
			msgs = append(msgs, topicMessage{id: fmt.Sprint("m", len(msgs)), topic: route.topic, tag: route.tag})
		}
	}
	c, err := q.Consumer("reader", &ConsumerOptions{Topic: "x"})
	require.NoError(t, err)
	for start := 0; start < len(msgs); start += 500 {
		sendTopics(t, q, rng, msgs[start:min(start+500, len(msgs))])
		drain(t, c) // ack records between the batches
	}
	// Batches larger than a segment: the log rolls within them, and a
	// run of one route must end at the roll.
	body := make([]byte, 2<<10)
	for i := range 4 {
		batch := make([]*Message, 20)
		for j := range batch {
			batch[j] = &Message{ID: fmt.Sprint("big", i, "-", j), Topic: routes[i].topic, Tag: routes[i].tag, Body: body}
		}
		_, err := q.SendBatch(t.Context(), batch)
		require.NoError(t, err)
	}
	live := indexRuns(q.topics)
	require.Greater(t, q.log.Stats().SegmentsRolls, uint64(5), "rolls within the run")
	require.NoError(t, q.Close())

	q = open()
	defer q.Close()
	require.Equal(t, live, indexRuns(q.topics))
}

// indexRuns copies the runs of every topic (key "topic") and tag (key
// "topic/tag") of x, with their message and byte totals.
func indexRuns(x *topicIndex) map[string]runs {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := map[string]runs{}
	for name, e := range x.topics {
		out[name] = runs{list: append([]run(nil), e.all.list...), total: e.all.total, bytes: e.all.bytes}
		for tag, rs := range e.tags {
			out[name+"/"+tag] = runs{list: append([]run(nil), rs.list...), total: rs.total, bytes: rs.bytes}
		}
	}
	return out
}
