// Package hist is a latency histogram with log-linear buckets, in the manner
// of HdrHistogram: constant memory, O(1) Record, and quantiles with a bounded
// relative error.
//
// Values are durations in nanoseconds. Values below 128ns have a bucket each
// and are exact. Above, each power of two [2^k, 2^(k+1)) is split into 64
// buckets of equal width 2^(k-6), so a bucket is at most 1/64 of the smallest
// value it holds. Quantile reports the middle of a bucket, which is therefore
// within 1/128 (0.78%, better than two significant digits) of every value the
// bucket holds.
//
//	value:   0 1 2 ... 127 | 128 130 ... 254 | 256 260 ... 508 | ...
//	buckets: one per value | 64 of width 2   | 64 of width 4   | ...
//
// A Histogram is not safe for concurrent use: give each goroutine its own and
// Merge them afterwards.
package hist

import (
	"math"
	"math/bits"
	"time"
)

const (
	exactBits  = 7                         // values below 1<<exactBits have a bucket each
	exact      = 1 << exactBits            // 128
	subBuckets = exact / 2                 // buckets per power of two above exact
	ranges     = 63 - exactBits            // powers of two from 2^7 to 2^62
	numBuckets = exact + ranges*subBuckets // 3712 counters, about 29 KiB
)

// MaxError bounds the relative error of Quantile: 1/128, about 0.78%.
const MaxError = 1.0 / (2 * subBuckets)

// Histogram counts durations in log-linear buckets. The zero value is empty
// and ready to use.
type Histogram struct {
	counts   [numBuckets]uint64
	count    uint64
	sum      float64 // nanoseconds, for Mean
	min, max int64
}

// New returns an empty histogram.
func New() *Histogram { return &Histogram{} }

// bucket returns the index of the bucket holding v (v >= 0).
func bucket(v int64) int {
	if v < exact {
		return int(v)
	}
	k := bits.Len64(uint64(v)) - 1 // 2^k <= v < 2^(k+1), k >= exactBits
	shift := k - (exactBits - 1)   // bucket width is 2^shift
	sub := int(v>>shift) - subBuckets
	return exact + (k-exactBits)*subBuckets + sub
}

// bounds returns the smallest value of bucket i and the bucket's width.
func bounds(i int) (lo, width int64) {
	if i < exact {
		return int64(i), 1
	}
	r, sub := (i-exact)/subBuckets, (i-exact)%subBuckets
	shift := r + 1 // r = k - exactBits, shift = k - exactBits + 1
	return int64(subBuckets+sub) << shift, 1 << shift
}

// Record adds one duration. Negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucket(v)]++
	if h.count == 0 || v < h.min {
		h.min = v
	}
	if h.count == 0 || v > h.max {
		h.max = v
	}
	h.count++
	h.sum += float64(v)
}

// Merge adds every value recorded in o to h. o is unchanged.
func (h *Histogram) Merge(o *Histogram) {
	if o.count == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.count == 0 || o.min < h.min {
		h.min = o.min
	}
	if h.count == 0 || o.max > h.max {
		h.max = o.max
	}
	h.count += o.count
	h.sum += o.sum
}

// Count returns the number of values recorded.
func (h *Histogram) Count() uint64 { return h.count }

// Min returns the smallest value recorded (exact), or 0 if none.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max returns the largest value recorded (exact), or 0 if none.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the mean of the values recorded (exact up to float64
// rounding), or 0 if none.
func (h *Histogram) Mean() time.Duration {
	if h.count == 0 {
		return 0
	}
	return time.Duration(math.Round(h.sum / float64(h.count)))
}

// Quantile returns the q-quantile (q in [0, 1]; 0.99 is p99) of the values
// recorded, or 0 if none. The exact quantile is the nearest-rank value v: the
// ceil(q*Count())-th smallest (the smallest for q=0). The result r is within
// MaxError of it: |r - v| <= v/128. The smallest and largest ranks (q=0,
// q=1) are exact: Min and Max.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(h.count)))
	rank = min(max(rank, 1), h.count)
	switch rank {
	case 1:
		return time.Duration(h.min)
	case h.count:
		return time.Duration(h.max)
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, width := bounds(i)
			mid := lo + width/2
			if width == 1 {
				mid = lo
			}
			// min and max are exact and lie in the first and last buckets:
			// clamping to them only moves the result closer.
			return time.Duration(min(max(mid, h.min), h.max))
		}
	}
	return time.Duration(h.max) // unreachable: the counts sum to count
}
