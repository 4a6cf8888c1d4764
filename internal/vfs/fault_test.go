package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var errInjected = errors.New("injected")

func TestFaultConformance(t *testing.T) {
	t.Run("over MemFS", func(t *testing.T) {
		testConformance(t, func(t *testing.T) (FS, string) {
			m := NewMem()
			require.NoError(t, m.MkdirAll("/data", 0o755))
			return NewFault(m), "/data"
		})
	})
	t.Run("over OS", func(t *testing.T) {
		testConformance(t, func(t *testing.T) (FS, string) { return NewFault(OS), t.TempDir() })
	})
}

func TestOpString(t *testing.T) {
	var names []string
	for op := OpWrite; op <= OpSyncDir; op++ {
		names = append(names, op.String())
	}
	assert.Equal(t, []string{"write", "sync", "rename", "create", "allocate", "truncate", "remove", "syncdir"}, names)
	assert.Equal(t, "Op(42)", Op(42).String())
}

// faultFixture is a FaultFS over a MemFS holding /db/f, open as file.
type faultFixture struct {
	inner *MemFS
	fs    *FaultFS
	file  File
	calls int
}

func newFaultFixture(t *testing.T) *faultFixture {
	inner := NewMem()
	require.NoError(t, inner.MkdirAll("/db", 0o755))
	mustCreate(t, inner, "/db/f", "data").Close()
	fsys := NewFault(inner)
	file, err := fsys.OpenRW("/db/f")
	require.NoError(t, err)
	return &faultFixture{inner: inner, fs: fsys, file: file}
}

// faultCalls makes, for each Op, a call of it that succeeds when no rule
// applies; prepare does the setup (on the inner FS, so it is not counted) and
// returns the call.
var faultCalls = []struct {
	op      Op
	prepare func(t *testing.T, x *faultFixture) func() error
}{
	{OpWrite, func(t *testing.T, x *faultFixture) func() error {
		return func() error { _, err := x.file.WriteAt([]byte("w"), int64(x.calls)); return err }
	}},
	{OpSync, func(t *testing.T, x *faultFixture) func() error { return x.file.Sync }},
	{OpRename, func(t *testing.T, x *faultFixture) func() error {
		name := fmt.Sprintf("/db/rename%d", x.calls)
		mustCreate(t, x.inner, name, "").Close()
		return func() error { return x.fs.Rename(name, name+"-renamed") }
	}},
	{OpCreate, func(t *testing.T, x *faultFixture) func() error {
		return func() error {
			f, err := x.fs.Create(fmt.Sprintf("/db/create%d", x.calls))
			if err != nil {
				return err
			}
			return f.Close()
		}
	}},
	{OpAllocate, func(t *testing.T, x *faultFixture) func() error {
		return func() error { return x.file.Allocate(int64(100 + x.calls)) }
	}},
	{OpTruncate, func(t *testing.T, x *faultFixture) func() error {
		return func() error { return x.file.Truncate(int64(x.calls)) }
	}},
	{OpRemove, func(t *testing.T, x *faultFixture) func() error {
		name := fmt.Sprintf("/db/remove%d", x.calls)
		mustCreate(t, x.inner, name, "").Close()
		return func() error { return x.fs.Remove(name) }
	}},
	{OpSyncDir, func(t *testing.T, x *faultFixture) func() error {
		return func() error { return x.fs.SyncDir("/db") }
	}},
}

// call makes one call of the op and reports whether it reached the inner file
// system, and its error.
func (x *faultFixture) call(t *testing.T, prepare func(*testing.T, *faultFixture) func() error) (reached bool, err error) {
	x.calls++
	run := prepare(t, x)
	before := x.inner.OpCount()
	err = run()
	return x.inner.OpCount() > before, err
}

func TestFaultFailNth(t *testing.T) {
	for _, test := range faultCalls {
		t.Run(test.op.String(), func(t *testing.T) {
			x := newFaultFixture(t)
			_, err := x.call(t, test.prepare)
			require.NoError(t, err, "a call before the rule")

			x.fs.FailNth(test.op, 2, errInjected)
			want := []bool{false, true, false, false} // which calls fail
			for i, fails := range want {
				reached, err := x.call(t, test.prepare)
				if fails {
					assert.Same(t, errInjected, err, "call %d: the error as given", i+1)
					assert.False(t, reached, "call %d: a failed call has no effect", i+1)
				} else {
					assert.NoError(t, err, "call %d", i+1)
					assert.True(t, reached, "call %d", i+1)
				}
			}
			assert.Equal(t, 1+len(want), x.fs.Count(test.op), "failed calls count too")
		})
	}
}

func TestFaultFailFrom(t *testing.T) {
	for _, test := range faultCalls {
		t.Run(test.op.String(), func(t *testing.T) {
			x := newFaultFixture(t)
			x.fs.FailFrom(test.op, 2, errInjected)
			for i, fails := range []bool{false, true, true, true} {
				reached, err := x.call(t, test.prepare)
				if fails {
					assert.Same(t, errInjected, err, "call %d", i+1)
					assert.False(t, reached, "call %d", i+1)
				} else {
					assert.NoError(t, err, "call %d", i+1)
				}
			}
			x.fs.Clear()
			reached, err := x.call(t, test.prepare)
			assert.NoError(t, err, "after Clear")
			assert.True(t, reached, "after Clear")
			assert.Equal(t, 5, x.fs.Count(test.op), "Clear keeps the counts")
		})
	}
}

func TestFaultRulesAreSeparate(t *testing.T) {
	x := newFaultFixture(t)
	x.fs.FailFrom(OpSync, 1, errInjected)
	for _, other := range faultCalls {
		if other.op == OpSync {
			continue
		}
		reached, err := x.call(t, other.prepare)
		assert.NoError(t, err, other.op.String())
		assert.True(t, reached, other.op.String())
	}
	assert.Same(t, errInjected, x.file.Sync())
}

func TestFaultShortWrite(t *testing.T) {
	tests := []struct {
		data     string
		wantN    int
		wantFile string
	}{
		{"abcdefgh", 4, "dataabcd"},
		{"abcde", 2, "dataab"},
		{"a", 0, "data"},
	}
	for _, test := range tests {
		t.Run(test.data, func(t *testing.T) {
			x := newFaultFixture(t)
			x.fs.ShortWriteNth(2)
			write(t, x.file, 0, "DATA")
			n, err := x.file.WriteAt([]byte(test.data), 4)
			assert.Equal(t, test.wantN, n)
			assert.Same(t, io.ErrShortWrite, err)
			assert.Equal(t, "DATA"+test.wantFile[4:], memRead(t, x.inner, "/db/f"))
			write(t, x.file, 0, "data")
			assert.Equal(t, test.wantFile, memRead(t, x.inner, "/db/f"), "only the second write is short")
		})
	}
	t.Run("a failure wins", func(t *testing.T) {
		x := newFaultFixture(t)
		x.fs.ShortWriteNth(1)
		x.fs.FailNth(OpWrite, 1, errInjected)
		n, err := x.file.WriteAt([]byte("abcd"), 0)
		assert.Equal(t, 0, n)
		assert.Same(t, errInjected, err)
		assert.Equal(t, "data", memRead(t, x.inner, "/db/f"))
	})
}

func TestFaultDiskFull(t *testing.T) {
	x := newFaultFixture(t) // /db/f holds 4 bytes
	x.fs.SetDiskFull(true)

	assertNoSpace := func(t *testing.T, err error) {
		t.Helper()
		require.ErrorIs(t, err, syscall.ENOSPC)
		assert.True(t, IsNoSpace(err))
		var pathErr *os.PathError
		require.ErrorAs(t, err, &pathErr)
		assert.Equal(t, "/db/f", pathErr.Path)
	}
	_, err := x.file.WriteAt([]byte("DATA"), 0)
	require.NoError(t, err, "a write inside the file")
	n, err := x.file.WriteAt([]byte("xyz"), 2)
	assert.Equal(t, 0, n)
	assertNoSpace(t, err)
	require.NoError(t, x.file.Allocate(4), "an Allocate that does not grow")
	assertNoSpace(t, x.file.Allocate(5))
	assert.Equal(t, "DATA", memRead(t, x.inner, "/db/f"), "failed calls have no effect")

	created, err := x.fs.Create("/db/new")
	require.NoError(t, err, "Create works on a full disk")
	_, err = created.WriteAt([]byte("x"), 0)
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.NoError(t, created.Close())

	x.fs.SetDiskFull(false)
	_, err = x.file.WriteAt([]byte("xyz"), 2)
	require.NoError(t, err)
	require.NoError(t, x.file.Allocate(8))
	assert.Equal(t, "DAxyz\x00\x00\x00", memRead(t, x.inner, "/db/f"))

	x.fs.SetDiskFull(true)
	x.fs.Clear()
	require.NoError(t, x.file.Allocate(16), "Clear ends the full disk")
}

func TestFaultCount(t *testing.T) {
	x := newFaultFixture(t)
	for _, test := range faultCalls {
		assert.Zero(t, x.fs.Count(test.op), "%v before any call", test.op)
	}
	readOnly, err := x.fs.Open("/db/f")
	require.NoError(t, err)
	_, err = readOnly.WriteAt([]byte("x"), 0)
	require.Error(t, err)
	require.NoError(t, readOnly.Sync())
	write(t, x.file, 0, "D")
	_, err = x.fs.Create("/db/f")
	require.ErrorIs(t, err, fs.ErrExist)

	assert.Equal(t, 2, x.fs.Count(OpWrite), "writes through every handle, failed ones too")
	assert.Equal(t, 1, x.fs.Count(OpSync))
	assert.Equal(t, 1, x.fs.Count(OpCreate))
	assert.Zero(t, x.fs.Count(OpRename))
}

func TestFaultBadRule(t *testing.T) {
	fsys := NewFault(NewMem())
	assert.Panics(t, func() { fsys.FailNth(OpSync, 0, errInjected) })
	assert.Panics(t, func() { fsys.FailFrom(OpSync, -1, errInjected) })
	assert.Panics(t, func() { fsys.ShortWriteNth(0) })
	assert.Panics(t, func() { fsys.FailNth(Op(99), 1, errInjected) })
}

// TestFaultConcurrent checks that concurrent calls are counted one by one: of
// many concurrent Syncs, exactly the chosen one fails.
func TestFaultConcurrent(t *testing.T) {
	x := newFaultFixture(t)
	const goroutines, perGoroutine = 8, 25
	x.fs.FailNth(OpSync, 100, errInjected)
	var failures atomic.Int32
	var group sync.WaitGroup
	for range goroutines {
		group.Go(func() {
			for range perGoroutine {
				if err := x.file.Sync(); err != nil {
					assert.Same(t, errInjected, err)
					failures.Add(1)
				}
				if _, err := x.file.WriteAt([]byte("x"), 0); err != nil {
					t.Error(err)
				}
			}
		})
	}
	group.Wait()
	assert.Equal(t, int32(1), failures.Load())
	assert.Equal(t, goroutines*perGoroutine, x.fs.Count(OpSync))
}

// A sync that fails as a failed writeback does keeps the unsynced bytes
// readable but off the disk: a later Sync does not write them, a crash loses
// them, and only writing them again makes them durable.
func TestFaultFailSyncLosingWrites(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after func(t *testing.T, f File)
		want  string // after a later Sync and a crash
	}{
		{"synced again", func(t *testing.T, f File) {}, "AAAAAAAA"},
		{"written again in part", func(t *testing.T, f File) { write(t, f, 3, "B") }, "AAABAAAA"},
		{"written again whole", func(t *testing.T, f File) { write(t, f, 2, "BBBB") }, "AABBBBAA"},
		{"cut below", func(t *testing.T, f File) { require.NoError(t, f.Truncate(3)) }, "AAA"},
		{"appended after", func(t *testing.T, f File) { write(t, f, 8, "CC") }, "AAAAAAAACC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := NewMem()
			durableFile(t, mem, "/db/f", "AAAAAAAA")
			fault := NewFault(mem)
			f, err := fault.OpenRW("/db/f")
			require.NoError(t, err)
			write(t, f, 2, "BBBB")
			fault.FailSyncLosingWrites(1, errInjected)
			require.ErrorIs(t, f.Sync(), errInjected)
			assert.Equal(t, "AABBBBAA", memRead(t, mem, "/db/f"), "the page cache still shows the write")
			clone := mem.Clone()
			clone.Crash(DropUnsynced, nil)
			assert.Equal(t, "AAAAAAAA", memRead(t, clone, "/db/f"), "the disk does not have it")

			tc.after(t, f)
			require.NoError(t, f.Sync())
			mem.Crash(DropUnsynced, nil)
			assert.Equal(t, tc.want, memRead(t, mem, "/db/f"))
		})
	}
}
