package zeroloss

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// The topics of the kill test, and its groups: one per topic and one that
// takes two of the tags of "orders".
var (
	killTopics = []string{"", "orders", "emails", "audit"}
	killTags   = []string{"", "new", "paid", "void"}
	killGroups = map[string]ConsumerOptions{
		"g-default": {Topic: ""},
		"g-orders":  {Topic: "orders"},
		"g-emails":  {Topic: "emails"},
		"g-audit":   {Topic: "audit"},
		"g-paid":    {Topic: "orders", Tags: []string{"paid", "void"}},
	}
)

// killTopic returns the topic and tag of the i-th message of sender g: a
// pure function of the ID, so the parent knows them from the ID alone.
func killRoute(id string) (topic, tag string) {
	sum := 0
	for _, c := range []byte(id) {
		sum = sum*31 + int(c)
	}
	if sum < 0 {
		sum = -sum
	}
	return killTopics[sum%len(killTopics)], killTags[(sum/7)%len(killTags)]
}

// takes says whether a group with opts receives a message with this route.
func takes(opts ConsumerOptions, topic, tag string) bool {
	return opts.Topic == topic && (len(opts.Tags) == 0 || slices.Contains(opts.Tags, tag))
}

// topicsChild sends from 8 goroutines to the kill test's topics under
// FlushSync and consumes with every group, printing "ok ID SEQ" for every
// SendOK, "acking GROUP ID" before every Ack, "acked GROUP ID" after every
// Ack returned nil and "wrong GROUP ID"
// for a delivery a group must not get, until it is killed.
func topicsChild(dir string) {
	q, err := Open(dir, &Options{Flush: FlushSync, SegmentSize: 256 << 10, MaxMessageSize: 4 << 10, CheckpointBytes: 64 << 10})
	if err != nil {
		fmt.Fprintln(os.Stdout, "open-error", err)
		os.Exit(3)
	}
	run := os.Getenv(killChildDir + "_RUN")
	var out sync.Mutex
	say := func(line string) {
		out.Lock()
		os.Stdout.WriteString(line) // one write(2) per line
		out.Unlock()
	}
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("r%s-g%d-%d", run, g, i)
				topic, tag := killRoute(id)
				res, err := q.Send(context.Background(), &Message{ID: id, Topic: topic, Tag: tag, Body: bodyFor(id)})
				if err == nil && res.Status == SendOK {
					say(fmt.Sprintf("ok %s %d\n", id, res.Seq))
				}
			}
		}()
	}
	for name, opts := range killGroups {
		c, err := q.Consumer(name, &ConsumerOptions{Topic: opts.Topic, Tags: opts.Tags, AckTimeout: time.Minute})
		if err != nil {
			fmt.Fprintln(os.Stdout, "consumer-error", err)
			os.Exit(3)
		}
		go func() {
			for {
				d, err := c.Receive(context.Background())
				if err != nil {
					continue
				}
				m := d.Message
				if topic, tag := killRoute(m.ID); m.Topic != topic || m.Tag != tag || !takes(opts, topic, tag) ||
					!bytes.Equal(m.Body, bodyFor(m.ID)) {
					say("wrong " + name + " " + m.ID + "\n")
				}
				// The ack may land and the kill come before "acked" is
				// printed: "acking" first says it may have.
				say("acking " + name + " " + m.ID + "\n")
				if d.Ack() == nil {
					say("acked " + name + " " + m.ID + "\n")
				}
			}
		}()
	}
	select {}
}

// TestKillNineWithTopics kills a FlushSync child that sends to several
// topics and consumes them with a group per topic and a tag-filtered group,
// 20 times on one directory. After each kill the parent reopens the queue
// and drains every group: each message the child saw SendOK for is
// delivered to each group of its topic (and tags), acked by the child
// before the kill (or being acked when it came) or delivered after it, and
// no group ever gets another
// topic's message or an unlisted tag.
func TestKillNineWithTopics(t *testing.T) {
	runs := 20
	if testing.Short() {
		runs = 5
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(11, 12))
	sent := map[string]bool{}
	got := map[string]map[string]bool{}   // group → IDs acked (child) or delivered (parent)
	maybe := map[string]map[string]bool{} // group → IDs whose Ack the kill may have cut short
	for name := range killGroups {
		got[name], maybe[name] = map[string]bool{}, map[string]bool{}
	}
	for run := 0; run < runs; run++ {
		killAfter := 50 + rng.IntN(600) // lines to see before the kill
		killChildAfter(t, dir, "topics", strconv.Itoa(run), killAfter, nil, func(fields []string) bool {
			switch {
			case len(fields) == 3 && fields[0] == "ok":
				sent[fields[1]] = true
			case len(fields) == 3 && fields[0] == "acked":
				got[fields[1]][fields[2]] = true
			case len(fields) == 3 && fields[0] == "acking":
				maybe[fields[1]][fields[2]] = true
			case len(fields) == 3 && fields[0] == "wrong":
				t.Fatalf("run %d: group %s got message %s", run, fields[1], fields[2])
			case len(fields) > 0 && strings.HasSuffix(fields[0], "-error"):
				t.Fatalf("run %d: child: %s", run, strings.Join(fields, " "))
			default:
				return false
			}
			return true
		})

		// Open reads the newest checkpoint file (the child writes one
		// every 64 KiB of log) and rebuilds what a replay of the whole
		// log does.
		opts := &Options{SegmentSize: 256 << 10, MaxMessageSize: 4 << 10}
		since := time.Now().Add(30*time.Second - DefaultDedupWindow) // not IDs about to expire between the two Opens
		full := fullReplayStateOS(t, dir, opts, since)
		q := openQueue(t, dir, opts)
		require.Equal(t, full, replayedState(q, since), "run %d: Open from the checkpoint file", run)
		for name, opts := range killGroups {
			c, err := q.Consumer(name, &opts)
			require.NoError(t, err)
			for _, d := range drain(t, c) {
				m := d.Message
				topic, tag := killRoute(m.ID)
				require.True(t, m.Topic == topic && m.Tag == tag && takes(opts, topic, tag),
					"run %d: group %s got %s (topic %q, tag %q)", run, name, m.ID, m.Topic, m.Tag)
				require.Equal(t, bodyFor(m.ID), m.Body)
				got[name][m.ID] = true
			}
		}
		for id := range sent {
			topic, tag := killRoute(id)
			for name, opts := range killGroups {
				if takes(opts, topic, tag) {
					require.True(t, got[name][id] || maybe[name][id], "run %d: SendOK message %s (topic %q, tag %q) never reached group %s",
						run, id, topic, tag, name)
				}
			}
		}
		require.NoError(t, q.Close())
	}
	require.Greater(t, len(sent), runs*20)
}

// crashTopicGroups are the groups of the topics crash workload.
var crashTopicGroups = map[string]ConsumerOptions{
	"g-a":    {Topic: "a"},
	"g-b":    {Topic: "b"},
	"g-b-x":  {Topic: "b", Tags: []string{"x"}},
	"g-dflt": {Topic: ""},
}

// crashTopicsWorkload declares the groups, then sends to topics "", a and b
// (tags x, y or none) in single Sends and batches, and after every few
// sends lets each group take two messages and ack the second. It returns the IDs
// that got SendOK, every ID attempted, and per group the IDs whose Ack was
// called (acked or not).
func crashTopicsWorkload(q *Queue) (ok map[string]uint64, attempted map[string][]byte, acking map[string]map[string]bool) {
	ok, attempted, acking = map[string]uint64{}, map[string][]byte{}, map[string]map[string]bool{}
	ctx := context.Background()
	consumers := map[string]*Consumer{}
	for name, opts := range crashTopicGroups {
		c, err := q.Consumer(name, &ConsumerOptions{Topic: opts.Topic, Tags: opts.Tags, AckTimeout: time.Minute})
		if err != nil {
			return ok, attempted, acking
		}
		consumers[name], acking[name] = c, map[string]bool{}
	}
	n := 0
	next := func() *Message {
		n++
		id := fmt.Sprintf("m%03d", n)
		body := bodyFor(id)[:(n*37)%300+1]
		attempted[id] = body
		return &Message{ID: id, Topic: []string{"", "a", "b"}[n%3], Tag: []string{"", "x", "y"}[(n/3)%3], Body: body}
	}
	for round := 0; round < 18; round++ {
		if round%3 == 2 {
			results, _ := q.SendBatch(ctx, []*Message{next(), next(), next()})
			for _, r := range results {
				if r.Status == SendOK {
					ok[r.ID] = r.Seq
				}
			}
			for name, c := range consumers {
				// Take two, ack the second, hold the first: recovery
				// must redeliver it, and only it, of what lies between
				// the group's floor and its mark.
				held, err := c.Receive(doneContext) // what is there now, without waiting
				if err != nil {
					continue
				}
				d, err := c.Receive(doneContext)
				if err != nil {
					d = held // only one there: ack it
				}
				acking[name][d.Message.ID] = true
				_ = d.Ack()
			}
			continue
		}
		if res, err := q.Send(ctx, next()); err == nil && res.Status == SendOK {
			ok[res.ID] = res.Seq
		}
	}
	return ok, attempted, acking
}

// TestCrashAtEveryOperationWithTopics crashes the topics workload after
// every I/O operation in every crash mode: after recovery, each group
// receives every SendOK message of its topic and tags that it was not
// acking, and nothing of another topic or tag.
func TestCrashAtEveryOperationWithTopics(t *testing.T) {
	fs := vfs.NewMem()
	opts := crashOptions
	opts.fs = fs
	q, err := Open("/q", &opts)
	require.NoError(t, err)
	ok, _, acking := crashTopicsWorkload(q)
	require.NoError(t, q.Close())
	require.Len(t, ok, 30, "without a crash every Send is SendOK")
	for name := range crashTopicGroups {
		require.NotEmpty(t, acking[name], "group %s consumed during the workload", name)
	}
	total := fs.OpCount()

	rng := rand.New(rand.NewPCG(13, 17))
	for limit := 0; limit <= total; limit++ {
		for _, mode := range vfs.CrashModes {
			label := fmt.Sprintf("crash after op %d/%d, %v", limit, total, mode)
			fs := vfs.NewMem()
			opts := crashOptions
			opts.fs = fs
			fs.SetOpLimit(limit)
			var ok map[string]uint64
			var acking map[string]map[string]bool
			if q, err := Open("/q", &opts); err == nil {
				ok, _, acking = crashTopicsWorkload(q)
				_ = q.Close()
			}
			fs.Crash(mode, rng)
			opts.fs = fs
			q, err := Open("/q", &opts)
			require.NoError(t, err, label)
			bySeq := map[string]*record.Message{}
			for _, s := range readBack(t, q) {
				m := s.Msg
				bySeq[s.Msg.ID] = &m
			}
			for name, gopts := range crashTopicGroups {
				c, err := q.Consumer(name, &gopts)
				require.NoError(t, err, label)
				got := map[string]bool{}
				for _, d := range drainNow(t, c) {
					m := d.Message
					require.True(t, takes(gopts, m.Topic, m.Tag), "%s: group %s got %s (topic %q, tag %q)", label, name, m.ID, m.Topic, m.Tag)
					got[m.ID] = true
				}
				for id := range ok {
					m := bySeq[id]
					require.NotNil(t, m, "%s: SendOK message %s lost", label, id)
					if takes(gopts, m.Topic, m.Tag) && !acking[name][id] {
						require.True(t, got[id], "%s: SendOK message %s never reached group %s", label, id, name)
					}
				}
			}
			require.NoError(t, q.Close(), label)
		}
	}
}

// doneContext is a context that has ended: a Receive with it returns what
// it finds at once, or the context's error.
var doneContext = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// drainNow receives and acks everything the group has now, without waiting.
func drainNow(t *testing.T, c *Consumer) []*Delivery {
	t.Helper()
	var out []*Delivery
	for {
		d, err := c.Receive(doneContext)
		if err != nil {
			require.ErrorIs(t, err, context.Canceled)
			return out
		}
		require.NoError(t, d.Ack())
		out = append(out, d)
	}
}
