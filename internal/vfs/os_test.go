package vfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
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
		require.ErrorContains(t, err, "already open in this process")
	}
	// The same file under another path is the same lock.
	_, err = OS.Lock(filepath.Join(filepath.Dir(name), ".", "LOCK"))
	require.ErrorContains(t, err, "already open in this process")
	require.NoError(t, first.Close())
	second, err := OS.Lock(name)
	require.NoError(t, err)
	require.NoError(t, second.Close())
	third, err := OS.Lock(name)
	require.NoError(t, err, "a closed lock is forgotten")
	require.NoError(t, third.Close())
}

// TestOSLockHeldByAnotherProcess runs this test binary again as a child
// that holds the lock until its stdin closes: the error says another
// process holds it, not this one.
func TestOSLockHeldByAnotherProcess(t *testing.T) {
	if name := os.Getenv("VFS_TEST_HOLD_LOCK"); name != "" {
		l, err := OS.Lock(name)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin) // until the parent closes it
		l.Close()
		os.Exit(0)
	}
	name := filepath.Join(t.TempDir(), "LOCK")
	child := exec.Command(os.Args[0], "-test.run=^TestOSLockHeldByAnotherProcess$")
	child.Env = append(os.Environ(), "VFS_TEST_HOLD_LOCK="+name)
	stdin, err := child.StdinPipe()
	require.NoError(t, err)
	stdout, err := child.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, child.Start())
	defer child.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked\n", line)

	_, err = OS.Lock(name)
	require.ErrorIs(t, err, ErrLocked)
	require.ErrorContains(t, err, "another process")
	require.NotContains(t, err.Error(), "this process")
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
