package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

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
	r := runTool("lab", "--runs", "1", "--seed", "3", "--dir", dir, "--json", jsonFile)
	require.Equal(t, exitOK, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	assert.Regexp(t, `(?m)^config +failure +runs +acknowledged +lost +duplicates +corrupt`, r.stdout)
	assert.Regexp(t, `(?m)^flush=sync +process-crash +1 +\d+ +0 +0 +0 .* agrees +ok: zero loss, as promised$`, r.stdout)
	assert.Regexp(t, `(?m)^flush=async +process-crash +1 +\d+ +0 +0 +0 .* agrees +ok: zero loss, as promised$`, r.stdout)
	assert.Regexp(t, `(?m)^flush=sync +power-loss +1 +\d+ +0 +0 +0 .* agrees +ok: zero loss, as promised$`, r.stdout)
	assert.Regexp(t, `(?m)^flush=async +power-loss +1 +\d+ +\d+ +0 +0 .* agrees +measured \(no promise\)$`, r.stdout)
	assert.Contains(t, r.stdout, "seed 3, 1 runs per row")
	assert.Empty(t, r.stderr, "no progress line when stderr is not a terminal")

	data, err := os.ReadFile(jsonFile)
	require.NoError(t, err)
	var report lab.Report
	require.NoError(t, json.Unmarshal(data, &report))
	assert.Equal(t, uint64(3), report.Seed)
	require.Len(t, report.Rows, 4)
	for _, row := range report.Rows {
		require.Len(t, row.Results, 1)
		assert.Positive(t, row.Results[0].Acknowledged, row.Config)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "clean runs leave nothing in --dir")
}

func TestLabUsage(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"help", []string{"help", "lab"}, exitOK, "usage: zeroloss lab [--runs N] [--seed S] [--dir D] [--json FILE]", ""},
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
