package lab

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestQueueOutage: the queue's fdatasync fails (run 1) or its disk is full
// (run 2) for a while under load, then the child is killed. The strict
// producer loses nothing it accepted (Sent or Spooled) and refuses nothing;
// Queue.Send callers are refused (errors, FlushDiskTimeout) during the
// outage, and lose no SendOK under FlushSync. Both counts agree in every
// run.
func TestQueueOutage(t *testing.T) {
	plain := Config{Flush: zeroloss.FlushSync}
	strict := Config{Flush: zeroloss.FlushSync, Producer: ProducerStrict}
	opts := Options{Runs: 2, Seed: 11, Dir: t.TempDir(), MinAcks: 500, MaxAcks: 2000}
	rep, err := Run(context.Background(), opts, []Config{plain, strict}, []Failure{QueueOutage})
	require.NoError(t, err)
	var table strings.Builder
	require.NoError(t, rep.WriteTable(&table))
	t.Logf("\n%s", table.String())
	require.Len(t, rep.Rows, 2)

	for _, row := range rep.Rows {
		assert.True(t, row.Promised, row.Config)
		assert.False(t, row.Broken(), row.Config)
		assert.Zero(t, row.Lost, "%s lost acknowledged messages to a queue outage", row.Config)
		assert.Zero(t, row.Corrupt, row.Config)
		assert.Zero(t, row.Duplicates, "%s: resends are deduplicated", row.Config)
		assert.Zero(t, row.CrossCheckMismatches, row.Config)
		kinds := map[string]bool{}
		for _, res := range row.Results {
			kinds[res.Outage] = true
			assert.GreaterOrEqual(t, res.Acknowledged, res.KillAfter, "%s run %d", row.Config, res.Run)
			assert.Equal(t, res.Counts, res.CrossCheck, "%s run %d: the cross-check disagrees", row.Config, res.Run)
			assert.Empty(t, res.Dir, "%s run %d", row.Config, res.Run)
			if row.Config == strict.Label() {
				assert.Positive(t, res.Spooled, "run %d (%s): the strict producer spooled nothing: the outage was not met", res.Run, res.Outage)
				assert.Zero(t, res.Refused, "run %d: the strict producer refuses nothing while its spool works", res.Run)
			} else {
				assert.Positive(t, res.Refused, "run %d (%s): Queue.Send was refused nothing: the outage was not met", res.Run, res.Outage)
				assert.Zero(t, res.Spooled, "run %d", res.Run)
			}
		}
		assert.Equal(t, map[string]bool{outageFsync: true, outageDiskFull: true}, kinds, "%s: both outages, each met", row.Config)
	}
	assert.True(t, rep.OK())
}

// TestRouteFS: only the queue's directory goes through the fault injector.
func TestRouteFS(t *testing.T) {
	root := t.TempDir()
	qdir, spool := filepath.Join(root, "q"), filepath.Join(root, "spool")
	require.NoError(t, os.MkdirAll(qdir, 0o700))
	require.NoError(t, os.MkdirAll(spool, 0o700))
	fault := vfs.NewFault(vfs.OS)
	fs := &routeFS{FS: vfs.OS, dir: qdir, fault: fault}
	injected := errors.New("injected")
	fault.FailFrom(vfs.OpSync, 1, injected)
	fault.FailFrom(vfs.OpCreate, 1, injected)
	fault.FailFrom(vfs.OpSyncDir, 1, injected)

	_, err := fs.Create(filepath.Join(qdir, "a"))
	require.ErrorIs(t, err, injected, "the queue's directory is faulty")
	_, err = fs.Create(filepath.Join(root, "q2", "..", "q", "b"))
	require.ErrorIs(t, err, injected, "also through a path that is not clean")
	f, err := fs.Create(filepath.Join(spool, "a"))
	require.NoError(t, err, "the spool's directory is not")
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
	require.NoError(t, fs.SyncDir(spool))
	require.ErrorIs(t, fs.SyncDir(qdir), injected)
	sibling := filepath.Join(root, "q-sibling")
	require.NoError(t, os.MkdirAll(sibling, 0o700))
	f, err = fs.Create(filepath.Join(sibling, "a"))
	require.NoError(t, err, "a directory whose name starts like the queue's is not the queue's")
	require.NoError(t, f.Close())
}
