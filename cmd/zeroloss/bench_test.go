package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/report"
)

// TestBench runs the whole standard set with a tiny duration per case on real
// files, and checks the table, the ratios, the verification and both files.
func TestBench(t *testing.T) {
	dir := t.TempDir()
	out := t.TempDir()
	jsonFile, htmlFile := filepath.Join(out, "bench.json"), filepath.Join(out, "bench.html")
	r := runTool("bench", "--duration", "150ms", "--dir", dir, "--json", jsonFile, "--html", htmlFile)
	require.Equal(t, exitOK, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	assert.Empty(t, r.stderr, "no progress line when stderr is not a terminal")

	assert.Regexp(t, `(?m)^  fdatasync: +\d+(\.\d+)?(ns|µs|ms|s) median, `, r.stdout)
	assert.Regexp(t, `(?m)^case +producers +messages +msgs/s +p50 µs +p99 µs +p99\.9 µs +vs baseline +ratio +msgs/fsync +verified$`, r.stdout)
	num := `\d+(\.\d+)?`
	follower := "disk"
	if benchTmpfs() != "" {
		follower = "tmpfs"
	}
	rows := []string{
		`raw write +1 +\d+ +\d+ +` + num + ` +` + num + ` +` + num + ` +- +- +- +-`,
		`raw write\+fdatasync +1 +\d+ +\d+ +` + num + ` +` + num + ` +` + num + ` +- +- +- +-`,
		`raw batch64\+fdatasync +1 +\d+ +\d+ .* +- +- +- +-`,
		`flush=sync +1 +\d+ +\d+ .* raw write\+fdatasync +` + num + `x +` + num + ` +ok`,
		`flush=sync +16 +\d+ +\d+ .* raw batch64\+fdatasync +` + num + `x +` + num + ` +ok`,
		`flush=sync +64 +\d+ +\d+ .* raw batch64\+fdatasync +` + num + `x +` + num + ` +ok`,
		`flush=async +1 +\d+ +\d+ .* raw write +` + num + `x +- +ok`,
		`flush=async +16 +\d+ +\d+ .* raw write +` + num + `x +- +ok`,
		`repl=async follower=` + follower + ` +64 +\d+ +\d+ .* flush=sync alternated +` + num + `x +` + num + ` +ok`,
		`repl=sync follower=` + follower + ` +64 +\d+ +\d+ .* flush=sync alternated +` + num + `x +` + num + ` +ok`,
		`strict producer +16 +\d+ +\d+ .* flush=sync alternated +` + num + `x +` + num + ` +ok`,
		`transaction +16 +\d+ +\d+ .* flush=sync alternated +` + num + `x +` + num + ` +ok`,
	}
	for _, row := range rows {
		assert.Regexp(t, regexp.MustCompile(`(?m)^`+row+`$`), r.stdout)
	}

	data, err := os.ReadFile(jsonFile)
	require.NoError(t, err)
	var got struct {
		report.Report
		Data []benchResult `json:"data"`
	}
	require.NoError(t, json.Unmarshal(data, &got))
	assert.Equal(t, "zeroloss bench", got.Title)
	require.Len(t, got.Tables, 1)
	assert.Len(t, got.Tables[0].Rows, len(benchCases()))
	require.Len(t, got.Data, len(benchCases()))
	throughput := map[string]float64{}
	for _, res := range got.Data {
		assert.Positive(t, res.Messages, res.Case)
		assert.Positive(t, res.Throughput, res.Case)
		assert.Positive(t, res.P50, res.Case)
		assert.LessOrEqual(t, res.P50, res.P99, res.Case)
		assert.LessOrEqual(t, res.P99, res.P999, res.Case)
		assert.LessOrEqual(t, res.P999, res.Max, res.Case)
		assert.Empty(t, res.Error, res.Case)
		if res.Baseline == "" {
			throughput[res.Case] = res.Throughput
			assert.Empty(t, res.Verified, res.Case)
			continue
		}
		assert.Equal(t, "ok", res.Verified, res.Case)
		if res.Baseline == caseAlternated {
			assert.Positive(t, res.BaselineThroughput, res.Case)
			assert.InDelta(t, res.Throughput/res.BaselineThroughput, res.Ratio, 1e-9, "%s p=%d", res.Case, res.Producers)
			continue
		}
		assert.Zero(t, res.BaselineThroughput, res.Case)
		require.Contains(t, throughput, res.Baseline, "a baseline runs before its cases")
		assert.InDelta(t, res.Throughput/throughput[res.Baseline], res.Ratio, 1e-9, "%s p=%d", res.Case, res.Producers)
	}

	html, err := os.ReadFile(htmlFile)
	require.NoError(t, err)
	page := string(html)
	assert.True(t, strings.HasPrefix(page, "<!DOCTYPE html>"))
	assert.Equal(t, 3, strings.Count(page, "<svg "), "throughput, p50 and p99 charts")
	for _, want := range []string{"<dt>fdatasync</dt>", "<td>raw write&#43;fdatasync</td>", "<td>flush=sync</td>",
		"<td>flush=async</td>", ">flush=sync p=64</text>", "msgs/s", "<td>repl=sync follower=" + follower + "</td>",
		"<td>strict producer</td>", "<td>transaction</td>", "<td>flush=sync alternated</td>"} {
		assert.True(t, strings.Contains(page, want), "the HTML report lacks %q", want)
	}
	assert.Equal(t, len(benchCases()), strings.Count(page, "<tr><td>"), "one table row per case")

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "a clean run leaves nothing in --dir")
}

func TestBenchVerifyRejects(t *testing.T) {
	dir := t.TempDir()
	_, sent, _, _, err := queueSend(t.Context(), dir, zeroloss.FlushSync, 2, 20*time.Millisecond)
	require.NoError(t, err)
	require.Positive(t, sent)
	require.NoError(t, verifyMessages(dir, sent))
	assert.ErrorContains(t, verifyMessages(dir, sent+1), "Send acknowledged")
	assert.ErrorContains(t, verifyMessages(dir, sent-1), "Send acknowledged")
}

// TestBenchAlternatingVerifyRejects runs each side of the alternating cases
// briefly and checks that its verification accepts exactly what it sent.
func TestBenchAlternatingVerifyRejects(t *testing.T) {
	opens := []struct {
		name string
		open func(dir string) (*benchSender, error)
	}{
		{"plain", openPlainSender},
		{"repl=async", func(dir string) (*benchSender, error) { return openReplicatedSender(dir, zeroloss.ReplicateAsync) }},
		{"repl=sync", func(dir string) (*benchSender, error) { return openReplicatedSender(dir, zeroloss.ReplicateSync) }},
		{"strict", openStrictSender},
		{"transaction", openTxSender},
	}
	for _, o := range opens {
		t.Run(o.name, func(t *testing.T) {
			s, err := o.open(filepath.Join(t.TempDir(), "side"))
			require.NoError(t, err)
			if s.cleanup != nil {
				t.Cleanup(s.cleanup)
			}
			sent, _, err := sendFor(t.Context(), s.send, 2, 20*time.Millisecond, nil)
			require.NoError(t, err)
			require.Positive(t, sent)
			require.NoError(t, s.stop())
			assert.Error(t, s.verify(sent+1), "verify(%d) after %d sent", sent+1, sent)
			assert.NoError(t, s.verify(sent))
		})
	}
}

// TestVerifyTransactionsRejects checks that a log of plain messages, which
// holds no halves, fails the transactions' verification.
func TestVerifyTransactionsRejects(t *testing.T) {
	dir := t.TempDir()
	_, sent, _, _, err := queueSend(t.Context(), dir, zeroloss.FlushSync, 2, 20*time.Millisecond)
	require.NoError(t, err)
	assert.ErrorContains(t, verifyTransactions(dir, sent), "outside any transaction")
}

func TestBenchUsage(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"help", []string{"help", "bench"}, exitOK, "usage: zeroloss bench [--duration D] [--dir DIR] [--json FILE] [--html FILE]", ""},
		{"-h", []string{"bench", "-h"}, exitOK, "", "-duration"},
		{"zero duration", []string{"bench", "--duration", "0s"}, exitUsage, "", "--duration is 0s"},
		{"bad duration", []string{"bench", "--duration", "soon"}, exitUsage, "", "invalid value"},
		{"argument", []string{"bench", "somewhere"}, exitUsage, "", `unexpected arguments ["somewhere"]`},
		{"missing dir", []string{"bench", "--duration", "1ms", "--dir", "/nonexistent/zeroloss"}, exitFailure, "", "zeroloss bench: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runTool(tt.args...)
			assert.Equal(t, tt.code, r.code, "stderr: %s", r.stderr)
			assert.Contains(t, r.stdout, tt.stdout)
			assert.Contains(t, r.stderr, tt.stderr)
		})
	}
	assert.Contains(t, runTool("help").stdout, "  bench ")
}
