//go:build linux

package vfs

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOSNextData: the written ranges of a preallocated file are reported as
// data, nothing is past the end, and (on file systems that keep unwritten
// extents as holes, as ext4 and XFS do) the preallocated space between them
// is skipped.
func TestOSNextData(t *testing.T) {
	f, err := OS.Create(filepath.Join(t.TempDir(), "segment"))
	require.NoError(t, err)
	defer f.Close()
	const size = 8 << 20
	require.NoError(t, f.Allocate(size))
	_, err = f.WriteAt([]byte("head"), 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("torn"), 5<<20)
	require.NoError(t, err)
	finder, ok := f.(DataFinder)
	require.True(t, ok, "OS files find data on Linux")

	start, end, ok, err := finder.NextData(0)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, int64(0), start, "the head is data")
	assert.Greater(t, end, int64(4))

	start, end, ok, err = finder.NextData(end)
	require.NoError(t, err)
	require.True(t, ok, "the bytes at 5 MiB are found")
	assert.LessOrEqual(t, start, int64(5<<20))
	assert.Greater(t, end, int64(5<<20+4))
	if start < 1<<20 {
		t.Logf("this file system reports preallocated space as data (%d..%d)", start, end)
	}

	_, _, ok, err = finder.NextData(size)
	require.NoError(t, err)
	assert.False(t, ok, "nothing past the end")
}
