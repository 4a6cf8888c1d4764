package vfs

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
)

// CrashMode says what a MemFS Crash does to the content of each file that has
// unsynced writes or size changes. In every mode, each directory loses the
// entry changes made since its last SyncDir.
type CrashMode int

const (
	// DropUnsynced keeps only the durable content: every unsynced operation
	// is lost.
	DropUnsynced CrashMode = iota
	// TornPrefix applies a random number k of the unsynced operations, in
	// order; operation k+1, if it is a write, reaches the disk for a random
	// prefix of its bytes only.
	TornPrefix
	// ZeroTail applies every unsynced size change, but every byte written by
	// an unsynced write reads as zero: the metadata reached the disk, the data
	// did not.
	ZeroTail
	// RandomPages applies every unsynced operation, then each 4096-byte page
	// (aligned to offset 0) that differs from the durable content keeps the
	// new bytes or the old ones, independently at random. The size is the new
	// size; where the durable content was shorter, the old bytes are zeros.
	RandomPages
)

// CrashModes lists every CrashMode, for tests that loop over them.
var CrashModes = []CrashMode{DropUnsynced, TornPrefix, ZeroTail, RandomPages}

// crashPageSize is the unit in which RandomPages keeps or loses data.
const crashPageSize = 4096

// String returns the mode's name, such as "TornPrefix".
func (mode CrashMode) String() string {
	switch mode {
	case DropUnsynced:
		return "DropUnsynced"
	case TornPrefix:
		return "TornPrefix"
	case ZeroTail:
		return "ZeroTail"
	case RandomPages:
		return "RandomPages"
	}
	return fmt.Sprintf("CrashMode(%d)", int(mode))
}

// Crash simulates a power loss now and the reboot after it. Every file handle
// and lock obtained before it becomes dead: their methods return ErrCrashed,
// except Close, which returns nil. The op limit is removed. Each directory's
// entries go back to those of its last SyncDir (files created since are
// forgotten, renamed ones get their old name back, removed ones come back),
// and each file's content becomes what mode says a disk could hold. The
// random choices come from rng, so a seeded rng reproduces a crash; a nil rng
// stands for a fixed seed. Afterwards the file system is usable again, and its
// durable state is the post-crash state.
func (m *MemFS) Crash(mode CrashMode, rng *rand.Rand) {
	if rng == nil {
		rng = rand.New(rand.NewPCG(0, 0))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.epoch++
	m.locks = make(map[string]*memLock)
	m.opLimit = -1
	crashed := make(map[*memNode]bool)
	// Visit directories and names in a fixed order so that rng draws are
	// the same from run to run.
	for _, path := range slices.Sorted(maps.Keys(m.dirs)) {
		dir := m.dirs[path]
		dir.current = maps.Clone(dir.durable)
		for _, name := range slices.Sorted(maps.Keys(dir.durable)) {
			node := dir.durable[name]
			if !crashed[node] {
				crashed[node] = true
				node.crash(mode, rng)
			}
		}
	}
}

// Kill simulates the process dying (kill -9) while the machine stays up:
// every file handle and lock obtained before it becomes dead, as after a
// Crash, but nothing is lost: the operating system keeps every write in its
// page cache, still unsynced (a later Crash may lose it), and every
// directory change. The op limit is removed.
func (m *MemFS) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.epoch++
	m.locks = make(map[string]*memLock)
	m.opLimit = -1
}

// crash replaces the node's content, durable and current, with what mode says
// survives of its unsynced operations.
func (n *memNode) crash(mode CrashMode, rng *rand.Rand) {
	content := crashContent(n.durable, n.pending, mode, rng)
	n.data = content
	n.durable = bytes.Clone(content)
	n.pending = nil
	n.lost = nil // the page cache is gone
}

// crashContent returns what survives on the disk of a file whose last synced
// content is durable and whose unsynced operations are ops. It does not
// modify durable or ops.
func crashContent(durable []byte, ops []memOp, mode CrashMode, rng *rand.Rand) []byte {
	content := bytes.Clone(durable)
	switch mode {
	case DropUnsynced:
	case TornPrefix:
		applied := rng.IntN(len(ops) + 1)
		for _, op := range ops[:applied] {
			content = applyOp(content, op, false)
		}
		if applied < len(ops) && !ops[applied].resize {
			torn := ops[applied]
			torn.data = torn.data[:rng.IntN(len(torn.data))]
			if len(torn.data) > 0 {
				content = applyOp(content, torn, false)
			}
		}
	case ZeroTail:
		for _, op := range ops {
			content = applyOp(content, op, true)
		}
	case RandomPages:
		for _, op := range ops {
			content = applyOp(content, op, false)
		}
		old := resize(bytes.Clone(durable), len(content))
		for start := 0; start < len(content); start += crashPageSize {
			end := min(start+crashPageSize, len(content))
			if !bytes.Equal(content[start:end], old[start:end]) && rng.IntN(2) == 0 {
				copy(content[start:end], old[start:end])
			}
		}
	default:
		panic(fmt.Sprintf("vfs: unknown %v", mode))
	}
	return content
}

// ProcessCrash simulates the death of the process that uses the file system,
// not of the machine: every file handle and lock obtained before it becomes
// dead, as after Crash, and the op limit is removed, but every file keeps its
// content, synced or not, as the page cache would. A later Crash can still
// lose what was not synced: a program that reopens the files after a process
// crash must sync what it builds on before it claims it durable.
func (m *MemFS) ProcessCrash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.epoch++
	m.locks = make(map[string]*memLock)
	m.opLimit = -1
}

// Clone returns an independent copy of the file system: every file's durable
// content, current content and unsynced operations, every directory's durable
// and current entries, and the op count. It has no open handles, no locks and
// no op limit. Crash tests use it to crash the same state many ways.
func (m *MemFS) Clone() *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := NewMem()
	c.opCount = m.opCount
	nodes := make(map[*memNode]*memNode)
	clone := func(n *memNode) *memNode {
		if copied, ok := nodes[n]; ok {
			return copied
		}
		// Operations are never changed once recorded: sharing them is safe.
		copied := &memNode{durable: bytes.Clone(n.durable), data: bytes.Clone(n.data), pending: slices.Clone(n.pending),
			lost: slices.Clone(n.lost)}
		nodes[n] = copied
		return copied
	}
	for path, dir := range m.dirs {
		d := newMemDir()
		for name, n := range dir.durable {
			d.durable[name] = clone(n)
		}
		for name, n := range dir.current {
			d.current[name] = clone(n)
		}
		d.subdirs = maps.Clone(dir.subdirs)
		c.dirs[path] = d
	}
	return c
}
