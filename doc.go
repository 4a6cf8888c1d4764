// Package zeroloss is an embedded, single-process, durable message queue whose
// promise is that no acknowledged message is ever lost, and that every weaker
// setting says exactly what it risks.
//
// # Guarantees
//
// A Send that returns SendOK means:
//
//	Flush       SendOK returned after   survives kill -9   survives power loss
//	FlushSync   fdatasync (durable)     yes                yes
//	FlushAsync  write(2) (page cache)   yes                no: SendOKs not yet covered
//	                                                       by a completed background
//	                                                       fdatasync can be lost: up to
//	                                                       FlushInterval plus one
//	                                                       fdatasync
//
// Any other status means the message was appended but a guarantee was not
// confirmed: FlushDiskTimeout says the fdatasync did not finish within
// FlushTimeout (or failed, which poisons the queue); WaitCanceled says the
// Send's ctx ended while it waited for the confirmation (the caller gave up,
// which says nothing about the disk). A non-nil error means the message was
// not appended. Seqs are strictly increasing and never reused, even
// for messages lost to a power loss under FlushAsync.
//
// Under FlushSync, concurrent Sends share one fdatasync (group commit): Sends
// encode their messages into one pending batch, which is written with one
// pwrite and synced with one fdatasync once every Send in flight has joined
// it (waiting at most half an average fdatasync).
//
// # Topics and tags
//
// Message.Topic names the topic a message is sent to ("" is the default
// topic) and Message.Tag an optional label within it. Every topic is
// appended to the one log, so one fdatasync covers a batch of Sends to many
// topics. A consumer group reads one topic (ConsumerOptions.Topic) and, if
// ConsumerOptions.Tags lists any, only those tags; both are part of the
// group's durable declaration. An in-memory index of where each topic's
// messages are lets a group skip other topics' records without reading
// them. A topic with no group keeps its messages, within RetentionBytes and
// RetentionAge, for a group declared later. Queue.TopicStats and
// GroupStats.Lag count them. Dedup is per topic.
//
// # Idempotent send
//
// A message whose ID the caller set is remembered, within its topic, for Options.DedupWindow
// (default 2 minutes, at most Options.DedupEntries IDs): a Send of the same
// ID within the window appends nothing and returns the original seq, with
// SendResult.Duplicate set and the original's durability status. Resending
// after FlushDiskTimeout, an error or a restart is therefore safe. The table
// is rebuilt from the log on Open, so it never remembers a message the log
// lost, and holds what the running queue held (the newest DedupEntries IDs).
// A committed transactional half counts from its commit. Message.NoDedup
// opts one send out: it is appended whatever the table holds, and its ID is
// not remembered (for IDs that name an event rather than a send attempt).
//
// # Acks
//
// Delivery.Ack returns once the ack is durable as the flush mode promises,
// sharing the fdatasync with concurrent acks and Sends. Delivery.AckAsync is
// weaker: it returns at once, and the group's async acks share its next ack
// record; a crash before that record is durable delivers those messages
// again, and none is ever lost. Nack and NackNow fail a delivery (NackNow
// delivers it again at once, not after the backoff); Release and
// Consumer.Close give deliveries back at once without counting a failed
// attempt.
//
// # Strict producer
//
// NewProducer wraps a Queue. In strict mode (ProducerOptions.Strict) only
// SendOK counts: a message the queue cannot confirm (a non-OK status after
// the retries, ErrDiskFull, ErrQueueFull, a closed or poisoned queue) is
// written to a local spool and fdatasynced before Send returns Spooled; a
// background resender replays the spool in order, deduplicated by ID, as soon
// as the queue accepts again or a healthy queue is attached (Attach). New
// Sends queue behind a non-empty spool, so order holds. Outages must stay
// shorter than the queue's DedupWindow for the replay to be exactly-once.
//
// # Transactional messages
//
// SendHalf (or SendInTransaction) appends a half message: durable as a Send,
// invisible to consumers. Half.Commit publishes it with a new seq, in one
// record that also resolves the half; Half.Rollback drops it. A half left
// undecided (TxUnknown, or a crash) is checked back through Options.TxChecker
// first after TxTimeout, then every TxCheckInterval, and rolled back (and
// logged) after TxCheckMax unknown answers; check counts survive restarts.
// Without a TxChecker pending halves wait and are reported, never dropped.
//
// # Replication and failover
//
// With Options.Replication set, a leader queue mirrors its log to one
// follower over any io.ReadWriteCloser (Queue.AttachReplica, or
// Queue.ReplicateTo for a Unix socket or TCP with TLS, re-dialing as
// needed); the follower is Follow or ServeFollower (or the zeroloss follow
// command) keeping a copy in its own directory. Under ReplicateSync, SendOK
// also means the follower fdatasynced the message, and consumers see only
// what the follower holds. A stopped follower's directory opens as a
// normal Queue: the promotion begins a new epoch, and the old leader, run
// with Follow against it, cuts what it never replicated and catches up. A
// follower that missed segments its leader's retention deleted jumps over
// them, after taking the leader's latest checkpoint (kept in its CATCHUP
// file); promoted at any point of its catch-up, it delivers every message
// it holds that the leader had not acked, to every group, those declared
// in the deleted segments included.
// ARCHITECTURE.md has what SendOK means for every flush and replication
// mode.
//
// The link is authenticated before it carries any weight: a Unix socket
// of mode 0600, mutual TLS, or a secret both ends hold
// (Options.ReplicaSecret, FollowOptions.Secret; required on plain TCP,
// which is allowed on loopback only and is not encrypted). A follower
// checks a connection's handshake, its queue ID and epoch before the
// connection may replace its current leader's (see transport.go).
//
// # The durability call of each system
//
//	Linux    fdatasync(2): the data and the size; the kernel flushes the
//	         drive's volatile cache when the drive has one.
//	macOS    fcntl(F_FULLFSYNC): plain fsync(2) on macOS leaves data in the
//	         drive's cache, so zeroloss asks the drive to flush it.
//	Windows  FlushFileBuffers: data, metadata and the drive's cache. Windows
//	         cannot sync a directory: the creation of a new segment file relies
//	         on NTFS's metadata journal. Tests and benchmarks run on Linux.
//
// New segment files are preallocated (fallocate on Linux, F_PREALLOCATE on
// macOS) and their directory is synced after they are renamed into place.
//
// # Backends
//
// The consumer API is one set of concrete types for every backend, as
// database/sql's is: Backend.Consumer returns a *Consumer (Receive,
// ReceiveBatch, Consume, AckBatch, Close) handing out *Delivery values (Ack,
// AckAsync, Nack, NackNow, Release, Extend). *Queue is a Backend and runs
// them itself; another backend, such as the NATS JetStream adapter (module
// github.com/zerolossmq/zeroloss/jetstream), is a Backend whose Consumers
// run on its driver (ConsumerDriver, DeliveryDriver: for backend
// implementations, not applications). What a backend cannot do fails with
// an error matching ErrUnsupported, and the backend documents which.
//
// API break before 1.0: the interface forms that duplicated this API
// (Queue.Subscribe, Consumer.Next, Consumer.Handle, Delivery.Info and the
// types Subscription, Received, Handler and DeliveryInfo; jetstream.Consumer
// and jetstream.Delivery) are removed. Use Queue.Consumer (or
// Backend.Consumer), Receive, Consume with a func(context.Context,
// *Delivery) error, and the Delivery's fields.
//
// # Recovery
//
// Open recovers the log: a torn tail left by a crash is cut and logged with the
// number of records cut; damage to data that had been synced is ErrCorrupt,
// naming the file and byte offset, and nothing is skipped. After a failed write
// or fdatasync the queue is poisoned (ErrPoisoned): it never retries the sync,
// and Close and Open recover what was durable.
//
// # Usage
//
//	q, err := zeroloss.Open("/var/lib/myapp/queue", nil) // FlushSync
//	if err != nil { ... }
//	defer q.Close()
//	res, err := q.Send(ctx, &zeroloss.Message{Body: []byte("hello")})
//	if err != nil { ... }              // not appended
//	if res.Status != zeroloss.SendOK { ... } // appended, not confirmed durable
//
// See ARCHITECTURE.md in the repository for the path of a Send through the code
// and the on-disk layout.
package zeroloss
