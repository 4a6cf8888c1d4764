package zeroloss

import (
	"fmt"
	"sync/atomic"
	"time"
)

// The write path, and the two goroutines that own it.
//
//	Send ──request──▶ writer goroutine ──batch──▶ syncer goroutine
//	  ▲                 │ write(2) of every queued      │ one fdatasync for every
//	  │                 │ request in one pwrite         │ batch waiting, then
//	  └──── done ───────┴───────────────────────────────┘ done (FlushSync)
//
// The writer owns appends to the log; the syncer owns fdatasync. While the
// syncer waits on the disk, the writer keeps taking Sends and writing them, so
// the next fdatasync covers every Send that arrived during the previous one:
// group commit. Under FlushAsync the writer answers right after the write and
// the syncer syncs every FlushInterval.

// Request states: the writer takes a queued request; a Send whose context
// ends first cancels it, and the writer skips it.
const (
	stateQueued int32 = iota
	stateTaken
	stateCancelled
)

// sendRequest is one Send or SendBatch on its way through the goroutines.
type sendRequest struct {
	frames [][]byte
	ids    []string
	size   int
	state  atomic.Int32

	// Set by the writer before its signal on done.
	first    uint64
	appended int
	err      error
	// Set by the syncer before its signal on done.
	syncErr error

	// done receives one signal after the write and, under FlushSync, a
	// second after the fdatasync.
	done chan struct{}
}

// Batch limits: one write gathers at most this many requests or bytes.
const (
	maxBatchRequests = 1024
	maxBatchBytes    = 4 << 20
)

func (q *Queue) writeLoop() {
	defer close(q.writerDone)
	var (
		batch  []*sendRequest
		frames [][]byte
	)
	for req := range q.requests {
		batch = append(batch[:0], req)
		size := req.size
	gather:
		for len(batch) < maxBatchRequests && size < maxBatchBytes {
			select {
			case r, ok := <-q.requests:
				if !ok {
					break gather
				}
				batch = append(batch, r)
				size += r.size
			default:
				break gather
			}
		}
		frames = q.writeBatch(batch, frames[:0])
		clear(batch)
	}
}

// writeBatch appends the frames of every request still wanted and answers
// the writes; under FlushSync it hands the written requests to the syncer.
func (q *Queue) writeBatch(batch []*sendRequest, frames [][]byte) [][]byte {
	taken := batch[:0]
	var size int64
	for _, r := range batch {
		if r.state.CompareAndSwap(stateQueued, stateTaken) {
			taken = append(taken, r)
		}
	}
	if q.opts.MaxBytes > 0 {
		used := q.log.DataBytes()
		kept := taken[:0]
		for _, r := range taken {
			if used+size+int64(r.size) > q.opts.MaxBytes {
				r.err = fmt.Errorf("%w (%d of %d bytes used)", ErrQueueFull, used+size, q.opts.MaxBytes)
				r.done <- struct{}{}
				continue
			}
			size += int64(r.size)
			kept = append(kept, r)
		}
		taken = kept
	}
	for _, r := range taken {
		frames = append(frames, r.frames...)
	}
	if len(frames) == 0 {
		return frames
	}
	first, n, err := q.log.Append(frames)
	q.stats.batches.Add(1)
	var synced []*sendRequest
	seq, offset := first, 0
	for _, r := range taken {
		r.first = seq
		r.appended = min(len(r.frames), max(n-offset, 0))
		if r.appended < len(r.frames) {
			r.err = err
		}
		seq += uint64(r.appended)
		offset += len(r.frames)
		q.stats.messages.Add(uint64(r.appended))
		r.done <- struct{}{}
		if r.appended > 0 && q.opts.Flush == FlushSync {
			synced = append(synced, r)
		}
	}
	if len(synced) > 0 {
		q.syncJobs <- synced
	}
	clear(frames)
	return frames
}

func (q *Queue) syncLoop() {
	defer close(q.syncerDone)
	var tick <-chan time.Time
	if q.opts.Flush == FlushAsync {
		ticker := time.NewTicker(q.opts.FlushInterval)
		defer ticker.Stop()
		tick = ticker.C
	}
	var waiting []*sendRequest
	for {
		select {
		case job := <-q.syncJobs:
			waiting = append(waiting[:0], job...)
		gather:
			for {
				select {
				case more := <-q.syncJobs:
					waiting = append(waiting, more...)
				default:
					break gather
				}
			}
			q.syncAndAnswer(waiting)
			clear(waiting)
		case <-tick:
			q.syncAndAnswer(nil)
		case <-q.stopSyncer:
			// The writer has exited: no job can arrive after those queued.
			waiting = waiting[:0]
			for len(q.syncJobs) > 0 {
				waiting = append(waiting, <-q.syncJobs...)
			}
			q.syncAndAnswer(waiting)
			return
		}
	}
}

// syncAndAnswer makes everything written durable and answers the waiters.
func (q *Queue) syncAndAnswer(waiting []*sendRequest) {
	synced, err := q.log.Sync()
	if err == nil {
		q.committed.Store(synced)
	} else if len(waiting) > 0 {
		q.logger.Error("zeroloss: fdatasync failed; the queue is poisoned", "error", err)
	}
	if len(waiting) > 0 {
		q.stats.recordGroup(len(waiting))
	}
	for _, r := range waiting {
		r.syncErr = err
		r.done <- struct{}{}
	}
}

// committedSeq is the last durable seq: the most a reader may see.
func (q *Queue) committedSeq() uint64 { return q.committed.Load() }
