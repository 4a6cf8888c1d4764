package lab

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// lossMode is what a simulated power loss does to the bytes of a file that
// were not durable: written (or allocated) after its last completed sync.
type lossMode int

const (
	lossDrop  lossMode = iota // the unsynced tail is cut; unsynced writes inside the file read as zeros
	lossTorn                  // a random prefix of each unsynced range survives, the rest is cut or zeroed
	lossZero                  // every unsynced byte reads as zero, the file keeps its length
	lossPages                 // each unsynced 4 KiB page survives or reads as zeros, at random
)

var lossModeNames = [...]string{"drop", "torn", "zero", "pages"}

func (m lossMode) String() string { return lossModeNames[m] }

// pageSize is the unit of lossPages.
const pageSize = 4096

// span is a byte range [off, end) of a file.
type span struct{ off, end int64 }

// fileState is what the parent knows of one file (an inode: it follows
// renames) from the child's reports.
type fileState struct {
	path       string // current path; "" once removed or replaced
	syncedSize int64  // size at the last completed sync; -1: never synced
	syncedAt   uint64 // writes counter at that sync's issue
	writes     uint64 // number of writes reported so far
	dirty      []dirtySpan
}

// dirtySpan is a reported write, numbered by fileState.writes.
type dirtySpan struct {
	span
	n uint64
}

type pendingSync struct {
	file   *fileState
	size   int64
	writes uint64
}

type pendingDirSync struct {
	dir     string
	entries map[string]*fileState
}

// powerModel rebuilds, from the child's reports, what was durable at each
// moment, and applies a power loss to the real files after the kill.
type powerModel struct {
	files       map[string]*fileState // by current path
	pending     map[string]pendingSync
	pendingDirs map[string]pendingDirSync
	durable     map[string]map[string]*fileState // dir → name → file, at the last completed SyncDir
}

func newPowerModel() *powerModel {
	return &powerModel{
		files:       map[string]*fileState{},
		pending:     map[string]pendingSync{},
		pendingDirs: map[string]pendingDirSync{},
		durable:     map[string]map[string]*fileState{},
	}
}

// file returns the state of path, creating a never-synced one if unknown.
func (m *powerModel) file(path string) *fileState {
	st := m.files[path]
	if st == nil {
		st = &fileState{path: path, syncedSize: -1}
		m.files[path] = st
	}
	return st
}

// handle applies one report (the words after "fs"). It returns whether the
// child waits for an acknowledgement.
func (m *powerModel) handle(words []string) (reply bool, err error) {
	bad := func() (bool, error) { return false, fmt.Errorf("bad report %q", words) }
	if len(words) == 0 {
		return bad()
	}
	args := words[1:]
	switch words[0] {
	case "c":
		if len(args) != 1 {
			return bad()
		}
		if old := m.files[args[0]]; old != nil {
			old.path = ""
		}
		m.files[args[0]] = &fileState{path: args[0], syncedSize: -1}
	case "w":
		if len(args) != 3 {
			return bad()
		}
		off, err1 := strconv.ParseInt(args[1], 10, 64)
		n, err2 := strconv.ParseInt(args[2], 10, 64)
		if err1 != nil || err2 != nil || off < 0 || n < 0 {
			return bad()
		}
		st := m.file(args[0])
		st.writes++
		st.dirty = append(st.dirty, dirtySpan{span{off, off + n}, st.writes})
	case "r":
		if len(args) != 2 {
			return bad()
		}
		st := m.files[args[0]]
		if old := m.files[args[1]]; old != nil && old != st {
			old.path = ""
		}
		delete(m.files, args[0])
		if st == nil {
			delete(m.files, args[1])
			break
		}
		st.path = args[1]
		m.files[args[1]] = st
	case "x":
		if len(args) != 1 {
			return bad()
		}
		if st := m.files[args[0]]; st != nil {
			st.path = ""
			delete(m.files, args[0])
		}
	case "s":
		if len(args) != 3 {
			return bad()
		}
		size, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil || size < 0 {
			return bad()
		}
		st := m.file(args[1])
		m.pending[args[0]] = pendingSync{file: st, size: size, writes: st.writes}
		return true, nil
	case "S":
		if len(args) != 1 {
			return bad()
		}
		p, ok := m.pending[args[0]]
		if !ok {
			return bad()
		}
		delete(m.pending, args[0])
		st := p.file
		if st.syncedSize >= 0 && p.writes < st.syncedAt {
			break // an older sync that returned after a newer one
		}
		st.syncedSize, st.syncedAt = p.size, p.writes
		st.dirty = slices.DeleteFunc(st.dirty, func(d dirtySpan) bool { return d.n <= p.writes })
	case "d":
		if len(args) < 2 {
			return bad()
		}
		dir := args[1]
		entries := make(map[string]*fileState, len(args)-2)
		for _, name := range args[2:] {
			entries[name] = m.file(filepath.Join(dir, name))
		}
		m.pendingDirs[args[0]] = pendingDirSync{dir: dir, entries: entries}
		return true, nil
	case "D":
		if len(args) != 1 {
			return bad()
		}
		p, ok := m.pendingDirs[args[0]]
		if !ok {
			return bad()
		}
		delete(m.pendingDirs, args[0])
		m.durable[p.dir] = p.entries
	default:
		return bad()
	}
	return false, nil
}

// apply simulates the power loss on the files of dir, which the child no
// longer uses. Directory entries not made durable by a completed SyncDir go:
// a file created or renamed in since is removed, and a file renamed away
// since gets its durable name back (a file removed since cannot be brought
// back: it stays lost). Then each surviving file is cut back to what its
// last completed sync made durable, with mode applied to the rest.
func (m *powerModel) apply(dir string, rng *rand.Rand, mode lossMode) error {
	dir = filepath.Clean(dir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	durableNames := map[*fileState][]string{}
	for name, st := range m.durable[dir] {
		durableNames[st] = append(durableNames[st], name)
	}
	type survivor struct {
		tmp, final string
		st         *fileState
	}
	var survivors []survivor
	for i, e := range entries { // sorted by name, so the rng draws repeat
		path := filepath.Join(dir, e.Name())
		st := m.files[path]
		names := durableNames[st]
		if st == nil || len(names) == 0 {
			if err := os.Remove(path); err != nil {
				return err
			}
			continue
		}
		slices.Sort(names)
		tmp := filepath.Join(dir, fmt.Sprintf(".power-loss-%d", i))
		if err := os.Rename(path, tmp); err != nil {
			return err
		}
		// Two durable names for one file cannot come from renames alone;
		// keep the first.
		survivors = append(survivors, survivor{tmp, filepath.Join(dir, names[0]), st})
	}
	for _, s := range survivors {
		if err := os.Rename(s.tmp, s.final); err != nil {
			return err
		}
		if err := cutFile(s.final, s.st, rng, mode); err != nil {
			return err
		}
	}
	return nil
}

// cutFile cuts the file at path back to what its last completed sync made
// durable, applying mode to the bytes that were not.
func cutFile(path string, st *fileState, rng *rand.Rand, mode lossMode) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = cutOpenFile(f, st, rng, mode)
	return errors.Join(err, f.Close())
}

func cutOpenFile(f *os.File, st *fileState, rng *rand.Rand, mode lossMode) error {
	info, err := f.Stat()
	if err != nil {
		return err
	}
	size := info.Size()
	if st.syncedSize < 0 {
		return f.Truncate(0)
	}
	// Below the synced size, the ranges written since that sync: their old
	// contents are unknown (the log writes into preallocated zeros, and
	// rewrites its sync slots), so they are kept or zeroed, never invented.
	kept := min(size, st.syncedSize)
	for _, s := range mergeSpans(st.dirty) {
		s.end = min(s.end, kept)
		if s.off >= s.end {
			continue
		}
		if err := zeroSpans(f, lostParts(s, rng, mode)); err != nil {
			return err
		}
	}
	if size <= st.syncedSize {
		// A file truncated below its synced size since keeps its current
		// size: the cut-off bytes cannot be brought back.
		return nil
	}
	tail := span{st.syncedSize, size}
	switch mode {
	case lossDrop:
		return f.Truncate(tail.off)
	case lossTorn:
		return f.Truncate(tail.off + rng.Int64N(tail.end-tail.off+1))
	}
	return zeroSpans(f, lostParts(tail, rng, mode))
}

// lostParts returns the parts of s that read as zeros after the power loss,
// for an s whose length must stay.
func lostParts(s span, rng *rand.Rand, mode lossMode) []span {
	switch mode {
	case lossTorn:
		return []span{{s.off + rng.Int64N(s.end-s.off+1), s.end}}
	case lossPages:
		var lost []span
		for off := s.off; off < s.end; {
			end := min((off/pageSize+1)*pageSize, s.end)
			if rng.IntN(2) == 0 {
				lost = append(lost, span{off, end})
			}
			off = end
		}
		return lost
	}
	return []span{s} // lossDrop, lossZero
}

// zeroSpans writes zeros over spans of f.
func zeroSpans(f *os.File, spans []span) error {
	zeros := make([]byte, 64<<10)
	for _, s := range spans {
		for off := s.off; off < s.end; {
			n := min(int64(len(zeros)), s.end-off)
			if _, err := f.WriteAt(zeros[:n], off); err != nil {
				return err
			}
			off += n
		}
	}
	return nil
}

// mergeSpans returns the union of the dirty spans as sorted, disjoint spans.
func mergeSpans(dirty []dirtySpan) []span {
	spans := make([]span, 0, len(dirty))
	for _, d := range dirty {
		if d.end > d.off {
			spans = append(spans, d.span)
		}
	}
	slices.SortFunc(spans, func(a, b span) int {
		switch {
		case a.off < b.off:
			return -1
		case a.off > b.off:
			return 1
		}
		return 0
	})
	var out []span
	for _, s := range spans {
		if n := len(out); n > 0 && s.off <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, s.end)
			continue
		}
		out = append(out, s)
	}
	return out
}
