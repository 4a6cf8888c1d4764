// Package wal is zeroloss's write-ahead log: a directory of segment files that
// hold record frames (package record) in seq order, with the recovery rules
// that decide, after a crash, what is a torn tail to cut and what is
// corruption to report.
//
// # Directory
//
//	DIR/LOCK                    flock'ed while a Log is open (ErrLocked otherwise)
//	DIR/00000000000000000001.wal  segment whose first seq is 1
//	DIR/00000000000000052133.wal  next segment, first seq 52133
//	DIR/NNN….wal.tmp            a segment being created; removed on open
//	DIR/spare-N.tmp             a spare segment: zero-filled (Options.Prepare) or a deleted
//	                            segment kept for reuse (Options.Recycle); removed on open and close
//
// Open removes only these temporary names: any other file (report.tmp) is
// left alone; OwnsFile tells the log's files from others.
//
// # Segment file
//
//	0          512        1024       1536                  4096
//	+----------+----------+----------+----- zeros ---------+------------------------+
//	| header   | slot A   | slot B   |                     | frames … | zeros (preallocated)
//	+----------+----------+----------+---------------------+------------------------+
//
// The header (written once, before the file gets its final name):
//
//	0   8  magic "ZEROLOSS"
//	8   4  format version (1)
//	12  4  flags: bit 0 = gap (records the copied log held between prev last seq
//	       and base seq, or below base seq in a first segment, were deleted
//	       there before this copy got them: AppendFrames after LostBelow);
//	       bit 1 = recycled (the file held an earlier segment, see below)
//	16  8  base seq: the seq of the first frame in this file
//	24  8  prev last seq: the last seq of the previous segment (0: none)
//	32  8  creation time, Unix ns
//	40 20  reserved (0)
//	60  4  CRC-32C of bytes [0,60)
//
// Each slot (two, in separate 512-byte sectors, written alternately so a torn
// slot write always leaves the other one intact):
//
//	0   8  generation (the valid slot with the higher generation wins; 0 = never written)
//	8   8  synced offset: every byte below it was made durable by an earlier sync
//	16  8  last seq at the synced offset
//	24  8  seq lease: no seq above it was ever handed out
//	32  4  flags: bit 0 = sealed (the file ends exactly at the synced offset)
//	36 24  reserved (0)
//	60  4  CRC-32C of bytes [0,60) of the slot
//
// # Durability protocol
//
// Appends write frames into preallocated space with pwrite. Sync writes a slot
// recording the offset that the previous sync made durable, then calls
// fdatasync. The slot lags by one sync on purpose: if power fails during a
// sync, the new slot may reach the disk while the data it covers does not, so a
// slot may only name data that is already durable.
//
// Rolling to a new segment: the new file is created under a .tmp name,
// preallocated, given its header and first slot, and synced; then the old
// segment is sealed (slot with the sealed flag, truncated to its end, synced);
// then the new file is renamed into place and the directory synced. Running
// out of space before the seal is ErrDiskFull and leaves the log usable.
//
// # Recycled segments
//
// With Options.Recycle, RemoveBefore renames up to that many deleted segments
// to spare names (one directory sync for the whole call, as for unlinks),
// and a later roll reuses one instead of creating a file: the file is cut at
// the end of its old frames, preallocated again, given a new header with the
// recycled flag and a first slot, synced, and renamed into place like any new
// segment. Its blocks are already written, so appends to it do not make each
// fdatasync commit the allocation of fresh extents. A segment a Reader still
// holds is unlinked, not kept: the reader would read the new life as the old
// segment's frames. Spares are removed by Close and, after a crash, by Open.
//
// The frames of the file's earlier life stay where the new life has not
// written yet, with valid checksums (frames are replicated as stored, so
// their checksum cannot depend on the file). What keeps them from being read:
//
//   - Every frame left in a reused file has a seq below the new segment's
//     base. Seqs only grow in a log, except that TruncateAfter hands the cut
//     seqs out again: so a spare is reused only for a segment based above its
//     last seq (else it is deleted), and it is cut at the end of its frames
//     first (frames a TruncateAfter cut may still lie past its sealed end if
//     a crash undid the truncation).
//   - Recovery requires each frame to carry the next seq, so a leftover frame
//     is never taken for one of the new life, wherever it lies.
//   - In a recycled segment, above the synced offset, whatever is not the
//     expected frame ends the data: a torn tail of one frame if its header
//     carries the expected seq (this life's frame cut short by a crash), and
//     otherwise a clean end (leftovers, or zeros past the old end). So a
//     clean Close stays clean, and appends go on over the leftovers. Below the
//     synced offset, and in a sealed segment, the rules above are unchanged:
//     anything but the expected frame is ErrCorrupt with file and offset.
//
// The format version stays 1: a build that ignores the recycled flag reads no
// leftover frame either (none carries the seq expected where it lies); it
// takes leftovers after a clean close for a torn tail and cuts them, which
// costs a new segment and a warning, no frame.
//
// Seqs are leased: before a seq above the durable lease is assigned, a slot
// with a larger lease is written and synced. Recovery starts the next seq above
// the lease, so a seq handed to a caller before a crash (under async flush, or
// with a flush timeout) is never given to another record, even when the record
// itself was lost. A clean Close records the exact last seq as the lease.
//
// # Recovery rules
//
//   - Damage (checksum, impossible header, seq out of order, zeros where data
//     must be) in a sealed segment, or below the recorded synced offset of the
//     last one, is ErrCorrupt naming the file and offset. Nothing is skipped.
//     With Options.TrustSeals (the queue's Open; a follower's log and a
//     spool are read whole), Open reads no frame below a slot's synced
//     offset: a sealed segment is taken at its slot's word (its end and last
//     seq, checked against its header and the next segment's), and so are
//     the last segment's frames below its best slot's synced offset (the
//     slot is written only after an fdatasync made them durable; checked as
//     a seal is: the offset past the header, the seq the header's prev last
//     seq when no frame lies below it and otherwise at or above the base,
//     room for every frame's header). The scan of the last segment starts at
//     the synced offset expecting the slot's seq plus one (the base seq when
//     no frame lies below it: after an unclean stop the base is above the
//     previous segment's last seq plus one), under the rules
//     above it (below): the frame there is the expected one, a clean end, or
//     a torn or recycled tail, so the offset is where a frame may start. A
//     clean Close leaves the slot exact (its synced offset the end, its lease
//     the last seq): Open then reads one frame header there and, finding
//     zeros, does not read the free space after it (no frame of this life
//     can lie past a seq at the lease). So Open costs about the same whatever
//     the log holds. Damage among the frames not read is found by the Reader
//     that reaches it (which also requires consecutive seqs from the base and
//     the sealed last seq at the sealed end, as the scan did), and by Scan
//     (zeroloss verify), which reads every frame.
//   - Damage above the synced offset of the last segment is a torn tail: it is
//     cut (the file is sealed at the last good frame and synced) and the number
//     of frames and bytes cut is logged and reported. Zeros there end the data
//     cleanly only if nothing but zeros follows them; to know, recovery reads
//     only where the file system says data may lie (vfs.DataFinder, SEEK_DATA
//     on Linux, asked before the segment is read, since cached pages count as
//     data), not a segment's preallocated free space.
//   - Segments must chain: each one's prev last seq equals the last seq of the
//     one before, every segment but the last is sealed, and seqs within a
//     segment are consecutive from its base.
//   - After an unclean stop the next seq continues above the lease, in a new
//     segment.
//   - Before writing anything, recovery syncs the last segment: after a
//     process crash what it read (frames, a slot, a seal) may be in the page
//     cache only, and the seal's slot must never reach the disk before the
//     frames it claims, nor go over the other slot while that one is not
//     durable. Sealing then costs two fdatasyncs: the data, then the slot.
//
// After a failed write or sync the log is poisoned: it never retries the sync
// (the kernel may have dropped the dirty pages and cleared the error), every
// later Append and Sync returns the first error, and readers see only what was
// synced before it. The process remembers the offset each failed file was
// durable up to; the next recovery of that file in the same process writes
// what lies above it again before syncing (writeback.go), since the page cache
// may show bytes the disk never got.
package wal
