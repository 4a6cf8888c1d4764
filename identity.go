package zeroloss

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"path/filepath"

	"github.com/zerolossmq/zeroloss/internal/vfs"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// Directory identity (see ARCHITECTURE.md, "On disk").
//
// Every directory the library owns carries an IDENTITY file that says what
// it is (a queue, a follower's copy of a queue, a strict producer's spool)
// and which queue it belongs to: a random 128-bit queue ID chosen when the
// queue's directory was first created. A follower's copy takes its leader's
// queue ID at its first handshake and keeps it when promoted, so the ID
// names a queue's lineage across failovers.
//
// Layout: magic "ZLIDENT1" | u8 kind | 16-byte queue ID | u32 CRC-32C of
// everything before it. The file is replaced atomically (temporary file,
// fdatasync, rename, directory fsync).

const (
	identityFile  = "IDENTITY"
	identityMagic = "ZLIDENT1"
	identitySize  = len(identityMagic) + 1 + 16 + 4
)

// dirKind says what a directory holds.
type dirKind uint8

const (
	kindQueue    dirKind = 1 // a queue's directory (Open)
	kindFollower dirKind = 2 // a follower's copy of a queue (Follow)
	kindSpool    dirKind = 3 // a strict producer's spool (NewProducer)
)

func (k dirKind) String() string {
	switch k {
	case kindQueue:
		return "queue"
	case kindFollower:
		return "follower copy"
	case kindSpool:
		return "producer spool"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// queueID names a queue's lineage. The zero ID means none yet (an empty
// follower that has not met its leader).
type queueID [16]byte

func (id queueID) String() string { return hex.EncodeToString(id[:]) }

func (id queueID) isZero() bool { return id == queueID{} }

// newQueueID returns a random queue ID.
func newQueueID() (queueID, error) {
	var id queueID
	_, err := rand.Read(id[:])
	return id, err
}

// identity is the content of a directory's IDENTITY file.
type identity struct {
	Kind  dirKind
	Queue queueID
}

func (i identity) encode() []byte {
	b := make([]byte, 0, identitySize)
	b = append(b, identityMagic...)
	b = append(b, byte(i.Kind))
	b = append(b, i.Queue[:]...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, epochCRC))
}

// readIdentity reads dir's IDENTITY file. ok is false when there is none (a
// new directory, or one written before directory identity existed). A
// damaged file is ErrCorrupt naming the file and offset.
func readIdentity(fsys vfs.FS, dir string) (id identity, ok bool, err error) {
	path := filepath.Join(dir, identityFile)
	f, err := fsys.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return identity{}, false, nil
	}
	if err != nil {
		return identity{}, false, err
	}
	defer f.Close()
	corrupt := func(off int64, format string, args ...any) error {
		return &wal.CorruptError{File: path, Offset: off, Reason: fmt.Sprintf(format, args...)}
	}
	size, err := f.Size()
	if err != nil {
		return identity{}, false, err
	}
	if size != int64(identitySize) {
		return identity{}, false, corrupt(0, "identity file of %d bytes, want %d", size, identitySize)
	}
	b := make([]byte, identitySize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return identity{}, false, err
	}
	if string(b[:len(identityMagic)]) != identityMagic {
		return identity{}, false, corrupt(0, "bad magic %q", b[:len(identityMagic)])
	}
	body := b[:identitySize-4]
	if crc32.Checksum(body, epochCRC) != binary.LittleEndian.Uint32(b[identitySize-4:]) {
		return identity{}, false, corrupt(int64(identitySize-4), "identity checksum mismatch")
	}
	id.Kind = dirKind(b[len(identityMagic)])
	copy(id.Queue[:], b[len(identityMagic)+1:])
	switch id.Kind {
	case kindQueue, kindFollower, kindSpool:
	default:
		return identity{}, false, corrupt(int64(len(identityMagic)), "unknown directory kind %d", uint8(id.Kind))
	}
	return id, true, nil
}

// writeIdentity replaces dir's IDENTITY file with id, atomically.
func writeIdentity(fsys vfs.FS, dir string, id identity) error {
	return replaceFile(fsys, dir, identityFile, id.encode())
}

// replaceFile replaces dir/name with b: a temporary file name.new, synced,
// renamed over it, and the directory synced. A crash leaves either the old
// file or the new one, and at most a stray name.new.
func replaceFile(fsys vfs.FS, dir, name string, b []byte) error {
	path := filepath.Join(dir, name)
	tmp := path + ".new"
	if err := fsys.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := fsys.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, path)
	}
	if err == nil {
		err = fsys.SyncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("zeroloss: writing %s: %w", path, err)
	}
	return nil
}

// openQueueIdentity returns the identity of a queue's directory for Open,
// writing one if it has none (a new directory, or one older than directory
// identity: a fresh queue ID) or says it is a follower's copy (promotion:
// the queue ID stays). Minimal: the full checks of directory kinds come with
// their own change.
func openQueueIdentity(fsys vfs.FS, dir string) (identity, error) {
	id, ok, err := readIdentity(fsys, dir)
	if err != nil {
		return identity{}, err
	}
	if ok && id.Kind == kindQueue {
		return id, nil
	}
	if !ok || id.Queue.isZero() {
		if id.Queue, err = newQueueID(); err != nil {
			return identity{}, err
		}
	}
	id.Kind = kindQueue
	if err := writeIdentity(fsys, dir, id); err != nil {
		return identity{}, err
	}
	return id, nil
}
