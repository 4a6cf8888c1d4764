package zeroloss

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestStrictProducerSpoolKeepsTopicAndTag: messages spooled while the queue
// is closed reach it, when the spool is resent, on their own topic with
// their own tag: the groups of their topic deliver them, the group of the
// default topic does not. (The loss lab's queue outage found the resend
// dropping both.)
func TestStrictProducerSpoolKeepsTopicAndTag(t *testing.T) {
	mem := vfs.NewMem()
	q := memQueue(t, mem, producerQueueOptions)
	for _, g := range []struct {
		name string
		opts ConsumerOptions
	}{{"default", ConsumerOptions{}}, {"orders", ConsumerOptions{Topic: "orders"}}, {"paid", ConsumerOptions{Topic: "orders", Tags: []string{"paid"}}}} {
		_, err := q.Consumer(g.name, &g.opts)
		require.NoError(t, err)
	}
	p := newProducer(t, q, testStrict(vfs.NewMem()))
	defer p.Close()
	require.NoError(t, q.Close())
	sent := []*Message{
		{ID: "o1", Topic: "orders", Tag: "paid", Body: []byte("1")},
		{ID: "o2", Topic: "orders", Tag: "new", Body: []byte("2")},
		{ID: "o3", Topic: "orders", Body: []byte("3")},
	}
	for _, m := range sent {
		res, err := p.Send(context.Background(), m)
		require.NoError(t, err)
		require.Equal(t, Spooled, res.Outcome, m.ID)
	}

	q = memQueue(t, mem, producerQueueOptions)
	defer q.Close()
	p.Attach(q)
	flush(t, p)
	var routes []string
	for _, s := range readBack(t, q) {
		routes = append(routes, s.Msg.ID+" "+s.Msg.Topic+"/"+s.Msg.Tag)
	}
	require.Equal(t, []string{"o1 orders/paid", "o2 orders/new", "o3 orders/"}, routes, "the spool resent each message on its topic, with its tag")

	receiveAll := func(group string, opts ConsumerOptions) []string {
		c, err := q.Consumer(group, &opts)
		require.NoError(t, err)
		var got []string
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			d, err := c.Receive(ctx)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				return got
			}
			require.NoError(t, err)
			got = append(got, d.Message.ID+" "+d.Message.Topic+"/"+d.Message.Tag)
		}
	}
	assert.Empty(t, receiveAll("default", ConsumerOptions{}), "nothing of orders on the default topic")
	assert.Equal(t, routes, receiveAll("orders", ConsumerOptions{Topic: "orders"}))
	assert.Equal(t, []string{"o1 orders/paid"}, receiveAll("paid", ConsumerOptions{Topic: "orders", Tags: []string{"paid"}}))
}
