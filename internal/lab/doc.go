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
// A run whose queue lost or corrupted data keeps its directory for
// inspection (zeroloss inspect, zeroloss verify); the others are removed unless
// Options.KeepDirs is set.
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
// Still to come: power loss (the page cache goes too, which is where
// FlushAsync loses the messages acknowledged since its last background flush
// while FlushSync loses nothing), replication (a follower that must confirm),
// consumers (a message acknowledged by a consumer must not come back, and one
// not acknowledged must not vanish) and a strict producer (which counts only
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
