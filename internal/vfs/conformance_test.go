package vfs

import (
	"io"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testConformance checks the behaviour every FS implementation shares.
// newFS returns a fresh file system and an existing, empty directory in it.
func testConformance(t *testing.T, newFS func(t *testing.T) (FS, string)) {
	tests := []struct {
		name string
		run  func(t *testing.T, fsys FS, dir string)
	}{
		{"CreateWriteReadBack", func(t *testing.T, fsys FS, dir string) {
			name := filepath.Join(dir, "a")
			f := mustCreate(t, fsys, name, "hello")
			assert.Equal(t, name, f.Name())
			assert.Equal(t, "hello", readAll(t, f))
			require.NoError(t, f.Sync())
			require.NoError(t, f.Close())

			g, err := fsys.Open(name)
			require.NoError(t, err)
			defer g.Close()
			assert.Equal(t, "hello", readAll(t, g))
		}},
		{"CreateExistingFails", func(t *testing.T, fsys FS, dir string) {
			name := filepath.Join(dir, "a")
			mustCreate(t, fsys, name, "keep").Close()
			_, err := fsys.Create(name)
			require.ErrorIs(t, err, fs.ErrExist)
			assert.Equal(t, "keep", readFile(t, fsys, name), "a failed Create must not truncate")
		}},
		{"MissingFiles", func(t *testing.T, fsys FS, dir string) {
			missing := filepath.Join(dir, "missing")
			_, err := fsys.Open(missing)
			assert.ErrorIs(t, err, fs.ErrNotExist, "Open")
			_, err = fsys.OpenRW(missing)
			assert.ErrorIs(t, err, fs.ErrNotExist, "OpenRW")
			assert.ErrorIs(t, fsys.Remove(missing), fs.ErrNotExist, "Remove")
			assert.ErrorIs(t, fsys.Rename(missing, filepath.Join(dir, "b")), fs.ErrNotExist, "Rename")
			_, err = fsys.List(missing)
			assert.ErrorIs(t, err, fs.ErrNotExist, "List")
			_, err = fsys.Create(filepath.Join(missing, "a"))
			assert.ErrorIs(t, err, fs.ErrNotExist, "Create in a missing directory")
		}},
		{"OpenIsReadOnly", func(t *testing.T, fsys FS, dir string) {
			name := filepath.Join(dir, "a")
			mustCreate(t, fsys, name, "data").Close()
			f, err := fsys.Open(name)
			require.NoError(t, err)
			defer f.Close()
			_, err = f.WriteAt([]byte("x"), 0)
			assert.Error(t, err, "WriteAt")
			assert.Error(t, f.Truncate(1), "Truncate")
			assert.Error(t, f.Allocate(100), "Allocate")
			assert.Equal(t, "data", readFile(t, fsys, name))
		}},
		{"OpenRWWrites", func(t *testing.T, fsys FS, dir string) {
			name := filepath.Join(dir, "a")
			mustCreate(t, fsys, name, "data").Close()
			f, err := fsys.OpenRW(name)
			require.NoError(t, err)
			_, err = f.WriteAt([]byte("DA"), 0)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			assert.Equal(t, "DAta", readFile(t, fsys, name))
		}},
		{"ReadPastEOF", func(t *testing.T, fsys FS, dir string) {
			f := mustCreate(t, fsys, filepath.Join(dir, "a"), "abc")
			defer f.Close()
			buf := make([]byte, 5)
			n, err := f.ReadAt(buf, 1)
			assert.Equal(t, 2, n)
			assert.ErrorIs(t, err, io.EOF)
			assert.Equal(t, "bc", string(buf[:n]))
			n, err = f.ReadAt(buf, 3)
			assert.Equal(t, 0, n)
			assert.ErrorIs(t, err, io.EOF)
			n, err = f.ReadAt(buf[:3], 0)
			assert.Equal(t, 3, n)
			assert.NoError(t, err, "a full read at the end is not EOF")
		}},
		{"WritePastEndFillsZeros", func(t *testing.T, fsys FS, dir string) {
			f := mustCreate(t, fsys, filepath.Join(dir, "a"), "ab")
			defer f.Close()
			_, err := f.WriteAt([]byte("z"), 5)
			require.NoError(t, err)
			assert.Equal(t, "ab\x00\x00\x00z", readAll(t, f))
		}},
		{"Truncate", func(t *testing.T, fsys FS, dir string) {
			f := mustCreate(t, fsys, filepath.Join(dir, "a"), "abcdef")
			defer f.Close()
			require.NoError(t, f.Truncate(2))
			assert.Equal(t, "ab", readAll(t, f))
			require.NoError(t, f.Truncate(4))
			assert.Equal(t, "ab\x00\x00", readAll(t, f), "growing must not bring back cut bytes")
		}},
		{"Allocate", func(t *testing.T, fsys FS, dir string) {
			f := mustCreate(t, fsys, filepath.Join(dir, "a"), "ab")
			defer f.Close()
			require.NoError(t, f.Allocate(6))
			assert.Equal(t, "ab\x00\x00\x00\x00", readAll(t, f))
			require.NoError(t, f.Allocate(3))
			size, err := f.Size()
			require.NoError(t, err)
			assert.Equal(t, int64(6), size, "Allocate must never shrink")
			require.NoError(t, f.Sync())
		}},
		{"RenameReplaces", func(t *testing.T, fsys FS, dir string) {
			a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			mustCreate(t, fsys, a, "new").Close()
			mustCreate(t, fsys, b, "old").Close()
			require.NoError(t, fsys.Rename(a, b))
			require.NoError(t, fsys.SyncDir(dir))
			assert.Equal(t, "new", readFile(t, fsys, b))
			_, err := fsys.Open(a)
			assert.ErrorIs(t, err, fs.ErrNotExist)
		}},
		{"RemoveAndList", func(t *testing.T, fsys FS, dir string) {
			for _, name := range []string{"c", "a", "b"} {
				mustCreate(t, fsys, filepath.Join(dir, name), name).Close()
			}
			require.NoError(t, fsys.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o755))
			require.NoError(t, fsys.MkdirAll(filepath.Join(dir, "sub"), 0o755), "MkdirAll of an existing directory")
			require.NoError(t, fsys.Remove(filepath.Join(dir, "b")))
			require.NoError(t, fsys.SyncDir(dir))
			names, err := fsys.List(dir)
			require.NoError(t, err)
			assert.Equal(t, []string{"a", "c", "sub"}, names)
			names, err = fsys.List(filepath.Join(dir, "sub"))
			require.NoError(t, err)
			assert.Equal(t, []string{"deeper"}, names)
		}},
		{"LockIsExclusive", func(t *testing.T, fsys FS, dir string) {
			name := filepath.Join(dir, "LOCK")
			first, err := fsys.Lock(name)
			require.NoError(t, err)
			_, err = fsys.Lock(name)
			require.ErrorIs(t, err, ErrLocked)
			_, err = fsys.Open(name)
			require.NoError(t, err, "Lock must create the file")
			require.NoError(t, first.Close())
			second, err := fsys.Lock(name)
			require.NoError(t, err, "the lock must be free once closed")
			require.NoError(t, second.Close())
		}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			fsys, dir := newFS(t)
			test.run(t, fsys, dir)
		})
	}
}

// mustCreate creates name holding content and returns it open.
func mustCreate(t *testing.T, fsys FS, name, content string) File {
	t.Helper()
	f, err := fsys.Create(name)
	require.NoError(t, err)
	if content != "" {
		n, err := f.WriteAt([]byte(content), 0)
		require.NoError(t, err)
		require.Equal(t, len(content), n)
	}
	return f
}

// readAll returns the whole content of f.
func readAll(t *testing.T, f File) string {
	t.Helper()
	size, err := f.Size()
	require.NoError(t, err)
	buf := make([]byte, size)
	n, err := f.ReadAt(buf, 0)
	require.NoError(t, err)
	require.Equal(t, len(buf), n)
	return string(buf)
}

// readFile returns the whole content of the file name.
func readFile(t *testing.T, fsys FS, name string) string {
	t.Helper()
	f, err := fsys.Open(name)
	require.NoError(t, err)
	defer f.Close()
	return readAll(t, f)
}
