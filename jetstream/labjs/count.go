package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/zerolossmq/zeroloss"
	"github.com/zerolossmq/zeroloss/internal/lab"
	"github.com/zerolossmq/zeroloss/jetstream"
)

// countTimeout bounds each count.
const countTimeout = 2 * time.Minute

// countGroup is the consumer group of the main count: new in every run's
// store, so it starts at the oldest message.
const countGroup = "labcount"

// Waits of the main count for the next message: idleWait while the group
// has delivered fewer messages than the stream holds (it should not wait at
// all), confirmWait once it has delivered as many (nothing more should
// come).
const (
	idleWait    = 5 * time.Second
	confirmWait = 300 * time.Millisecond
)

// entry is a message as lab.ReadBack takes it: "ID\nBODY", the ID being the
// message's (its Nats-Msg-Id header without the topic: jetstream.SplitMsgID).
// An empty ID makes a foreign entry: a message nobody in the lab sent.
func entry(id string, body []byte) []byte {
	if id == "" {
		return nil
	}
	return append([]byte(id+"\n"), body...)
}

// connect connects to url as user (app or sys), without reconnecting.
func connect(url, user string) (*nats.Conn, error) {
	return nats.Connect(url, nats.UserInfo(user, user), nats.NoReconnect())
}

// readBySeq is the cross-check: it reads the stream directly with the
// nats.go JetStream API, every sequence from the stream's first to its
// last (Stream.GetMsg, the server's message-get API; a sequence deleted or
// never stored is skipped), each message by its Nats-Msg-Id header and its
// body. A missing stream reads as empty.
func readBySeq(ctx context.Context, url string) (lab.ReadBack, error) {
	var rb lab.ReadBack
	ctx, cancel := context.WithTimeout(ctx, countTimeout)
	defer cancel()
	nc, err := connect(url, "app")
	if err != nil {
		return rb, err
	}
	defer nc.Close()
	js, err := natsjs.New(nc)
	if err != nil {
		return rb, err
	}
	stream, err := js.Stream(ctx, jetstream.DefaultStream)
	if errors.Is(err, natsjs.ErrStreamNotFound) {
		return rb, nil
	}
	if err != nil {
		return rb, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return rb, err
	}
	for seq := max(info.State.FirstSeq, 1); seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, natsjs.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return rb, fmt.Errorf("seq %d: %w", seq, err)
		}
		_, id, _ := jetstream.SplitMsgID(m.Header.Get(natsjs.MsgIDHeader))
		rb.Add(entry(id, m.Data))
	}
	return rb, nil
}

// readThroughAdapter is the main count: the adapter opened as the lab's
// producers opened it (so Strict checks the configuration again), and a new
// consumer group receiving and acking every message, as an application
// would. It stops when the group has delivered as many messages as the
// stream holds and nothing more comes within confirmWait, or when nothing
// comes within idleWait.
func readThroughAdapter(ctx context.Context, url string, s setup) (lab.ReadBack, error) {
	var rb lab.ReadBack
	ctx, cancel := context.WithTimeout(ctx, countTimeout)
	defer cancel()
	nc, err := connect(url, "app")
	if err != nil {
		return rb, err
	}
	defer nc.Close()
	sys, err := connect(url, "sys")
	if err != nil {
		return rb, err
	}
	defer sys.Close()
	b, err := jetstream.Open(ctx, nc, s.backendOptions(sys))
	if err != nil {
		return rb, err
	}
	defer b.Close()
	held, err := storedCount(ctx, nc)
	if err != nil {
		return rb, err
	}
	sub, err := b.Consumer(countGroup, &zeroloss.ConsumerOptions{AckTimeout: countTimeout})
	if err != nil {
		return rb, err
	}
	for delivered := uint64(0); ; delivered++ {
		wait := idleWait
		if delivered >= held {
			wait = confirmWait
		}
		nextCtx, cancelNext := context.WithTimeout(ctx, wait)
		d, err := sub.Receive(nextCtx)
		cancelNext()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return rb, nil
		}
		if err != nil {
			return rb, err
		}
		m := d.Message
		rb.Add(entry(m.ID, m.Body))
		if err := d.Ack(); err != nil {
			return rb, fmt.Errorf("acking seq %d: %w", d.Seq, err)
		}
	}
}

// storedCount is the number of messages the stream holds: how many the
// main count waits for before it only confirms that nothing more comes.
func storedCount(ctx context.Context, nc *nats.Conn) (uint64, error) {
	js, err := natsjs.New(nc)
	if err != nil {
		return 0, err
	}
	stream, err := js.Stream(ctx, jetstream.DefaultStream)
	if err != nil {
		return 0, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}
