package lab

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// keyedIDs returns n IDs whose labKey is key.
func keyedIDs(key string, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		if id := fmt.Sprintf("m%d", i); labKey(id) == key {
			out = append(out, id)
		}
	}
	return out
}

func TestOrderViolations(t *testing.T) {
	a, b := keyedIDs("k01", 3), keyedIDs("k02", 2)
	tests := []struct {
		name      string
		handlings []handling
		want      int
	}{
		{"in order", []handling{{a[0], 1}, {b[0], 2}, {a[1], 3}, {b[1], 4}, {a[2], 5}}, 0},
		{"keys interleaved freely", []handling{{b[0], 2}, {a[0], 1}, {b[1], 4}, {a[1], 3}}, 0},
		{"handled again, after a later one: not a first handling", []handling{{a[0], 1}, {a[1], 3}, {a[0], 1}, {a[2], 5}}, 0},
		{"a later one first", []handling{{a[1], 3}, {a[0], 1}, {a[2], 5}}, 1},
		{"two passed", []handling{{a[2], 5}, {a[0], 1}, {a[1], 3}}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, orderViolations(tc.handlings))
		})
	}
	lines := []byte(fmt.Sprintf("%s %s 3\n%s %s 1\nbad line\n%s %s 5", a[1], strings.Repeat("0", 64), a[0], strings.Repeat("0", 64), a[2], strings.Repeat("0", 64)))
	assert.Equal(t, []handling{{a[1], 3}, {a[0], 1}}, parseHandlings(lines), "complete lines with a seq, in order")
}

// TestOrderedConsumerCrash: a child consuming an Ordered group (Concurrency
// 8, 100 keys) killed mid-handler loses nothing and handles no key out of
// order, by both counts, and the row is promised so.
func TestOrderedConsumerCrash(t *testing.T) {
	opts := testOptions(t, 4)
	rep, err := Run(context.Background(), opts, []Config{{Flush: zeroloss.FlushSync, Ack: AckOrdered}}, []Failure{ConsumerCrash})
	require.NoError(t, err)
	var table strings.Builder
	require.NoError(t, rep.WriteWideTable(&table))
	t.Logf("\n%s", table.String())
	row := rep.Row("flush=sync/ack=ordered", "consumer-crash")
	require.NotNil(t, row)
	assert.True(t, row.Promised)
	assert.Equal(t, 4, row.Runs)
	assert.Zero(t, row.Lost)
	assert.Zero(t, row.OrderViolations)
	assert.Zero(t, row.Corrupt)
	assert.Zero(t, row.CrossCheckMismatches)
	for _, res := range row.Results {
		assert.Equal(t, res.Counts, res.CrossCheck, "run %d: the cross-check disagrees", res.Run)
		assert.GreaterOrEqual(t, res.Acknowledged, res.KillAfter, "run %d", res.Run)
	}
	assert.True(t, rep.OK())
}
