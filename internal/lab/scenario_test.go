package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// skipEvery10th is the "skip-handling" fault: the child's handler skips
// every 10th message of producer 0, but its consumer acks it all the same.
func skipEvery10th(id string) bool {
	_, rest, ok := strings.Cut(id, "-p0-")
	if !ok {
		return false
	}
	i, err := strconv.Atoi(rest)
	return err == nil && i%10 == 0
}

// phantomTx is the "tx-phantom" fault: every 10th transaction of producer 0
// rolls back locally, and the child commits its half all the same. The
// others commit, and are acknowledged.
func phantomTx(q *zeroloss.Queue, db *txDB, run, producer int, acks *ackWriter) error {
	ctx := context.Background()
	for i := 0; ; i++ {
		id := messageID(run, producer, i)
		faulty := producer == 0 && i%10 == 0
		h, res, err := q.SendHalf(ctx, &zeroloss.Message{ID: id, Body: bodyFor(id)})
		if err != nil {
			return err
		}
		if res.Status != zeroloss.SendOK {
			continue
		}
		state := zeroloss.TxCommit
		if faulty {
			state = zeroloss.TxRollback
		}
		if err := db.write(id, state); err != nil {
			return err
		}
		res, err = h.Commit(ctx)
		if faulty && errors.Is(err, zeroloss.ErrTxRolledBack) {
			continue // the child's checker read the rollback first
		}
		if err != nil {
			return err
		}
		if !faulty && res.Status == zeroloss.SendOK {
			if err := acks.ack(id, res.Seq); err != nil {
				return err
			}
		}
	}
}

// TestConsumerCrash: a consumer that acks after handling loses nothing to a
// crash mid-handler (it may handle a message twice: at-least-once), and one
// that acks on receive loses messages in at least one run of a fixed-seed
// set; both counts agree in every run.
func TestConsumerCrash(t *testing.T) {
	opts := testOptions(t, 4)
	after := Config{Flush: zeroloss.FlushSync, Ack: AckAfterHandling}
	onReceive := Config{Flush: zeroloss.FlushSync, Ack: AckOnReceive}
	rep, err := Run(context.Background(), opts, []Config{after, onReceive}, Failures())
	require.NoError(t, err)
	var table strings.Builder
	require.NoError(t, rep.WriteTable(&table))
	t.Logf("\n%s", table.String())
	require.Len(t, rep.Rows, 2, "only consumer-crash applies to a configuration with a consumer")

	row := rep.Row("flush=sync/ack=after-handling", "consumer-crash")
	require.NotNil(t, row)
	assert.True(t, row.Promised)
	assert.Equal(t, 4, row.Runs)
	assert.Zero(t, row.Lost, "acking after handling lost messages to a consumer crash")
	assert.Zero(t, row.Corrupt)
	assert.Zero(t, row.RecoveryErrors)
	assert.False(t, row.Broken())

	row = rep.Row("flush=sync/ack=on-receive", "consumer-crash")
	require.NotNil(t, row)
	assert.False(t, row.Promised, "acking on receive is not promised zero loss")
	assert.Positive(t, row.Lost, "no ack-on-receive run lost anything: the scenario does not show the anti-pattern")
	assert.Zero(t, row.Corrupt)
	assert.Zero(t, row.Duplicates, "a message acked on receive is never delivered again")

	for _, r := range rep.Rows {
		assert.Zero(t, r.CrossCheckMismatches, r.Config)
		assert.Zero(t, r.Phantom, r.Config)
		for _, res := range r.Results {
			assert.GreaterOrEqual(t, res.Acknowledged, res.KillAfter, "%s run %d", r.Config, res.Run)
			assert.Equal(t, res.Counts, res.CrossCheck, "%s run %d: the cross-check disagrees", r.Config, res.Run)
			assert.Equal(t, res.Acknowledged-res.Lost+res.UnackedPresent+res.Duplicates, res.Recovered,
				"%s run %d: every handling is of an acknowledged or an unacknowledged message", r.Config, res.Run)
			assert.Empty(t, res.Dir, "%s run %d", r.Config, res.Run)
		}
	}
	assert.True(t, rep.OK())
	entries, err := os.ReadDir(opts.Dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "clean runs leave nothing behind, though their labels hold a slash")
}

// TestTxCrash: a crash in the middle of transactions loses no message whose
// local transaction committed and delivers none whose transaction did not,
// once the TxChecker has decided the halves left pending.
func TestTxCrash(t *testing.T) {
	opts := testOptions(t, 4)
	rep, err := Run(context.Background(), opts, []Config{{Flush: zeroloss.FlushSync, Producer: ProducerTx}}, []Failure{TxCrash})
	require.NoError(t, err)
	var table strings.Builder
	require.NoError(t, rep.WriteTable(&table))
	t.Logf("\n%s", table.String())

	row := rep.Row("flush=sync/producer=tx", "tx-crash")
	require.NotNil(t, row)
	assert.True(t, row.Promised)
	assert.Equal(t, 4, row.Runs)
	assert.Zero(t, row.Lost, "a committed transaction's message was not delivered")
	assert.Zero(t, row.Phantom, "a message was delivered though its transaction did not commit")
	assert.Zero(t, row.Duplicates)
	assert.Zero(t, row.Corrupt)
	assert.Zero(t, row.UnackedPresent)
	assert.Zero(t, row.CrossCheckMismatches)
	assert.False(t, row.Broken())
	pending := 0
	for _, res := range row.Results {
		assert.GreaterOrEqual(t, res.Acknowledged, res.KillAfter, "run %d: local commits include the acknowledged ones", res.Run)
		assert.Equal(t, res.Acknowledged, res.Recovered, "run %d", res.Run)
		assert.Equal(t, res.Counts, res.CrossCheck, "run %d: the cross-check disagrees", res.Run)
		assert.Empty(t, res.Dir, "run %d", res.Run)
		pending += res.TxPending
	}
	assert.Positive(t, pending, "no half was left for the checker to decide after a restart")
	assert.True(t, rep.OK())
}

// TestLabCatchesFaultyConsumerAndTx plants a fault in each new workload and
// checks that the count, and the cross-check, see it: without this, the
// tests above could pass by counting nothing.
func TestLabCatchesFaultyConsumerAndTx(t *testing.T) {
	t.Run("skip-handling", func(t *testing.T) {
		t.Setenv(faultEnv, "skip-handling")
		cfg := Config{Flush: zeroloss.FlushSync, Ack: AckAfterHandling}
		rep, err := Run(context.Background(), testOptions(t, 1), []Config{cfg}, []Failure{ConsumerCrash})
		require.NoError(t, err)
		row := rep.Row(cfg.Label(), "consumer-crash")
		require.NotNil(t, row)
		require.Len(t, row.Results, 1)
		res := &row.Results[0]
		assert.Positive(t, res.Lost, "acked without handling: lost")
		assert.Zero(t, res.Corrupt)
		assert.Equal(t, res.Counts, res.CrossCheck, "the cross-check sees the same fault")
		assert.True(t, row.Broken())
		assert.False(t, rep.OK())
		assert.FileExists(t, filepath.Join(res.Dir, processedFile), "a run that lost data keeps its directory")
	})
	t.Run("tx-phantom", func(t *testing.T) {
		t.Setenv(faultEnv, "tx-phantom")
		rep, err := Run(context.Background(), testOptions(t, 1), []Config{{Flush: zeroloss.FlushSync, Producer: ProducerTx}}, []Failure{TxCrash})
		require.NoError(t, err)
		row := rep.Row("flush=sync/producer=tx", "tx-crash")
		require.NotNil(t, row)
		require.Len(t, row.Results, 1)
		res := &row.Results[0]
		assert.Positive(t, res.Phantom, "committed though rolled back locally: a phantom")
		assert.Zero(t, res.Lost)
		assert.Zero(t, res.Corrupt)
		assert.Zero(t, res.UnackedPresent)
		assert.Equal(t, res.Counts, res.CrossCheck, "the cross-check sees the same fault")
		assert.True(t, row.Broken())
		assert.False(t, rep.OK())
		assert.FileExists(t, filepath.Join(res.Dir, txDBFile))
	})
}

// TestScenarios: the curated default set covers every row of the guarantee
// table and every failure; --all is the cross product less the pairs that
// do not apply, and every pair it leaves out has a reason.
func TestScenarios(t *testing.T) {
	names := func(scs []Scenario) []string {
		var out []string
		for _, sc := range scs {
			out = append(out, sc.Config.Label()+" "+sc.Failure.Name)
		}
		return out
	}
	assert.Equal(t, []string{
		"flush=sync process-crash", "flush=sync power-loss",
		"flush=async process-crash", "flush=async power-loss",
		"flush=sync/repl=sync power-loss",
		"flush=sync/repl=sync leader-disk-loss", "flush=sync/repl=async leader-disk-loss",
		"flush=sync/ack=after-handling consumer-crash", "flush=sync/ack=on-receive consumer-crash",
		"flush=sync/ack=ordered consumer-crash", "flush=sync queue-outage", "flush=sync/producer=strict queue-outage",
		"flush=sync/producer=tx tx-crash",
	}, names(DefaultScenarios()))
	failures := map[string]bool{}
	for _, sc := range DefaultScenarios() {
		failures[sc.Failure.Name] = true
	}
	assert.Len(t, failures, len(Failures()), "the default set runs every failure")

	all, skipped := AllScenarios(), AllSkipped()
	assert.Len(t, AllConfigs(), 2*3*4*3, "flush x replication x consumer x producer")
	assert.Len(t, all, 56)
	assert.Equal(t, len(AllConfigs())*len(Failures()), len(all)+len(skipped), "every pair is run or skipped")
	assert.Subset(t, names(all), names(DefaultScenarios()))
	for _, want := range []string{
		"flush=async/producer=tx tx-crash", "flush=async/ack=on-receive consumer-crash",
		"flush=async/interval=10ms/repl=sync leader-disk-loss", "flush=async/repl=async/producer=strict power-loss",
		"flush=sync/repl=sync/ack=after-handling consumer-crash", "flush=async/producer=strict queue-outage",
		"flush=sync/repl=async/producer=tx tx-crash",
	} {
		assert.Contains(t, names(all), want)
	}
	reasons := map[string]string{}
	for _, s := range skipped {
		require.NotEmpty(t, s.Reason, "%s %s", s.Config, s.Failure)
		reasons[s.Config+" "+s.Failure] = s.Reason
	}
	assert.Contains(t, reasons["flush=sync leader-disk-loss"], "needs a follower")
	assert.Contains(t, reasons["flush=sync/repl=sync/producer=strict leader-disk-loss"], "spool")
	assert.Contains(t, reasons["flush=sync/repl=sync queue-outage"], "epoch")
	assert.Contains(t, reasons["flush=sync/producer=strict tx-crash"], "producer=tx")
	assert.Contains(t, reasons["flush=sync consumer-crash"], "needs a consumer")

	var table strings.Builder
	require.NoError(t, (&Report{Skipped: skipped[:3]}).WriteTable(&table))
	assert.Contains(t, table.String(), "skipped 3 (configuration, failure) pairs that do not apply:")
	assert.Contains(t, table.String(), skipped[0].Reason)

	_, err := RunScenarios(context.Background(), testOptions(t, 1),
		[]Scenario{{Config{Flush: zeroloss.FlushSync}, ConsumerCrash}})
	require.ErrorContains(t, err, "consumer-crash does not apply to flush=sync")
	_, err = RunScenarios(context.Background(), testOptions(t, 1),
		[]Scenario{{Config{Flush: zeroloss.FlushSync, Producer: ProducerTx}, TxCrash}, {Config{Flush: zeroloss.FlushSync, Producer: ProducerTx}, TxCrash}})
	require.ErrorContains(t, err, "twice")
	_, err = RunScenarios(context.Background(), testOptions(t, 1), nil)
	require.Error(t, err)

	rep := &Report{}
	rep.addRow(Row{Config: "flush=sync/producer=tx", Failure: "tx-crash", Promised: true, Results: []RunResult{
		{Run: 1, Acknowledged: 10, Counts: Counts{Recovered: 11, Phantom: 1}, CrossCheck: Counts{Recovered: 11, Phantom: 1}},
	}})
	assert.Equal(t, 1, rep.Rows[0].Phantom)
	assert.True(t, rep.Rows[0].Broken(), "a phantom breaks the transactional promise")
	assert.False(t, rep.OK())
}

// TestPromises pins which rows are promised zero loss, as the documentation
// states it.
func TestPromises(t *testing.T) {
	sync, async := zeroloss.FlushSync, zeroloss.FlushAsync
	rs, ra := zeroloss.ReplicateSync, zeroloss.ReplicateAsync
	tests := []struct {
		cfg  Config
		f    Failure
		want bool
	}{
		{Config{Flush: async}, ProcessCrash, true},
		{Config{Flush: async}, PowerLoss, false},
		{Config{Flush: async, Replication: rs}, PowerLoss, true},
		{Config{Flush: sync, Replication: rs}, DiskLoss, true},
		{Config{Flush: sync, Replication: ra}, DiskLoss, false},
		{Config{Flush: async, Replication: rs}, DiskLoss, true},
		{Config{Flush: sync}, QueueOutage, true},
		{Config{Flush: async}, QueueOutage, false},
		{Config{Flush: async, Producer: ProducerStrict}, QueueOutage, true},
		{Config{Flush: sync, Ack: AckOnReceive}, ConsumerCrash, false},
		{Config{Flush: async, Producer: ProducerTx}, TxCrash, true},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.f.Promises(tt.cfg), "%s %s", tt.cfg.Label(), tt.f.Name)
	}
}

func TestParseProcessedAndTxDB(t *testing.T) {
	a, b := digest(sumOf("a")), digest(sumOf("b"))
	data := "a " + hexOf(a) + "\nb " + hexOf(b) + "\na " + hexOf(a) + "\nnot a line\nx 12\n" + "c " + hexOf(a)[:10]
	found, bad := parseProcessed([]byte(data))
	assert.Equal(t, map[string][]digest{"a": {a, a}, "b": {b}}, found)
	assert.Equal(t, 2, bad, "two complete lines do not parse; the torn last one is skipped")

	path := filepath.Join(t.TempDir(), txDBFile)
	require.NoError(t, os.WriteFile(path, []byte("commit a\nrollback b\ncommit c"), 0o600))
	db, err := readTxDB(path)
	require.NoError(t, err)
	assert.Equal(t, map[string]zeroloss.TxState{"a": zeroloss.TxCommit, "b": zeroloss.TxRollback}, db)
	require.NoError(t, os.WriteFile(path, []byte("commit a\nrollback a\n"), 0o600))
	_, err = readTxDB(path)
	require.ErrorContains(t, err, "two decisions")
	db, err = readTxDB(filepath.Join(t.TempDir(), "none"))
	require.NoError(t, err)
	assert.Empty(t, db)
}

func sumOf(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }

func hexOf(d digest) string { return hex.EncodeToString(d[:]) }
