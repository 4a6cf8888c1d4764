package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/lab"
)

// TestLab runs the real lab once per configuration and failure: the child is
// this test binary, which init in lab.go hands to lab.ChildMain.
func TestLab(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills child processes for a few seconds")
	}
	dir := t.TempDir()
	jsonFile := filepath.Join(t.TempDir(), "report.json")
	htmlFile := filepath.Join(t.TempDir(), "report.html")
	r := runTool("lab", "--runs", "1", "--seed", "3", "--dir", dir, "--json", jsonFile, "--html", htmlFile,
		"--reference", "--peers-dir", t.TempDir(), "--jetstream", "--jetstream-dir", t.TempDir())
	require.Equal(t, exitOK, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	assert.Regexp(t, `(?m)^config +failure +acked +lost +dups +topics +msgs/s +verdict$`, r.stdout)
	// acked, lost, dups, topics, msgs/s
	for _, want := range []string{
		`flush=sync +process-crash +\d+ +0 +0 +ok +\d+ +ok: zero loss`,
		`flush=async +process-crash +\d+ +0 +0 +ok +\d+ +ok: zero loss`,
		`flush=sync +power-loss +\d+ +0 +0 +ok +\d+ +ok: zero loss`,
		`flush=async +power-loss +\d+ +\d+ +0 +ok +\d+ +measured`,
		`flush=sync/repl=sync +power-loss +\d+ +0 +0 +ok +\d+ +ok: zero loss`,
		`flush=sync/repl=sync +leader-disk-loss +\d+ +0 +0 +ok +\d+ +ok: zero loss`,
		`flush=sync/repl=async +leader-disk-loss +\d+ +\d+ +0 +ok +\d+ +measured`,
		`flush=sync/ack=after-handling +consumer-crash +\d+ +0 +\d+ +- +\d+ +ok: zero loss`,
		`flush=sync/ack=on-receive +consumer-crash +\d+ +\d+ +0 +- +\d+ +measured`,
		`flush=sync/ack=ordered +consumer-crash +\d+ +0 +\d+ +- +\d+ +ok: zero loss`,
		`flush=sync +queue-outage +\d+ +0 +0 +ok +\d+ +ok: zero loss`,
		`flush=sync/producer=strict +queue-outage +\d+ +0 +0 +ok +\d+ +ok: zero loss`,
		`flush=sync/producer=tx +tx-crash +\d+ +0 +0 +- +\d+ +ok: zero loss`,
	} {
		assert.Regexp(t, "(?m)^"+want+"$", r.stdout)
	}
	for _, line := range strings.Split(r.stdout, "\n") {
		assert.LessOrEqual(t, len(line), 100, "the default table fits a 100-column terminal: %q", line)
	}
	assert.Contains(t, r.stdout, "seed 3, 1 runs per row")
	// stderr is not a terminal: a line per finished row, none rewritten.
	assert.NotContains(t, r.stderr, "\r")
	assert.Regexp(t, `^zeroloss lab: --jetstream: JetStream lab not available: no jetstream module in .*; the JetStream rows are left out\n`+
		`(\[\d+/13\] flush=\S+ [a-z-]+: 1 runs, \d+ acknowledged, \d+ lost, [^\n]+\n){13}`+
		`zeroloss lab: --reference: reference not available: no peers module in .*; the reference rows are left out\n$`, r.stderr,
		"a line per finished row as stderr is not a terminal; a clear word on the missing reference and JetStream module (the latter before the runs)")
	assert.Contains(t, r.stderr, "[13/13] flush=sync/producer=tx tx-crash: 1 runs, ")
	assert.NotContains(t, r.stdout, "jetstream/", "no JetStream rows without the module")

	data, err := os.ReadFile(jsonFile)
	require.NoError(t, err)
	var report lab.Report
	require.NoError(t, json.Unmarshal(data, &report))
	assert.Equal(t, uint64(3), report.Seed)
	require.Len(t, report.Rows, 13, "the default set: every row of the guarantee table, replication, consumer-crash three times, outage twice, tx-crash")
	withTopics := 0
	for _, row := range report.Rows {
		require.Len(t, row.Results, 1)
		assert.Positive(t, row.Results[0].Acknowledged, row.Config)
		if len(row.Groups) > 0 {
			withTopics++
			assert.Len(t, row.Groups, 5, "%s %s: a group per topic and a tag-filtered one", row.Config, row.Failure)
		}
	}
	assert.Equal(t, 9, withTopics, "every row whose child only sends has topics")
	outage := report.Row("flush=sync", "queue-outage")
	require.NotNil(t, outage)
	assert.Positive(t, outage.Refused, "plain Send callers saw the outage: the JSON has every column")
	html, err := os.ReadFile(htmlFile)
	require.NoError(t, err)
	assert.Equal(t, 2, strings.Count(string(html), "<svg "), "charts of lost messages and throughput")
	assert.Equal(t, 13+9*5, strings.Count(string(html), "<tr><td>flush="), "one table row per configuration and failure, one per group of the rows with topics")
	assert.Contains(t, string(html), "Consumer groups by topic")
	assert.Contains(t, string(html), "<dt>seed</dt><dd>3</dd>")

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "clean runs leave nothing in --dir")
}

// TestLabReference runs the reference (tidwall/wal in the bench/peers
// module, with go run) for one run of each of its rows.
func TestLabReference(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the bench/peers module's labref program")
	}
	var progress strings.Builder // not a terminal: a line before, one per row after
	rows, err := runReference(context.Background(), filepath.Join("..", "..", "bench", "peers"),
		lab.Options{Runs: 1, Seed: 3, Dir: t.TempDir()}, &progress)
	require.NoError(t, err)
	require.Len(t, rows, 2)
	assert.Regexp(t, `^running the reference \(go run ./labref in .*\)\.\.\.\n`+
		`\[1/2\] tidwall/wal fsync each power-loss: 1 runs, \d+ acknowledged, \d+ lost, measured \(no promise\)[^\n]*\n`+
		`\[2/2\] tidwall/wal fsync each, dir entries kept power-loss: 1 runs, [^\n]*\n$`, progress.String())
	assert.Equal(t, "tidwall/wal fsync each", rows[0].Config)
	assert.Equal(t, "tidwall/wal fsync each, dir entries kept", rows[1].Config)
	for _, row := range rows {
		assert.Equal(t, "power-loss", row.Failure)
		assert.Equal(t, 1, row.Runs)
		assert.Positive(t, row.Acknowledged, row.Config)
		assert.False(t, row.Promised, row.Config)
		assert.Zero(t, row.CrossCheckMismatches, row.Config)
	}
	_, err = runReference(context.Background(), t.TempDir(), lab.Options{Runs: 1}, nil)
	require.ErrorIs(t, err, errNoReference)
}

// TestLabJetStream runs the JetStream lab (the jetstream module's labjs
// program, with go run) for one run of each of its rows, on small kill
// points.
// TestLabJetStream builds and runs the jetstream module's labjs program, which
// compiles nats-server (over a minute on a cold cache, and it needs the
// module proxy), so it runs only when ZEROLOSS_LAB_JETSTREAM=1 is set. CI
// runs the scenario itself in the jetstream module's tests (labjs).
func TestLabJetStream(t *testing.T) {
	if os.Getenv("ZEROLOSS_LAB_JETSTREAM") != "1" {
		t.Skip("set ZEROLOSS_LAB_JETSTREAM=1 to build and run jetstream/labjs through zeroloss lab")
	}
	dir := t.TempDir()
	rows, err := runJetStream(context.Background(), filepath.Join("..", "..", "jetstream"),
		lab.Options{Runs: 1, Seed: 3, Dir: dir, MinAcks: 100, MaxAcks: 300}, nil)
	require.NoError(t, err)
	require.Len(t, rows, 2)
	assert.Equal(t, "jetstream/sync=default", rows[0].Config)
	assert.Equal(t, "jetstream/sync=always", rows[1].Config)
	for _, row := range rows {
		assert.Equal(t, "process-crash", row.Failure)
		assert.Equal(t, 1, row.Runs)
		assert.True(t, row.Promised, row.Config)
		assert.GreaterOrEqual(t, row.Acknowledged, 100, "%s: the kill point is at least --min-acks", row.Config)
		assert.Zero(t, row.Lost, row.Config)
		assert.Zero(t, row.Corrupt, row.Config)
		assert.Zero(t, row.CrossCheckMismatches, row.Config)
		assert.False(t, row.Broken(), row.Config)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "clean runs leave nothing in --dir")
}

// TestLabJetStreamMissing: without the jetstream module, or without its
// labjs program, --jetstream is not available, and says why.
func TestLabJetStreamMissing(t *testing.T) {
	empty := t.TempDir()
	_, err := runJetStream(context.Background(), empty, lab.Options{Runs: 1}, nil)
	require.ErrorIs(t, err, errNoJetStream)
	assert.ErrorContains(t, err, "no jetstream module in "+empty)

	noProgram := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(noProgram, "go.mod"), []byte("module github.com/zerolossmq/zeroloss/jetstream\n\ngo 1.26\n"), 0o600))
	_, err = runJetStream(context.Background(), noProgram, lab.Options{Runs: 1}, nil)
	require.ErrorIs(t, err, errNoJetStream)
	assert.ErrorContains(t, err, "no labjs program in "+noProgram)

	other := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(other, "go.mod"), []byte("module github.com/zerolossmq/zeroloss/jetstreamx\n"), 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(other, "labjs"), 0o700))
	_, err = runJetStream(context.Background(), other, lab.Options{Runs: 1}, nil)
	require.ErrorIs(t, err, errNoJetStream, "another module is not the jetstream module")

	_, _, err = findLabJS(filepath.Join("..", "..", "jetstream"))
	require.NoError(t, err, "the repository's jetstream module")
}

// TestLabReport checks the HTML report of the lab on figures made up for it.
func TestLabReport(t *testing.T) {
	rep := &lab.Report{Seed: 7, RunsPerRow: 2, Elapsed: 3 * time.Second, Rows: []lab.Row{
		{Config: "flush=sync", Failure: "power-loss", Promised: true, Runs: 2, Acknowledged: 900, Recovered: 905, MedianThroughput: 1234.4},
		{Config: "flush=async", Failure: "power-loss", Runs: 2, Acknowledged: 5000, Lost: 37, Recovered: 4963, MedianThroughput: 45678},
		{Config: "flush=<b>", Failure: "process-crash", Promised: true, Runs: 2, Acknowledged: 10, Lost: 1, CrossCheckMismatches: 1},
		{Config: "flush=sync", Failure: "process-crash", Promised: true, Runs: 2, Acknowledged: 40, Recovered: 40, Undelivered: 3, Isolation: 2,
			Groups: []lab.GroupCount{{Group: "default", Acknowledged: 10, Received: 9, Undelivered: 1},
				{Group: "orders-paid-shipped", Topic: "orders", Tags: []string{"paid", "shipped"}, Acknowledged: 5, Received: 5, Undelivered: 2, Isolation: 2}}},
	}}
	out := labReport(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), t.TempDir(), rep)
	var b strings.Builder
	require.NoError(t, out.WriteHTML(&b))
	html := b.String()
	for _, want := range []string{
		"<dt>seed</dt><dd>7</dd>", "<dt>runs per row</dt><dd>2</dd>", "<dt>date</dt><dd>2026-01-02T03:04:05Z</dd>",
		`<tr><td>flush=async</td><td>power-loss</td><td class="num">2</td><td class="num">5000</td><td class="num">0</td><td class="num">37</td>`,
		`>phantom</th>`,
		`<td class="num">45678</td><td>agrees</td><td>measured (no promise)</td></tr>`,
		`<td class="num">1234</td><td>agrees</td><td>ok: zero loss, as promised</td></tr>`,
		"<td>DISAGREES(1)</td><td>BROKEN: promised zero loss</td>",
		"<h2>Acknowledged messages lost</h2>", ">flush=async / power-loss</text>", "37 msgs", "of 5000 acknowledged",
		"flush=&lt;b&gt;",
		`>undelivered</th>`, `>isolation</th>`,
		`<td class="num">3</td><td class="num">2</td>`, "<td>BROKEN: a group missed or crossed topics</td>",
		"<h2>Consumer groups by topic (sums over the runs)</h2>",
		`<tr><td>flush=sync</td><td>process-crash</td><td>default</td><td>(default)</td><td>all</td><td class="num">10</td><td class="num">9</td><td class="num">1</td><td class="num">0</td></tr>`,
		`<td>orders-paid-shipped</td><td>orders</td><td>paid,shipped</td>`,
	} {
		assert.True(t, strings.Contains(html, want), "the HTML report lacks %q", want)
	}
	assert.NotContains(t, html, "<b>")
	assert.Equal(t, 2, strings.Count(html, "<svg "))
	assert.Equal(t, 8, strings.Count(html, "<rect "), "one bar per row in each chart")
}

func TestLabUsage(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"help", []string{"help", "lab"}, exitOK, "usage: zeroloss lab [--runs N] [--seed S] [--dir D] [--all] [--reference [--peers-dir DIR]] [--jetstream [--jetstream-dir DIR]] [--wide] [--json FILE]", ""},
		{"-h lists --reference", []string{"lab", "-h"}, exitOK, "", "-reference"},
		{"-h lists --jetstream", []string{"lab", "-h"}, exitOK, "", "-jetstream-dir"},
		{"-h lists --all", []string{"lab", "-h"}, exitOK, "", "-all"},
		{"-h lists --wide", []string{"lab", "-h"}, exitOK, "", "-wide"},
		{"-h", []string{"lab", "-h"}, exitOK, "", "-runs"},
		{"zero runs", []string{"lab", "--runs", "0"}, exitUsage, "", "--runs is 0"},
		{"bad seed", []string{"lab", "--seed", "minus-one"}, exitUsage, "", "invalid value"},
		{"argument", []string{"lab", "somewhere"}, exitUsage, "", `unexpected arguments ["somewhere"]`},
		{"child is not a command", []string{lab.ChildCommand}, exitUsage, "", "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runTool(tt.args...)
			assert.Equal(t, tt.code, r.code, "stderr: %s", r.stderr)
			assert.Contains(t, r.stdout, tt.stdout)
			assert.Contains(t, r.stderr, tt.stderr)
		})
	}
	r := runTool("help")
	assert.Contains(t, r.stdout, "  lab ")
	assert.NotContains(t, r.stdout, lab.ChildCommand, "the child's command is hidden")
}
