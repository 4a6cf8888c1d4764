package vfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOSConformance(t *testing.T) {
	testConformance(t, func(t *testing.T) (FS, string) { return OS, t.TempDir() })
}

func TestOSCreateExistingFails(t *testing.T) {
	name := filepath.Join(t.TempDir(), "a")
	require.NoError(t, os.WriteFile(name, []byte("keep"), 0o600))
	_, err := OS.Create(name)
	require.ErrorIs(t, err, fs.ErrExist)
	content, err := os.ReadFile(name)
	require.NoError(t, err)
	assert.Equal(t, "keep", string(content))
}

// TestOSLockTwiceInProcess relies on flock locks (and LockFileEx on Windows)
// belonging to the open file, not the process: a second Lock opens the file
// again and must conflict with the first.
func TestOSLockTwiceInProcess(t *testing.T) {
	name := filepath.Join(t.TempDir(), "LOCK")
	first, err := OS.Lock(name)
	require.NoError(t, err)
	for range 2 {
		_, err = OS.Lock(name)
		require.ErrorIs(t, err, ErrLocked)
	}
	require.NoError(t, first.Close())
	second, err := OS.Lock(name)
	require.NoError(t, err)
	require.NoError(t, second.Close())
}

func TestOSAllocate(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "segment")
	f, err := OS.Create(name)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt([]byte("head"), 0)
	require.NoError(t, err)

	const size = 1 << 20
	require.NoError(t, f.Allocate(size))
	info, err := os.Stat(name)
	require.NoError(t, err)
	assert.Equal(t, int64(size), info.Size(), "the size the OS reports")

	content, err := os.ReadFile(name)
	require.NoError(t, err)
	require.Len(t, content, size)
	assert.Equal(t, "head", string(content[:4]), "Allocate must keep the data")
	assert.Equal(t, make([]byte, size-4), content[4:], "the new bytes must read as zeros")

	require.NoError(t, f.Allocate(10))
	got, err := f.Size()
	require.NoError(t, err)
	assert.Equal(t, int64(size), got, "Allocate must not shrink")

	require.NoError(t, f.Sync())
	require.NoError(t, OS.SyncDir(dir))
}

func TestOSSyncDirMissing(t *testing.T) {
	err := OS.SyncDir(filepath.Join(t.TempDir(), "missing"))
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestIsNoSpace(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"bare", syscall.ENOSPC, true},
		{"path error", &os.PathError{Op: "write", Path: "f", Err: syscall.ENOSPC}, true},
		{"wrapped twice", fmt.Errorf("segment 3: %w", &os.PathError{Op: "fallocate", Path: "f", Err: syscall.ENOSPC}), true},
		{"nil", nil, false},
		{"other errno", &os.PathError{Op: "write", Path: "f", Err: syscall.EIO}, false},
		{"other error", errors.New("no space left on device"), false},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			assert.Equal(t, test.want, IsNoSpace(test.err))
		})
	}
}
