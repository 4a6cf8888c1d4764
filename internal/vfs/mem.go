package vfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
)

// ErrCrashed is returned by MemFS once it is frozen by SetOpLimit, and by every
// file handle and lock that was obtained before a Crash. It comes wrapped in an
// *fs.PathError naming the operation and the file; test it with errors.Is.
var ErrCrashed = errors.New("vfs: crashed")

// maxMemFileSize bounds the size of a MemFS file, so that a test writing at a
// wild offset fails with EFBIG instead of exhausting memory.
const maxMemFileSize = 1 << 32

// MemFS is a crashable in-memory file system for crash tests. It is safe for
// concurrent use; one mutex guards everything, so no call blocks for long.
//
// Like a disk with a volatile write cache, it keeps two states. Each file has
// its durable content (as of its last File.Sync) and its current content, plus
// the list of writes and size changes made since that Sync. Each directory has
// its durable entries (as of its last SyncDir) and its current entries; Create,
// Rename and Remove change only the current ones. Directories themselves are
// created durably at once by MkdirAll. Reads always see the current state.
// Crash replaces the current state with what a disk could hold after a power
// loss, and SetOpLimit freezes the file system after a chosen number of
// mutating operations, so a test can crash a workload at every point.
//
// Remove and Rename work on files only; directories cannot be removed.
type MemFS struct {
	mu      sync.Mutex
	dirs    map[string]*memDir  // by cleaned path
	locks   map[string]*memLock // held locks, by cleaned path
	epoch   int                 // incremented by Crash; older handles are dead
	opCount int                 // mutating operations so far
	opLimit int                 // opCount at which the FS freezes; < 0: none
}

// memDir is a directory: its file entries, durable and current, and the names
// of its subdirectories (always durable).
type memDir struct {
	durable map[string]*memNode
	current map[string]*memNode
	subdirs map[string]bool
}

// memNode is a file's content: what is on the disk (durable), what reads see
// (data), and the operations that lead from the first to the second.
type memNode struct {
	durable []byte
	data    []byte
	pending []memOp
	// lost are ranges whose writeback failed (FaultFS.FailSyncLosingWrites):
	// data holds the written bytes, the disk the old ones, which a Sync
	// keeps until the range is written again.
	lost []memLost
}

// memLost is a range of a file whose new bytes never reach the disk: old is
// what the disk holds there.
type memLost struct {
	offset int64
	old    []byte
}

// memOp is one unsynced change to a file: a write of data at offset, or, when
// resize is set, a change of the size to size.
type memOp struct {
	resize bool
	offset int64
	data   []byte
	size   int64
}

// NewMem returns an empty MemFS with no op limit. The roots ("." and "/", or
// a volume root on Windows) exist from the start; other directories must be
// made with MkdirAll.
func NewMem() *MemFS {
	return &MemFS{
		dirs:    make(map[string]*memDir),
		locks:   make(map[string]*memLock),
		opLimit: -1,
	}
}

func newMemDir() *memDir {
	return &memDir{
		durable: make(map[string]*memNode),
		current: make(map[string]*memNode),
		subdirs: make(map[string]bool),
	}
}

func pathError(op, path string, err error) error {
	return &fs.PathError{Op: op, Path: path, Err: err}
}

// OpCount returns how many mutating operations (WriteAt, Truncate, Allocate,
// Sync, Create, Rename, Remove, SyncDir) have been made since NewMem,
// including failed ones, but not those refused with ErrCrashed or made on a
// closed, dead or read-only handle.
func (m *MemFS) OpCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.opCount
}

// SetOpLimit freezes the file system once n mutating operations have been made
// in total (counted as OpCount does, from NewMem): every later one fails with
// ErrCrashed and has no effect, as if the machine had died, while reads still
// work. A negative n removes the limit; Crash removes it too.
func (m *MemFS) SetOpLimit(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opLimit = n
}

// frozen reports whether the op limit has been reached. Callers hold m.mu.
func (m *MemFS) frozen() bool {
	return m.opLimit >= 0 && m.opCount >= m.opLimit
}

// begin counts one mutating operation, or refuses it with ErrCrashed if the
// file system is frozen. Callers hold m.mu.
func (m *MemFS) begin(op, name string) error {
	if m.frozen() {
		return pathError(op, name, ErrCrashed)
	}
	m.opCount++
	return nil
}

// dir returns the directory at the cleaned path, or nil. Roots are made on
// first use. Callers hold m.mu.
func (m *MemFS) dir(path string) *memDir {
	d := m.dirs[path]
	if d == nil && filepath.Dir(path) == path {
		d = newMemDir()
		m.dirs[path] = d
	}
	return d
}

// locate splits name into its parent directory and base name. It fails with
// fs.ErrNotExist if the parent is missing. Callers hold m.mu.
func (m *MemFS) locate(op, name string) (*memDir, string, error) {
	clean := filepath.Clean(name)
	parent := m.dir(filepath.Dir(clean))
	if parent == nil {
		return nil, "", pathError(op, name, fs.ErrNotExist)
	}
	return parent, filepath.Base(clean), nil
}

// lookup returns the file at name as the current entries see it. Callers hold
// m.mu.
func (m *MemFS) lookup(op, name string) (*memNode, error) {
	parent, base, err := m.locate(op, name)
	if err != nil {
		return nil, err
	}
	if parent.subdirs[base] {
		return nil, pathError(op, name, syscall.EISDIR)
	}
	node := parent.current[base]
	if node == nil {
		return nil, pathError(op, name, fs.ErrNotExist)
	}
	return node, nil
}

// Create creates an empty file, open for reading and writing. It fails with
// fs.ErrExist if name exists and with fs.ErrNotExist if its directory does not;
// the new entry is durable only after SyncDir.
func (m *MemFS) Create(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin("create", name); err != nil {
		return nil, err
	}
	parent, base, err := m.locate("create", name)
	if err != nil {
		return nil, err
	}
	if parent.subdirs[base] || parent.current[base] != nil {
		return nil, pathError("create", name, fs.ErrExist)
	}
	node := &memNode{}
	parent.current[base] = node
	return m.newFile(node, name, true), nil
}

// Open opens an existing file for reading only; writes through the handle fail.
func (m *MemFS) Open(name string) (File, error) { return m.open("open", name, false) }

// OpenRW opens an existing file for reading and writing.
func (m *MemFS) OpenRW(name string) (File, error) { return m.open("open", name, true) }

func (m *MemFS) open(op, name string, writable bool) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	node, err := m.lookup(op, name)
	if err != nil {
		return nil, err
	}
	return m.newFile(node, name, writable), nil
}

// newFile returns a handle on node. Callers hold m.mu.
func (m *MemFS) newFile(node *memNode, name string, writable bool) *memFile {
	return &memFile{fs: m, node: node, name: name, writable: writable, epoch: m.epoch}
}

// Remove removes the file's current entry; the removal is durable only after
// SyncDir. Open handles keep working on the unlinked file.
func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin("remove", name); err != nil {
		return err
	}
	parent, base, err := m.locate("remove", name)
	if err != nil {
		return err
	}
	if parent.subdirs[base] {
		return pathError("remove", name, syscall.EISDIR)
	}
	if parent.current[base] == nil {
		return pathError("remove", name, fs.ErrNotExist)
	}
	delete(parent.current, base)
	return nil
}

// Rename moves the file oldname to newname, replacing any file there. Only the
// current entries change; the rename is durable after SyncDir of both
// directories. A rename across directories of which only the destination is
// synced leaves the file under both names after a Crash, sharing one content.
func (m *MemFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin("rename", oldname); err != nil {
		return err
	}
	node, err := m.lookup("rename", oldname)
	if err != nil {
		return err
	}
	newParent, newBase, err := m.locate("rename", newname)
	if err != nil {
		return err
	}
	if newParent.subdirs[newBase] {
		return pathError("rename", newname, syscall.EISDIR)
	}
	oldParent, oldBase, _ := m.locate("rename", oldname)
	delete(oldParent.current, oldBase)
	newParent.current[newBase] = node
	return nil
}

// MkdirAll creates dir and any missing parents, durably at once (it is not a
// counted operation). It fails with ErrCrashed if it would create a directory
// while the file system is frozen, and with syscall.ENOTDIR if a file is in
// the way. perm is ignored.
func (m *MemFS) MkdirAll(dir string, perm os.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var missing []string // innermost first; the loop ends at a root at the latest
	for path := filepath.Clean(dir); m.dir(path) == nil; path = filepath.Dir(path) {
		missing = append(missing, path)
	}
	for _, path := range slices.Backward(missing) {
		parent, base := m.dir(filepath.Dir(path)), filepath.Base(path)
		if parent.current[base] != nil || parent.durable[base] != nil {
			return pathError("mkdir", path, syscall.ENOTDIR)
		}
		if m.frozen() {
			return pathError("mkdir", path, ErrCrashed)
		}
		parent.subdirs[base] = true
		m.dirs[path] = newMemDir()
	}
	return nil
}

// List returns the sorted names of dir's current files and subdirectories. It
// fails with fs.ErrNotExist if dir does not exist.
func (m *MemFS) List(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.dir(filepath.Clean(dir))
	if d == nil {
		return nil, pathError("open", dir, fs.ErrNotExist)
	}
	names := slices.Collect(maps.Keys(d.current))
	for name := range d.subdirs {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// SyncDir makes dir's current entries durable. It fails with fs.ErrNotExist if
// dir does not exist.
func (m *MemFS) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin("syncdir", dir); err != nil {
		return err
	}
	d := m.dir(filepath.Clean(dir))
	if d == nil {
		return pathError("syncdir", dir, fs.ErrNotExist)
	}
	d.durable = maps.Clone(d.current)
	return nil
}

// Lock takes the in-memory exclusive lock on name without blocking, creating
// the file (not durably, and without counting an operation) if it is missing.
// It returns an error matching ErrLocked while another holder has the lock
// (saying it is in this process: every holder of a MemFS is), and ErrCrashed
// if it would have to create the file while the file system is frozen. A
// Crash releases every lock.
func (m *MemFS) Lock(name string) (io.Closer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	parent, base, err := m.locate("lock", name)
	if err != nil {
		return nil, err
	}
	if parent.subdirs[base] {
		return nil, pathError("lock", name, syscall.EISDIR)
	}
	key := filepath.Clean(name)
	if m.locks[key] != nil {
		return nil, errLockedHere
	}
	if parent.current[base] == nil {
		if m.frozen() {
			return nil, pathError("lock", name, ErrCrashed)
		}
		parent.current[base] = &memNode{}
	}
	held := &memLock{fs: m, key: key, epoch: m.epoch}
	m.locks[key] = held
	return held, nil
}

// ReadFile returns a copy of the file's current content.
func (m *MemFS) ReadFile(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	node, err := m.lookup("open", name)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(node.data), nil
}

// Size returns the file's current size.
func (m *MemFS) Size(name string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	node, err := m.lookup("stat", name)
	if err != nil {
		return 0, err
	}
	return int64(len(node.data)), nil
}

// WriteFile makes name hold data, durably: the file's content and its
// directory entry are both written and synced, as if by a careful tool outside
// the workload. Tests use it to plant or corrupt files. It is not a counted
// operation and ignores the op limit. Open handles on an existing file see the
// new content.
func (m *MemFS) WriteFile(name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	parent, base, err := m.locate("write", name)
	if err != nil {
		return err
	}
	if parent.subdirs[base] {
		return pathError("write", name, syscall.EISDIR)
	}
	node := parent.current[base]
	if node == nil {
		node = &memNode{}
		parent.current[base] = node
	}
	node.data = bytes.Clone(data)
	node.durable = bytes.Clone(data)
	node.pending = nil
	parent.durable[base] = node
	return nil
}
