// Package prometheus exports a zeroloss queue's counters to Prometheus: a
// Collector that reads Queue.Stats, Queue.GroupStats and Queue.TopicStats
// when it is scraped and turns them into constant metrics, so nothing has
// to be kept in sync between scrapes.
//
//	reg := prometheus.NewRegistry() // github.com/prometheus/client_golang/prometheus
//	reg.MustRegister(zlprom.NewCollector(q, nil))
//	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// It is a module of its own, so the embedded queue's go.mod stays free of
// the Prometheus client.
//
// A scrape takes the queue's short-lived mutexes only (the log's segment
// list, the transaction and dedup tables, the topic index, each group's
// pending set), each for a copy of a few counters or one pass over a small
// in-memory list (the topic index: one entry per topic). The only I/O is
// reading the oldest retained message of a topic whose oldest message
// changed since the last scrape (one frame, usually in the page cache), to
// get its append time. Send never waits on a scrape for longer than that.
//
// Latency: zeroloss_fsync_duration_seconds is a histogram of the segment
// fdatasyncs and zeroloss_send_duration_seconds one of Send and SendBatch
// calls (from the call to the return, for the calls that returned a nil
// error), from the buckets the queue counts them in (Stats.FsyncLatency and
// zeroloss.FsyncBounds, Stats.SendLatency and zeroloss.SendBounds).
//
// Labels: per-group metrics carry group and topic, per-topic metrics topic.
// The default topic is topic="", which PromQL treats as no topic label.
// Each topic adds 4 series and each group 12: 1,000 topics with a group
// each is about 16,000 series, which one Prometheus server takes easily;
// topics named after unbounded values (a user or request ID) are not.
package prometheus

import (
	"math"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/zerolossmq/zeroloss"
)

const namespace = "zeroloss"

// metric is one queue-wide metric: its description, type and how it is read
// from a Stats.
type metric struct {
	desc  *prom.Desc
	kind  prom.ValueType
	value func(*zeroloss.Stats) float64
}

// groupMetric is one per-group metric, labelled group and topic.
type groupMetric struct {
	desc  *prom.Desc
	kind  prom.ValueType
	value func(*zeroloss.GroupStats) float64
}

// topicMetric is one per-topic metric, labelled topic. ok false: no sample
// for this topic.
type topicMetric struct {
	desc  *prom.Desc
	value func(*zeroloss.TopicStats) (v float64, ok bool)
}

// Collector is a prometheus.Collector over one queue. Register it once per
// queue; give each queue of a process its own constant labels (for example
// queue="orders") so that their series differ.
type Collector struct {
	q           *zeroloss.Queue
	fsync, send *prom.Desc // histograms
	queue       []metric
	groups      []groupMetric
	topics      []topicMetric
}

// NewCollector returns a collector of q's Stats, GroupStats and TopicStats.
// labels, which may be nil, are added to every metric.
func NewCollector(q *zeroloss.Queue, labels prom.Labels) *Collector {
	c := &Collector{q: q,
		fsync: prom.NewDesc(prom.BuildFQName(namespace, "", "fsync_duration_seconds"),
			"Time the data syncs (fdatasync) of segment files took.", nil, labels),
		send: prom.NewDesc(prom.BuildFQName(namespace, "", "send_duration_seconds"),
			"Time Send and SendBatch calls took, from the call to the return (the wait for durability included); calls that returned an error are not counted.", nil, labels),
	}
	counter := func(name, help string, value func(*zeroloss.Stats) float64) {
		c.queue = append(c.queue, metric{prom.NewDesc(prom.BuildFQName(namespace, "", name), help, nil, labels), prom.CounterValue, value})
	}
	gauge := func(name, help string, value func(*zeroloss.Stats) float64) {
		c.queue = append(c.queue, metric{prom.NewDesc(prom.BuildFQName(namespace, "", name), help, nil, labels), prom.GaugeValue, value})
	}
	group := func(name, help string, value func(*zeroloss.GroupStats) float64) {
		c.groups = append(c.groups, groupMetric{prom.NewDesc(prom.BuildFQName(namespace, "group", name), help, []string{"group", "topic"}, labels), prom.GaugeValue, value})
	}
	topic := func(name, help string, value func(*zeroloss.TopicStats) (float64, bool)) {
		c.topics = append(c.topics, topicMetric{prom.NewDesc(prom.BuildFQName(namespace, "topic", name), help, []string{"topic"}, labels), value})
	}

	counter("messages_total", "Messages appended by Send and SendBatch (not duplicates, transactional halves, consumer or internal records).",
		func(s *zeroloss.Stats) float64 { return float64(s.Messages) })
	counter("appended_bytes_total", "Bytes appended to the log, all records.",
		func(s *zeroloss.Stats) float64 { return float64(s.Bytes) })
	counter("writes_total", "Write batches (one pwrite each, or one per segment).",
		func(s *zeroloss.Stats) float64 { return float64(s.Writes) })
	counter("group_commits_total", "Syncs that answered waiting Sends (FlushSync).",
		func(s *zeroloss.Stats) float64 { return float64(s.GroupCommits) })
	counter("group_commit_sends_total", "Sends answered by group commits; divided by zeroloss_group_commits_total, the mean group size.",
		func(s *zeroloss.Stats) float64 { return groupedSends(s) })
	gauge("group_commit_max_sends", "The most Sends one group commit answered since Open.",
		func(s *zeroloss.Stats) float64 { return float64(s.GroupMax) })
	counter("flush_timeouts_total", "Sends answered FlushDiskTimeout.",
		func(s *zeroloss.Stats) float64 { return float64(s.FlushTimeouts) })
	counter("waits_canceled_total", "Sends answered WaitCanceled: their context ended before the confirmation.",
		func(s *zeroloss.Stats) float64 { return float64(s.WaitsCanceled) })
	gauge("segments", "Segment files.",
		func(s *zeroloss.Stats) float64 { return float64(s.Segments) })
	counter("segment_rolls_total", "New segments started.",
		func(s *zeroloss.Stats) float64 { return float64(s.SegmentRolls) })
	counter("segment_warm_rolls_total", "New segments started on a segment zero-filled ahead (SegmentWarmup).",
		func(s *zeroloss.Stats) float64 { return float64(s.WarmRolls) })
	gauge("disk_bytes", "Bytes the segment files take, preallocation included.",
		func(s *zeroloss.Stats) float64 { return float64(s.DiskBytes) })
	counter("segments_deleted_total", "Segments deleted by retention.",
		func(s *zeroloss.Stats) float64 { return float64(s.SegmentsDeleted) })
	counter("checkpoints_total", "Consumer-state checkpoints written before deleting segments.",
		func(s *zeroloss.Stats) float64 { return float64(s.Checkpoints) })
	counter("retention_skipped_messages_total", "Messages RetentionBytes or RetentionAge deleted before a consumer group acked them.",
		func(s *zeroloss.Stats) float64 { return float64(s.RetentionSkipped) })
	gauge("dedup_entries", "IDs the dedup table holds.",
		func(s *zeroloss.Stats) float64 { return float64(s.DedupEntries) })
	counter("dedup_evictions_total", "IDs the dedup table forgot before their window ended.",
		func(s *zeroloss.Stats) float64 { return float64(s.DedupEvictions) })
	counter("duplicates_total", "Sends answered as duplicates.",
		func(s *zeroloss.Stats) float64 { return float64(s.Duplicates) })
	gauge("tx_pending", "Transactional half messages waiting for a decision.",
		func(s *zeroloss.Stats) float64 { return float64(s.TxPending) })
	counter("tx_committed_total", "Transactions committed.",
		func(s *zeroloss.Stats) float64 { return float64(s.TxCommitted) })
	counter("tx_rolled_back_total", "Transactions rolled back.",
		func(s *zeroloss.Stats) float64 { return float64(s.TxRolledBack) })
	counter("tx_checks_total", "Transaction check-backs made.",
		func(s *zeroloss.Stats) float64 { return float64(s.TxChecks) })
	counter("tx_expired_total", "Half messages rolled back after their last check.",
		func(s *zeroloss.Stats) float64 { return float64(s.TxExpired) })
	gauge("last_seq", "The last seq appended.",
		func(s *zeroloss.Stats) float64 { return float64(s.LastSeq) })
	gauge("committed_seq", "The last seq durable (and, under ReplicateSync, acknowledged by the follower): what consumers may read.",
		func(s *zeroloss.Stats) float64 { return float64(s.CommittedSeq) })
	gauge("replica_attached", "1 if a follower is attached, else 0.",
		func(s *zeroloss.Stats) float64 { return boolean(s.ReplicaAttached) })
	gauge("replica_acked_seq", "The highest seq a follower acknowledged as durable.",
		func(s *zeroloss.Stats) float64 { return float64(s.ReplicaAckedSeq) })
	gauge("replica_lag", "Log positions the follower's durable copy is behind: last seq minus replica acked seq.",
		func(s *zeroloss.Stats) float64 { return float64(s.ReplicaLag) })
	counter("replica_timeouts_total", "Sends answered FlushReplicaTimeout.",
		func(s *zeroloss.Stats) float64 { return float64(s.ReplicaTimeouts) })
	counter("replica_not_available_total", "Sends answered ReplicaNotAvailable.",
		func(s *zeroloss.Stats) float64 { return float64(s.ReplicaNotAvailable) })

	group("lag_messages", "Messages of the group's topic (and tags) not acked yet: not delivered, in flight, waiting or retrying; dead letters not counted.",
		func(g *zeroloss.GroupStats) float64 { return float64(g.Lag) })
	group("behind_positions", "Log positions between the group's cursor and the committed seq, other topics' messages and consumer records included: an upper bound on the messages not yet delivered.",
		func(g *zeroloss.GroupStats) float64 { return float64(g.Behind) })
	group("in_flight_messages", "Messages held by consumers until their ack deadline.",
		func(g *zeroloss.GroupStats) float64 { return float64(g.InFlight) })
	group("waiting_messages", "Messages waiting to be delivered again (or, delayed, for the first time).",
		func(g *zeroloss.GroupStats) float64 { return float64(g.Waiting) })
	group("retrying_messages", "Messages in the group's retry stream, waiting or in flight.",
		func(g *zeroloss.GroupStats) float64 { return float64(g.Retrying) })
	group("dead_letters", "The group's dead letters.",
		func(g *zeroloss.GroupStats) float64 { return float64(g.DeadLetters) })
	group("floor_seq", "The group's durable floor: every main-stream message below it is acked or moved.",
		func(g *zeroloss.GroupStats) float64 { return float64(g.Floor) })
	group("holds_oldest_segment", "1 if the group's floor is the lowest and the oldest segment is kept for it, else 0.",
		func(g *zeroloss.GroupStats) float64 { return boolean(g.HoldsOldest) })
	group("pinned_segments", "Segments kept for this group alone.",
		func(g *zeroloss.GroupStats) float64 { return float64(g.PinnedSegments) })
	group("pinned_bytes", "Frame bytes of the segments kept for this group alone.",
		func(g *zeroloss.GroupStats) float64 { return float64(g.PinnedBytes) })
	group("blocked_keys", "Ordered groups: keys whose head failed a delivery and is not acked yet; their later messages wait.",
		func(g *zeroloss.GroupStats) float64 { return float64(g.BlockedKeys) })
	group("blocked_key_age_seconds", "Ordered groups: time since the head of the longest blocked key was first delivered.",
		func(g *zeroloss.GroupStats) float64 { return g.BlockedKeyAge.Seconds() })

	topic("retained_messages", "Messages of the topic sent and not deleted by retention yet, acked or not.",
		func(t *zeroloss.TopicStats) (float64, bool) { return float64(t.Messages), true })
	topic("retained_bytes", "Frame bytes of the topic's retained messages.",
		func(t *zeroloss.TopicStats) (float64, bool) { return float64(t.Bytes), true })
	topic("groups", "Consumer groups reading the topic.",
		func(t *zeroloss.TopicStats) (float64, bool) { return float64(t.Groups), true })
	topic("oldest_retained_timestamp_seconds", "Unix time the topic's oldest retained message was appended; its age is time() minus this. No sample when the topic holds none.",
		func(t *zeroloss.TopicStats) (float64, bool) {
			if t.Oldest.IsZero() {
				return 0, false
			}
			return float64(t.Oldest.UnixNano()) / 1e9, true
		})
	return c
}

// groupedSends recovers the Sends answered by group commits from the
// average Stats reports (GroupAvg is that count over GroupCommits).
func groupedSends(s *zeroloss.Stats) float64 {
	return math.Round(s.GroupAvg * float64(s.GroupCommits))
}

func boolean(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// histogram returns latency counts (Stats.FsyncLatency, Stats.SendLatency:
// one per bound and a last one above them) as a histogram's count and
// cumulative buckets, keyed by upper bound in seconds. The count is the
// buckets' sum, so that it always equals the +Inf bucket.
func histogram(counts []uint64, bounds []time.Duration) (count uint64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(bounds))
	for i, n := range counts {
		count += n
		if i < len(bounds) {
			buckets[bounds[i].Seconds()] = count
		}
	}
	return count, buckets
}

// Describe sends the descriptions of every metric the collector makes.
func (c *Collector) Describe(ch chan<- *prom.Desc) {
	ch <- c.fsync
	ch <- c.send
	for _, m := range c.queue {
		ch <- m.desc
	}
	for _, m := range c.groups {
		ch <- m.desc
	}
	for _, m := range c.topics {
		ch <- m.desc
	}
}

// Collect reads the queue's Stats, GroupStats and TopicStats once and sends
// them as constant metrics.
func (c *Collector) Collect(ch chan<- prom.Metric) {
	s := c.q.Stats()
	count, buckets := histogram(s.FsyncLatency[:], zeroloss.FsyncBounds[:])
	ch <- prom.MustNewConstHistogram(c.fsync, count, s.FsyncTime.Seconds(), buckets)
	count, buckets = histogram(s.SendLatency[:], zeroloss.SendBounds[:])
	ch <- prom.MustNewConstHistogram(c.send, count, s.SendTime.Seconds(), buckets)
	for _, m := range c.queue {
		ch <- prom.MustNewConstMetric(m.desc, m.kind, m.value(&s))
	}
	for _, g := range c.q.GroupStats() {
		for _, m := range c.groups {
			ch <- prom.MustNewConstMetric(m.desc, m.kind, m.value(&g), g.Group, g.Topic)
		}
	}
	for _, t := range c.q.TopicStats() {
		for _, m := range c.topics {
			if v, ok := m.value(&t); ok {
				ch <- prom.MustNewConstMetric(m.desc, prom.GaugeValue, v, t.Topic)
			}
		}
	}
}
