package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// The queue-outage workload: the produce workload on a queue whose files go
// through a fault injector (vfs.FaultFS, set through internal/hook for the
// queue's directory only: the strict producer's spool stays on a healthy
// disk). Once the child has printed --outage-at acknowledgements it starts
// the fault, prints "outage begin KIND", keeps it until a producer has met
// it and outageHold more, ends it (reopening the queue if the fault
// poisoned it, and attaching the reopened queue to the strict producer) and
// prints "outage end". The parent kills the child only after "outage end",
// so every run sees the outage and the recovery.
//
//	fsync      every fdatasync of the queue fails: the queue is poisoned,
//	           Sends in flight return FlushDiskTimeout, later ones
//	           ErrPoisoned, until it is closed and opened again
//	disk-full  the disk refuses to grow files (ENOSPC): the next segment
//	           cannot be preallocated, Send returns ErrDiskFull until space
//	           is back; the queue is not poisoned
const (
	outageFsync    = "fsync"
	outageDiskFull = "disk-full"
	// outageHold is how long an outage lasts after a producer first met it.
	outageHold = 200 * time.Millisecond
	// outageMaxWait bounds the wait for a producer to meet the outage (a
	// full disk is met only when the active segment fills up).
	outageMaxWait = 5 * time.Second
	// refusedPause is how long a producer whose send was refused waits
	// before the next one, so that a poisoned queue is not hammered.
	refusedPause = 2 * time.Millisecond
)

// errOutage is the error of the injected failed fdatasync.
var errOutage = errors.New("lab: injected fdatasync failure (queue outage)")

// outageKind returns the outage of run n: fsync for odd runs, disk-full for
// even ones, so that any two runs of a row see both.
func outageKind(n int) string {
	if n%2 == 1 {
		return outageFsync
	}
	return outageDiskFull
}

// outagePlan is the outage the parent asks for, on the child's command line.
type outagePlan struct {
	kind string        // outageFsync, outageDiskFull, or "" for none
	at   int           // acknowledgements before it begins
	hold time.Duration // how long it lasts after a producer met it
}

// outage runs an outagePlan in the child.
type outage struct {
	outagePlan
	fault    *vfs.FaultFS
	dir      string // the queue's
	opts     *zeroloss.Options
	queue    *atomic.Pointer[zeroloss.Queue]
	producer *zeroloss.Producer // the strict producer, or nil
	met      atomic.Int64       // sends refused or spooled since the start
}

// run waits for the outage's moment, injects it, ends it and recovers the
// queue; it returns an error only if the queue does not reopen.
func (o *outage) run(acks *ackWriter) error {
	<-acks.reached(o.at)
	metBefore := o.met.Load()
	switch o.kind {
	case outageFsync:
		o.fault.FailFrom(vfs.OpSync, 1, errOutage)
	case outageDiskFull:
		o.fault.SetDiskFull(true)
	}
	if err := acks.line([]byte("outage begin " + o.kind + "\n")); err != nil {
		return err
	}
	deadline := time.Now().Add(outageMaxWait)
	for o.met.Load() == metBefore && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(o.hold)
	o.fault.Clear()
	if q := o.queue.Load(); q.Err() != nil {
		// Poisoned: it never retries a failed fdatasync. Close it (its
		// error is the poisoning) and open the directory again, which
		// recovers what was durable.
		q.Close()
		nq, err := zeroloss.Open(o.dir, o.opts)
		if err != nil {
			return fmt.Errorf("reopening the queue after the outage: %w", err)
		}
		o.queue.Store(nq)
		if o.producer != nil {
			o.producer.Attach(nq)
		}
	}
	return acks.line([]byte("outage end\n"))
}

// sender is one producer goroutine of the produce workload with a strict
// producer or an outage: it sends through the strict producer if there is
// one, else with Queue.Send on the current queue.
type sender struct {
	queue  *atomic.Pointer[zeroloss.Queue]
	strict *zeroloss.Producer
	outage *outage // nil: no outage, and an error ends the workload
}

// loop sends messages messageID(run, producer, 0), (…, 1), … and prints, for
// each, an ack (SendOK), "sp" (spooled by the strict producer) or "rf"
// (refused: an error, or another status). During an outage an error is
// expected: it is counted as refused, and the loop goes on after a pause.
// It returns only on an unexpected error.
func (s sender) loop(run, producer int, acks *ackWriter) error {
	ctx := context.Background()
	for i := 0; ; i++ {
		id := messageID(run, producer, i)
		m := messageFor(id)
		var (
			err     error
			outcome zeroloss.Outcome
			res     zeroloss.SendResult
		)
		if s.strict != nil {
			var pr zeroloss.ProduceResult
			pr, err = s.strict.Send(ctx, m)
			outcome, res = pr.Outcome, pr.SendResult
		} else {
			res, err = s.queue.Load().Send(ctx, m)
			outcome = zeroloss.Sent
		}
		switch {
		case err != nil && s.outage == nil:
			return fmt.Errorf("send %s: %w", id, err)
		case err != nil:
			err = acks.refused(id)
		case outcome == zeroloss.Spooled:
			err = acks.spooled(id)
		case res.Status == zeroloss.SendOK:
			err = acks.ack(id, res.Seq)
		default:
			err = acks.refused(id)
		}
		if err != nil {
			return err
		}
		if outcome == zeroloss.Spooled || res.Status != zeroloss.SendOK {
			if s.outage != nil {
				s.outage.met.Add(1)
			}
			if outcome != zeroloss.Spooled {
				time.Sleep(refusedPause)
			}
		}
	}
}

// routeFS is the file system of an outage child: paths under dir (the
// queue's directory) go through fault, the others straight to the inner FS.
type routeFS struct {
	vfs.FS
	dir   string
	fault *vfs.FaultFS
}

func (r *routeFS) pick(path string) vfs.FS {
	rel, err := filepath.Rel(r.dir, path)
	if err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return r.fault
	}
	return r.FS
}

func (r *routeFS) Create(name string) (vfs.File, error) { return r.pick(name).Create(name) }
func (r *routeFS) Open(name string) (vfs.File, error)   { return r.pick(name).Open(name) }
func (r *routeFS) OpenRW(name string) (vfs.File, error) { return r.pick(name).OpenRW(name) }
func (r *routeFS) Remove(name string) error             { return r.pick(name).Remove(name) }
func (r *routeFS) Rename(oldname, newname string) error {
	return r.pick(oldname).Rename(oldname, newname)
}
func (r *routeFS) MkdirAll(dir string, perm os.FileMode) error {
	return r.pick(dir).MkdirAll(dir, perm)
}
func (r *routeFS) List(dir string) ([]string, error)   { return r.pick(dir).List(dir) }
func (r *routeFS) SyncDir(dir string) error            { return r.pick(dir).SyncDir(dir) }
func (r *routeFS) Lock(name string) (io.Closer, error) { return r.pick(name).Lock(name) }
