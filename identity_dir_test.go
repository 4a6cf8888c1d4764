package zeroloss

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// dirIdentity reads dir's IDENTITY file, which must be there.
func dirIdentity(t *testing.T, dir string) identity {
	t.Helper()
	id, ok, err := readIdentity(vfs.OS, dir)
	require.NoError(t, err)
	require.True(t, ok, "%s has an IDENTITY file", dir)
	return id
}

// copyDir copies the regular files of src into a new temporary directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600))
	}
	return dst
}

func TestOpenGivesANewDirectoryAQueueIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	q := openQueue(t, dir, nil)
	id := dirIdentity(t, dir)
	assert.Equal(t, kindQueue, id.Kind)
	assert.False(t, id.Queue.isZero())
	assert.Equal(t, id, q.identity)
	require.NoError(t, q.Close())

	q = openQueue(t, dir, nil)
	defer q.Close()
	assert.Equal(t, id, q.identity, "a reopened queue keeps its queue ID")
}

// A directory holding a file zeroloss did not create is refused, whatever
// the file's name, and the file is left alone: Open used to delete every
// *.tmp (issue 15: report.tmp was lost).
func TestOpenRefusesAndKeepsFilesItDidNotCreate(t *testing.T) {
	for _, name := range []string{"report.tmp", "notes.txt", "spare-x.tmp"} {
		t.Run(name, func(t *testing.T) {
			for _, existing := range []bool{false, true} {
				dir := t.TempDir()
				if existing {
					q := openQueue(t, dir, nil)
					sendIDs(t, q, "m", 3, SendOK)
					require.NoError(t, q.Close())
				}
				path := filepath.Join(dir, name)
				require.NoError(t, os.WriteFile(path, []byte("keep me"), 0o600))
				q, err := Open(dir, nil)
				if err == nil {
					q.Close()
				}
				require.ErrorIs(t, err, ErrWrongDirectory, "existing queue: %v", existing)
				assert.Contains(t, err.Error(), name, "the error names the foreign file")
				b, rerr := os.ReadFile(path)
				require.NoError(t, rerr, "%s survives Open", name)
				assert.Equal(t, "keep me", string(b))
				if !existing {
					_, ok, _ := readIdentity(vfs.OS, dir)
					assert.False(t, ok, "a refused directory gets no identity")
				}
			}
		})
	}
}

// A directory written before directory identity (testdata/v1-queue, by the
// code of 2d779e4) opens as before and gets an identity.
func TestOpenDirectoryWrittenBeforeIdentity(t *testing.T) {
	dir := copyDir(t, filepath.Join("testdata", "v1-queue"))
	_, ok, err := readIdentity(vfs.OS, dir)
	require.NoError(t, err)
	require.False(t, ok, "the test data predates IDENTITY")

	q := openQueue(t, dir, &Options{SegmentSize: 64 << 10, MaxMessageSize: 1 << 10})
	id := dirIdentity(t, dir)
	assert.Equal(t, identity{Kind: kindQueue, Queue: q.identity.Queue}, id)
	assert.False(t, id.Queue.isZero())

	dead, err := q.DeadLetters("workers")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, "m3", dead[0].Message.ID)
	c, err := q.Consumer("workers", nil)
	require.NoError(t, err)
	var got []string
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d, err := c.Receive(ctx)
		cancel()
		require.NoError(t, err)
		got = append(got, d.Message.ID+"="+string(d.Message.Body))
		require.NoError(t, d.Ack())
	}
	assert.Equal(t, []string{"m4=four", "m5=five"}, got, "the group resumes where it stood")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.Receive(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "nothing else is due")
	require.NoError(t, q.Close())

	q = openQueue(t, dir, &Options{SegmentSize: 64 << 10, MaxMessageSize: 1 << 10})
	defer q.Close()
	assert.Equal(t, id, q.identity, "the identity it got is kept")
}

// A strict producer's spool is not a queue, and a queue's directory is not a
// spool (issue 15: a SpoolDir pointed at a queue's directory wrote records
// into it, and the queue no longer opened).
func TestQueueAndSpoolRefuseEachOther(t *testing.T) {
	qdir, spool := t.TempDir(), t.TempDir()
	q := openQueue(t, qdir, nil)
	sendIDs(t, q, "m", 3, SendOK)
	p, err := NewProducer(q, &ProducerOptions{Strict: true, SpoolDir: spool})
	require.NoError(t, err)
	require.NoError(t, p.Close())
	require.NoError(t, q.Close())
	assert.Equal(t, identity{Kind: kindSpool, Queue: q.identity.Queue}, dirIdentity(t, spool),
		"the spool records the queue it spools for")

	_, err = Open(spool, nil)
	require.ErrorIs(t, err, ErrWrongDirectory)
	assert.Contains(t, err.Error(), "producer spool")

	old := copyDir(t, filepath.Join("testdata", "v1-queue"))
	for name, dir := range map[string]string{"queue": qdir, "queue written before identity": old} {
		t.Run(name, func(t *testing.T) {
			before, err := os.ReadDir(dir)
			require.NoError(t, err)
			_, err = NewProducer(nil, &ProducerOptions{Strict: true, SpoolDir: dir})
			require.ErrorIs(t, err, ErrWrongDirectory)
			assert.Contains(t, err.Error(), "queue")
			after, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Equal(t, len(before), len(after), "nothing written")
			q := openQueue(t, dir, &Options{SegmentSize: 64 << 10, MaxMessageSize: 1 << 10})
			require.NoError(t, q.Close())
		})
	}
}

// A spool holding messages for queue A is not resent to queue B; an empty
// one moves to B.
func TestSpoolOfAnotherQueueIsRefused(t *testing.T) {
	a := openQueue(t, t.TempDir(), nil)
	defer a.Close()
	b := openQueue(t, t.TempDir(), nil)
	defer b.Close()
	spool := t.TempDir()
	opts := &ProducerOptions{Strict: true, SpoolDir: spool}
	p := newProducer(t, a, opts)
	p.Attach(nil)
	produce(t, p, "spooled")
	require.NoError(t, p.Close())

	_, err := NewProducer(b, opts)
	require.ErrorIs(t, err, ErrWrongDirectory)
	assert.Contains(t, err.Error(), a.identity.Queue.String())
	assert.Contains(t, err.Error(), b.identity.Queue.String())

	// Attach refuses B too: the producer stays detached, Flush says why.
	p = newProducer(t, nil, opts)
	p.Attach(b)
	produce(t, p, "spooled-2")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.ErrorIs(t, p.Flush(ctx), ErrWrongDirectory)
	assert.Equal(t, 2, p.Spooled())
	assert.Empty(t, readBack(t, b), "nothing was resent to queue B")

	p.Attach(a)
	flush(t, p)
	require.NoError(t, p.Close())
	have := messagesByID(t, a)
	assert.Contains(t, have, "spooled")
	assert.Contains(t, have, "spooled-2")
	p = newProducer(t, b, opts)
	require.NoError(t, p.Close())
	assert.Equal(t, identity{Kind: kindSpool, Queue: b.identity.Queue}, dirIdentity(t, spool), "an empty spool is rebound")
}

func TestFollowRefusesSpoolsAndForeignFiles(t *testing.T) {
	spool := t.TempDir()
	p := newProducer(t, nil, &ProducerOptions{Strict: true, SpoolDir: spool})
	require.NoError(t, p.Close())
	_, err := openFollower(spool, nil)
	require.ErrorIs(t, err, ErrWrongDirectory)
	assert.Contains(t, err.Error(), "producer spool")

	foreign := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(foreign, "report.tmp"), nil, 0o600))
	_, err = openFollower(foreign, nil)
	require.ErrorIs(t, err, ErrWrongDirectory)
	assert.FileExists(t, filepath.Join(foreign, "report.tmp"))

	// A queue's directory is taken: an old leader rejoining as a follower.
	qdir := t.TempDir()
	q := openQueue(t, qdir, nil)
	require.NoError(t, q.Close())
	fl, err := openFollower(qdir, nil)
	require.NoError(t, err)
	assert.Equal(t, q.identity, fl.identity)
	require.NoError(t, fl.close())
}

// A follower's copy opens as a queue (promotion) and keeps its queue ID; its
// identity says queue only once the promotion's seq gap is durable, so an
// IDENTITY saying follower promotes even when the FOLLOWER marker is gone.
func TestPromotionKeepsTheQueueID(t *testing.T) {
	qid, err := newQueueID()
	require.NoError(t, err)
	for _, marker := range []bool{true, false} {
		dir := t.TempDir()
		fl, err := openFollower(dir, nil)
		require.NoError(t, err)
		assert.Equal(t, identity{Kind: kindFollower}, fl.identity, "a new follower knows no queue yet")
		require.NoError(t, fl.close())
		// As the replication handshake would (adopt): the marker, then the
		// leader's queue ID.
		if marker {
			require.NoError(t, markFollower(vfs.OS, dir))
		}
		require.NoError(t, writeIdentity(vfs.OS, dir, identity{Kind: kindFollower, Queue: qid}))
		q := openQueue(t, dir, nil)
		assert.GreaterOrEqual(t, q.epochs[len(q.epochs)-1].Start, uint64(promotionSeqGap), "promoted (marker %v)", marker)
		assert.Equal(t, identity{Kind: kindQueue, Queue: qid}, q.identity)
		assert.Equal(t, q.identity, dirIdentity(t, dir))
		assert.NoFileExists(t, filepath.Join(dir, followerFile))
		require.NoError(t, q.Close())
	}
}

// A crash at any operation of the Open that promotes a follower's copy, in
// every crash mode, leaves a directory that opens promoted: with the queue ID
// it had, and a term starting above the seq gap. The identity never says
// queue before the gap is durable.
func TestPromotionCrashAtEveryOperation(t *testing.T) {
	qid, err := newQueueID()
	require.NoError(t, err)
	opts := func(fs vfs.FS) *Options {
		return &Options{SegmentSize: 64 << 10, MaxMessageSize: 1 << 10, fs: fs}
	}
	setup := func() *vfs.MemFS {
		fs := vfs.NewMem()
		fl, err := openFollower("/f", &FollowOptions{SegmentSize: 64 << 10, fs: fs})
		require.NoError(t, err)
		require.NoError(t, fl.close())
		// As the replication handshake would: the leader's queue ID.
		require.NoError(t, writeIdentity(fs, "/f", identity{Kind: kindFollower, Queue: qid}))
		return fs
	}
	fs := setup()
	base := fs.OpCount()
	q, err := Open("/f", opts(fs))
	require.NoError(t, err)
	require.NoError(t, q.Close())
	total := fs.OpCount() - base
	require.Greater(t, total, 10)

	rng := rand.New(rand.NewPCG(5, 9))
	for limit := 0; limit <= total; limit++ {
		for _, mode := range vfs.CrashModes {
			label := fmt.Sprintf("crash after op %d/%d, %v", limit, total, mode)
			fs := setup()
			fs.SetOpLimit(fs.OpCount() + limit)
			if q, err := Open("/f", opts(fs)); err == nil {
				_ = q.Close()
			}
			fs.Crash(mode, rng)
			q, err := Open("/f", opts(fs))
			require.NoError(t, err, label)
			assert.Equal(t, identity{Kind: kindQueue, Queue: qid}, q.identity, label)
			promoted := false
			for _, e := range q.epochs {
				promoted = promoted || e.Start > promotionSeqGap
			}
			assert.True(t, promoted, "%s: a term starts above the gap (epochs %+v)", label, q.epochs)
			require.NoError(t, q.Close())
		}
	}
}

// Directories written before directory identity are told apart by what they
// hold: a spool (progress records, no group) is not opened as a queue, a
// queue from before epochs (group records, no EPOCHS) is not a spool, and a
// refused directory is left as it was.
func TestDirectoriesWrittenBeforeIdentityKeepTheirKind(t *testing.T) {
	q := openQueue(t, t.TempDir(), nil)
	defer q.Close()
	spool := t.TempDir()
	p := newProducer(t, q, &ProducerOptions{Strict: true, SpoolDir: spool})
	produce(t, p, "a")
	p.Attach(nil)
	produce(t, p, "b") // spooled
	p.Attach(q)
	flush(t, p) // a progress record
	require.NoError(t, p.Close())
	require.NoError(t, os.Remove(filepath.Join(spool, identityFile)))

	before, err := os.ReadDir(spool)
	require.NoError(t, err)
	_, err = Open(spool, nil)
	require.ErrorIs(t, err, ErrWrongDirectory)
	assert.Contains(t, err.Error(), "producer spool written before directory identity")
	_, err = openFollower(spool, nil)
	require.ErrorIs(t, err, ErrWrongDirectory)
	after, err := os.ReadDir(spool)
	require.NoError(t, err)
	assert.Equal(t, len(before), len(after), "nothing written")
	p = newProducer(t, q, &ProducerOptions{Strict: true, SpoolDir: spool})
	require.NoError(t, p.Close())
	assert.Equal(t, identity{Kind: kindSpool, Queue: q.identity.Queue}, dirIdentity(t, spool))

	old := copyDir(t, filepath.Join("testdata", "v1-queue"))
	require.NoError(t, os.Remove(filepath.Join(old, epochsFile))) // as before epochs
	_, err = NewProducer(nil, &ProducerOptions{Strict: true, SpoolDir: old})
	require.ErrorIs(t, err, ErrWrongDirectory)
	assert.Contains(t, err.Error(), "queue written before directory identity")
	o := openQueue(t, old, &Options{SegmentSize: 64 << 10, MaxMessageSize: 1 << 10})
	require.NoError(t, o.Close())
}

func TestReadDirStateSaysWhatTheDirectoryIs(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, nil)
	sendIDs(t, q, "m", 2, SendOK)
	require.NoError(t, q.Close())
	st, err := ReadDirState(dir)
	require.NoError(t, err)
	assert.Equal(t, "queue", st.Kind)
	assert.Equal(t, q.identity.Queue.String(), st.QueueID)
	assert.False(t, st.Follower)

	// A follower's copy with no marker (its first handshake has not
	// happened, or a crash inside promotion removed it) but whose identity
	// says follower is one.
	f := t.TempDir()
	fl, err := openFollower(f, nil)
	require.NoError(t, err)
	require.NoError(t, fl.close())
	require.NoFileExists(t, filepath.Join(f, followerFile))
	st, err = ReadDirState(f)
	require.NoError(t, err)
	assert.Equal(t, "follower copy", st.Kind)
	assert.Empty(t, st.QueueID, "not known before the first handshake")
	assert.True(t, st.Follower)
}

// A spool whose binding to a queue cannot be written (a full disk, here a
// failed create) still attaches: the binding holds in the process, and is
// written by the next producer that can.
func TestSpoolBindingWriteFailureDoesNotStopTheProducer(t *testing.T) {
	mem := vfs.NewMem()
	fault := vfs.NewFault(mem)
	q := memQueue(t, vfs.NewMem(), producerQueueOptions)
	defer q.Close()
	p := newProducer(t, nil, testStrict(fault))
	produce(t, p, "m0")
	fault.FailNth(vfs.OpCreate, 1, errInjected)
	p.Attach(q)
	flush(t, p)
	require.NoError(t, p.Close())
	id, ok, err := readIdentity(mem, "/spool")
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, id.Queue.isZero(), "the binding was not written")
	assert.Contains(t, messagesByID(t, q), "m0")

	p = newProducer(t, q, testStrict(mem))
	require.NoError(t, p.Close())
	id, _, err = readIdentity(mem, "/spool")
	require.NoError(t, err)
	assert.Equal(t, q.identity.Queue, id.Queue)
}
