package hist

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBuckets(t *testing.T) {
	// Every bucket's bounds map back to it, and buckets tile the values.
	var next int64
	for i := range numBuckets {
		lo, width := bounds(i)
		require.Equal(t, next, lo, "bucket %d starts where bucket %d ends", i, i-1)
		require.Equal(t, i, bucket(lo), "lo of bucket %d", i)
		require.Equal(t, i, bucket(lo+width-1), "hi of bucket %d", i)
		if i >= exact {
			assert.LessOrEqual(t, float64(width)/2, float64(lo)*MaxError, "bucket %d too wide", i)
		}
		next = lo + width
	}
	assert.Equal(t, numBuckets-1, bucket(math.MaxInt64))
}

// exactQuantile is the nearest-rank quantile of sorted values.
func exactQuantile(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func TestQuantileWithinBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	distributions := map[string]func() int64{
		"lognormal": func() int64 { return int64(math.Exp(rng.NormFloat64()*2 + 10)) }, // ~20µs, wide
		"uniform":   func() int64 { return rng.Int64N(10_000_000) },
		"small":     func() int64 { return rng.Int64N(300) },
		"bimodal": func() int64 {
			if rng.IntN(100) == 0 {
				return 5_000_000 + rng.Int64N(1_000_000)
			}
			return 50_000 + rng.Int64N(10_000)
		},
	}
	for name, draw := range distributions {
		t.Run(name, func(t *testing.T) {
			for _, n := range []int{1, 2, 10, 999, 100_000} {
				h := New()
				values := make([]int64, n)
				for i := range values {
					values[i] = draw()
					h.Record(time.Duration(values[i]))
				}
				slices.Sort(values)
				require.Equal(t, uint64(n), h.Count())
				assert.Equal(t, time.Duration(values[0]), h.Min())
				assert.Equal(t, time.Duration(values[n-1]), h.Max())
				assert.Equal(t, time.Duration(values[0]), h.Quantile(0))
				assert.Equal(t, time.Duration(values[n-1]), h.Quantile(1))
				for _, q := range []float64{0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999} {
					want := exactQuantile(values, q)
					got := int64(h.Quantile(q))
					assert.LessOrEqual(t, math.Abs(float64(got-want)), float64(want)*MaxError,
						"n=%d q=%v: got %d, exact %d", n, q, got, want)
				}
			}
		})
	}
}

func TestExactBelow128(t *testing.T) {
	h := New()
	for v := range 128 {
		h.Record(time.Duration(v))
	}
	assert.Equal(t, time.Duration(63), h.Quantile(0.5))
	assert.Equal(t, time.Duration(126), h.Quantile(0.99))
}

func TestMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	all, a, b := New(), New(), New()
	for i := range 50_000 {
		d := time.Duration(rng.Int64N(int64(time.Second)))
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	merged := New()
	merged.Merge(a)
	merged.Merge(New()) // an empty histogram changes nothing
	merged.Merge(b)
	assert.Equal(t, all.Count(), merged.Count())
	assert.Equal(t, all.Min(), merged.Min())
	assert.Equal(t, all.Max(), merged.Max())
	assert.InDelta(t, float64(all.Mean()), float64(merged.Mean()), 1)
	assert.Equal(t, all.counts, merged.counts)
	for _, q := range []float64{0, 0.5, 0.99, 0.999, 1} {
		assert.Equal(t, all.Quantile(q), merged.Quantile(q), "q=%v", q)
	}
	assert.Equal(t, uint64(50_000/3+1), a.Count(), "Merge leaves its argument unchanged")
}

func TestEmptyAndNegative(t *testing.T) {
	var h Histogram
	assert.Zero(t, h.Quantile(0.5))
	assert.Zero(t, h.Mean())
	h.Record(-time.Second)
	assert.Equal(t, uint64(1), h.Count())
	assert.Zero(t, h.Quantile(0.5))
}
