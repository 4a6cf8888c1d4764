package zeroloss

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/vfs"
)

func txQueue(t *testing.T, fs vfs.FS, o Options) *Queue {
	t.Helper()
	o.fs = fs
	if o.SegmentSize == 0 {
		o.SegmentSize, o.MaxMessageSize = 64<<10, 4<<10
	}
	q, err := Open("/q", &o)
	require.NoError(t, err)
	return q
}

// drain receives and acks everything the group has now.
func drain(t *testing.T, c *Consumer) []*Delivery {
	t.Helper()
	var out []*Delivery
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		d, err := c.Receive(ctx)
		cancel()
		if err != nil {
			return out
		}
		require.NoError(t, d.Ack())
		out = append(out, d)
	}
}

func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, 5*time.Millisecond, what)
}

func TestHalfIsInvisibleUntilCommit(t *testing.T) {
	q := txQueue(t, vfs.NewMem(), Options{})
	defer q.Close()
	ctx := context.Background()
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	h, res, err := q.SendHalf(ctx, &Message{ID: "order-1", Body: []byte("paid")})
	require.NoError(t, err)
	require.Equal(t, SendOK, res.Status)
	h2, _, err := q.SendHalf(ctx, &Message{ID: "order-2", Body: []byte("cancelled")})
	require.NoError(t, err)
	assert.Empty(t, drain(t, c), "a half message is invisible")
	assert.Equal(t, 2, q.Stats().TxPending)

	committed, err := h.Commit(ctx)
	require.NoError(t, err)
	assert.Equal(t, SendOK, committed.Status)
	assert.Greater(t, committed.Seq, h2.Seq, "commit appends with a new seq")
	require.NoError(t, h2.Rollback(ctx))
	got := drain(t, c)
	require.Len(t, got, 1)
	assert.Equal(t, "order-1", got[0].Message.ID)
	assert.Equal(t, []byte("paid"), got[0].Message.Body)
	assert.Equal(t, committed.Seq, got[0].Seq)

	// Idempotent per transaction; a rolled-back half stays rolled back.
	again, err := h.Commit(ctx)
	require.NoError(t, err)
	assert.Equal(t, committed, again)
	_, err = h2.Commit(ctx)
	assert.ErrorIs(t, err, ErrTxRolledBack)
	require.NoError(t, h2.Rollback(ctx))
	st := q.Stats()
	assert.Zero(t, st.TxPending)
	assert.Equal(t, uint64(1), st.TxCommitted)
	assert.Equal(t, uint64(1), st.TxRolledBack)
	assert.Empty(t, drain(t, c))
}

func TestSendInTransactionAndCheckBack(t *testing.T) {
	var mu sync.Mutex
	decided := map[string]TxState{}
	var asked atomic.Int32
	checker := func(ctx context.Context, m *Message) TxState {
		asked.Add(1)
		mu.Lock()
		defer mu.Unlock()
		return decided[m.ID]
	}
	fs := vfs.NewMem()
	opts := Options{TxChecker: checker, TxTimeout: 20 * time.Millisecond, TxCheckInterval: 20 * time.Millisecond, TxCheckMax: 100}
	q := txQueue(t, fs, opts)
	ctx := context.Background()
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		id    string
		local TxState
	}{{"commit", TxCommit}, {"rollback", TxRollback}, {"later-commit", TxUnknown}, {"later-rollback", TxUnknown}} {
		_, state, err := q.SendInTransaction(ctx, &Message{ID: tc.id, Body: []byte(tc.id)}, func(context.Context) TxState { return tc.local })
		require.NoError(t, err)
		assert.Equal(t, tc.local, state)
	}
	got := drain(t, c)
	require.Len(t, got, 1)
	assert.Equal(t, "commit", got[0].Message.ID)

	// The checker is asked about the unknown ones; while it says unknown they
	// wait, and the check counts are written.
	eventually(t, func() bool { return asked.Load() >= 4 }, "the checker is asked")
	assert.Equal(t, 2, q.Stats().TxPending)
	// A restart keeps them pending, with their check counts.
	require.NoError(t, q.Close())
	q = txQueue(t, fs, opts)
	defer q.Close()
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	assert.Equal(t, 2, q.Stats().TxPending)
	mu.Lock()
	decided["later-commit"], decided["later-rollback"] = TxCommit, TxRollback
	mu.Unlock()
	eventually(t, func() bool { return q.Stats().TxPending == 0 }, "the checker's answers resolve them")
	got = drain(t, c)
	require.Len(t, got, 1)
	assert.Equal(t, "later-commit", got[0].Message.ID)
}

func TestCheckMaxRollsBackAndCountsSurviveRestart(t *testing.T) {
	var asked atomic.Int32
	checker := func(context.Context, *Message) TxState { asked.Add(1); return TxUnknown }
	fs := vfs.NewMem()
	opts := Options{TxChecker: checker, TxTimeout: 10 * time.Millisecond, TxCheckInterval: 10 * time.Millisecond, TxCheckMax: 6}
	q := txQueue(t, fs, opts)
	_, _, err := q.SendHalf(context.Background(), &Message{ID: "never", Body: []byte("x")})
	require.NoError(t, err)
	eventually(t, func() bool { return asked.Load() >= 3 }, "three checks")
	require.NoError(t, q.Close())
	before := asked.Load()
	require.Less(t, before, int32(6))

	q = txQueue(t, fs, opts)
	defer q.Close()
	eventually(t, func() bool { return q.Stats().TxPending == 0 }, "rolled back after the last check")
	assert.Equal(t, int32(6), asked.Load(), "checks before the restart count")
	assert.Equal(t, uint64(1), q.Stats().TxExpired)
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	assert.Empty(t, drain(t, c))
}

func TestNoCheckerPendingHalvesWait(t *testing.T) {
	q := txQueue(t, vfs.NewMem(), Options{TxTimeout: time.Millisecond, TxCheckInterval: time.Millisecond})
	defer q.Close()
	_, _, err := q.SendHalf(context.Background(), &Message{ID: "wait", Body: []byte("x")})
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond)
	st := q.Stats()
	assert.Equal(t, 1, st.TxPending, "never rolled back silently")
	assert.Zero(t, st.TxRolledBack)
	_, _, err = q.SendHalf(context.Background(), &Message{ID: "big", Body: make([]byte, 8<<10)})
	assert.ErrorIs(t, err, ErrMessageTooLarge)
	_, err = Open(t.TempDir(), &Options{TxCheckMax: -1})
	assert.ErrorIs(t, err, ErrInvalidOptions)
}

// Pending halves do not hold back retention, and survive it.
func TestPendingHalfSurvivesRetention(t *testing.T) {
	fs := vfs.NewMem()
	q := txQueue(t, fs, Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10})
	ctx := context.Background()
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	h, _, err := q.SendHalf(ctx, &Message{ID: "tx", Body: []byte("body of the half")})
	require.NoError(t, err)
	for i := 0; i < 40; i++ {
		_, err := q.Send(ctx, &Message{Body: make([]byte, 2000)})
		require.NoError(t, err)
	}
	require.Len(t, drain(t, c), 40)
	require.NoError(t, q.flushMarks(ctx))
	require.NoError(t, q.retain())
	require.NotZero(t, q.Stats().SegmentsDeleted)
	r := q.log.NewReader(0)
	oldest, err := r.Next()
	r.Close()
	require.NoError(t, err)
	require.Greater(t, oldest.Seq, h.Seq, "the half's segment is gone")
	require.NoError(t, q.Close())

	q = txQueue(t, fs, Options{SegmentSize: 16 << 10, MaxMessageSize: 4 << 10,
		TxChecker: func(context.Context, *Message) TxState { return TxCommit }, TxTimeout: time.Millisecond})
	defer q.Close()
	c, err = q.Consumer("g", nil)
	require.NoError(t, err)
	eventually(t, func() bool { return q.Stats().TxPending == 0 }, "committed by the checker")
	got := drain(t, c)
	require.Len(t, got, 1)
	assert.Equal(t, []byte("body of the half"), got[0].Message.Body)
}

// The kill -9 test of transactions. The child runs transactions whose local
// state is a real fsynced file (db), with the TxChecker reading it; the parent
// kills it at random moments, several times on one directory, then checks
// that a message is delivered iff its local transaction committed, once.
const txChildEnv = "ZEROLOSS_TX_CHILD_DIR"

func init() {
	if dir := os.Getenv(txChildEnv); dir != "" {
		txChild(dir, os.Getenv(txChildEnv+"_RUN"))
		os.Exit(0)
	}
}

// txDB is the local database: an append-only file of "commit ID" and
// "rollback ID" lines, each fsynced before it counts.
type txDB struct {
	mu sync.Mutex
	f  *os.File
}

func openTxDB(dir string) *txDB {
	f, err := os.OpenFile(filepath.Join(dir, "db"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		panic(err)
	}
	return &txDB{f: f}
}

func (db *txDB) write(op, id string) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if _, err := fmt.Fprintf(db.f, "%s %s\n", op, id); err != nil {
		panic(err)
	}
	if err := db.f.Sync(); err != nil {
		panic(err)
	}
}

// state reads the db: what the local transaction of id did. A transaction
// with no line never committed (its process is gone): rollback.
func readTxDB(path string) map[string]TxState {
	out := map[string]TxState{}
	data, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue // a torn last line never counted
		}
		if f[0] == "commit" {
			out[f[1]] = TxCommit
		} else {
			out[f[1]] = TxRollback
		}
	}
	return out
}

func txCheckerFor(dir string) func(context.Context, *Message) TxState {
	return func(_ context.Context, m *Message) TxState {
		if s, ok := readTxDB(filepath.Join(dir, "db"))[m.ID]; ok {
			return s
		}
		return TxRollback
	}
}

func txChildOptions(dir string) *Options {
	return &Options{SegmentSize: 256 << 10, MaxMessageSize: 4 << 10, TxChecker: txCheckerFor(dir),
		TxTimeout: 30 * time.Millisecond, TxCheckInterval: 30 * time.Millisecond}
}

func txChild(dir, run string) {
	q, err := Open(filepath.Join(dir, "q"), txChildOptions(dir))
	if err != nil {
		fmt.Println("open-error", err)
		os.Exit(3)
	}
	db := openTxDB(dir)
	ctx := context.Background()
	for i := 0; ; i++ {
		id := fmt.Sprintf("r%s-%d", run, i)
		h, res, err := q.SendHalf(ctx, &Message{ID: id, Body: bodyFor(id)})
		if err != nil || res.Status != SendOK {
			continue
		}
		fmt.Println("half", id)
		switch i % 3 {
		case 0: // commit now
			db.write("commit", id)
			if _, err := h.Commit(ctx); err == nil {
				fmt.Println("committed", id)
			}
		case 1: // roll back now
			db.write("rollback", id)
			if h.Rollback(ctx) == nil {
				fmt.Println("rolled-back", id)
			}
		default: // the local transaction commits later; the checker finds it
			db.write("commit", id)
			fmt.Println("local-commit", id)
		}
	}
}

func TestKillNineDuringTransactions(t *testing.T) {
	runs := 6
	if testing.Short() {
		runs = 2
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(21, 34))
	halves := 0
	for run := 0; run < runs; run++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), txChildEnv+"="+dir, txChildEnv+"_RUN="+strconv.Itoa(run))
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		killAfter := 20 + rng.IntN(200)
		scanner := bufio.NewScanner(stdout)
		lines := 0
		for scanner.Scan() {
			if strings.HasPrefix(scanner.Text(), "open-error") {
				t.Fatalf("run %d: %s", run, scanner.Text())
			}
			if strings.HasPrefix(scanner.Text(), "half ") {
				halves++
			}
			if lines++; lines == killAfter {
				require.NoError(t, cmd.Process.Kill())
			}
		}
		_ = cmd.Wait()
	}
	require.Greater(t, halves, runs*5)

	q, err := Open(filepath.Join(dir, "q"), txChildOptions(dir))
	require.NoError(t, err)
	defer q.Close()
	eventually(t, func() bool { return q.Stats().TxPending == 0 }, "every pending half is resolved by the checker")
	db := readTxDB(filepath.Join(dir, "db"))
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	delivered := map[string]int{}
	for _, d := range drain(t, c) {
		delivered[d.Message.ID]++
		require.Equal(t, bodyFor(d.Message.ID), d.Message.Body)
	}
	commits := 0
	for id, state := range db {
		if state == TxCommit {
			commits++
			assert.Equal(t, 1, delivered[id], "%s: its local transaction committed", id)
		}
	}
	for id, n := range delivered {
		assert.Equal(t, TxCommit, db[id], "%s delivered (%d times) though its local transaction did not commit", id, n)
	}
	assert.Greater(t, commits, 0)
	t.Logf("%d runs, %d halves, %d local commits, %d delivered", runs, halves, commits, len(delivered))
}

// A transaction ID rolled back can be sent again: the resend is a new
// message, delivered once committed.
func TestResendAfterRollbackIsANewMessage(t *testing.T) {
	q := txQueue(t, vfs.NewMem(), Options{})
	defer q.Close()
	ctx := context.Background()
	c, err := q.Consumer("g", nil)
	require.NoError(t, err)
	_, state, err := q.SendInTransaction(ctx, &Message{ID: "order-7", Body: []byte("first try")},
		func(context.Context) TxState { return TxRollback })
	require.NoError(t, err)
	require.Equal(t, TxRollback, state)
	res, state, err := q.SendInTransaction(ctx, &Message{ID: "order-7", Body: []byte("second try")},
		func(context.Context) TxState { return TxCommit })
	require.NoError(t, err)
	require.Equal(t, TxCommit, state)
	require.False(t, res.Duplicate)
	got := drain(t, c)
	require.Len(t, got, 1)
	assert.Equal(t, []byte("second try"), got[0].Message.Body)
}

// A committed half takes part in dedup from its commit: a Send of its ID is
// answered as a duplicate of the commit, the same before and after a restart.
func TestCommittedHalfIsDeduplicatedBeforeAndAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sentFirst bool // a plain Send of the ID before the half
	}{
		{name: "commit"},
		{name: "a plain send, then the commit of a half with its ID", sentFirst: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			q := txQueue(t, fs, Options{})
			ctx := context.Background()
			if tc.sentFirst {
				_, err := q.Send(ctx, &Message{ID: "order-9", Body: []byte("plain")})
				require.NoError(t, err)
			}
			h, _, err := q.SendHalf(ctx, &Message{ID: "order-9", Body: []byte("tx")})
			require.NoError(t, err)
			committed, err := h.Commit(ctx)
			require.NoError(t, err)

			probe := func(when string) {
				t.Helper()
				r, err := q.Send(ctx, &Message{ID: "order-9", Body: []byte("resend")})
				require.NoError(t, err)
				assert.True(t, r.Duplicate, when)
				assert.Equal(t, committed.Seq, r.Seq, when)
			}
			probe("while the queue runs")
			require.NoError(t, q.Close())
			q = txQueue(t, fs, Options{})
			defer q.Close()
			probe("after a restart")
		})
	}
}

// A Commit of a half while the checker loop checks it: the check works on a
// copy of the half taken under the table's lock (go test -race).
func TestCommitDuringACheckDoesNotRace(t *testing.T) {
	checking := make(chan struct{})
	release := make(chan struct{})
	returned := make(chan struct{})
	var once sync.Once
	var seen atomic.Value
	q := txQueue(t, vfs.NewMem(), Options{
		TxTimeout: time.Millisecond,
		TxChecker: func(_ context.Context, m *Message) TxState {
			seen.Store(string(m.Body))
			<-release
			defer close(returned)
			return TxRollback
		},
		beforeCheck: func(uint64) { once.Do(func() { close(checking) }) },
	})
	defer q.Close()
	h, _, err := q.SendHalf(context.Background(), &Message{ID: "raced", Body: []byte("the body")})
	require.NoError(t, err)
	select {
	case <-checking:
	case <-time.After(10 * time.Second):
		t.Fatal("the half was not checked")
	}
	// The check has the half and has not read it yet: commit it now. No
	// synchronization between this goroutine and the check from here on
	// until release, so the race detector sees any unguarded access.
	res, err := h.Commit(context.Background())
	require.NoError(t, err)
	close(release)
	assert.Equal(t, SendOK, res.Status)
	<-returned
	assert.Equal(t, "the body", seen.Load(), "the checker was asked about the whole message")
	again, err := h.Commit(context.Background())
	require.NoError(t, err, "the checker's late answer does not undo the commit")
	assert.Equal(t, res, again)
}

// A TxChecker that never returns, even once its ctx ends: Close still
// returns (after waiting txCloseWait for it), and meanwhile the other halves
// are checked.
func TestBlockingCheckerStallsNeitherCloseNorOtherChecks(t *testing.T) {
	stuck := make(chan struct{})
	defer close(stuck) // let the abandoned check end with the test
	called := make(chan struct{})
	var cancelled atomic.Bool
	q := txQueue(t, vfs.NewMem(), Options{
		TxTimeout: time.Millisecond,
		TxChecker: func(ctx context.Context, m *Message) TxState {
			if m.ID != "blocks" {
				return TxCommit
			}
			close(called)
			<-ctx.Done() // Close cancels it...
			cancelled.Store(true)
			<-stuck // ...and this checker goes on blocking anyway
			return TxUnknown
		},
		txCloseWait: 50 * time.Millisecond,
	})
	ctx := context.Background()
	_, _, err := q.SendHalf(ctx, &Message{ID: "blocks", Body: []byte("b")})
	require.NoError(t, err)
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("the half was not checked")
	}
	_, _, err = q.SendHalf(ctx, &Message{ID: "fine", Body: []byte("f")})
	require.NoError(t, err)
	eventually(t, func() bool { return q.Stats().TxCommitted == 1 }, "the second half was checked and committed")

	closed := make(chan error, 1)
	go func() { closed <- q.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs on a TxChecker that does not return")
	}
	eventually(t, cancelled.Load, "Close cancelled the checker's ctx")
}
