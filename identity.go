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

	"github.com/zerolossmq/zeroloss/internal/record"
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

// ownedFile says whether name is a file the library creates in a directory
// it owns: the log's (LOCK, segments, their temporary files) and the queue's
// (IDENTITY, EPOCHS, FOLLOWER, CATCHUP, checkpoint files, and the .new files
// replaceFile writes).
func ownedFile(name string) bool {
	switch name {
	case identityFile, identityFile + ".new", epochsFile, epochsFile + ".new", followerFile, catchupFile, catchupFile + ".new":
		return true
	}
	return isCheckpointFile(name) || wal.OwnsFile(name)
}

// foreignFiles returns the names in dir that the library did not create,
// sorted. A directory that does not exist has none.
func foreignFiles(fsys vfs.FS, dir string) ([]string, error) {
	names, err := fsys.List(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var foreign []string
	for _, name := range names {
		if !ownedFile(name) {
			foreign = append(foreign, name)
		}
	}
	return foreign, nil
}

func exists(fsys vfs.FS, path string) (bool, error) {
	f, err := fsys.Open(path)
	if err == nil {
		return true, f.Close()
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// claimDir checks that dir, locked by the caller, can be opened as want (a
// queue by Open, a follower's copy by Follow, a spool by NewProducer) and
// returns its identity, writing one first if dir has none. It runs before
// the log's recovery changes anything (wal.Options.Claim).
//
// Refused, with ErrWrongDirectory and nothing changed but the LOCK file
// (empty; taken before the check so that it runs under the lock): a
// directory holding a file the library did not create (the first one is
// named), a spool given to Open or Follow, a queue or follower copy given
// to NewProducer. Open
// takes a follower copy (promotion, epoch.go); Follow takes a queue (an old
// leader rejoining); the replication handshake checks the queue ID.
//
// A directory without IDENTITY is new, or was written before directory
// identity existed: it gets one, naming a new queue ID for a queue (a
// follower copy if the FOLLOWER marker is there), and no queue ID yet for a
// follower copy (its first handshake gives it its leader's) or a spool (the
// producer records its queue's). What such a directory held is guessed
// (legacyKind): a spool is refused a queue's directory, Open and Follow a
// spool's.
func claimDir(fsys vfs.FS, dir string, want dirKind) (identity, error) {
	foreign, err := foreignFiles(fsys, dir)
	if err != nil {
		return identity{}, err
	}
	if len(foreign) > 0 {
		return identity{}, fmt.Errorf("%s holds %q, a file zeroloss did not create: not opened as a %s: %w",
			dir, foreign[0], want, ErrWrongDirectory)
	}
	id, ok, err := readIdentity(fsys, dir)
	if err != nil {
		return identity{}, err
	}
	if ok {
		if id.Kind == want || (want == kindQueue && id.Kind == kindFollower) || (want == kindFollower && id.Kind == kindQueue) {
			return id, nil
		}
		return identity{}, fmt.Errorf("%s is a %s (queue %s), not a %s: %w", dir, id.Kind, id.describeQueue(), want, ErrWrongDirectory)
	}
	was, err := legacyKind(fsys, dir)
	if err != nil {
		return identity{}, err
	}
	switch {
	case was == kindSpool && want != kindSpool:
		return identity{}, fmt.Errorf("%s holds a producer spool written before directory identity (messages and spool progress records, no consumer group), not a %s: %w",
			dir, want, ErrWrongDirectory)
	case was != 0 && was != kindSpool && want == kindSpool:
		return identity{}, fmt.Errorf("%s holds a queue written before directory identity, not a %s: %w", dir, want, ErrWrongDirectory)
	}
	id.Kind = want
	if want == kindQueue {
		if was == kindFollower {
			id.Kind = kindFollower
		}
		if id.Queue, err = newQueueID(); err != nil {
			return identity{}, err
		}
	}
	if err := writeIdentity(fsys, dir, id); err != nil {
		return identity{}, err
	}
	return id, nil
}

// legacyKind guesses what a directory without IDENTITY holds: a follower's
// copy if FOLLOWER is there, a queue if EPOCHS is (every Open since epochs
// writes it); otherwise, if it has segments, from its records: consumer
// group declarations, checkpoints or epoch records say queue, acks without
// any of them say spool (its progress records). 0: nothing to tell (a new
// directory, or messages only). Damage is left for recovery to report.
func legacyKind(fsys vfs.FS, dir string) (dirKind, error) {
	if marked, err := exists(fsys, filepath.Join(dir, followerFile)); err != nil || marked {
		return kindFollower, err
	}
	if epochs, err := exists(fsys, filepath.Join(dir, epochsFile)); err != nil || epochs {
		return kindQueue, err
	}
	res, err := wal.Scan(fsys, dir)
	if err != nil || res == nil {
		return 0, nil
	}
	switch f := res.Frames; {
	case f[record.TypeGroup] > 0 || f[record.TypeCheckpoint] > 0 || f[record.TypeEpoch] > 0:
		return kindQueue, nil
	case f[record.TypeAck] > 0:
		return kindSpool, nil
	}
	return 0, nil
}

func (i identity) describeQueue() string {
	if i.Queue.isZero() {
		return "not known yet"
	}
	return i.Queue.String()
}
