package vfs

import (
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// seeds is how many random crashes a test draws to see every outcome a mode
// allows; the rarest outcome in these tests has probability 1/12.
const seeds = 400

func seeded(seed int) *rand.Rand { return rand.New(rand.NewPCG(uint64(seed), 0)) }

func TestCrashModeString(t *testing.T) {
	var names []string
	for _, mode := range CrashModes {
		names = append(names, mode.String())
	}
	assert.Equal(t, []string{"DropUnsynced", "TornPrefix", "ZeroTail", "RandomPages"}, names)
	assert.Equal(t, "CrashMode(9)", CrashMode(9).String())
}

// TestCrashFileContent checks, for each mode, the exact set of contents a file
// can have after a crash: every one of them must show up over many seeds, and
// nothing else.
func TestCrashFileContent(t *testing.T) {
	zeros := func(n int) string { return strings.Repeat("\x00", n) }
	tests := []struct {
		name     string
		durable  string // written, synced and dir-synced first
		unsynced func(t *testing.T, f File)
		want     map[CrashMode][]string
	}{
		{
			name:    "synced then overwritten",
			durable: "AAAAAAAA",
			unsynced: func(t *testing.T, f File) {
				write(t, f, 2, "BBBB")
			},
			want: map[CrashMode][]string{
				DropUnsynced: {"AAAAAAAA"},
				TornPrefix:   {"AAAAAAAA", "AABAAAAA", "AABBAAAA", "AABBBAAA", "AABBBBAA"},
				ZeroTail:     {"AA" + zeros(4) + "AA"},
				RandomPages:  {"AAAAAAAA", "AABBBBAA"},
			},
		},
		{
			name:    "appended",
			durable: "AAAA",
			unsynced: func(t *testing.T, f File) {
				write(t, f, 4, "BBBB")
				write(t, f, 8, "CCCC")
			},
			want: map[CrashMode][]string{
				DropUnsynced: {"AAAA"},
				TornPrefix: {"AAAA", "AAAAB", "AAAABB", "AAAABBB", "AAAABBBB",
					"AAAABBBBC", "AAAABBBBCC", "AAAABBBBCCC", "AAAABBBBCCCC"},
				ZeroTail:    {"AAAA" + zeros(8)},
				RandomPages: {"AAAA" + zeros(8), "AAAABBBBCCCC"},
			},
		},
		{
			name:    "truncated then allocated",
			durable: "ABCDEFGH",
			unsynced: func(t *testing.T, f File) {
				require.NoError(t, f.Truncate(4))
				require.NoError(t, f.Allocate(10))
				require.NoError(t, f.Allocate(5)) // no effect: Allocate never shrinks
			},
			want: map[CrashMode][]string{
				DropUnsynced: {"ABCDEFGH"},
				TornPrefix:   {"ABCDEFGH", "ABCD", "ABCD" + zeros(6)},
				ZeroTail:     {"ABCD" + zeros(6)},
				RandomPages:  {"ABCD" + zeros(6), "ABCDEFGH" + zeros(2)},
			},
		},
		{
			name:    "written past the end then truncated",
			durable: "AAAA",
			unsynced: func(t *testing.T, f File) {
				write(t, f, 6, "BB")
				require.NoError(t, f.Truncate(2))
			},
			want: map[CrashMode][]string{
				DropUnsynced: {"AAAA"},
				TornPrefix:   {"AAAA", "AAAA" + zeros(2) + "B", "AAAA" + zeros(2) + "BB", "AA"},
				ZeroTail:     {"AA"},
				RandomPages:  {"AA"}, // the page no longer differs: no choice to make
			},
		},
		{
			name:    "synced again in between",
			durable: "AAAA",
			unsynced: func(t *testing.T, f File) {
				write(t, f, 0, "BB")
				require.NoError(t, f.Sync())
				write(t, f, 2, "CC")
			},
			want: map[CrashMode][]string{
				DropUnsynced: {"BBAA"},
				TornPrefix:   {"BBAA", "BBCA", "BBCC"},
				ZeroTail:     {"BB" + zeros(2)},
				RandomPages:  {"BBAA", "BBCC"},
			},
		},
		{
			name:    "new file, data never synced",
			durable: "",
			unsynced: func(t *testing.T, f File) {
				write(t, f, 0, "XYZ")
			},
			want: map[CrashMode][]string{
				DropUnsynced: {""},
				TornPrefix:   {"", "X", "XY", "XYZ"},
				ZeroTail:     {zeros(3)},
				RandomPages:  {zeros(3), "XYZ"},
			},
		},
	}
	for _, test := range tests {
		for _, mode := range CrashModes {
			t.Run(test.name+"/"+mode.String(), func(t *testing.T) {
				seen := make(map[string]bool)
				for seed := range seeds {
					m := NewMem()
					f := durableFile(t, m, "/db/f", test.durable)
					test.unsynced(t, f)
					m.Crash(mode, seeded(seed))
					seen[memRead(t, m, "/db/f")] = true
				}
				want := slices.Clone(test.want[mode])
				slices.Sort(want)
				assert.Equal(t, want, slices.Sorted(maps.Keys(seen)))
			})
		}
	}
}

// TestCrashRandomPages checks that RandomPages keeps or loses whole 4096-byte
// pages, aligned to offset 0, each independently.
func TestCrashRandomPages(t *testing.T) {
	old := bytes.Repeat([]byte("A"), 3*crashPageSize)
	build := func(t *testing.T) (*MemFS, []byte) {
		m := NewMem()
		f := durableFile(t, m, "/db/f", string(old))
		write(t, f, 4000, strings.Repeat("B", 200))             // straddles pages 0 and 1
		write(t, f, 2*crashPageSize+5, "CCCC")                  // page 2
		write(t, f, 3*crashPageSize, "DDDD")                    // new page 3
		write(t, f, crashPageSize+300, strings.Repeat("A", 10)) // same bytes: no change
		want, err := m.ReadFile("/db/f")
		require.NoError(t, err)
		return m, want
	}
	oldPadded := append(slices.Clone(old), make([]byte, 4)...)
	seen := make(map[string]bool)
	for seed := range seeds {
		m, newContent := build(t)
		m.Crash(RandomPages, seeded(seed))
		got, err := m.ReadFile("/db/f")
		require.NoError(t, err)
		require.Len(t, got, len(newContent), "the size is the new size")
		pattern := ""
		for start := 0; start < len(got); start += crashPageSize {
			end := min(start+crashPageSize, len(got))
			switch {
			case bytes.Equal(got[start:end], newContent[start:end]):
				pattern += "N"
			case bytes.Equal(got[start:end], oldPadded[start:end]):
				pattern += "O"
			default:
				t.Fatalf("seed %d: page at %d is neither old nor new", seed, start)
			}
		}
		seen[pattern] = true
	}
	assert.Len(t, seen, 16, "each of the 4 changed pages must be kept or lost independently: %v", seen)
}

func TestCrashIsReproducible(t *testing.T) {
	for _, mode := range CrashModes {
		t.Run(mode.String(), func(t *testing.T) {
			run := func(seed int) string {
				m := NewMem()
				f := durableFile(t, m, "/db/f", strings.Repeat("A", 3*crashPageSize))
				for i := range 20 {
					write(t, f, int64(i*701), strings.Repeat(string(rune('a'+i)), 600))
				}
				m.Crash(mode, seeded(seed))
				return memRead(t, m, "/db/f")
			}
			assert.Equal(t, run(7), run(7))
		})
	}
}

// TestCrashForgetsUnsyncedEntries checks that, in every mode, directory
// entries come back to the state of the directory's last SyncDir.
func TestCrashForgetsUnsyncedEntries(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, m *MemFS)
		want map[string]string // file in /db -> content after the crash
	}{
		{"created, data synced, dir not synced", func(t *testing.T, m *MemFS) {
			f := mustCreate(t, m, "/db/new", "data")
			require.NoError(t, f.Sync())
		}, map[string]string{"a": "A", "b": "B"}},
		{"created and dir synced", func(t *testing.T, m *MemFS) {
			f := mustCreate(t, m, "/db/new", "data")
			require.NoError(t, f.Sync())
			require.NoError(t, m.SyncDir("/db"))
		}, map[string]string{"a": "A", "b": "B", "new": "data"}},
		{"renamed, dir not synced", func(t *testing.T, m *MemFS) {
			require.NoError(t, m.Rename("/db/a", "/db/c"))
		}, map[string]string{"a": "A", "b": "B"}},
		{"renamed over a file, dir not synced", func(t *testing.T, m *MemFS) {
			require.NoError(t, m.Rename("/db/a", "/db/b"))
		}, map[string]string{"a": "A", "b": "B"}},
		{"renamed over a file, dir synced", func(t *testing.T, m *MemFS) {
			require.NoError(t, m.Rename("/db/a", "/db/b"))
			require.NoError(t, m.SyncDir("/db"))
		}, map[string]string{"b": "A"}},
		{"removed, dir not synced", func(t *testing.T, m *MemFS) {
			require.NoError(t, m.Remove("/db/a"))
		}, map[string]string{"a": "A", "b": "B"}},
		{"removed, dir synced", func(t *testing.T, m *MemFS) {
			require.NoError(t, m.Remove("/db/a"))
			require.NoError(t, m.SyncDir("/db"))
		}, map[string]string{"b": "B"}},
		{"removed and created again, dir not synced", func(t *testing.T, m *MemFS) {
			require.NoError(t, m.Remove("/db/a"))
			f := mustCreate(t, m, "/db/a", "other")
			require.NoError(t, f.Sync())
		}, map[string]string{"a": "A", "b": "B"}},
		{"created in a subdirectory, parent synced instead", func(t *testing.T, m *MemFS) {
			require.NoError(t, m.MkdirAll("/db/sub", 0o755))
			f := mustCreate(t, m, "/db/sub/x", "x")
			require.NoError(t, f.Sync())
			require.NoError(t, m.SyncDir("/db"))
		}, map[string]string{"a": "A", "b": "B", "sub/": ""}},
	}
	for _, test := range tests {
		for _, mode := range CrashModes {
			t.Run(test.name+"/"+mode.String(), func(t *testing.T) {
				m := NewMem()
				durableFile(t, m, "/db/a", "A")
				durableFile(t, m, "/db/b", "B")
				test.run(t, m)
				m.Crash(mode, seeded(1))
				assert.Equal(t, test.want, memTree(t, m, "/db"))
			})
		}
	}
}

// TestCrashRenameAcrossDirectories checks the documented outcome of a rename
// between directories of which only one is synced.
func TestCrashRenameAcrossDirectories(t *testing.T) {
	tests := []struct {
		name    string
		synced  string
		wantOld map[string]string
		wantNew map[string]string
	}{
		{"destination synced: both names", "/new", map[string]string{"f": "F"}, map[string]string{"f": "F"}},
		{"source synced: lost", "/old", map[string]string{}, map[string]string{}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			m := NewMem()
			durableFile(t, m, "/old/f", "F")
			require.NoError(t, m.MkdirAll("/new", 0o755))
			require.NoError(t, m.Rename("/old/f", "/new/f"))
			require.NoError(t, m.SyncDir(test.synced))
			m.Crash(DropUnsynced, nil)
			assert.Equal(t, test.wantOld, memTree(t, m, "/old"))
			assert.Equal(t, test.wantNew, memTree(t, m, "/new"))
		})
	}
}

func TestCrashKillsHandlesAndLocks(t *testing.T) {
	m := NewMem()
	durableFile(t, m, "/db/f", "data")
	readWrite, err := m.OpenRW("/db/f")
	require.NoError(t, err)
	readOnly, err := m.Open("/db/f")
	require.NoError(t, err)
	lock, err := m.Lock("/db/LOCK")
	require.NoError(t, err)

	m.Crash(DropUnsynced, nil)

	for _, f := range []File{readWrite, readOnly} {
		_, err = f.ReadAt(make([]byte, 1), 0)
		assert.ErrorIs(t, err, ErrCrashed, "ReadAt")
		_, err = f.WriteAt([]byte("x"), 0)
		assert.ErrorIs(t, err, ErrCrashed, "WriteAt")
		assert.ErrorIs(t, f.Sync(), ErrCrashed, "Sync")
		assert.ErrorIs(t, f.Truncate(0), ErrCrashed, "Truncate")
		assert.ErrorIs(t, f.Allocate(100), ErrCrashed, "Allocate")
		_, err = f.Size()
		assert.ErrorIs(t, err, ErrCrashed, "Size")
		assert.Equal(t, "/db/f", f.Name())
		assert.NoError(t, f.Close(), "Close of a dead handle")
		assert.NoError(t, f.Close(), "Close of a dead handle, twice")
	}
	assert.Equal(t, "data", memRead(t, m, "/db/f"), "dead handles must not change the file")

	relocked, err := m.Lock("/db/LOCK")
	require.NoError(t, err, "a crash releases every lock")
	assert.NoError(t, lock.Close(), "Close of a dead lock")
	_, err = m.Lock("/db/LOCK")
	assert.ErrorIs(t, err, ErrLocked, "closing a dead lock must not release the new holder's")
	require.NoError(t, relocked.Close())

	f, err := m.OpenRW("/db/f")
	require.NoError(t, err, "the file system is usable after a crash")
	write(t, f, 0, "DA")
	require.NoError(t, f.Sync())
	assert.Equal(t, "DAta", memRead(t, m, "/db/f"))
}

// TestProcessCrashKeepsThePageCache checks that a process crash kills handles
// and locks but keeps unsynced content and entries, which a later Crash can
// still lose.
func TestProcessCrashKeepsThePageCache(t *testing.T) {
	m := NewMem()
	f := durableFile(t, m, "/db/f", "AAAA")
	write(t, f, 4, "BB")
	require.NoError(t, m.Rename("/db/f", "/db/g"))
	require.NoError(t, m.MkdirAll("/lock", 0o755))
	lock, err := m.Lock("/lock/LOCK")
	require.NoError(t, err)
	m.SetOpLimit(m.OpCount())

	m.ProcessCrash()

	_, err = f.WriteAt([]byte("x"), 0)
	assert.ErrorIs(t, err, ErrCrashed, "handles die")
	relocked, err := m.Lock("/lock/LOCK")
	require.NoError(t, err, "locks are released")
	require.NoError(t, lock.Close())
	require.NoError(t, relocked.Close())
	assert.Equal(t, map[string]string{"g": "AAAABB"}, memTree(t, m, "/db"), "unsynced data and entries are kept")
	g, err := m.OpenRW("/db/g")
	require.NoError(t, err)
	write(t, g, 0, "C") // the op limit is gone
	m.Crash(DropUnsynced, nil)
	assert.Equal(t, map[string]string{"f": "AAAA"}, memTree(t, m, "/db"), "a later power loss still loses them")
}

// TestCloneIsIndependent checks that a clone has the same durable and current
// state and that crashing or writing one does not change the other.
func TestCloneIsIndependent(t *testing.T) {
	m := NewMem()
	f := durableFile(t, m, "/db/f", "AAAA")
	write(t, f, 0, "BB")
	mustCreate(t, m, "/db/new", "N")
	c := m.Clone()
	assert.Equal(t, m.OpCount(), c.OpCount())

	c.Crash(DropUnsynced, nil)
	assert.Equal(t, map[string]string{"f": "AAAA"}, memTree(t, c, "/db"))
	assert.Equal(t, map[string]string{"f": "BBAA", "new": "N"}, memTree(t, m, "/db"), "the original keeps its page cache")

	c = m.Clone()
	write(t, f, 0, "DD")
	require.NoError(t, f.Sync())
	assert.Equal(t, "BBAA", memRead(t, c, "/db/f"), "a write to the original does not reach the clone")
	c.Crash(DropUnsynced, nil)
	assert.Equal(t, "AAAA", memRead(t, c, "/db/f"), "nor does its sync")
}

// TestCrashAtEveryOperation is the intended use of MemFS: run a workload
// frozen after k operations, for every k, crash it in every mode, and check
// that every record whose Sync returned survived.
func TestCrashAtEveryOperation(t *testing.T) {
	const records = 4
	record := func(i int) string { return fmt.Sprintf("record %d;", i) }
	// workload returns how many records were acknowledged (synced) before
	// the first error.
	workload := func(m *MemFS) (acknowledged int, err error) {
		f, err := m.Create("/db/log")
		if err != nil {
			return 0, err
		}
		if err := m.SyncDir("/db"); err != nil {
			return 0, err
		}
		if err := f.Allocate(64); err != nil {
			return 0, err
		}
		offset := int64(0)
		for i := range records {
			if _, err := f.WriteAt([]byte(record(i)), offset); err != nil {
				return i, err
			}
			offset += int64(len(record(i)))
			if err := f.Sync(); err != nil {
				return i, err
			}
		}
		return records, nil
	}
	reference := NewMem()
	require.NoError(t, reference.MkdirAll("/db", 0o755))
	acknowledged, err := workload(reference)
	require.NoError(t, err)
	require.Equal(t, records, acknowledged)
	total := reference.OpCount()
	require.Equal(t, 3+2*records, total)

	for limit := 0; limit <= total; limit++ {
		for _, mode := range CrashModes {
			t.Run(fmt.Sprintf("limit=%d/mode=%v", limit, mode), func(t *testing.T) {
				m := NewMem()
				require.NoError(t, m.MkdirAll("/db", 0o755))
				m.SetOpLimit(limit)
				acknowledged, err := workload(m)
				if limit < total {
					require.ErrorIs(t, err, ErrCrashed)
				} else {
					require.NoError(t, err)
				}
				assert.Equal(t, limit, m.OpCount(), "frozen after exactly limit operations")
				m.Crash(mode, seeded(limit))
				content, err := m.ReadFile("/db/log")
				if limit < 2 { // the directory entry was never synced
					require.ErrorIs(t, err, fs.ErrNotExist)
					return
				}
				require.NoError(t, err)
				var want string
				for i := range acknowledged {
					want += record(i)
				}
				require.GreaterOrEqual(t, len(content), len(want))
				assert.Equal(t, want, string(content[:len(want)]), "acknowledged records must survive")
			})
		}
	}
}

// durableFile creates name (and its directory) holding content, with both
// the data and the directory entry synced, and returns it open.
func durableFile(t *testing.T, m *MemFS, name, content string) File {
	t.Helper()
	dir := name[:strings.LastIndex(name, "/")]
	require.NoError(t, m.MkdirAll(dir, 0o755))
	f := mustCreate(t, m, name, content)
	require.NoError(t, f.Sync())
	require.NoError(t, m.SyncDir(dir))
	return f
}

func write(t *testing.T, f File, offset int64, data string) {
	t.Helper()
	n, err := f.WriteAt([]byte(data), offset)
	require.NoError(t, err)
	require.Equal(t, len(data), n)
}

func memRead(t *testing.T, m *MemFS, name string) string {
	t.Helper()
	content, err := m.ReadFile(name)
	require.NoError(t, err)
	return string(content)
}

// memTree returns the content of each file in dir by name; subdirectories
// show as "name/" with an empty content.
func memTree(t *testing.T, m *MemFS, dir string) map[string]string {
	t.Helper()
	names, err := m.List(dir)
	require.NoError(t, err)
	tree := make(map[string]string)
	for _, name := range names {
		content, err := m.ReadFile(dir + "/" + name)
		if err != nil {
			require.ErrorIs(t, err, syscall.EISDIR)
			tree[name+"/"] = ""
			continue
		}
		tree[name] = string(content)
	}
	return tree
}

// TestKillKeepsThePageCache: after Kill, handles and locks are dead, every
// write and directory change is still there and still unsynced.
func TestKillKeepsThePageCache(t *testing.T) {
	m := NewMem()
	require.NoError(t, m.MkdirAll("/d", 0o755))
	lock, err := m.Lock("/d/LOCK")
	require.NoError(t, err)
	f, err := m.Create("/d/f")
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("unsynced"), 0)
	require.NoError(t, err)

	m.Kill()
	_, err = f.WriteAt([]byte("x"), 0)
	require.ErrorIs(t, err, ErrCrashed, "the dead process's handle")
	require.NoError(t, lock.Close())
	again, err := m.Lock("/d/LOCK")
	require.NoError(t, err, "the lock died with the process")
	require.NoError(t, again.Close())
	data, err := m.ReadFile("/d/f")
	require.NoError(t, err)
	require.Equal(t, "unsynced", string(data), "the page cache survives")

	m.Crash(DropUnsynced, nil)
	_, err = m.ReadFile("/d/f")
	require.Error(t, err, "still unsynced: a power loss after the kill loses it")
}
