//go:build linux

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/wal"
)

// BenchmarkOpenBacklog times Open over a queue holding a backlog of
// unconsumed 1 KiB messages with caller-set IDs (so the dedup table has IDs
// to rebuild) and no consumer group, after a clean Close and after a kill -9.
// The backlog is 1 GiB; ZEROLOSS_OPEN_GIB names others, comma-separated
// ("1,4,16" draws the curve). Each size gets one directory, under
// ZEROLOSS_OPEN_DIR (default os.TempDir()), built once before the timers
// (FlushAsync, clean Close), used by every side below in this order, and
// removed once its sides are done. Every Open has the dedup window
// ZEROLOSS_OPEN_DEDUP_WINDOW, 24h by default, so that every ID sent in the
// run is one Open must rebuild (see openBacklogOptions). The sides:
//
//	clean-warm  Open after a clean Close, the log in the page cache
//	clean-cold  the same after posix_fadvise(DONTNEED) on every file of the
//	            directory: it drops their clean pages from the page cache,
//	            as `echo 1 > /proc/sys/vm/drop_caches` would, without root
//	wal-warm    only wal.Open (the log's own recovery, with TrustSeals as the
//	            queue's Open), page cache warm
//	wal-cold    the same, after dropping the files' pages
//	kill-warm   Open after a kill -9: a child process (this test binary,
//	            TestOpenKillChild) opens the directory with FlushSync, sends
//	            1 KiB messages with caller-set IDs from killSenders (32) goroutines
//	            and is killed with SIGKILL once ZEROLOSS_OPEN_KILL_MIB (default
//	            64) MiB of them were answered SendOK, still sending
//	kill-cold   the same, the files' pages dropped between the kill and Open
//
// Every iteration opens and then closes the queue cleanly (Close is not
// timed), so each kill round starts from a clean Close and appends to what
// the rounds before left. Each side reports open-ms, the average time of an
// Open; the kill sides also since-MiB, the average growth of the log over a
// round (read with wal.Open before and after it, untimed): what the child
// wrote between its Open, right after the previous clean Close, and the
// kill, which is what an Open that starts from the state the last Close
// saved must read at worst.
// Use a small fixed -benchtime: each kill round costs a child's Open and
// ZEROLOSS_OPEN_KILL_MIB of FlushSync sends besides the timed Open.
//
//	ZEROLOSS_OPEN_GIB=1,4,16 go test -run '^$' -bench BenchmarkOpenBacklog -benchtime 3x -timeout 2h ./bench
func BenchmarkOpenBacklog(b *testing.B) {
	sizes := []int{1}
	if s := os.Getenv("ZEROLOSS_OPEN_GIB"); s != "" {
		sizes = sizes[:0]
		for _, field := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(field))
			require.NoError(b, err, "ZEROLOSS_OPEN_GIB")
			sizes = append(sizes, n)
		}
	}
	killMiB := int64(64)
	if s := os.Getenv("ZEROLOSS_OPEN_KILL_MIB"); s != "" {
		var err error
		killMiB, err = strconv.ParseInt(s, 10, 64)
		require.NoError(b, err, "ZEROLOSS_OPEN_KILL_MIB")
	}
	for _, gib := range sizes {
		b.Run(fmt.Sprintf("GiB=%d", gib), func(b *testing.B) {
			dir, err := os.MkdirTemp(os.Getenv("ZEROLOSS_OPEN_DIR"), "zeroloss-open-") // "": os.TempDir()
			require.NoError(b, err)
			defer os.RemoveAll(dir)
			start := time.Now()
			fillBacklog(b, dir, int64(gib)<<30)
			b.Logf("built %d GiB in %s", gib, time.Since(start).Round(time.Second))
			openBacklogSides(b, dir, killMiB<<20)
		})
	}
}

// openBacklogSides runs BenchmarkOpenBacklog's sides on dir, a closed queue;
// the kill sides' children stop after killBytes of SendOK.
func openBacklogSides(b *testing.B, dir string, killBytes int64) {
	// timed runs open, timing only that, and closes.
	timed := func(b *testing.B, open func() (io.Closer, error)) time.Duration {
		b.StartTimer()
		start := time.Now()
		c, err := open()
		took := time.Since(start)
		b.StopTimer()
		require.NoError(b, err)
		require.NoError(b, c.Close())
		return took
	}
	opts := openBacklogOptions(b, zeroloss.FlushSync)
	openQueue := func() (io.Closer, error) { return zeroloss.Open(dir, opts) }
	openLog := func() (io.Closer, error) {
		l, _, err := wal.Open(dir, wal.Options{TrustSeals: true}) // as the queue opens it
		return l, err
	}
	run := 0            // numbers the kill rounds on dir, so that no child repeats an ID
	before := int64(-1) // the log's bytes before the next kill round; -1: not read yet
	for _, side := range []struct {
		name       string
		cold, kill bool
		open       func() (io.Closer, error)
	}{
		{name: "clean-warm", open: openQueue},
		{name: "clean-cold", cold: true, open: openQueue},
		{name: "wal-warm", open: openLog},
		{name: "wal-cold", cold: true, open: openLog},
		{name: "kill-warm", kill: true},
		{name: "kill-cold", cold: true, kill: true},
	} {
		b.Run(side.name, func(b *testing.B) {
			b.StopTimer()
			var total time.Duration
			var since int64
			for range b.N {
				if !side.kill {
					if side.cold {
						dropPageCache(b, dir)
					}
					total += timed(b, side.open)
					continue
				}
				if before < 0 {
					before = logBytes(b, dir)
				}
				run++
				killSender(b, dir, run, killBytes)
				if side.cold {
					dropPageCache(b, dir)
				}
				total += timed(b, openQueue)
				after := logBytes(b, dir)
				since += after - before
				before = after
			}
			b.ReportMetric(total.Seconds()*1000/float64(b.N), "open-ms")
			if side.kill {
				b.ReportMetric(float64(since)/float64(b.N)/(1<<20), "since-MiB")
			}
		})
	}
}

const (
	openKillDirEnv = "ZEROLOSS_OPEN_KILL_CHILD_DIR" // TestOpenKillChild's directory
	openKillRunEnv = "ZEROLOSS_OPEN_KILL_CHILD_RUN" // its round, in its IDs
	killSenders    = 32                             // the child's sending goroutines
	killBodySize   = 1 << 10
)

// killID is the ID of the i-th message of sender g in kill round run: all
// have the same length, so all their frames have killFrameBytes.
func killID(run, g, i int) string { return fmt.Sprintf("kill-%06d-%03d-%012d", run, g, i) }

// killFrameBytes is the size in the log of one of the kill child's messages.
var killFrameBytes = int64(record.HeaderSize + record.MessageSize(&record.Message{ID: killID(0, 0, 0), Body: make([]byte, killBodySize)}))

// logBytes returns the bytes of the records in the log in dir (closed), as
// the log counts them after opening it (without the segments' headers and
// free space). Seqs would not do: the log reopens after a kill with its next
// seq past the seqs it had leased.
func logBytes(tb testing.TB, dir string) int64 {
	l, _, err := wal.Open(dir, wal.Options{TrustSeals: true})
	require.NoError(tb, err)
	n := l.DataBytes()
	require.NoError(tb, l.Close())
	return n
}

// killSender runs TestOpenKillChild on dir (closed) as kill round run, kills
// it with SIGKILL as soon as it reports killBytes answered SendOK, and
// returns the bytes it had reported SendOK for at the kill. It fails if the child ends any other
// way; a child still running after 30 minutes (its Open included) is killed.
func killSender(tb testing.TB, dir string, run int, killBytes int64) (acked int64) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenKillChild$")
	cmd.Env = append(os.Environ(), openKillDirEnv+"="+dir, openKillRunEnv+"="+strconv.Itoa(run))
	stdout, err := cmd.StdoutPipe()
	require.NoError(tb, err)
	cmd.Stderr = os.Stderr
	require.NoError(tb, cmd.Start())
	deadline := time.AfterFunc(30*time.Minute, func() { cmd.Process.Kill() })
	waited := false
	defer func() {
		deadline.Stop()
		if !waited {
			cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	ready, killed := false, false
	scanner := bufio.NewScanner(stdout)
	for scanner.Scan() {
		f := strings.Fields(scanner.Text())
		switch {
		case len(f) == 1 && f[0] == "ready":
			ready = true
		case len(f) == 2 && f[0] == "acked" && !killed:
			acked, err = strconv.ParseInt(f[1], 10, 64)
			require.NoError(tb, err, "child line %q", scanner.Text())
			if acked >= killBytes {
				require.NoError(tb, cmd.Process.Kill())
				killed = true
			}
		}
	}
	err = cmd.Wait()
	waited = true
	require.True(tb, ready && killed, "kill round %d: the child ended before it reported %d bytes SendOK (ready %v): %v", run, killBytes, ready, err)
	var exit *exec.ExitError
	require.ErrorAs(tb, err, &exit)
	status, ok := exit.Sys().(syscall.WaitStatus)
	require.True(tb, ok && status.Signaled() && status.Signal() == syscall.SIGKILL, "kill round %d: the child ended with %v, not SIGKILL", run, err)
	return acked
}

// TestOpenKillChild is the child of BenchmarkOpenBacklog's kill sides (and of
// TestOpenKillSender): it opens the queue with FlushSync, prints "ready",
// then sends 1 KiB messages with caller-set IDs from
// killSenders goroutines and prints "acked BYTES" (log bytes of the messages
// answered SendOK so far) at every MiB, until it is killed.
func TestOpenKillChild(t *testing.T) {
	dir := os.Getenv(openKillDirEnv)
	if dir == "" {
		t.Skip("run by BenchmarkOpenBacklog")
	}
	run, err := strconv.Atoi(os.Getenv(openKillRunEnv))
	require.NoError(t, err, openKillRunEnv)
	q, err := zeroloss.Open(dir, openBacklogOptions(t, zeroloss.FlushSync))
	require.NoError(t, err)
	fmt.Println("ready")
	body := filledBody(killBodySize)
	var acked atomic.Int64
	var wg sync.WaitGroup
	for g := range killSenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				res, err := q.Send(context.Background(), &zeroloss.Message{ID: killID(run, g, i), Body: body})
				if err != nil {
					fmt.Fprintln(os.Stderr, "kill child: send:", err)
					os.Exit(3)
				}
				if res.Status != zeroloss.SendOK {
					continue
				}
				if n := acked.Add(killFrameBytes); n>>20 != (n-killFrameBytes)>>20 {
					fmt.Printf("acked %d\n", n) // one write(2): whole on the pipe
				}
			}
		}()
	}
	wg.Wait() // never: the parent kills this process
}

// TestOpenKillSender checks the kill sides' machinery on a small backlog:
// the child is killed by SIGKILL past the bytes asked for, and the queue
// reopens holding at least what it reported SendOK, which logBytes counts.
func TestOpenKillSender(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	fillBacklog(t, dir, 4<<20)
	const killBytes = 2 << 20
	before := logBytes(t, dir)
	for run := 1; run <= 2; run++ {
		acked := killSender(t, dir, run, killBytes)
		require.GreaterOrEqual(t, acked, int64(killBytes))
		dropPageCache(t, dir)
		q, err := zeroloss.Open(dir, openBacklogOptions(t, zeroloss.FlushSync))
		require.NoError(t, err)
		require.NoError(t, q.Close())
		after := logBytes(t, dir)
		t.Logf("run %d: acked %d, the log grew by %d", run, acked, after-before)
		require.GreaterOrEqual(t, after-before, acked, "run %d: the log grew from %d to %d bytes", run, before, after)
		before = after
	}
}

// openBacklogOptions are the options of every Open of BenchmarkOpenBacklog's
// queues (fill, child, timed): flush, and the dedup window
// ZEROLOSS_OPEN_DEDUP_WINDOW (a duration, default 24h).
//
// The window decides what Open has to rebuild: recovery skips an ID older
// than the window at the cost of reading it, and gathers one within it (the
// newest DedupEntries of them are kept). With the default window of two
// minutes the same backlog costs more to open right after it was written
// than a few minutes later, so the sides run in order would not be
// comparable (at 4 GiB, 8.7 s after the clean Close, 3.7 s after the kill
// that came minutes later). 24h keeps every ID of the run in the window: the
// worst case, a backlog all sent within the window, on every side.
func openBacklogOptions(tb testing.TB, flush zeroloss.FlushMode) *zeroloss.Options {
	window := 24 * time.Hour
	if s := os.Getenv("ZEROLOSS_OPEN_DEDUP_WINDOW"); s != "" {
		var err error
		window, err = time.ParseDuration(s)
		require.NoError(tb, err, "ZEROLOSS_OPEN_DEDUP_WINDOW")
	}
	return &zeroloss.Options{Flush: flush, DedupWindow: window}
}

// fillBacklog writes size bytes of 1 KiB messages with caller-set IDs into a
// new queue in dir, FlushAsync in batches of 1000, and closes it cleanly.
func fillBacklog(b testing.TB, dir string, size int64) {
	q, err := zeroloss.Open(dir, openBacklogOptions(b, zeroloss.FlushAsync))
	require.NoError(b, err)
	body := filledBody(1024)
	batch := make([]*zeroloss.Message, 1000)
	for i := range batch {
		batch[i] = &zeroloss.Message{Body: body}
	}
	ctx := context.Background()
	n := 0
	for written := int64(0); written < size; written += int64(len(batch) * len(body)) {
		for _, m := range batch {
			m.ID = fmt.Sprintf("backlog-%d", n)
			n++
		}
		_, err := q.SendBatch(ctx, batch)
		require.NoError(b, err)
	}
	require.NoError(b, q.Close())
}

// dropPageCache evicts the clean pages of every file under dir, in
// subdirectories too (wherever a queue keeps its state), from the page cache
// (posix_fadvise DONTNEED after an fdatasync, which needs no root).
func dropPageCache(tb testing.TB, dir string) {
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("fdatasync %s: %w", path, err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			return fmt.Errorf("fadvise %s: %w", path, err)
		}
		return nil
	})
	require.NoError(tb, err)
}

// TestDropPageCache checks that dropPageCache leaves none of a file's pages
// in the page cache, for a file in a subdirectory too, which is what the
// cold sides rely on.
func TestDropPageCache(t *testing.T) {
	dir := t.TempDir()
	var fsStat unix.Statfs_t
	require.NoError(t, unix.Statfs(dir, &fsStat))
	if fsStat.Type == unix.TMPFS_MAGIC {
		t.Skip("tmpfs keeps its pages: nothing to drop")
	}
	path := filepath.Join(dir, "sub", "file")
	require.NoError(t, os.Mkdir(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, filledBody(4<<20), 0o644))
	resident := func() int {
		f, err := os.Open(path)
		require.NoError(t, err)
		defer f.Close()
		data, err := unix.Mmap(int(f.Fd()), 0, 4<<20, unix.PROT_READ, unix.MAP_SHARED)
		require.NoError(t, err)
		defer unix.Munmap(data)
		pages := make([]byte, (len(data)+os.Getpagesize()-1)/os.Getpagesize())
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)), uintptr(unsafe.Pointer(&pages[0])))
		require.Zero(t, errno, "mincore")
		n := 0
		for _, p := range pages {
			n += int(p & 1)
		}
		return n
	}
	_, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Positive(t, resident(), "the file was just read")
	dropPageCache(t, dir)
	require.Zero(t, resident(), "pages left in the page cache")
}
