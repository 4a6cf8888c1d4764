package zeroloss

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDedupRecoveryKeepsTheNewest feeds random recoveries to the dedup table
// (log messages in seq order, checkpoint entries older than the messages
// around them, IDs sent again, entries outside the window) and checks that
// it ends with what the table kept before recovery bounded its size
// (keepNewest): for each ID its highest seq, the DedupEntries highest of
// them, in seq order.
func TestDedupRecoveryKeepsTheNewest(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	const window = time.Minute
	for _, max := range []int{1, 3, 10, 100, 1 << 62} {
		for seed := range uint64(25) {
			t.Run(fmt.Sprintf("max=%d/seed=%d", max, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, uint64(max)))
				table := newDedupTable(window, max)
				best := map[dedupKey]uint64{}
				bound := min(max, 200) // ReadDirState's table is unbounded (1<<62)
				ids := 1 + rng.IntN(8*bound)
				steps := rng.IntN(20 * bound)
				// One message per seq: its ID and append time.
				keys := make([]dedupKey, 1000+steps+1)
				times := make([]time.Time, len(keys))
				for s := range keys {
					keys[s] = dedupKey{topic: fmt.Sprint("topic-", rng.IntN(2)), id: fmt.Sprint("id-", rng.IntN(ids))}
					times[s] = now.Add(-time.Duration(rng.IntN(70)) * time.Second)
				}
				seq := uint64(1000)
				added := 0
				for range steps {
					var s uint64
					if rng.IntN(5) == 0 {
						s = 1 + uint64(rng.IntN(int(seq))) // a checkpoint's older entry
					} else {
						seq++
						s = seq
					}
					key, at := keys[s], times[s]
					table.recovered(key, s, at, now)
					if !at.Before(now.Add(-window)) && s > best[key] {
						best[key] = s
						added++
					}
				}
				if max >= 1<<62 {
					require.Len(t, table.recovering, added, "no pruning below twice the bound")
				}
				table.finishRecovery()

				type entry struct {
					key dedupKey
					seq uint64
				}
				var want []entry
				for key, s := range best {
					want = append(want, entry{key, s})
				}
				slices.SortFunc(want, func(a, b entry) int { return compareSeq(a.seq, b.seq) })
				want = want[len(want)-min(len(want), max):]
				var got []entry
				for _, e := range table.order[table.head:] {
					got = append(got, entry{e.key, e.seq})
					require.Same(t, e, table.byID[e.key])
				}
				require.Equal(t, want, got)
				require.Len(t, table.byID, len(want))
			})
		}
	}
}
