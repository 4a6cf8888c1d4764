// Package lab is the loss lab: it measures what each queue configuration loses
// when something fails under load, by doing it for real and counting.
//
// # A run
//
// One run puts one configuration (Config) through one failure (Failure):
//
//  1. The lab starts a child process (the running program re-executed with
//     ChildCommand and ChildEnv; see ChildMain) that opens a queue in a fresh
//     directory and sends from 8 goroutines. Every message's body is derived
//     from its ID (a SHA-256 of the ID, repeated), so a wrong body is
//     detectable. For every Send that returns SendOK the child prints one line
//     "ok ID SEQ" on its stdout, in one write.
//  2. The parent reads those lines: each is an acknowledged message. After a
//     random number of them (drawn from a math/rand/v2 PCG seeded by
//     Options.Seed, so a seed reproduces the kill points, though not the
//     timing) it injects the failure, then reads the lines still in the pipe.
//  3. It recovers the directory with zeroloss.Open and Close, reads every
//     message back through internal/wal, and counts: acknowledged, lost
//     (acknowledged but missing), duplicates (an ID found more than once),
//     corrupt (a body that does not match its ID, or a payload that does not
//     decode), unacknowledged but present (allowed: the child was killed
//     between the write and its print), and throughput (acks per second
//     between the first and the last ack).
//  4. A second count, independent of the first, reads the files again with
//     the read-only scanner (wal.Scan and wal.ReadFrames) and compares the set
//     of (ID, SHA-256 of the body) found against the acknowledged set. The two
//     counts must agree; if they do not, the lab itself is wrong.
//
// A run that lost data its configuration was promised to keep, corrupted
// data, or failed, keeps its directory for inspection (zeroloss inspect,
// zeroloss verify); the others are removed unless Options.KeepDirs is set.
//
// # Failures
//
//	process-crash  SIGKILL of the child (TerminateProcess on Windows) at a
//	               random moment under load. The kernel keeps the process's
//	               written pages in its page cache and writes them out later,
//	               so a process crash takes away only what had not reached
//	               write(2) yet: not even FlushAsync, which acknowledges after
//	               write(2) and before fdatasync, loses an acknowledged
//	               message. Both flush modes promise zero loss here, and the
//	               lab holds them to it.
//
//	power-loss     The same kill, then the page cache goes too: before
//	               recovery the lab cuts the files back to what the disk is
//	               sure to hold (the model below). FlushSync promises zero
//	               loss; FlushAsync is only measured, and loses the messages
//	               it acknowledged after its last background sync
//	               (FlushInterval, 500ms by default).
//
// # The power-loss model
//
// The child of a power-loss run opens its queue on a file system that wraps
// the real one (set through internal/hook) and reports on its stdout, as
// "fs …" lines between the acks, every create, rename, remove and WriteAt
// (path, offset, length) before doing it, every Sync with the file's size at
// the moment it is issued, and every SyncDir with the directory's entries at
// that moment. For a Sync or a SyncDir it waits for the parent's one-byte
// acknowledgement on its stdin before the real call, and reports its
// completion after it returns. The parent replays the reports in order, so
// it knows, for every file (followed across renames), the size at its last
// completed sync and the byte ranges written since, and for every directory
// the entries at its last completed SyncDir. After the kill, on the real
// files:
//
//   - Directory entries: a file whose name was not listed by the last
//     completed SyncDir of its directory is removed (created, or renamed in,
//     since); a file renamed away since gets its durable name back; a file
//     removed since stays lost (its contents are gone: the lab never
//     invents data). A directory never synced loses every entry.
//   - A file never synced (no completed Sync) is cut to zero length.
//   - Below its synced size, a file keeps its contents, except the ranges
//     written since the sync (the log rewrites its sync slots at offsets 512
//     and 1024 in place, and writes frames into preallocated space): their
//     old contents are unknown, so they are only ever kept or zeroed.
//   - Above its synced size (written or allocated since), the bytes are
//     unsynced.
//
// Each run draws one mode for all the unsynced bytes: drop (the tail is cut
// at the synced size; unsynced ranges below it read as zeros), torn (a random
// prefix of each unsynced range or tail survives, the rest is cut or zeroed),
// zero (every unsynced byte reads as zero, lengths stay) or pages (each
// unsynced 4 KiB page survives or reads as zeros, at random). The mode is in
// RunResult.PowerLoss.
//
// The model is conservative: a Sync or SyncDir counts only once its
// completion was reported, so one cut short by the kill counts as not done;
// a write reported but cut short by the kill counts as possibly done; data
// written while a sync is in flight counts as not covered by it. What it
// does not model: a file truncated below its synced size since keeps its
// current size (the cut-off bytes cannot be brought back); the run
// directory's own entry in its parent is left alone; and a real disk may
// also reorder or lose writes a completed fsync covered (a lying disk),
// which no software can survive.
//
// Still to come: replication (a follower that must confirm), consumers (a
// message acknowledged by a consumer must not come back, and one not
// acknowledged must not vanish) and a strict producer (which counts only
// SendOK as sent and retries the rest). Each is a new Failure or a new field of
// Config; the runner, the counts and the report do not change.
//
// # Promises
//
// Failure.Promises says whether the library's documentation promises that a
// configuration loses nothing under a failure. A row of the Report whose
// configuration was promised zero loss and lost or corrupted an acknowledged
// message is Broken; a row without a promise is only measured.
package lab
