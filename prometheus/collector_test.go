package prometheus

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zerolossmq/zeroloss"
)

// openQueue opens a queue in a fresh directory; it closes with t.
func openQueue(t testing.TB, opts *zeroloss.Options) *zeroloss.Queue {
	t.Helper()
	q, err := zeroloss.Open(t.TempDir(), opts)
	require.NoError(t, err)
	t.Cleanup(func() { q.Close() })
	return q
}

func send(t testing.TB, q *zeroloss.Queue, n int) {
	t.Helper()
	for i := range n {
		res, err := q.Send(context.Background(), &zeroloss.Message{ID: fmt.Sprintf("m-%03d", i), Body: []byte("body")})
		require.NoError(t, err)
		require.Equal(t, zeroloss.SendOK, res.Status)
	}
}

// receive returns the next delivery of c, failing t after 10s.
func receive(t *testing.T, c *zeroloss.Consumer) *zeroloss.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.Receive(ctx)
	require.NoError(t, err)
	return d
}

// busyQueue returns a queue that has sent n messages to the default topic
// and four groups that did different things with them: "acked" acked every
// one, "dead" acked half and dead-lettered the other half, "retry" failed
// every one twice (each now waits an hour in the retry stream), "slow" holds
// three in flight. It has also sent n messages to topic "orders", half of
// them tagged "eu", which group "orders-eu" (tag "eu") has half acked, and
// 2 to topic "audit", which no group reads; group "idle" reads topic
// "empty", which holds no message.
func busyQueue(t *testing.T, n int) *zeroloss.Queue {
	t.Helper()
	q := openQueue(t, &zeroloss.Options{SegmentSize: 1 << 20, MaxMessageSize: 4 << 10})
	send(t, q, n)
	batch := make([]*zeroloss.Message, 0, n+2)
	for i := range n {
		m := &zeroloss.Message{Topic: "orders", Body: []byte("order")}
		if i%2 == 0 {
			m.Tag = "eu"
		}
		batch = append(batch, m)
	}
	batch = append(batch, &zeroloss.Message{Topic: "audit", Body: []byte("a")}, &zeroloss.Message{Topic: "audit", Body: []byte("b")})
	results, err := q.SendBatch(context.Background(), batch)
	require.NoError(t, err)
	require.Len(t, results, n+2)
	// A duplicate, for the dedup counters.
	res, err := q.Send(context.Background(), &zeroloss.Message{ID: "m-000", Body: []byte("body")})
	require.NoError(t, err)
	require.True(t, res.Duplicate)

	consumer := func(name string, opts *zeroloss.ConsumerOptions) *zeroloss.Consumer {
		c, err := q.Consumer(name, opts)
		require.NoError(t, err)
		return c
	}
	acked := consumer("acked", nil)
	for range n {
		require.NoError(t, receive(t, acked).Ack())
	}
	dead := consumer("dead", &zeroloss.ConsumerOptions{MaxDeliveries: 1})
	for i := range n {
		d := receive(t, dead)
		if i%2 == 0 {
			require.NoError(t, d.Ack())
		} else {
			require.NoError(t, d.Nack(0)) // the last allowed delivery: a dead letter
		}
	}
	// The first failure waits a nanosecond in memory, the second moves the
	// message to the retry stream for an hour: exactly 2n deliveries.
	retry := consumer("retry", &zeroloss.ConsumerOptions{MaxDeliveries: 5, Backoff: []time.Duration{time.Nanosecond, time.Hour}})
	for range 2 * n {
		require.NoError(t, receive(t, retry).Nack(0))
	}
	slow := consumer("slow", &zeroloss.ConsumerOptions{AckTimeout: time.Hour})
	for range 3 {
		receive(t, slow)
	}
	eu := consumer("orders-eu", &zeroloss.ConsumerOptions{Topic: "orders", Tags: []string{"eu"}, AckTimeout: time.Hour})
	for i := range n / 2 {
		d := receive(t, eu)
		if i%2 == 0 {
			require.NoError(t, d.Ack())
		}
	}
	consumer("idle", &zeroloss.ConsumerOptions{Topic: "empty"})
	return q
}

func TestCollectorMatchesStats(t *testing.T) {
	const n = 10
	q := busyQueue(t, n)
	reg := prom.NewPedanticRegistry()
	c := NewCollector(q, prom.Labels{"queue": "orders"})
	require.NoError(t, reg.Register(c))

	// The queue is quiet: nothing changes between these and the scrape.
	s := q.Stats()
	groups := q.GroupStats()
	topics := q.TopicStats()
	families, err := reg.Gather()
	require.NoError(t, err)

	got := map[string]float64{}
	groupTopic := map[string]string{} // group label → topic label
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			require.Equal(t, "orders", labels["queue"], f.GetName())
			key := f.GetName()
			if g, ok := labels["group"]; ok {
				key += "/" + g
				groupTopic[g] = labels["topic"]
			} else if topic, ok := labels["topic"]; ok {
				key += "/topic=" + topic
			}
			switch {
			case m.GetCounter() != nil:
				require.True(t, strings.HasSuffix(f.GetName(), "_total"), "counter %s", f.GetName())
				got[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				require.True(t, strings.HasSuffix(f.GetName(), "_seconds"), "histogram %s", f.GetName())
				h := m.GetHistogram()
				got[key+"/count"] = float64(h.GetSampleCount())
				got[key+"/sum"] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					got[fmt.Sprintf("%s/le=%g", key, b.GetUpperBound())] = float64(b.GetCumulativeCount())
				}
			case m.GetGauge() != nil:
				require.False(t, strings.HasSuffix(f.GetName(), "_total"), "gauge %s", f.GetName())
				got[key] = m.GetGauge().GetValue()
			default:
				t.Fatalf("%s: neither counter nor gauge", f.GetName())
			}
		}
	}

	want := map[string]float64{
		"zeroloss_messages_total":                   float64(s.Messages),
		"zeroloss_appended_bytes_total":             float64(s.Bytes),
		"zeroloss_writes_total":                     float64(s.Writes),
		"zeroloss_group_commits_total":              float64(s.GroupCommits),
		"zeroloss_group_commit_max_sends":           float64(s.GroupMax),
		"zeroloss_flush_timeouts_total":             float64(s.FlushTimeouts),
		"zeroloss_waits_canceled_total":             float64(s.WaitsCanceled),
		"zeroloss_segments":                         float64(s.Segments),
		"zeroloss_segment_rolls_total":              float64(s.SegmentRolls),
		"zeroloss_segment_warm_rolls_total":         float64(s.WarmRolls),
		"zeroloss_disk_bytes":                       float64(s.DiskBytes),
		"zeroloss_segments_deleted_total":           float64(s.SegmentsDeleted),
		"zeroloss_checkpoints_total":                float64(s.Checkpoints),
		"zeroloss_dedup_entries":                    float64(s.DedupEntries),
		"zeroloss_dedup_evictions_total":            float64(s.DedupEvictions),
		"zeroloss_duplicates_total":                 float64(s.Duplicates),
		"zeroloss_tx_pending":                       float64(s.TxPending),
		"zeroloss_tx_committed_total":               float64(s.TxCommitted),
		"zeroloss_tx_rolled_back_total":             float64(s.TxRolledBack),
		"zeroloss_tx_checks_total":                  float64(s.TxChecks),
		"zeroloss_tx_expired_total":                 float64(s.TxExpired),
		"zeroloss_last_seq":                         float64(s.LastSeq),
		"zeroloss_committed_seq":                    float64(s.CommittedSeq),
		"zeroloss_replica_attached":                 0,
		"zeroloss_replica_acked_seq":                float64(s.ReplicaAckedSeq),
		"zeroloss_replica_lag":                      float64(s.ReplicaLag),
		"zeroloss_replica_timeouts_total":           float64(s.ReplicaTimeouts),
		"zeroloss_replica_not_available_total":      float64(s.ReplicaNotAvailable),
		"zeroloss_retention_skipped_messages_total": float64(s.RetentionSkipped),
		"zeroloss_group_commit_sends_total":         float64(s.GroupCommits) * s.GroupAvg,
	}
	var cumulative uint64
	for i, n := range s.FsyncLatency {
		cumulative += n
		if i < len(zeroloss.FsyncBounds) {
			want[fmt.Sprintf("zeroloss_fsync_duration_seconds/le=%g", zeroloss.FsyncBounds[i].Seconds())] = float64(cumulative)
		}
	}
	want["zeroloss_fsync_duration_seconds/count"] = float64(cumulative)
	want["zeroloss_fsync_duration_seconds/sum"] = s.FsyncTime.Seconds()
	cumulative = 0
	for i, n := range s.SendLatency {
		cumulative += n
		if i < len(zeroloss.SendBounds) {
			want[fmt.Sprintf("zeroloss_send_duration_seconds/le=%g", zeroloss.SendBounds[i].Seconds())] = float64(cumulative)
		}
	}
	want["zeroloss_send_duration_seconds/count"] = float64(cumulative)
	want["zeroloss_send_duration_seconds/sum"] = s.SendTime.Seconds()
	for _, topic := range topics {
		key := "/topic=" + topic.Topic
		want["zeroloss_topic_retained_messages"+key] = float64(topic.Messages)
		want["zeroloss_topic_retained_bytes"+key] = float64(topic.Bytes)
		want["zeroloss_topic_groups"+key] = float64(topic.Groups)
		if !topic.Oldest.IsZero() {
			want["zeroloss_topic_oldest_retained_timestamp_seconds"+key] = float64(topic.Oldest.UnixNano()) / 1e9
		}
	}
	for _, g := range groups {
		assert.Equal(t, g.Topic, groupTopic[g.Group], "topic label of group %s", g.Group)
		for name, v := range map[string]float64{
			"lag_messages":            float64(g.Lag),
			"behind_positions":        float64(g.Behind),
			"in_flight_messages":      float64(g.InFlight),
			"waiting_messages":        float64(g.Waiting),
			"retrying_messages":       float64(g.Retrying),
			"dead_letters":            float64(g.DeadLetters),
			"floor_seq":               float64(g.Floor),
			"holds_oldest_segment":    boolean(g.HoldsOldest),
			"pinned_segments":         float64(g.PinnedSegments),
			"pinned_bytes":            float64(g.PinnedBytes),
			"blocked_keys":            float64(g.BlockedKeys),
			"blocked_key_age_seconds": g.BlockedKeyAge.Seconds(),
		} {
			want["zeroloss_group_"+name+"/"+g.Group] = v
		}
	}
	for key, v := range want {
		if assert.Contains(t, got, key) {
			assert.InDelta(t, v, got[key], 1e-9, key)
		}
	}
	for key := range got {
		assert.Contains(t, want, key, "a metric the test does not know")
	}

	// The queue did what the metrics should show.
	assert.EqualValues(t, 2*n+2, got["zeroloss_messages_total"])
	// n+1 Sends (one a duplicate) and a SendBatch.
	assert.EqualValues(t, n+2, got["zeroloss_send_duration_seconds/count"])
	assert.Positive(t, got["zeroloss_send_duration_seconds/sum"])
	assert.EqualValues(t, n, got["zeroloss_topic_retained_messages/topic="])
	assert.EqualValues(t, n, got["zeroloss_topic_retained_messages/topic=orders"])
	assert.EqualValues(t, 2, got["zeroloss_topic_retained_messages/topic=audit"])
	assert.EqualValues(t, 0, got["zeroloss_topic_retained_messages/topic=empty"])
	assert.EqualValues(t, 4, got["zeroloss_topic_groups/topic="])
	assert.EqualValues(t, 1, got["zeroloss_topic_groups/topic=orders"])
	assert.EqualValues(t, 0, got["zeroloss_topic_groups/topic=audit"])
	assert.EqualValues(t, 1, got["zeroloss_topic_groups/topic=empty"])
	assert.Greater(t, got["zeroloss_topic_retained_bytes/topic=orders"], got["zeroloss_topic_retained_bytes/topic=audit"])
	assert.NotContains(t, got, "zeroloss_topic_oldest_retained_timestamp_seconds/topic=empty", "no message, no sample")
	assert.InDelta(t, float64(time.Now().Unix()), got["zeroloss_topic_oldest_retained_timestamp_seconds/topic=audit"], 60)
	assert.Equal(t, "orders", groupTopic["orders-eu"])
	assert.Equal(t, "", groupTopic["acked"])
	// Lag counts the group's unacked messages: the eu half of orders,
	// n/2, of which a half is acked.
	assert.EqualValues(t, n/2-(n/2+1)/2, got["zeroloss_group_lag_messages/orders-eu"])
	assert.EqualValues(t, 0, got["zeroloss_group_lag_messages/acked"])
	assert.EqualValues(t, 0, got["zeroloss_group_lag_messages/dead"], "dead letters are not lag")
	assert.EqualValues(t, n, got["zeroloss_group_lag_messages/slow"])
	assert.EqualValues(t, n, got["zeroloss_group_lag_messages/retry"])
	assert.EqualValues(t, 1, got["zeroloss_duplicates_total"])
	assert.EqualValues(t, s.Fsyncs, got["zeroloss_fsync_duration_seconds/count"], "every sync in a bucket")
	assert.Positive(t, got["zeroloss_fsync_duration_seconds/sum"])
	assert.EqualValues(t, n/2, got["zeroloss_group_dead_letters/dead"])
	assert.EqualValues(t, n, got["zeroloss_group_retrying_messages/retry"])
	assert.EqualValues(t, n, got["zeroloss_group_waiting_messages/retry"])
	assert.EqualValues(t, 3, got["zeroloss_group_in_flight_messages/slow"])
	// Behind counts log positions, consumer records included: the group
	// that read three messages is further behind than the one that read
	// them all.
	assert.Greater(t, got["zeroloss_group_behind_positions/slow"], got["zeroloss_group_behind_positions/acked"])
}

func TestCollectorLint(t *testing.T) {
	q := busyQueue(t, 4)
	problems, err := testutil.CollectAndLint(NewCollector(q, nil))
	require.NoError(t, err)
	assert.Empty(t, problems)
}

// TestCollectorReadsAtScrapeTime: each scrape reads the queue anew.
func TestCollectorReadsAtScrapeTime(t *testing.T) {
	q := openQueue(t, nil)
	c := NewCollector(q, nil)
	expect := func(n int) string {
		return fmt.Sprintf(`
# HELP zeroloss_messages_total Messages appended by Send and SendBatch (not duplicates, transactional halves, consumer or internal records).
# TYPE zeroloss_messages_total counter
zeroloss_messages_total %d
`, n)
	}
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(expect(0)), "zeroloss_messages_total"))
	send(t, q, 3)
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(expect(3)), "zeroloss_messages_total"))
}

// TestCollectorAfterClose: a scrape that races Close, or comes after it,
// still answers (with the counters as they were).
func TestCollectorAfterClose(t *testing.T) {
	q := busyQueue(t, 4)
	c := NewCollector(q, nil)
	require.NoError(t, q.Close())
	assert.Positive(t, testutil.CollectAndCount(c))
}

// TestCollectorThousandTopics: every topic gets its series, and nothing
// else grows with the topics.
func TestCollectorThousandTopics(t *testing.T) {
	const topics = 1000
	q := openQueue(t, nil)
	batch := make([]*zeroloss.Message, topics)
	for i := range batch {
		batch[i] = &zeroloss.Message{Topic: fmt.Sprintf("topic-%04d", i), Body: []byte("x")}
	}
	_, err := q.SendBatch(context.Background(), batch)
	require.NoError(t, err)
	c := NewCollector(q, nil)
	for _, name := range []string{"zeroloss_topic_retained_messages", "zeroloss_topic_retained_bytes",
		"zeroloss_topic_groups", "zeroloss_topic_oldest_retained_timestamp_seconds"} {
		assert.Equal(t, topics, testutil.CollectAndCount(c, name), name)
	}
	empty := NewCollector(openQueue(t, nil), nil)
	assert.Equal(t, testutil.CollectAndCount(empty)+4*topics, testutil.CollectAndCount(c))
}
