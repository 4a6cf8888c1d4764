// Package bench holds zeroloss's throughput benchmarks and the raw disk
// baselines they are read against. It has no code of its own: everything is in
// the _test.go files, so importing it costs nothing and `go test ./...` only
// runs the fast checks (TestBenchmarksVerify).
//
// # Running
//
//	go test -run '^$' -bench . -benchtime 3s -count 1 ./bench/
//	go test -run '^$' -bench 'Send/flush=sync/size=1KiB' -count 6 ./bench/ > new.txt
//	benchstat old.txt new.txt
//
// Benchmarks are named key=value so benchstat can group and compare them:
//
//	BenchmarkSend/flush=sync|async/size=128B|1KiB|16KiB/producers=1|16|64
//	BenchmarkSend/flush=sync/size=1KiB/producers=256
//	BenchmarkRaw/op=write/size=1KiB                         (Linux only)
//	BenchmarkRaw/op=write+fdatasync/size=1KiB/producers=1|16 (Linux only)
//	BenchmarkRaw/op=batch+fdatasync/size=1KiB/batch=16|64/blocks=written|fresh (Linux only)
//	BenchmarkInterleaved/pair=sync-p1|sync-p64|async-p16|consume-c16        (Linux only)
//	BenchmarkHandoff/pair=bare-vs-raw|queue-vs-bare/blocks=written|fresh/size=1KiB/producers=1|16|64 (Linux only)
//	BenchmarkHandoff/pair=bare-vs-raw/blocks=written|fresh/size=48B/producers=16             (Linux only)
//	BenchmarkWarmup/producers=1|16|64|256                                   (Linux only)
//	BenchmarkSendCPU/flush=async/producers=1|16  (process CPU per message)   (Linux only)
//	BenchmarkRecycle/producers=1|64                                         (Linux only)
//	BenchmarkInterleavedReplicate/pair=sync-p64|async-p64/follower=tmpfs|disk (Linux only)
//	BenchmarkReplicate/repl=none/follower=none/producers=1|64
//	BenchmarkReplicate/repl=async|sync/follower=tmpfs|disk/producers=1|64
//	BenchmarkGuarantees/op=send/ids=generated|set, op=strict, op=interleaved, op=tx
//	BenchmarkConsume/flush=sync|async/size=1KiB/consumers=1|16/ack=single|batch
//	BenchmarkConsumeInFlight/inflight=16|1000|10000
//	BenchmarkAckAsync/ack=sync|async
//	BenchmarkConsumeOrdered/ordered=false|true/keys=1000/consumers=16, ordered=true/keys=1/consumers=16, ordered=false/keys=1/consumers=1
//	BenchmarkOrderedDistinctKeys (-benchtime=1000000x: a million keys)
//	BenchmarkTopics/pair=topics8-vs-topic1|queues8-vs-shared|alone-vs-rare  (Linux only)
//	BenchmarkTopicsOpen (1,000 topics and groups: Open time and heap)     (Linux only)
//	BenchmarkOpenBacklog/GiB=1|4|16/clean-warm|clean-cold|wal-warm|wal-cold|kill-warm|kill-cold (Linux only)
//
// The benchmarks write to b.TempDir(), so TMPDIR chooses the disk measured;
// point it at the file system the queue will really use (tmpfs makes every
// fdatasync free and the figures meaningless).
//
// # Reading the figures
//
// One op is one message in every benchmark, including the batched raw ones, so
// ns/op and msgs/s compare directly. MB/s counts message bodies only, not frame
// headers or IDs. Besides the standard columns each benchmark reports:
//
//	msgs/s      messages per second (b.N / elapsed)
//	msgs/fsync  FlushSync only: Sends answered per group commit (Stats.GroupAvg)
//	fsyncs/op   FlushSync only: fdatasyncs per message, lease and segment syncs included
//	us/fsync    FlushSync only: average fdatasync latency (Stats.FsyncAvg)
//	msgs/write  messages per write batch (one pwrite each)
//	lag-seqs    BenchmarkReplicate: seqs the follower had not acknowledged
//	            when the last Send returned (ReplicateAsync's loss window)
//	heap-before-MiB, heap-after-MiB  BenchmarkOrderedDistinctKeys: heap in
//	            use before the messages were consumed and after, each after a GC
//
// Read the Send figures as ratios to the raw baselines of the same run, not as
// absolute numbers: the disk dominates them.
//
//   - flush=sync/producers=1 against op=write+fdatasync/producers=1: the cost of
//     the queue's machinery around one fdatasync per message.
//   - flush=sync/producers=N against op=batch+fdatasync/batch=N: how close group
//     commit comes to the physical limit of N producers sharing each fdatasync.
//   - flush=async against op=write: Send gathers concurrent messages into one
//     pwrite, so with several producers it should beat one write(2) per message.
//
// BenchmarkInterleaved is the one to read the targets from: each queue case
// and its raw baseline take turns in short rounds on the same disk, so the
// drift that moves absolute figures 2x within minutes here cancels out of
// the ratio it reports:
//
//	go test -run '^$' -bench Interleaved -benchtime 20000x -count 3 ./bench/
//
// (The pattern also runs BenchmarkInterleavedReplicate, whose rounds
// alternate a leader with a follower and a queue without one; its ratio is
// the replicated leader's throughput over the plain queue's.)
//
// Each Send sub-benchmark opens a new queue, and its first Send creates the
// first segment (fallocate, fsync, directory fsync) inside the timed part; use
// a -benchtime of seconds, not a few hundred iterations, so that fixed cost
// stays negligible. The disk's fdatasync latency can drift by 2x within
// minutes on shared or virtual disks: compare ratios within one run, and use
// -count with benchstat before trusting a difference.
//
// Every Send benchmark checks, outside the timed part, that the queue reopens
// cleanly and holds exactly b.N messages of the right size. The replication
// benchmarks check the follower's directory the same way, after waiting
// for it to acknowledge everything and stopping it.
//
// # Open time against the backlog
//
// BenchmarkOpenBacklog draws the curve of Open's time against the size of
// the log (issue 21: flat, under 0.5 s after a clean Close of 16 GiB with
// the page cache dropped; after a kill -9 of a FlushSync sender, 0.5 s plus
// reading what was written since the last checkpoint). Each size is a queue
// of unconsumed 1 KiB messages with caller-set IDs, built once (16 GiB takes
// 16 GiB of disk and a minute or more to write, plus ZEROLOSS_OPEN_KILL_MIB
// per kill round), under ZEROLOSS_OPEN_DIR (default os.TempDir()), and
// removed after its row:
//
//	ZEROLOSS_OPEN_GIB=1,4,16 go test -run '^$' -bench BenchmarkOpenBacklog -benchtime 3x -timeout 2h ./bench/
//
// Keep -benchtime a small count (1x-3x): every kill iteration also runs a
// child that opens the queue and sends ZEROLOSS_OPEN_KILL_MIB (64) MiB
// under FlushSync before it is killed. The sides, one line each per size:
//
//	clean-warm  Open after a clean Close, the log in the page cache
//	clean-cold  the same with the directory's pages dropped (fadvise DONTNEED,
//	            no root needed): the "page cache dropped" target
//	wal-warm, wal-cold  wal.Open alone: the log's share of the two above
//	kill-warm   Open right after a child sending from 32 goroutines under
//	            FlushSync was SIGKILLed past 64 MiB of SendOK
//	kill-cold   the same with the pages dropped between the kill and Open
//
// and the columns:
//
//	open-ms     milliseconds per Open (ns/op is the same, Close untimed)
//	since-MiB   kill sides: how much the log grew over the round, from the
//	            clean Close before the child's Open to the kill: what Open
//	            must read past the last Close's checkpoint at worst
//
// Every Open there has a 24h dedup window (ZEROLOSS_OPEN_DEDUP_WINDOW), so
// all the backlog's IDs are in it: with the default two minutes Open's
// cost would depend on how long ago the backlog was written.
//
// # Replication benchmarks
//
// The follower is zeroloss.Follow (FlushSync, its default) in the
// benchmark's process, attached to the leader (FlushSync) over a Unix
// socket. follower=tmpfs puts its directory on /dev/shm, where fdatasync
// costs nothing: what is left is the protocol (the sender reading synced
// frames back, one write per batch of frames, the follower's append, the
// ack) and the CPU the follower takes from the leader on this 2-core
// machine; it is skipped when /dev/shm is not a tmpfs. follower=disk puts it
// on the leader's disk, as two processes on one machine would be; a real
// follower has a disk of its own, somewhere between the two.
//
// # Cost model
//
// FlushSync. A Send waits for one fdatasync, which it shares with every Send
// that joined the same batch (group commit; Stats.GroupAvg is the average
// group). An fdatasync of b bytes takes about t0 + b/BW, where t0 is the
// disk's sync latency (the median of op=write+fdatasync, printed in the
// header of zeroloss bench) and BW its write bandwidth; between two syncs the
// answered producers wake and send again (the turnaround, g). With P
// producers each waiting on its own message of s bytes, the groups hold about
// P messages, so
//
//		throughput ≈ P / (t0 + P·s/BW + g(P))
//
//	  - One producer: about 1/t0, the raw write+fdatasync loop; the queue adds
//	    its turnaround.
//	  - More producers: the fixed t0 is shared, so throughput grows almost
//	    linearly with P while P·s/BW is small next to t0 (1 KiB messages:
//	    dozens of producers); the turnaround g grows with P too (each Send's
//	    wake-up and encoding, about 2-3 µs on this 2-core machine).
//	  - Large groups or large messages: the sync becomes bandwidth-bound and
//	    throughput tends to BW/s (about 130 MB/s here: ~120k msgs/s of 1 KiB,
//	    ~8k of 16 KiB), whatever P.
//	  - Appending into fresh preallocated extents (the default) makes every
//	    fdatasync also commit the extents' conversion in the file system's
//	    journal, a larger t0 (op=batch+fdatasync blocks=fresh against
//	    blocks=written: about 320 µs against 216 µs per 64 KiB here). An
//	    experiment that zero-filled every new segment (written and synced
//	    before use) moved BenchmarkInterleaved's ratios from 0.75-0.83 to
//	    0.87 (sync-p1) and from 0.42-0.44 to 0.56-0.58 (sync-p64): the rest
//	    of the gap at p=64 is the turnaround g (about 270 µs of a 680 µs
//	    cycle: BenchmarkSend reports 410 µs per fsync at 59 msgs/fsync and
//	    88k msgs/s). SegmentWarmup does this zero-fill in the background for
//	    every segment but the first, at the price of writing each twice.
//	    BenchmarkWarmup (8 MiB segments, 20000 messages: the first of three
//	    segments is cold on both sides) measured warm over cold 1.02-1.05
//	    with 1 producer, 1.06-1.18 with 16, 1.02-1.09 with 64 and 0.80-1.04
//	    with 256, where the log's own writes need the disk's bandwidth
//	    (three runs, session 5).
//	  - Recycled segments (RecycleSegments, on by default) remove that cost
//	    for every segment that follows one retention deleted, without the
//	    zero-fill. BenchmarkRecycle/producers=1 (8 MiB segments, retention
//	    at two segments, 20000 messages, three runs; go test -run '^$'
//	    -bench 'BenchmarkRecycle/producers=1$' -benchtime 20000x -count 3
//	    ./bench) measured recycled over fresh 1.13-1.18, warmup over fresh
//	    1.05-1.06; recycled over raw write+fdatasync on written blocks
//	    0.84-0.90, fresh over raw on fresh blocks 0.78-0.81, warmup over raw
//	    on written blocks 0.78-0.81; raw written over raw fresh 1.01-1.10.
//	    In the same session BenchmarkWarmup (-benchtime 20000x -count 2)
//	    measured warm over cold 0.76-0.84 with 64 producers and 0.87-0.97
//	    with 256: SegmentWarmup stays off by default. producers=64 gave
//	    recycled over fresh 1.02 and 1.27 (two runs, 40000 messages), with
//	    only 2-3 of 6 timed rolls finding a spare: retention runs every
//	    second and keeps two, fewer than 8 MiB segments roll at that rate.
//	  - What g is made of, from a runtime trace of 64 producers
//	    (go test -trace, read with golang.org/x/exp/trace): closing the
//	    batch's channel readies the 64 waiting Sends onto the processor
//	    that ran the fdatasync (25-35 µs), and they then run there one
//	    after the other, 1-2 µs each; the second processor is woken for the
//	    work but rarely in time to steal much. Waking an idle processor also
//	    costs the goroutine that wakes it about 15 µs on this VM (the
//	    inter-processor interrupt), which is most of what a lone producer
//	    pays over the raw loop: about 18 µs of a 234 µs cycle. Until
//	    session 4 the committer goroutine was also woken by every Send
//	    (about 27 times per group); it is now woken only to arm a batch's
//	    deadline.
//	  - How much of the gap any design could close: BenchmarkHandoff runs a
//	    bare group commit (a mutex, a buffer, one committer goroutine and a
//	    channel per batch; nothing else) against the raw loop and against
//	    the queue. Six runs here (two batches of -count 3 at 20000x, as
//	    ratios):
//
//	      producers                         1          16          64
//	      bare / raw, written blocks        0.82-0.92  0.82-1.01   0.82-1.08
//	      bare on fresh extents / raw       0.74-0.83  0.49-0.55   0.62-0.75
//	      queue / bare, both fresh          0.93-0.96  0.92-1.09   0.72-0.82
//
//	    The hand-off to a committer goroutine costs a lone producer about
//	    10%. Fresh extents cost another 5-15% at one producer and 25-45% at
//	    16 and 64 when the rounds alternate with another file's, as here
//	    and in BenchmarkInterleaved (run alone, op=batch+fdatasync
//	    blocks=fresh and blocks=written came out equal in the same
//	    session). So with fresh segments no design whose fdatasync runs
//	    off the caller's goroutine reached 0.9 of the raw loop at one
//	    producer or 0.8 at 64. The queue itself costs 4-7% over the bare
//	    committer at one producer and 18-28% at 64, where the turnaround
//	    of 64 Sends (select, bookkeeping, allocation) is serial.
//
// FlushAsync. A Send waits for its batch's write(2) only: the cost is CPU
// (encoding, the CRC, one pwrite per batch, waking the producers), bounded
// by the page cache's bandwidth, and a power loss takes up to FlushInterval
// of acknowledged messages. On this machine the cycles are too short for
// the second processor to take part (the trace shows gathering, writing
// and waking on one processor), so the fewer writes per message the
// better: batches wait for every Send in flight, as under FlushSync
// (13.6 messages per write with 16 producers; writing at half the
// producers gave 7.3 and 0.73x instead of 0.93x the raw write(2) loop).
//
// Consume+ack. An Ack is a small record that shares fdatasyncs with the other
// acks and sends (FlushSync), so acks behave as the Send model with s of a
// few dozen bytes; AckBatch turns one sync per message into one per batch.
// The turnaround is longer than a Send's: between two acks a consumer also
// receives (reads, decodes and delivers the next message) and the ack
// updates the group's state, about 6 µs of CPU per message on this machine
// (BenchmarkConsume flush=async consumers=16), run mostly on one processor.
// BenchmarkHandoff with 16 producers of 48-byte records, the ceiling with no
// receiving at all, reached 0.79-0.82 of the raw loop on fresh extents
// (0.83-0.91 on written blocks; six runs); BenchmarkInterleaved's
// consume-c16 measured 0.58-0.60.
//
// Replication. The sender streams only synced frames, so under
// ReplicateSync a Send waits, one after the other, for the leader's
// fdatasync, the sender's wake-up and write to the link, the follower's
// append and fdatasync (t1), and the ack back (together r, the round trip
// without t1). With P producers the leader's group and the follower's
// batch both hold about P messages, so
//
//		throughput ≈ P / (t0 + r + t1 + P·s/BW + g(P))
//
//	  - One producer: about 1/(t0 + r + t1); r is a few hundred µs of
//	    wake-ups and socket hops, comparable to t0, so even with a free t1
//	    it got 0.3-0.5x the unreplicated rate here (BenchmarkReplicate,
//	    not interleaved).
//	  - Many producers, follower on tmpfs (t1 ≈ 0): the extra r is shared
//	    by the whole group, so the ratio to ReplicateNone approaches
//	    (t0 + g) / (t0 + r + g); with 64 producers it was 0.66-0.85 here
//	    (BenchmarkInterleavedReplicate, seven runs).
//	  - Follower on the same disk: its fdatasync t1 adds a second t0 and
//	    competes with the leader's for the device, so the ratio falls
//	    towards one half or below (0.36-0.44 here, seven runs); a
//	    follower on its own disk removes the competition, not t1.
//	  - ReplicateAsync: Sends do not wait for the follower, which costs the
//	    leader only CPU (the sender, the follower's work in a same-process
//	    benchmark) and, on a shared disk, the follower's syncs; lag-seqs is
//	    what a leader disk loss would take at that moment.
package bench
