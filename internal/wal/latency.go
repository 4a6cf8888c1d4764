package wal

import (
	"sort"
	"sync/atomic"
	"time"
)

// SyncBounds are the upper bounds of the sync-latency buckets, from 5µs
// (tmpfs, a battery-backed cache) to 10s (a disk in trouble); a last bucket
// counts the syncs above them.
var SyncBounds = [...]time.Duration{
	5 * time.Microsecond, 10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// SyncBuckets is the number of sync-latency buckets: one per bound and one
// above them.
const SyncBuckets = len(SyncBounds) + 1

// latency counts durations in the buckets of SyncBounds with atomics only,
// so that recording takes no lock and reading does not stop recording.
type latency struct {
	counts [SyncBuckets]atomic.Uint64
}

// bucketOf returns the index of the bucket counting d: the first whose
// bound is at least d, or the last bucket.
func bucketOf(d time.Duration) int {
	return sort.Search(len(SyncBounds), func(i int) bool { return d <= SyncBounds[i] })
}

func (h *latency) record(d time.Duration) { h.counts[bucketOf(d)].Add(1) }

// snapshot returns the counts, each read atomically (not all at one instant).
func (h *latency) snapshot() (out [SyncBuckets]uint64) {
	for i := range h.counts {
		out[i] = h.counts[i].Load()
	}
	return out
}
