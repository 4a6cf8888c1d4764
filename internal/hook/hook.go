// Package hook lets the project's own tools (the loss lab) change how a queue
// does I/O without widening the public API: packages outside this module
// cannot import it.
package hook

import "github.com/zerolossmq/zeroloss/internal/vfs"

// FS, when set, is the file system zeroloss.Open uses for queues whose
// Options do not name one. Set it before opening any queue (the lab's child
// process sets it at start-up); it is not synchronized.
var FS vfs.FS
