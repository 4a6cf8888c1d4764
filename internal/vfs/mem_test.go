package vfs

import (
	"fmt"
	"io"
	"io/fs"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMemConformance(t *testing.T) {
	testConformance(t, func(t *testing.T) (FS, string) {
		m := NewMem()
		require.NoError(t, m.MkdirAll("/data", 0o755))
		return m, "/data"
	})
}

// memFixture is a MemFS holding /db/a (durable "AAAA" with an unsynced "B"
// written at 0, open as a), /db/b (durable "BBBB") and /db/c (created, not
// dir-synced).
type memFixture struct {
	m *MemFS
	a File
}

func newMemFixture(t *testing.T) memFixture {
	m := NewMem()
	a := durableFile(t, m, "/db/a", "AAAA")
	durableFile(t, m, "/db/b", "BBBB")
	write(t, a, 0, "B")
	mustCreate(t, m, "/db/c", "C").Close()
	return memFixture{m: m, a: a}
}

// memMutations are the counted operations, each run on a memFixture.
var memMutations = []struct {
	name string
	run  func(fixture memFixture) error
}{
	{"WriteAt", func(x memFixture) error { _, err := x.a.WriteAt([]byte("xy"), 6); return err }},
	{"Truncate", func(x memFixture) error { return x.a.Truncate(1) }},
	{"Allocate", func(x memFixture) error { return x.a.Allocate(10) }},
	{"Sync", func(x memFixture) error { return x.a.Sync() }},
	{"Create", func(x memFixture) error { _, err := x.m.Create("/db/d"); return err }},
	{"Rename", func(x memFixture) error { return x.m.Rename("/db/b", "/db/e") }},
	{"Remove", func(x memFixture) error { return x.m.Remove("/db/b") }},
	{"SyncDir", func(x memFixture) error { return x.m.SyncDir("/db") }},
}

func TestMemOpCount(t *testing.T) {
	for _, mutation := range memMutations {
		t.Run(mutation.name, func(t *testing.T) {
			x := newMemFixture(t)
			before := x.m.OpCount()
			require.NoError(t, mutation.run(x))
			assert.Equal(t, before+1, x.m.OpCount())
		})
	}
	t.Run("not counted", func(t *testing.T) {
		x := newMemFixture(t)
		before := x.m.OpCount()
		_, err := x.a.ReadAt(make([]byte, 2), 0)
		require.NoError(t, err)
		_, err = x.a.Size()
		require.NoError(t, err)
		f, err := x.m.Open("/db/b")
		require.NoError(t, err)
		_, err = f.WriteAt([]byte("x"), 0)
		require.ErrorIs(t, err, syscall.EBADF, "a write through a read-only handle")
		require.NoError(t, f.Close())
		_, err = x.m.List("/db")
		require.NoError(t, err)
		require.NoError(t, x.m.MkdirAll("/db/sub", 0o755))
		lock, err := x.m.Lock("/db/LOCK")
		require.NoError(t, err)
		require.NoError(t, lock.Close())
		assert.Equal(t, before, x.m.OpCount())
	})
	t.Run("failed calls count", func(t *testing.T) {
		m := NewMem()
		_, err := m.Create("/missing/f")
		require.ErrorIs(t, err, fs.ErrNotExist)
		assert.Equal(t, 1, m.OpCount())
	})
}

// TestMemOpLimitFreezes checks that each mutating operation, once the limit
// is reached, fails with ErrCrashed and changes neither the current state nor
// what a crash leaves.
func TestMemOpLimitFreezes(t *testing.T) {
	for _, mutation := range memMutations {
		t.Run(mutation.name, func(t *testing.T) {
			frozen, reference := newMemFixture(t), newMemFixture(t)
			count := frozen.m.OpCount()
			frozen.m.SetOpLimit(count)

			err := mutation.run(frozen)
			require.ErrorIs(t, err, ErrCrashed)
			var pathErr *fs.PathError
			assert.ErrorAs(t, err, &pathErr, "ErrCrashed comes with the operation and path")
			assert.Equal(t, count, frozen.m.OpCount(), "a refused operation is not counted")
			assert.Equal(t, memTree(t, reference.m, "/db"), memTree(t, frozen.m, "/db"), "current state")

			frozen.m.Crash(DropUnsynced, nil)
			reference.m.Crash(DropUnsynced, nil)
			assert.Equal(t, memTree(t, reference.m, "/db"), memTree(t, frozen.m, "/db"), "durable state")
		})
	}
}

func TestMemOpLimit(t *testing.T) {
	t.Run("counts from NewMem", func(t *testing.T) {
		x := newMemFixture(t)
		x.m.SetOpLimit(x.m.OpCount() + 2)
		require.NoError(t, x.a.Sync())
		require.NoError(t, x.m.SyncDir("/db"))
		require.ErrorIs(t, x.m.SyncDir("/db"), ErrCrashed)
		require.ErrorIs(t, x.a.Sync(), ErrCrashed, "every later operation fails")
	})
	t.Run("reads still work", func(t *testing.T) {
		x := newMemFixture(t)
		x.m.SetOpLimit(0)
		assert.Equal(t, "BAAA", readAll(t, x.a))
		assert.Equal(t, "BBBB", readFile(t, x.m, "/db/b"))
		names, err := x.m.List("/db")
		require.NoError(t, err)
		assert.Equal(t, []string{"a", "b", "c"}, names)
		size, err := x.m.Size("/db/a")
		require.NoError(t, err)
		assert.Equal(t, int64(4), size)
	})
	t.Run("no new directories or lock files", func(t *testing.T) {
		x := newMemFixture(t)
		x.m.SetOpLimit(0)
		require.ErrorIs(t, x.m.MkdirAll("/db/sub", 0o755), ErrCrashed)
		require.NoError(t, x.m.MkdirAll("/db", 0o755), "nothing to create")
		_, err := x.m.Lock("/db/LOCK")
		require.ErrorIs(t, err, ErrCrashed)
		lock, err := x.m.Lock("/db/b")
		require.NoError(t, err, "locking an existing file creates nothing")
		require.NoError(t, lock.Close())
		names, err := x.m.List("/db")
		require.NoError(t, err)
		assert.Equal(t, []string{"a", "b", "c"}, names)
	})
	t.Run("negative removes the limit", func(t *testing.T) {
		x := newMemFixture(t)
		x.m.SetOpLimit(0)
		require.ErrorIs(t, x.a.Sync(), ErrCrashed)
		x.m.SetOpLimit(-1)
		require.NoError(t, x.a.Sync())
	})
	t.Run("crash removes the limit", func(t *testing.T) {
		x := newMemFixture(t)
		x.m.SetOpLimit(0)
		x.m.Crash(DropUnsynced, nil)
		f, err := x.m.OpenRW("/db/a")
		require.NoError(t, err)
		write(t, f, 0, "Z")
		require.NoError(t, f.Sync())
	})
}

func TestMemLock(t *testing.T) {
	m := NewMem()
	require.NoError(t, m.MkdirAll("/db", 0o755))
	first, err := m.Lock("/db/LOCK")
	require.NoError(t, err)
	_, err = m.Lock("/db/./LOCK")
	require.ErrorIs(t, err, ErrLocked, "the same path spelled differently")
	other, err := m.Lock("/db/OTHER")
	require.NoError(t, err, "locks are per path")
	require.NoError(t, first.Close())
	assert.ErrorIs(t, first.Close(), fs.ErrClosed, "a second Close")
	second, err := m.Lock("/db/LOCK")
	require.NoError(t, err)
	require.NoError(t, second.Close())
	require.NoError(t, other.Close())

	_, err = m.Lock("/missing/LOCK")
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

func TestMemPaths(t *testing.T) {
	m := NewMem()
	require.NoError(t, m.MkdirAll("/db/sub", 0o755))
	mustCreate(t, m, "/db/./sub/../f", "x").Close()
	assert.Equal(t, "x", memRead(t, m, "/db/f"), "paths are cleaned")

	mustCreate(t, m, "relative", "r").Close()
	names, err := m.List(".")
	require.NoError(t, err)
	assert.Equal(t, []string{"relative"}, names, "the working directory is a root of its own")

	_, err = m.Create("/db/sub")
	assert.ErrorIs(t, err, fs.ErrExist, "Create over a directory")
	assert.ErrorIs(t, m.Remove("/db/sub"), syscall.EISDIR, "Remove of a directory")
	assert.ErrorIs(t, m.Rename("/db/f", "/db/sub"), syscall.EISDIR, "Rename over a directory")
	assert.ErrorIs(t, m.MkdirAll("/db/f/x", 0o755), syscall.ENOTDIR, "MkdirAll through a file")
	_, err = m.Open("/db/sub")
	assert.ErrorIs(t, err, syscall.EISDIR, "Open of a directory")
}

func TestMemClosedHandle(t *testing.T) {
	m := NewMem()
	f := mustCreate(t, m, "f", "data")
	require.NoError(t, f.Close())
	_, err := f.ReadAt(make([]byte, 1), 0)
	assert.ErrorIs(t, err, fs.ErrClosed)
	_, err = f.WriteAt([]byte("x"), 0)
	assert.ErrorIs(t, err, fs.ErrClosed)
	assert.ErrorIs(t, f.Sync(), fs.ErrClosed)
	assert.ErrorIs(t, f.Close(), fs.ErrClosed)
}

func TestMemInvalidArguments(t *testing.T) {
	m := NewMem()
	f := mustCreate(t, m, "f", "data")
	_, err := f.ReadAt(make([]byte, 1), -1)
	assert.ErrorIs(t, err, syscall.EINVAL)
	_, err = f.WriteAt([]byte("x"), -1)
	assert.ErrorIs(t, err, syscall.EINVAL)
	assert.ErrorIs(t, f.Truncate(-1), syscall.EINVAL)
	_, err = f.WriteAt([]byte("x"), maxMemFileSize)
	assert.ErrorIs(t, err, syscall.EFBIG)
	assert.ErrorIs(t, f.Allocate(maxMemFileSize+1), syscall.EFBIG)
	assert.Equal(t, "data", readAll(t, f))
}

func TestMemRemoveKeepsOpenHandles(t *testing.T) {
	m := NewMem()
	f := mustCreate(t, m, "f", "data")
	require.NoError(t, m.Remove("f"))
	write(t, f, 4, "!")
	assert.Equal(t, "data!", readAll(t, f), "the unlinked file lives on while open")
	_, err := m.Open("f")
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

func TestMemWriteFile(t *testing.T) {
	m := NewMem()
	f := durableFile(t, m, "/db/f", "AAAA")
	write(t, f, 0, "unsynced")

	require.NoError(t, m.WriteFile("/db/f", []byte("AAAB")), "a bit flipped durably")
	assert.Equal(t, "AAAB", readAll(t, f), "open handles see the new content")
	require.NoError(t, m.WriteFile("/db/planted", []byte("P")))
	size, err := m.Size("/db/planted")
	require.NoError(t, err)
	assert.Equal(t, int64(1), size)

	for _, mode := range CrashModes {
		m.Crash(mode, seeded(3))
		assert.Equal(t, map[string]string{"f": "AAAB", "planted": "P"}, memTree(t, m, "/db"), mode.String())
	}

	assert.ErrorIs(t, m.WriteFile("/missing/f", nil), fs.ErrNotExist)
	_, err = m.ReadFile("/db/missing")
	assert.ErrorIs(t, err, fs.ErrNotExist)
	_, err = m.Size("/db/missing")
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

// TestMemConcurrent runs readers, a writer, a syncer and directory calls at
// once; run it with -race.
func TestMemConcurrent(t *testing.T) {
	m := NewMem()
	f := durableFile(t, m, "/db/log", "")
	const writes = 200
	var group sync.WaitGroup
	group.Go(func() {
		for i := range writes {
			if _, err := f.WriteAt([]byte{byte(i)}, int64(i)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	group.Go(func() {
		for range writes / 10 {
			if err := f.Sync(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for reader := range 4 {
		group.Go(func() {
			buf := make([]byte, 16)
			for i := range writes {
				if _, err := f.ReadAt(buf, int64(i)); err != nil && err != io.EOF {
					t.Error(err)
					return
				}
			}
		})
		group.Go(func() {
			name := fmt.Sprintf("/db/tmp%d", reader)
			for range 20 {
				g, err := m.Create(name)
				if err == nil {
					err = g.Close()
				}
				if err == nil {
					err = m.Remove(name)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := m.List("/db"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	group.Wait()
	require.NoError(t, f.Sync())
	m.Crash(RandomPages, seeded(1))
	content := memRead(t, m, "/db/log")
	require.Len(t, content, writes)
	for i := range writes {
		assert.Equal(t, byte(i), content[i])
	}
}
