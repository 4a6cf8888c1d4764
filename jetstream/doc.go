// Package jetstream runs the zeroloss producer and consumer API on NATS
// JetStream, for applications that outgrow one machine: a zeroloss.Backend
// whose Consumer returns the same *zeroloss.Consumer, with the same
// *zeroloss.Delivery, as the embedded queue's (the adapter is their driver:
// zeroloss.ConsumerDriver, zeroloss.DeliveryDriver), checked by the same
// conformance suite (package github.com/zerolossmq/zeroloss/conformance).
// What JetStream cannot do fails with ErrUnsupported.
//
//	nc, _ := nats.Connect(url)
//	b, err := jetstream.Open(ctx, nc, &jetstream.Options{
//		Replicas: 3, Require: jetstream.Requirement{Replicas: 3},
//		Strict: true, SystemConn: sys, // sys: a connection in the system account
//	})
//	var backend zeroloss.Backend = b // or a *zeroloss.Queue
//
// # What SendOK means
//
// Send waits for the PubAck: the stream's leader stored the message and a
// quorum of its R replicas has it. It is durable against a power loss only
// if every server holding the stream fsyncs before answering
// (sync_interval: always; the nats-server default fsyncs every 2 minutes),
// the stream is on file storage and its persist_mode is not async. It is
// delivered only if the stream keeps what it acknowledges until every group
// read it: interest or work-queue retention, MaxAge, DiscardOld limits,
// MaxMsgsPerSubject without DiscardNewPerSubject, a Duplicates window
// shorter than Options.DedupWindow, a SubjectTransform, Sealed, NoAck and a
// consumer InactiveThreshold make it mean less (README.md says why each).
// Open checks all of it, on the messages' and the dead letters' streams, the
// sync setting by asking each server holding the streams through
// Options.SystemConn, and compares it with Options.Require:
//
//	found                                    without Strict: Send returns   with Strict
//	all as required                          SendOK                         Open succeeds
//	fsync before PubAck not verified         FlushDiskTimeout               Open fails
//	fewer replicas than Require.Replicas     ReplicaNotAvailable            (ErrGuaranteeNotMet)
//	a stream may not keep what it acked      FlushDiskTimeout
//	(Guarantee.KeepsMessages false)
//
// Errors: ErrNotStored (the server refused it, or no stream leader listened)
// and the bad-message errors mean nothing was stored; ErrUnconfirmed (no
// PubAck) means it may have been: resend it with the same Message.ID, which
// the stream's dedup window (Nats-Msg-Id) stores once.
//
// # Mapping
//
//	zeroloss                        JetStream                                      weaker or different
//	queue                           stream <Stream> (subjects                      limits retention: nothing is deleted when
//	                                <Stream>.messages.*.*), file storage,          every group acked; DiscardNew+MaxBytes
//	                                Options.Replicas                               bounds it (or Require.AcceptEviction)
//	Message.Topic, Message.Tag      subject <Stream>.messages.<topic>.<tag>        '.' written %2E; "" (none) is _, "_" is %5F
//	Message.ID, DedupWindow         Nats-Msg-Id header <topic>.<ID>, stream        dedup per topic, as embedded; an ID ending
//	                                Duplicates window                              in white space or with a line break refused
//	Message.Key, Headers            headers Zeroloss-Key and the message's own     Nats-* and Zeroloss-* names reserved
//	Message.DeliverAt               not offered                                    Send returns ErrUnsupported
//	Seq                             stream sequence                                -
//	SendBatch                       asynchronous publishes, then every PubAck      not one write: seqs not consecutive; after
//	                                                                               a failure, later messages may be stored
//	consumer group                  durable pull consumer named after the group,   its options are the group's: the last
//	                                explicit ack, filtered on its topic            Consumer call sets them for all processes
//	ConsumerOptions.Topic, Tags     FilterSubject <Stream>.messages.<topic>.*, or  part of the group, as embedded: another
//	                                one subject per tag (FilterSubjects: 2.10+)    topic or tags is ErrInvalidOptions
//	Start                           DeliverAll / DeliverNew, at creation           -
//	AckTimeout, Backoff             BackOff[n-1] = AckTimeout + Backoff[n-1]:      redelivered at the same time, but Nack and
//	                                the ack wait of delivery n                     Extend work until then, not AckTimeout
//	MaxDeliveries                   MaxDeliver                                     -
//	Receive                         a pull request for one message, renewed        a request that expires as a message is
//	                                every 5s                                       sent counts a delivery attempt
//	Ack, durable before it returns  DoubleAck: the server confirmed it             consumer state is written every 100ms at
//	                                                                               most: a crash can redeliver (not lose)
//	Nack(delay)                     NAK with the delay                             not confirmed by the server
//	NackNow                         NAK without a delay                            as Nack
//	AckAsync                        a plain ACK, not confirmed                     a lost one redelivers after the ack wait
//	Release                         not offered (every delivery counts)            ErrUnsupported; the delivery stays held
//	Consumer.Close                  stops the Consumer's Receives                  its deliveries are not released
//	ReceiveBatch(max)               Receive, then a pull of max-1 that does not    -
//	                                wait
//	dead letters after a Nack       publish to <Stream>.dlq.<group> (stream        -
//	on the last delivery            <Stream>_DLQ), PubAck, then AckTerm
//	dead letters after a timeout    MAX_DELIVERIES advisory → the same publish     the advisory is not persisted: with no
//	on the last delivery                                                           consumer of the group connected, the
//	                                                                               message is neither redelivered nor
//	                                                                               dead-lettered
//	Extend(by)                      +WPI (restarts the ack wait), every half       held up to one ack wait longer than by
//	                                ack wait until by is covered
//	ErrDeliveryExpired              judged by the client: acked, nacked, past      measured from receipt, not from the
//	                                the ack wait, or received again                server's delivery
//	FirstDelivered                  the message's stored time                      not the first delivery's time
//	DeadLetters                     reading <Stream>_DLQ by subject                no Redrive or Purge
//	transactions (SendHalf)         not offered                                    see below
//	strict Producer (spool)         not offered                                    resend with the same ID until SendOK
//
// Transactions are not offered. JetStream's atomic batch publish makes
// several messages atomic; it does not tie a message to the application's
// local transaction with a check-back after a crash, which is what
// zeroloss's half messages do. Built honestly it would need a durable half
// stream, a commit record and a checker every process agrees to run; it is
// not built.
package jetstream
