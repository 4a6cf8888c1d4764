package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/lab"
)

// TestMain runs the reference child when the test binary is re-executed as
// one.
func TestMain(m *testing.M) {
	if lab.IsChild(os.Args[1:]) {
		os.Exit(child(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestReference runs both tidwall/wal rows for a few runs: without a
// directory fsync nothing it acknowledged survives the model's power loss;
// with its directory entries kept, every acknowledged entry survives unless
// the log refuses to open (a torn last entry); both counts agree.
func TestReference(t *testing.T) {
	jsonFile := filepath.Join(t.TempDir(), "ref.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"--runs", "3", "--seed", "5", "--dir", t.TempDir(), "--min-acks", "20", "--max-acks", "300",
		"--json", jsonFile}, &stdout, &stderr)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout.String(), stderr.String())
	t.Logf("\n%s", stdout.String())
	data, err := os.ReadFile(jsonFile)
	require.NoError(t, err)
	var rep lab.Report
	require.NoError(t, json.Unmarshal(data, &rep))
	require.Len(t, rep.Rows, 2)
	posix, kept := rep.Rows[0], rep.Rows[1]
	assert.Equal(t, "tidwall/wal fsync each", posix.Config)
	assert.Equal(t, "power-loss", posix.Failure)
	assert.Positive(t, posix.Acknowledged)
	assert.Equal(t, posix.Acknowledged, posix.Lost, "no directory fsync: no segment file survives the model")
	assert.Equal(t, "tidwall/wal fsync each, dir entries kept", kept.Config)
	for _, row := range rep.Rows {
		assert.False(t, row.Promised, row.Config)
		assert.Zero(t, row.CrossCheckMismatches, row.Config)
		for _, res := range row.Results {
			assert.Equal(t, res.Counts, res.CrossCheck, "%s run %d", row.Config, res.Run)
			if row.Config == kept.Config && res.RecoveryError == "" {
				assert.Zero(t, res.Lost, "run %d (%s): an fsynced entry was lost", res.Run, res.PowerLoss)
				assert.Zero(t, res.Corrupt, "run %d", res.Run)
			}
		}
	}
	assert.Equal(t, 2, bytes.Count(stdout.Bytes(), []byte("measured (no promise)")))
}

func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 2, run([]string{"--runs", "0"}, &stdout, &stderr))
	assert.Equal(t, 2, run([]string{"extra"}, &stdout, &stderr))
	assert.Equal(t, 2, child([]string{lab.ChildCommand}), "the child wants --dir and --power-loss")
}
