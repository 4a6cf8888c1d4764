package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// newQueue creates a queue in a temporary directory, sends n messages of
// varied sizes, some with keys and headers, closes it and returns the
// directory and the segment files in seq order. Its n+1 frames are the
// queue's epoch record (seq 1) and the messages (seqs 2..n+1).
func newQueue(t *testing.T, n int) (dir string, segments []string) {
	t.Helper()
	dir = t.TempDir()
	q, err := zeroloss.Open(dir, &zeroloss.Options{SegmentSize: 64 << 10, MaxMessageSize: 4 << 10})
	require.NoError(t, err)
	for i := range n {
		m := &zeroloss.Message{Body: bytes.Repeat([]byte{byte('a' + i%26)}, 300+i%400)}
		if i%3 == 0 {
			m.Key = fmt.Sprintf("key-%d", i)
			m.Headers = map[string]string{"n": fmt.Sprint(i)}
		}
		res, err := q.Send(context.Background(), m)
		require.NoError(t, err)
		require.Equal(t, zeroloss.SendOK, res.Status)
		require.Equal(t, uint64(i+2), res.Seq, "the fixture assumes seq 1 is the epoch record, messages 2..n+1")
	}
	require.NoError(t, q.Close())
	segments, err = filepath.Glob(filepath.Join(dir, "*.wal"))
	require.NoError(t, err)
	require.Greater(t, len(segments), 2, "the fixture must span several segments")
	return dir, segments
}

type result struct {
	code           int
	stdout, stderr string
}

func runTool(args ...string) result {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// snapshot returns the content of every file in dir, to check that a command
// changed nothing.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	files := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		files[e.Name()] = b
	}
	return files
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     []string // substrings expected on stdout
		stderr     []string // substrings expected on stderr
		emptyOut   bool
		emptyError bool
	}{
		{name: "no arguments", args: nil, code: exitUsage, stderr: []string{"Commands:", "inspect", "verify"}, emptyOut: true},
		{name: "help", args: []string{"help"}, code: exitOK, stdout: []string{"Commands:", "inspect", "verify"}, emptyError: true},
		{name: "--help", args: []string{"--help"}, code: exitOK, stdout: []string{"Commands:"}, emptyError: true},
		{name: "help inspect", args: []string{"help", "inspect"}, code: exitOK, stdout: []string{"usage: zeroloss inspect [--json] DIR", "-json"}, emptyError: true},
		{name: "help verify", args: []string{"help", "verify"}, code: exitOK, stdout: []string{"usage: zeroloss verify [--strict] [--spool] DIR", "-strict", "-spool"}, emptyError: true},
		{name: "help unknown", args: []string{"help", "frobnicate"}, code: exitUsage, stderr: []string{"frobnicate", "Commands:"}, emptyOut: true},
		{name: "unknown command", args: []string{"frobnicate"}, code: exitUsage, stderr: []string{`unknown command "frobnicate"`, "Commands:"}, emptyOut: true},
		{name: "inspect -h", args: []string{"inspect", "-h"}, code: exitOK, stderr: []string{"usage: zeroloss inspect"}, emptyOut: true},
		{name: "inspect without dir", args: []string{"inspect"}, code: exitUsage, stderr: []string{"missing the queue directory", "usage: zeroloss inspect"}, emptyOut: true},
		{name: "verify without dir", args: []string{"verify", "--strict"}, code: exitUsage, stderr: []string{"missing the queue directory", "usage: zeroloss verify"}, emptyOut: true},
		{name: "two dirs", args: []string{"verify", "a", "b"}, code: exitUsage, stderr: []string{"got 2 arguments", "usage: zeroloss verify"}, emptyOut: true},
		{name: "unknown flag", args: []string{"verify", "--bogus", "dir"}, code: exitUsage, stderr: []string{"flag provided but not defined: -bogus", "usage: zeroloss verify"}, emptyOut: true},
		{name: "unknown flag after dir", args: []string{"inspect", "dir", "--bogus"}, code: exitUsage, stderr: []string{"-bogus", "usage: zeroloss inspect"}, emptyOut: true},
		{name: "flag of another command", args: []string{"inspect", "--strict", "dir"}, code: exitUsage, stderr: []string{"-strict"}, emptyOut: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runTool(tt.args...)
			assert.Equal(t, tt.code, r.code, "stderr: %s", r.stderr)
			for _, s := range tt.stdout {
				assert.Contains(t, r.stdout, s)
			}
			for _, s := range tt.stderr {
				assert.Contains(t, r.stderr, s)
			}
			if tt.emptyOut {
				assert.Empty(t, r.stdout)
			}
			if tt.emptyError {
				assert.Empty(t, r.stderr)
			}
		})
	}
}

func TestUsageListsEveryCommand(t *testing.T) {
	r := runTool("help")
	require.Equal(t, exitOK, r.code)
	for _, c := range commands {
		assert.Regexp(t, `(?m)^  `+regexp.QuoteMeta(c.name)+` +`+regexp.QuoteMeta(c.summary)+`$`, r.stdout)
	}
	assert.Len(t, commands, strings.Count(r.stdout, "\n  ")-1, "one line per command besides the synopsis")
}

func TestParseArgsStopsAtDoubleDash(t *testing.T) {
	fs := newFlagSet("test", "", &bytes.Buffer{})
	asJSON := fs.Bool("json", false, "")
	positional, _, ok := parseArgs(fs, []string{"a", "--json", "--", "-b", "--json"})
	require.True(t, ok)
	assert.True(t, *asJSON)
	assert.Equal(t, []string{"a", "-b", "--json"}, positional)
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0:         "0 bytes",
		1:         "1 byte",
		1023:      "1023 bytes",
		1536:      "1536 bytes (1.5 KiB)",
		196608:    "196608 bytes (192.0 KiB)",
		5 << 30:   "5368709120 bytes (5.0 GiB)",
		3 << 40:   "3298534883328 bytes (3.0 TiB)",
		1<<63 - 1: "9223372036854775807 bytes (8.0 EiB)",
	} {
		assert.Equal(t, want, formatBytes(n))
	}
}
