package zlwatermill_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/zerolossmq/zeroloss"
	zlwatermill "github.com/zerolossmq/zeroloss/watermill"
)

// A Watermill router consuming orders from a zeroloss queue: each message
// is acked once its handler returned nil (the router acks, the adapter
// makes the ack durable). A panic becomes an error (Recoverer), an error is
// retried in process (Retry), and a message that still fails goes to the
// poison queue topic (PoisonQueue), which another handler reads. SIGINT or
// SIGTERM stops it gracefully: the router stops its handlers, the
// subscriber gives back at once what was handed out and not acked (handled
// again at the next start), and the queue is closed last.
func Example_router() {
	dir, err := os.MkdirTemp("", "zlwatermill-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	q, err := zeroloss.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close() // last, after the router and the publisher

	logger := watermill.NopLogger{}
	pub, err := zlwatermill.NewPublisher(q, zlwatermill.PublisherConfig{Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	sub, err := zlwatermill.NewSubscriber(q, zlwatermill.SubscriberConfig{
		ConsumerGroup: zlwatermill.GroupPerTopic("billing"),
		Consumer:      zeroloss.ConsumerOptions{AckTimeout: time.Minute},
		Logger:        logger,
	})
	if err != nil {
		log.Fatal(err)
	}
	// Declare the groups before publishing (they start at the oldest
	// message anyway; with StartLatest this keeps what is published now).
	for _, topic := range []string{"orders", "orders.poison"} {
		if err := sub.SubscribeInitialize(topic); err != nil {
			log.Fatal(err)
		}
	}

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		log.Fatal(err)
	}
	poison, err := middleware.PoisonQueue(pub, "orders.poison")
	if err != nil {
		log.Fatal(err)
	}
	router.AddMiddleware(
		poison, // outermost: sees the error once Retry gave up
		middleware.Retry{MaxRetries: 2, InitialInterval: time.Millisecond, Logger: logger}.Middleware,
		middleware.Recoverer, // innermost: a panic becomes an error Retry sees
	)

	var mu sync.Mutex
	var lines []string
	handled := make(chan struct{}, 16)
	note := func(format string, args ...any) {
		mu.Lock()
		lines = append(lines, fmt.Sprintf(format, args...))
		mu.Unlock()
		handled <- struct{}{}
	}
	router.AddNoPublisherHandler("charge", "orders", sub, func(msg *message.Message) error {
		switch body := string(msg.Payload); body {
		case "card declined":
			return errors.New("card declined")
		case "bug":
			panic("nil map")
		default:
			note("charged %s", body)
			return nil
		}
	})
	router.AddNoPublisherHandler("poisoned", "orders.poison", sub, func(msg *message.Message) error {
		note("poisoned %q after %s", msg.Payload, msg.Metadata.Get(middleware.PoisonedHandlerKey))
		return nil
	})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-router.Running()
		for _, body := range []string{"order 1", "card declined", "order 2", "bug"} {
			if err := pub.Publish("orders", message.NewMessage(watermill.NewUUID(), []byte(body))); err != nil {
				log.Fatal(err)
			}
		}
		for range 4 { // two charged, two poisoned
			<-handled
		}
		stop() // as a SIGTERM would
	}()
	if err := router.Run(ctx); err != nil { // returns once the router closed
		log.Fatal(err)
	}

	slices.Sort(lines)
	for _, line := range lines {
		fmt.Println(line)
	}
	// Output:
	// charged order 1
	// charged order 2
	// poisoned "bug" after charge
	// poisoned "card declined" after charge
}
