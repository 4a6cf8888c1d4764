package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// The child's side of a power-loss run: reportFS wraps the real file system
// and tells the parent, on the child's stdout, about every operation the
// parent needs to model what a power loss would have kept. Each report is one
// line starting with "fs ", written through the ackWriter so that it never
// interleaves with an ack line; paths are quoted with strconv.Quote.
//
//	fs c PATH            PATH was created (Create, or Lock of a missing file)
//	fs w PATH OFF LEN    LEN bytes are about to be written at OFF
//	fs r OLD NEW         OLD is about to be renamed to NEW
//	fs x PATH            PATH is about to be removed
//	fs s TOKEN PATH SIZE a Sync of PATH is issued; SIZE is the size now
//	fs S TOKEN           that Sync returned without error
//	fs d TOKEN DIR NAME… a SyncDir of DIR is issued; NAMEs are its entries now
//	fs D TOKEN           that SyncDir returned without error
//
// After an "s" or "d" line the child waits for one byte on its stdin, the
// parent's acknowledgement that the line was read, before it calls the real
// Sync or SyncDir. Reports of writes, renames and removes are written before
// the operation itself, so a kill can never hide an operation that happened
// (it can only show one that did not: the model treats it as possibly
// written, which is conservative).

// reportFS is the vfs.FS of a power-loss child.
type reportFS struct {
	fs    vfs.FS
	out   *ackWriter
	reply *bufio.Reader // the parent's acknowledgements

	mu    sync.Mutex // serializes reports, and a report with its reply
	nodes map[string]*reportNode
	token uint64
	buf   []byte
}

// reportNode follows a file across renames, so that the writes to an open file
// are reported under its current path.
type reportNode struct{ path string } // "" once removed

func newReportFS(fs vfs.FS, out *ackWriter, reply io.Reader) *reportFS {
	return &reportFS{fs: fs, out: out, reply: bufio.NewReader(reply), nodes: map[string]*reportNode{}}
}

// report writes one line made of words; with wait, it then reads the
// parent's acknowledgement. It must be called with r.mu held.
func (r *reportFS) report(wait bool, words ...string) error {
	r.buf = append(r.buf[:0], "fs"...)
	for _, w := range words {
		r.buf = append(r.buf, ' ')
		r.buf = append(r.buf, w...)
	}
	r.buf = append(r.buf, '\n')
	if err := r.out.line(r.buf); err != nil {
		return fmt.Errorf("lab: reporting to the parent: %w", err)
	}
	if wait {
		if _, err := r.reply.ReadByte(); err != nil {
			return fmt.Errorf("lab: waiting for the parent: %w", err)
		}
	}
	return nil
}

// node returns the node of path, creating it (and reporting the creation
// with created) if there is none.
func (r *reportFS) node(path string, created bool) (*reportNode, error) {
	path = filepath.Clean(path)
	n := r.nodes[path]
	if n == nil || created {
		if n != nil {
			n.path = ""
		}
		n = &reportNode{path: path}
		r.nodes[path] = n
		if created {
			if err := r.report(false, "c", strconv.Quote(path)); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}

func (r *reportFS) Create(name string) (vfs.File, error) {
	f, err := r.fs.Create(name)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.node(name, true)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &reportFile{File: f, fs: r, node: n}, nil
}

func (r *reportFS) Open(name string) (vfs.File, error) { return r.fs.Open(name) } // read only

func (r *reportFS) OpenRW(name string) (vfs.File, error) {
	f, err := r.fs.OpenRW(name)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.node(name, false)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &reportFile{File: f, fs: r, node: n}, nil
}

func (r *reportFS) Remove(name string) error {
	r.mu.Lock()
	path := filepath.Clean(name)
	err := r.report(false, "x", strconv.Quote(path))
	if n := r.nodes[path]; n != nil {
		n.path = ""
		delete(r.nodes, path)
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return r.fs.Remove(name)
}

func (r *reportFS) Rename(oldname, newname string) error {
	r.mu.Lock()
	oldPath, newPath := filepath.Clean(oldname), filepath.Clean(newname)
	err := r.report(false, "r", strconv.Quote(oldPath), strconv.Quote(newPath))
	if replaced := r.nodes[newPath]; replaced != nil {
		replaced.path = ""
	}
	if n := r.nodes[oldPath]; n != nil {
		n.path = newPath
		r.nodes[newPath] = n
		delete(r.nodes, oldPath)
	} else {
		delete(r.nodes, newPath)
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return r.fs.Rename(oldname, newname)
}

func (r *reportFS) MkdirAll(dir string, perm os.FileMode) error { return r.fs.MkdirAll(dir, perm) }
func (r *reportFS) List(dir string) ([]string, error)           { return r.fs.List(dir) }

func (r *reportFS) SyncDir(dir string) error {
	r.mu.Lock()
	names, err := r.fs.List(dir)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	r.token++
	token := strconv.FormatUint(r.token, 10)
	words := []string{"d", token, strconv.Quote(filepath.Clean(dir))}
	for _, name := range names {
		words = append(words, strconv.Quote(name))
	}
	err = r.report(true, words...)
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if err := r.fs.SyncDir(dir); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.report(false, "D", token)
}

func (r *reportFS) Lock(name string) (io.Closer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	path := filepath.Clean(name)
	_, statErr := os.Stat(path) // r.fs is vfs.OS in the child
	lock, err := r.fs.Lock(name)
	if err != nil {
		return nil, err
	}
	if errors.Is(statErr, os.ErrNotExist) {
		if _, err := r.node(path, true); err != nil {
			lock.Close()
			return nil, err
		}
	}
	return lock, nil
}

// reportFile reports the writes and syncs of one file opened for writing.
type reportFile struct {
	vfs.File
	fs   *reportFS
	node *reportNode
}

func (f *reportFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	var err error
	if f.node.path != "" {
		err = f.fs.report(false, "w", strconv.Quote(f.node.path),
			strconv.FormatInt(off, 10), strconv.Itoa(len(p)))
	}
	f.fs.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *reportFile) Sync() error {
	r := f.fs
	r.mu.Lock()
	path := f.node.path
	if path == "" { // removed: nobody will read it after the power loss
		r.mu.Unlock()
		return f.File.Sync()
	}
	size, err := f.File.Size()
	if err != nil {
		r.mu.Unlock()
		return err
	}
	r.token++
	token := strconv.FormatUint(r.token, 10)
	err = r.report(true, "s", token, strconv.Quote(path), strconv.FormatInt(size, 10))
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if err := f.File.Sync(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.report(false, "S", token)
}

// parseReport splits a report line (without "fs ") into its words, unquoting
// the quoted ones.
func parseReport(line string) ([]string, error) {
	var words []string
	rest := strings.TrimSpace(line)
	for rest != "" {
		var word string
		if rest[0] == '"' {
			quoted, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, fmt.Errorf("bad report %q: %w", line, err)
			}
			word, _ = strconv.Unquote(quoted)
			rest = rest[len(quoted):]
		} else {
			end := strings.IndexByte(rest, ' ')
			if end < 0 {
				end = len(rest)
			}
			word, rest = rest[:end], rest[end:]
		}
		words = append(words, word)
		rest = strings.TrimLeft(rest, " ")
	}
	return words, nil
}
