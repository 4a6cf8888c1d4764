package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// faultEnv makes the child misbehave, to show that the lab catches a queue
// that loses, duplicates or corrupts acknowledged messages. It is inherited
// from the test that sets it with t.Setenv.
const faultEnv = "ZEROLOSS_LAB_TEST_FAULT"

// TestMain runs the child's side of a run when the test binary is
// re-executed as a lab child, and the tests otherwise.
func TestMain(m *testing.M) {
	if IsChild(os.Args[1:]) {
		switch fault := os.Getenv(faultEnv); fault {
		case "":
		case "skip-handling":
			skipHandling = skipEvery10th
		case "tx-phantom":
			produceTx = phantomTx
		default:
			produce = faultyProducer(fault)
		}
		os.Exit(ChildMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// faultyProducer returns a producer that acknowledges falsely: every 50th
// message of producer 0 is acknowledged without being sent ("phantom-ack"),
// sent twice ("duplicate"), sent with another message's body ("corrupt"),
// or sent to the next topic of labTopics, without a tag ("misroute"). With
// "silent" it never sends; with "fail" it fails at once.
func faultyProducer(fault string) func(*zeroloss.Queue, int, int, *ackWriter) error {
	return func(q *zeroloss.Queue, run, producer int, acks *ackWriter) error {
		switch fault {
		case "silent":
			select {}
		case "fail":
			return errors.New("failing on purpose")
		}
		for i := 0; ; i++ {
			id := messageID(run, producer, i)
			faulty := producer == 0 && i%50 == 0
			m := messageFor(id)
			sends := 1
			switch {
			case faulty && fault == "phantom-ack":
				if err := acks.ack(id, uint64(1<<40+i)); err != nil {
					return err
				}
				continue
			case faulty && fault == "duplicate":
				sends = 2
			case faulty && fault == "corrupt":
				m.Body = bodyFor(id + "x")
			case faulty && fault == "misroute":
				m.Topic, m.Tag = labTopics[(slices.Index(labTopics, m.Topic)+1)%len(labTopics)], ""
			}
			var res zeroloss.SendResult
			for range sends {
				var err error
				res, err = q.Send(context.Background(), m)
				if err != nil {
					return err
				}
			}
			if res.Status == zeroloss.SendOK {
				if err := acks.ack(id, res.Seq); err != nil {
					return err
				}
			}
		}
	}
}

// testOptions keeps the lab short: few acks per run, so the suite stays well
// under a minute under the race detector on two cores.
func testOptions(t *testing.T, runs int) Options {
	return Options{Runs: runs, Seed: 42, Dir: t.TempDir(), MinAcks: 200, MaxAcks: 4000}
}

// TestProcessCrashLosesNothing is the guarantee the lab exists to check: a
// process crash loses no acknowledged message under either flush mode,
// because the page cache survives it; nothing is duplicated or corrupt; and
// the independent cross-check agrees with the main count in every run.
func TestProcessCrashLosesNothing(t *testing.T) {
	var progress bytes.Buffer
	opts := testOptions(t, 5)
	opts.Progress = &progress
	rep, err := Run(context.Background(), opts, DefaultConfigs(), []Failure{ProcessCrash})
	require.NoError(t, err)
	var table strings.Builder
	require.NoError(t, rep.WriteTable(&table))
	t.Logf("\n%s", table.String())
	require.Len(t, rep.Rows, 2)
	for _, name := range []string{"flush=sync", "flush=async"} {
		row := rep.Row(name, "process-crash")
		require.NotNil(t, row, name)
		assert.True(t, row.Promised, "%s: a process crash must be promised zero loss", name)
		assert.Equal(t, 5, row.Runs, name)
		assert.Zero(t, row.Lost, "%s lost acknowledged messages", name)
		assert.Zero(t, row.Duplicates, name)
		assert.Zero(t, row.Corrupt, name)
		assert.Zero(t, row.RecoveryErrors, name)
		assert.False(t, row.Broken(), name)
		for _, res := range row.Results {
			assert.GreaterOrEqual(t, res.Acknowledged, res.KillAfter, "%s run %d", name, res.Run)
			assert.Positive(t, res.Acknowledged, "%s run %d", name, res.Run)
			assert.GreaterOrEqual(t, res.Recovered, res.Acknowledged, "%s run %d", name, res.Run)
			assert.Positive(t, res.Throughput, "%s run %d", name, res.Run)
			assert.Equal(t, res.Counts, res.CrossCheck, "%s run %d: the cross-check disagrees", name, res.Run)
			assert.Empty(t, res.Dir, "%s run %d: a clean run's directory is removed", name, res.Run)
			checkGroups(t, &res, fmt.Sprintf("%s run %d", name, res.Run))
		}
		assert.Equal(t, "ok", row.TopicsSummary(), name)
	}
	assert.True(t, rep.OK())
	// A bytes.Buffer is not a terminal: a plain line per finished row.
	assert.NotContains(t, progress.String(), "\r", "no line rewritten in place outside a terminal")
	lines := strings.Split(strings.TrimSuffix(progress.String(), "\n"), "\n")
	require.Len(t, lines, 2, "one line per row: %q", progress.String())
	assert.Regexp(t, `^\[1/2\] flush=sync process-crash: 5 runs, [1-9]\d* acknowledged, 0 lost, ok: zero loss, as promised \(\d`, lines[0])
	assert.Regexp(t, `^\[2/2\] flush=async process-crash: 5 runs, [1-9]\d* acknowledged, 0 lost, ok: zero loss, as promised \(\d`, lines[1])
	entries, err := os.ReadDir(opts.Dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "clean runs leave nothing behind")
}

// checkGroups checks what the topics' groups of a clean run of the produce
// workload got: every group delivered all it owed and nothing else, the
// topic groups' acknowledged messages add up to the run's (every message
// has one topic), and every topic and the tag filter had messages.
func checkGroups(t *testing.T, res *RunResult, name string) {
	t.Helper()
	require.Len(t, res.Groups, len(labGroups), name)
	perTopic := 0
	for i, g := range res.Groups {
		assert.Equal(t, labGroups[i].Name, g.Group, name)
		assert.Zero(t, g.Undelivered, "%s group %s", name, g.Group)
		assert.Zero(t, g.Isolation, "%s group %s", name, g.Group)
		assert.GreaterOrEqual(t, g.Received, g.Acknowledged, "%s group %s", name, g.Group)
		if res.Acknowledged >= 100 {
			assert.Positive(t, g.Acknowledged, "%s group %s: its topic got messages", name, g.Group)
		}
		if len(g.Tags) == 0 {
			perTopic += g.Acknowledged
		} else {
			assert.Less(t, g.Acknowledged, res.Groups[slices.IndexFunc(res.Groups, func(o GroupCount) bool {
				return o.Topic == g.Topic && len(o.Tags) == 0
			})].Acknowledged, "%s: the tag filter takes a part of its topic", name)
		}
	}
	assert.Equal(t, res.Acknowledged, perTopic, name)
}

// TestFlushSyncZeroLossAt50Points is the reduced lab the issue asks of go
// test: the zero-loss configuration, flush=sync, loses nothing at 50
// randomized crash points, 25 process crashes and 25 power losses (each
// with its own kill point and, for a power loss, its own loss mode), in runs
// kept short (20 to 1000 acks) so that the suite stays fast. With the
// flush=sync runs of the tests above, the package checks 59 points.
func TestFlushSyncZeroLossAt50Points(t *testing.T) {
	opts := Options{Runs: 25, Seed: 50, Dir: t.TempDir(), MinAcks: 20, MaxAcks: 1000}
	rep, err := Run(context.Background(), opts, []Config{{Flush: zeroloss.FlushSync}}, []Failure{ProcessCrash, PowerLoss})
	require.NoError(t, err)
	var table strings.Builder
	require.NoError(t, rep.WriteTable(&table))
	t.Logf("\n%s", table.String())
	points, acked := 0, 0
	modes := map[string]int{}
	killPoints := map[int]bool{}
	for _, row := range rep.Rows {
		assert.True(t, row.Promised, row.Failure)
		assert.False(t, row.Broken(), row.Failure)
		assert.Zero(t, row.CrossCheckMismatches, row.Failure)
		for _, res := range row.Results {
			points++
			acked += res.Acknowledged
			killPoints[res.KillAfter] = true
			if res.PowerLoss != "" {
				modes[res.PowerLoss]++
			}
			assert.Zero(t, res.Lost, "%s run %d (kill after %d acks, %s) lost acknowledged messages", row.Failure, res.Run, res.KillAfter, res.PowerLoss)
			assert.Zero(t, res.Corrupt, "%s run %d", row.Failure, res.Run)
			assert.Zero(t, res.Duplicates, "%s run %d", row.Failure, res.Run)
			assert.Equal(t, res.Counts, res.CrossCheck, "%s run %d: the cross-check disagrees", row.Failure, res.Run)
			checkGroups(t, &res, fmt.Sprintf("%s run %d", row.Failure, res.Run))
		}
	}
	assert.Equal(t, 50, points)
	assert.Greater(t, len(killPoints), 45, "the kill points are drawn at random")
	assert.Len(t, modes, len(lossModeNames), "every power-loss mode is drawn: %v", modes)
	t.Logf("%d crash points, %d acknowledged messages, power-loss modes %v", points, acked, modes)
}

// TestLabCatchesFaultyQueue runs a child that misbehaves in each way the lab
// counts and checks that the count, and the cross-check, see it. Without
// this, the test above could pass by counting nothing.
func TestLabCatchesFaultyQueue(t *testing.T) {
	tests := []struct {
		fault string
		check func(t *testing.T, res *RunResult)
	}{
		{"phantom-ack", func(t *testing.T, res *RunResult) {
			assert.Positive(t, res.Lost)
			assert.Zero(t, res.Duplicates)
			assert.Zero(t, res.Corrupt)
		}},
		{"duplicate", func(t *testing.T, res *RunResult) {
			assert.Zero(t, res.Lost)
			assert.Positive(t, res.Duplicates)
			assert.Zero(t, res.Corrupt)
		}},
		{"corrupt", func(t *testing.T, res *RunResult) {
			assert.Zero(t, res.Lost)
			assert.Zero(t, res.Duplicates)
			assert.Positive(t, res.Corrupt)
		}},
		{"misroute", func(t *testing.T, res *RunResult) {
			assert.Zero(t, res.Lost, "the messages are in the log, on the wrong topics")
			assert.Zero(t, res.Duplicates)
			assert.Zero(t, res.Corrupt)
			assert.Positive(t, res.Undelivered, "their own topics' groups miss them")
			assert.Positive(t, res.Isolation, "other topics' groups receive them")
		}},
	}
	for _, tt := range tests {
		t.Run("fault="+tt.fault, func(t *testing.T) {
			t.Setenv(faultEnv, tt.fault)
			opts := testOptions(t, 1)
			// The queue deduplicates resent IDs: the planted duplicate needs it off.
			cfg := Config{Flush: zeroloss.FlushAsync, DedupOff: tt.fault == "duplicate"}
			rep, err := Run(context.Background(), opts, []Config{cfg}, []Failure{ProcessCrash})
			require.NoError(t, err)
			row := rep.Row("flush=async", "process-crash")
			require.NotNil(t, row)
			require.Len(t, row.Results, 1)
			res := &row.Results[0]
			tt.check(t, res)
			assert.Equal(t, res.Counts, res.CrossCheck, "the cross-check sees the same fault")
			if tt.fault != "duplicate" {
				assert.True(t, row.Broken())
				assert.Contains(t, row.Verdict(), "BROKEN")
				assert.False(t, rep.OK())
				assert.DirExists(t, res.Dir, "a run that lost or corrupted data keeps its directory")
			}
		})
	}
}

// TestRunErrors: the lab reports what it could not measure instead of a
// clean-looking report.
func TestRunErrors(t *testing.T) {
	t.Run("child cannot start", func(t *testing.T) {
		opts := testOptions(t, 1)
		opts.Executable = "/nonexistent/zeroloss"
		_, err := Run(context.Background(), opts, DefaultConfigs(), Failures())
		require.ErrorContains(t, err, "starting the child")
	})
	t.Run("child never acknowledges", func(t *testing.T) {
		t.Setenv(faultEnv, "silent")
		opts := testOptions(t, 1)
		opts.RunTimeout = 300 * time.Millisecond
		_, err := Run(context.Background(), opts, DefaultConfigs(), Failures())
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "acknowledged 0 of")
	})
	t.Run("child exits by itself", func(t *testing.T) {
		t.Setenv(faultEnv, "fail")
		_, err := Run(context.Background(), testOptions(t, 1), DefaultConfigs(), Failures())
		require.ErrorContains(t, err, "the child exited after 0 of")
		require.ErrorContains(t, err, "failing on purpose", "the child's stderr is in the error")
		require.ErrorContains(t, err, "directory kept: ")
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Run(ctx, testOptions(t, 1), DefaultConfigs(), Failures())
		require.ErrorIs(t, err, context.Canceled)
	})
	t.Run("bad options", func(t *testing.T) {
		opts := testOptions(t, 1)
		opts.MinAcks, opts.MaxAcks = 10, 5
		_, err := Run(context.Background(), opts, DefaultConfigs(), Failures())
		require.ErrorContains(t, err, "MinAcks")
	})
	t.Run("two configurations with one name", func(t *testing.T) {
		configs := []Config{{Flush: zeroloss.FlushSync}, {Name: "flush=sync", Flush: zeroloss.FlushAsync}}
		_, err := Run(context.Background(), testOptions(t, 1), configs, Failures())
		require.ErrorContains(t, err, `two configurations named "flush=sync"`)
	})
	t.Run("unknown failure", func(t *testing.T) {
		_, err := Run(context.Background(), testOptions(t, 1), DefaultConfigs(), []Failure{{Name: "meteor"}})
		require.ErrorContains(t, err, "meteor")
	})
}

// TestChildMainUsage: the child refuses bad arguments before touching a disk.
func TestChildMainUsage(t *testing.T) {
	for _, args := range [][]string{
		{ChildCommand},
		{ChildCommand, "--dir", t.TempDir(), "--flush", "sometimes"},
		{ChildCommand, "--dir", t.TempDir(), "extra"},
		{ChildCommand, "--bogus"},
		{ChildCommand, "--dir", t.TempDir(), "--workload", "consume"},
		{ChildCommand, "--dir", t.TempDir(), "--ack", "on-receive"},
		{ChildCommand, "--dir", t.TempDir(), "--workload", "consume", "--ack", "sometimes"},
		{ChildCommand, "--dir", t.TempDir(), "--workload", "tx", "--power-loss"},
		{ChildCommand, "--dir", t.TempDir(), "--workload", "bogus"},
		{ChildCommand, "--dir", t.TempDir(), "--repl", "sometimes"},
		{ChildCommand, "--dir", t.TempDir(), "--producer", "tx"},
		{ChildCommand, "--dir", t.TempDir(), "--producer", "strict", "--workload", "tx"},
		{ChildCommand, "--dir", t.TempDir(), "--outage", "meteor", "--outage-at", "5"},
		{ChildCommand, "--dir", t.TempDir(), "--outage", "fsync", "--repl", "sync"},
		{ChildCommand, "--dir", t.TempDir(), "--outage", "fsync", "--power-loss"},
		{ChildCommand, "--dir", t.TempDir(), "--outage", "fsync", "--outage-at", "-1"},
	} {
		t.Run(fmt.Sprint(args[1:]), func(t *testing.T) {
			assert.Equal(t, childUsage, ChildMain(args))
		})
	}
}

func TestIsChild(t *testing.T) {
	t.Setenv(ChildEnv, "")
	assert.False(t, IsChild([]string{ChildCommand}))
	t.Setenv(ChildEnv, "1")
	assert.True(t, IsChild([]string{ChildCommand, "--dir", "x"}))
	assert.False(t, IsChild([]string{"lab"}))
	assert.False(t, IsChild(nil))
}

func TestReportWriters(t *testing.T) {
	rep := &Report{Seed: 7, RunsPerRow: 2}
	tags := []string{"paid", "shipped"}
	rep.addRow(Row{Config: "flush=sync", Failure: "process-crash", Promised: true, Results: []RunResult{
		{Run: 1, Acknowledged: 100, Counts: Counts{Recovered: 103, UnackedPresent: 3}, CrossCheck: Counts{Recovered: 103, UnackedPresent: 3}, Throughput: 1000,
			Groups: []GroupCount{{Group: "orders", Topic: "orders", Acknowledged: 30, Received: 31}, {Group: "orders-paid-shipped", Topic: "orders", Tags: tags, Acknowledged: 15, Received: 15}}},
		{Run: 2, Acknowledged: 200, Counts: Counts{Recovered: 201, UnackedPresent: 1}, CrossCheck: Counts{Recovered: 201, UnackedPresent: 1}, Throughput: 3000,
			Groups: []GroupCount{{Group: "orders", Topic: "orders", Acknowledged: 50, Received: 50}, {Group: "orders-paid-shipped", Topic: "orders", Tags: tags, Acknowledged: 25, Received: 25}}},
	}})
	rep.addRow(Row{Config: "flush=async", Failure: "process-crash", Promised: true, Results: []RunResult{
		{Run: 1, Acknowledged: 50, Counts: Counts{Recovered: 49, Lost: 1}, CrossCheck: Counts{Recovered: 49, Lost: 1}, Throughput: 5000},
		{Run: 2, Acknowledged: 50, Counts: Counts{Recovered: 50}, CrossCheck: Counts{Recovered: 51}, Throughput: 7000},
	}})

	sync := rep.Row("flush=sync", "process-crash")
	require.NotNil(t, sync)
	assert.Equal(t, Row{
		Config: "flush=sync", Failure: "process-crash", Promised: true, Runs: 2, Acknowledged: 300,
		UnackedPresent: 4, Recovered: 304, MedianThroughput: 2000, Results: sync.Results,
		Groups: []GroupCount{{Group: "orders", Topic: "orders", Acknowledged: 80, Received: 81}, {Group: "orders-paid-shipped", Topic: "orders", Tags: tags, Acknowledged: 40, Received: 40}},
	}, *sync, "the groups summed run by run")
	async := rep.Row("flush=async", "process-crash")
	require.NotNil(t, async)
	assert.Equal(t, 1, async.Lost)
	assert.Equal(t, 1, async.CrossCheckMismatches)
	assert.True(t, async.Broken())
	assert.False(t, sync.Broken())
	assert.False(t, rep.OK())
	assert.Nil(t, rep.Row("flush=sync", "power-loss"))

	// A topic mixed up: broken, though the row has no promise of zero loss.
	crossed := Counts{Recovered: 10, Lost: 5, Undelivered: 2, Isolation: 1}
	rep.addRow(Row{Config: "flush=async", Failure: "power-loss", Results: []RunResult{{Run: 1, Acknowledged: 15,
		Counts: crossed, CrossCheck: crossed, Groups: []GroupCount{{Group: "emails", Topic: "emails", Acknowledged: 4, Received: 3, Undelivered: 2, Isolation: 1}}}}})
	power := rep.Row("flush=async", "power-loss")
	require.NotNil(t, power)
	assert.True(t, power.Broken())
	assert.Equal(t, "BROKEN: a group missed or crossed topics", power.Verdict())
	assert.Equal(t, "BROKEN", power.ShortVerdict())
	assert.Equal(t, "3 bad", power.TopicsSummary())
	power.Undelivered, power.Isolation = 0, 0
	assert.False(t, power.Broken(), "its loss is only measured")
	assert.Equal(t, "ok", power.TopicsSummary())
	power.Undelivered, power.Isolation = 2, 1

	var table bytes.Buffer
	require.NoError(t, rep.WriteWideTable(&table))
	lines := strings.Split(table.String(), "\n")
	require.GreaterOrEqual(t, len(lines), 3, table.String())
	assert.Regexp(t, `^config +failure +runs +acknowledged +refused +lost +duplicates +corrupt +phantom +undelivered +isolation +order +unacked +recovered +msgs/s +cross-check +verdict$`, lines[0])
	assert.Regexp(t, `^flush=sync +process-crash +2 +300 +0 +0 +0 +0 +0 +0 +0 +0 +4 +304 +2000 +agrees +ok: zero loss, as promised$`, lines[1])
	assert.Regexp(t, `^flush=async +process-crash +2 +100 +0 +1 +0 +0 +0 +0 +0 +0 +0 +99 +6000 +DISAGREES\(1\) +BROKEN: promised zero loss$`, lines[2])
	assert.Regexp(t, `^flush=async +power-loss +1 +15 +0 +5 +0 +0 +0 +2 +1 +0 +0 +10 +0 +agrees +BROKEN: a group missed or crossed topics$`, lines[3])
	// Text starts under its header, numbers end under theirs.
	header := lines[0]
	for i, cells := range [][3]string{{"process-crash", "300", "ok:"}, {"process-crash", "100", "BROKEN:"}} {
		l := lines[1+i]
		assert.Equal(t, strings.Index(header, "failure"), strings.Index(l, cells[0]), l)
		assert.Equal(t, strings.Index(header, "acknowledged")+len("acknowledged"), strings.Index(l, cells[1])+len(cells[1]), l)
		assert.Equal(t, strings.Index(header, "verdict"), strings.Index(l, cells[2]), l)
	}
	assert.Contains(t, table.String(), "seed 7, 2 runs per row")

	table.Reset()
	require.NoError(t, rep.WriteTable(&table))
	lines = strings.Split(table.String(), "\n")
	require.GreaterOrEqual(t, len(lines), 3, table.String())
	assert.Regexp(t, `^config +failure +acked +lost +dups +topics +msgs/s +verdict$`, lines[0])
	assert.Regexp(t, `^flush=sync +process-crash +300 +0 +0 +ok +2000 +ok: zero loss$`, lines[1])
	assert.Regexp(t, `^flush=async +process-crash +100 +1 +0 +- +6000 +BROKEN, counts differ$`, lines[2])
	assert.Regexp(t, `^flush=async +power-loss +15 +5 +0 +3 bad +0 +BROKEN$`, lines[3])
	assert.Contains(t, table.String(), "counts differ: see --wide", "the legend explains the verdict")
	assert.Contains(t, table.String(), "seed 7, 2 runs per row")

	var out bytes.Buffer
	require.NoError(t, rep.WriteJSON(&out))
	var decoded Report
	require.NoError(t, json.Unmarshal(out.Bytes(), &decoded))
	assert.Equal(t, *rep, decoded, "the JSON holds the whole report")
	assert.Contains(t, out.String(), `"config": "flush=async"`)
	assert.Contains(t, out.String(), `"lost": 1`)
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{5}, 5},
		{[]float64{9, 1, 5}, 5},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, median(tt.in), "%v", tt.in)
	}
}

// defaultRows are the default set's rows with the figures of a real run
// (README.md's), widest values included: what WriteTable must fit in 100
// columns.
func defaultRows() *Report {
	rep := &Report{Seed: 42, RunsPerRow: 10, Elapsed: 61 * time.Second}
	for _, r := range []struct {
		config, failure          string
		promised                 bool
		acked, refused, lost     int
		dups, unacked, recovered int
		throughput               float64
	}{
		{"flush=sync", "process-crash", true, 47786, 0, 0, 0, 70, 47856, 11182},
		{"flush=sync", "power-loss", true, 50900, 0, 0, 0, 23, 50923, 7792},
		{"flush=async", "process-crash", true, 47754, 0, 0, 0, 53, 47807, 50807},
		{"flush=async", "power-loss", false, 30284, 0, 22215, 0, 0, 8069, 50450},
		{"flush=sync/repl=sync", "power-loss", true, 32851, 0, 0, 0, 12, 32863, 3870},
		{"flush=sync/repl=sync", "leader-disk-loss", true, 50119, 0, 0, 0, 11, 50130, 7371},
		{"flush=sync/repl=async", "leader-disk-loss", false, 38680, 0, 40, 0, 0, 38640, 11263},
		{"flush=sync/ack=after-handling", "consumer-crash", true, 1503, 0, 0, 14, 34, 1551, 10040},
		{"flush=sync/ack=on-receive", "consumer-crash", false, 2036, 0, 774, 0, 18, 1280, 7956},
		{"flush=sync/ack=ordered", "consumer-crash", true, 1498, 0, 0, 12, 30, 1540, 9630},
		{"flush=sync", "queue-outage", true, 52429, 6381, 0, 0, 68, 52497, 8979},
		{"flush=sync/producer=strict", "queue-outage", true, 49599, 0, 0, 0, 76, 49675, 5045},
		{"flush=sync/producer=tx", "tx-crash", true, 1112, 0, 0, 0, 0, 1112, 891},
	} {
		row := Row{Config: r.config, Failure: r.failure, Promised: r.promised, Runs: 10,
			Acknowledged: r.acked, Refused: r.refused, Lost: r.lost, Duplicates: r.dups, UnackedPresent: r.unacked,
			Recovered: r.recovered, MedianThroughput: r.throughput}
		if !strings.HasPrefix(r.failure, "consumer") && !strings.HasPrefix(r.failure, "tx") {
			row.Groups = []GroupCount{{Group: "orders", Topic: "orders", Acknowledged: r.acked / 4, Received: r.acked / 4}}
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep
}

// TestTableFitsIn100Columns: the default table of the default set, a
// broken row and larger figures included, fits in a 100-column terminal,
// and the wide table still has every column.
func TestTableFitsIn100Columns(t *testing.T) {
	rep := defaultRows()
	scenarios := DefaultScenarios()
	require.Len(t, rep.Rows, len(scenarios))
	for _, s := range scenarios {
		require.NotNil(t, rep.Row(s.Config.Label(), s.Failure.Name), "defaultRows lacks %s %s", s.Config.Label(), s.Failure.Name)
	}
	broken := &rep.Rows[len(rep.Rows)-1]
	broken.Phantom, broken.Acknowledged, broken.MedianThroughput = 3, 123456, 99999 // BROKEN, six digits
	crossed := rep.Row("flush=sync/producer=strict", "queue-outage")
	crossed.Undelivered, crossed.Isolation = 40, 12 // a topic mixed up

	var table strings.Builder
	require.NoError(t, rep.WriteTable(&table))
	t.Logf("\n%s", table.String())
	for _, line := range strings.Split(table.String(), "\n") {
		assert.LessOrEqual(t, utf8.RuneCountInString(line), 100, "%q", line)
	}
	assert.Contains(t, table.String(), "flush=sync/producer=tx         tx-crash          123456      0     0  -        99999  BROKEN")
	assert.Contains(t, table.String(), "flush=sync/producer=strict     queue-outage       49599      0     0  52 bad    5045  BROKEN")
	assert.Contains(t, table.String(), "flush=sync                     queue-outage       52429      0     0  ok        8979  ok: zero loss")

	var wide strings.Builder
	require.NoError(t, rep.WriteWideTable(&wide))
	header := strings.Fields(strings.SplitN(wide.String(), "\n", 2)[0])
	assert.Equal(t, TableColumns, header, "the wide table has every column")
	assert.Contains(t, wide.String(), "not acknowledged, never counted lost", "and the full legend")
	assert.Regexp(t, `(?m)^flush=sync +queue-outage +10 +52429 +6381 +0 +0 +0 +0 +0 +0 +0 +68 +52497 +8979 +agrees +ok: zero loss, as promised$`, wide.String())
	assert.Regexp(t, `(?m)^flush=sync/producer=strict +queue-outage +10 +49599 +0 +0 +0 +0 +0 +40 +12 +0 +76 +49675 +5045 +agrees +BROKEN: a group missed or crossed topics$`, wide.String())
}

// TestProgressLine: outside a terminal, nothing before each run and one
// plain line per finished row; on a terminal (a character device), the line
// is rewritten in place and no row line is written.
func TestProgressLine(t *testing.T) {
	row := &defaultRows().Rows[3]
	row.Elapsed = 1234 * time.Millisecond

	var log bytes.Buffer
	p := newProgressLine(&log)
	p.printf("[%d/%d] %s run %d/%d...", 31, 120, "flush=async power-loss", 1, 10)
	p.rowDone(4, 12, row)
	p.clear()
	assert.Equal(t, "[4/12] flush=async power-loss: 10 runs, 30284 acknowledged, 22215 lost, measured (no promise) (1.2s)\n", log.String())

	if runtime.GOOS == "windows" {
		return
	}
	terminal, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0) // a character device, as a terminal is
	require.NoError(t, err)
	defer terminal.Close()
	p = newProgressLine(terminal)
	assert.True(t, p.inPlace)
	var screen bytes.Buffer
	p.w = &screen
	p.printf("run %d", 1)
	p.rowDone(4, 12, row)
	p.clear()
	assert.Equal(t, "\rrun 1\r     \r", screen.String())
}
