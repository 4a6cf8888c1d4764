package lab

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestPowerLossLosesOnlyAsync is the power-loss guarantee: flush=sync loses
// nothing, and the simulation bites: flush=async with a background sync
// rarer than a run loses acknowledged messages in at least one of a fixed
// set of runs. The cross-check agrees in every run.
func TestPowerLossLosesOnlyAsync(t *testing.T) {
	opts := testOptions(t, 4)
	syncCfg := Config{Flush: zeroloss.FlushSync}
	asyncCfg := Config{Flush: zeroloss.FlushAsync, FlushInterval: time.Minute}
	rep, err := Run(context.Background(), opts, []Config{syncCfg, asyncCfg}, []Failure{PowerLoss})
	require.NoError(t, err)
	var table strings.Builder
	require.NoError(t, rep.WriteTable(&table))
	t.Logf("\n%s", table.String())

	row := rep.Row("flush=sync", "power-loss")
	require.NotNil(t, row)
	assert.True(t, row.Promised)
	assert.Equal(t, 4, row.Runs)
	assert.Zero(t, row.Lost, "flush=sync lost acknowledged messages to a power loss")
	assert.Zero(t, row.Corrupt)
	assert.Zero(t, row.Duplicates)
	assert.Zero(t, row.RecoveryErrors)
	assert.False(t, row.Broken())

	row = rep.Row("flush=async/interval=1m0s", "power-loss")
	require.NotNil(t, row)
	assert.False(t, row.Promised, "flush=async is not promised zero loss under power loss")
	assert.Positive(t, row.Lost, "no flush=async run lost anything: the simulation does not bite")
	assert.Zero(t, row.Corrupt)
	assert.Zero(t, row.Duplicates)
	for _, r := range rep.Rows {
		assert.Zero(t, r.CrossCheckMismatches, r.Config)
		for _, res := range r.Results {
			assert.Contains(t, lossModeNames, res.PowerLoss, "%s run %d", r.Config, res.Run)
			assert.Equal(t, res.Counts, res.CrossCheck, "%s run %d: the cross-check disagrees", r.Config, res.Run)
			assert.Empty(t, res.Dir, "%s run %d: an expected loss does not keep its directory", r.Config, res.Run)
		}
	}
	assert.True(t, rep.OK())
}

// modelRun plays reports into a model as the parent would.
func modelRun(t *testing.T, m *powerModel, lines ...string) {
	t.Helper()
	for _, line := range lines {
		words, err := parseReport(line)
		require.NoError(t, err, line)
		_, err = m.handle(words)
		require.NoError(t, err, line)
	}
}

// TestPowerModel checks the model on hand-made report sequences: what a
// completed sync keeps, what each mode does to the rest, and what happens to
// directory entries.
func TestPowerModel(t *testing.T) {
	const synced, extra = 8192, 8192
	tests := []struct {
		mode  lossMode
		check func(t *testing.T, data []byte)
	}{
		{lossDrop, func(t *testing.T, data []byte) {
			require.Len(t, data, synced, "the unsynced tail is cut")
			assert.Equal(t, bytes.Repeat([]byte{0}, 100), data[512:612], "the slot rewritten since the sync is zeroed")
		}},
		{lossZero, func(t *testing.T, data []byte) {
			require.Len(t, data, synced+extra, "the length stays")
			assert.Equal(t, make([]byte, extra), data[synced:], "the tail is zeroed")
			assert.Equal(t, bytes.Repeat([]byte{0}, 100), data[512:612])
		}},
		{lossTorn, func(t *testing.T, data []byte) {
			require.GreaterOrEqual(t, len(data), synced)
			require.LessOrEqual(t, len(data), synced+extra)
			assert.Equal(t, bytes.Repeat([]byte{'b'}, len(data)-synced), data[synced:], "a prefix of the tail, as written")
		}},
		{lossPages, func(t *testing.T, data []byte) {
			require.Len(t, data, synced+extra)
			for off := synced; off < len(data); off += pageSize {
				page := data[off : off+pageSize]
				if page[0] == 0 {
					assert.Equal(t, make([]byte, pageSize), page)
				} else {
					assert.Equal(t, bytes.Repeat([]byte{'b'}, pageSize), page)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run("mode="+tt.mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			seg, tmp, fresh, gone := filepath.Join(dir, "a.wal"), filepath.Join(dir, "b.tmp"),
				filepath.Join(dir, "c.wal"), filepath.Join(dir, "d.wal")
			require.NoError(t, os.WriteFile(seg, append(bytes.Repeat([]byte{'a'}, synced), bytes.Repeat([]byte{'b'}, extra)...), 0o600))
			require.NoError(t, os.WriteFile(tmp, []byte("renamed into place, directory never synced"), 0o600))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "unknown"), []byte("never reported"), 0o600))
			q := func(p string) string { return `"` + p + `"` }
			m := newPowerModel()
			modelRun(t, m,
				"c "+q(seg), "c "+q(filepath.Join(dir, "b.wal")), "c "+q(gone),
				"w "+q(seg)+" 0 8192",
				"s 1 "+q(seg)+" 8192", "S 1",
				"d 2 "+q(dir)+` "a.wal" "b.wal" "d.wal"`, "D 2",
				"w "+q(seg)+" 8192 8192", "w "+q(seg)+" 512 100", // after the sync
				"s 3 "+q(seg)+" 16384", // issued, never completed
				"r "+q(filepath.Join(dir, "b.wal"))+" "+q(tmp),
				"x "+q(gone),
				"c "+q(fresh),
			)
			require.NoError(t, os.WriteFile(fresh, []byte("created after the last SyncDir"), 0o600))
			rng := rand.New(rand.NewPCG(1, 2))
			require.NoError(t, m.apply(dir, rng, tt.mode))

			names, err := vfs.OS.List(dir)
			require.NoError(t, err)
			assert.Equal(t, []string{"a.wal", "b.wal"}, names,
				"the renamed file gets its durable name back, the rest goes")
			data, err := os.ReadFile(filepath.Join(dir, "b.wal"))
			require.NoError(t, err)
			assert.Empty(t, data, "a file never synced is empty")
			data, err = os.ReadFile(seg)
			require.NoError(t, err)
			assert.Equal(t, bytes.Repeat([]byte{'a'}, 512), data[:512], "synced and not rewritten: kept")
			assert.Equal(t, bytes.Repeat([]byte{'a'}, synced-612), data[612:synced])
			tt.check(t, data)
		})
	}
}

func TestMergeSpans(t *testing.T) {
	got := mergeSpans([]dirtySpan{{span{10, 20}, 1}, {span{0, 5}, 2}, {span{15, 30}, 3}, {span{30, 31}, 4}, {span{40, 40}, 5}})
	assert.Equal(t, []span{{0, 5}, {10, 31}}, got)
}

func TestParseReport(t *testing.T) {
	words, err := parseReport(`d 7 "/tmp/a b" "x\"y" plain`)
	require.NoError(t, err)
	assert.Equal(t, []string{"d", "7", "/tmp/a b", `x"y`, "plain"}, words)
	_, err = parseReport(`w "unterminated`)
	assert.Error(t, err)
	_, err = newPowerModel().handle([]string{"S", "99"})
	assert.Error(t, err, "a completion without its issue")
}
