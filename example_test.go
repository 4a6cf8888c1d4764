package zeroloss_test

import (
	"context"
	"fmt"
	"os"

	"github.com/zerolossmq/zeroloss"
)

// Send one message under the default FlushSync: SendOK means it is on disk.
func Example() {
	dir, _ := os.MkdirTemp("", "zeroloss-example")
	defer os.RemoveAll(dir)

	q, err := zeroloss.Open(dir, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer q.Close()

	res, err := q.Send(context.Background(), &zeroloss.Message{ID: "order-42", Body: []byte("paid")})
	if err != nil {
		fmt.Println("not appended:", err)
		return
	}
	// Seq 1 is the queue's epoch record (written by Open), so the first
	// message gets seq 2.
	fmt.Println(res.ID, res.Seq, res.Status)
	// Output: order-42 2 SendOK
}

// SendBatch appends several messages with one write and one fdatasync.
func ExampleQueue_SendBatch() {
	dir, _ := os.MkdirTemp("", "zeroloss-example")
	defer os.RemoveAll(dir)
	q, err := zeroloss.Open(dir, &zeroloss.Options{Flush: zeroloss.FlushSync})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer q.Close()

	results, err := q.SendBatch(context.Background(), []*zeroloss.Message{
		{ID: "a", Body: []byte("1")}, {ID: "b", Body: []byte("2")}, {ID: "c", Body: []byte("3")},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range results {
		fmt.Println(r.ID, r.Seq, r.Status)
	}
	// Output:
	// a 2 SendOK
	// b 3 SendOK
	// c 4 SendOK
}

// Invalid options are refused with an error that names the field.
func ExampleOpen_invalidOptions() {
	_, err := zeroloss.Open(os.TempDir(), &zeroloss.Options{FlushTimeout: -1})
	fmt.Println(err)
	// Output: zeroloss: invalid options: FlushTimeout is negative (-1ns)
}

// A message above MaxMessageSize is refused and nothing is appended.
func ExampleQueue_Send_tooLarge() {
	dir, _ := os.MkdirTemp("", "zeroloss-example")
	defer os.RemoveAll(dir)
	q, _ := zeroloss.Open(dir, &zeroloss.Options{MaxMessageSize: 1024})
	defer q.Close()
	_, err := q.Send(context.Background(), &zeroloss.Message{ID: "big", Body: make([]byte, 4096)})
	fmt.Println(err)
	// Output: zeroloss: message "big" encodes to 4135 bytes, above MaxMessageSize 1024: message too large
}

// A consumer group receives every message; Ack after handling.
func ExampleConsumer_Receive() {
	dir, _ := os.MkdirTemp("", "zeroloss-example")
	defer os.RemoveAll(dir)
	q, _ := zeroloss.Open(dir, nil)
	defer q.Close()
	ctx := context.Background()
	q.Send(ctx, &zeroloss.Message{ID: "order-1", Body: []byte("paid")})

	c, _ := q.Consumer("billing", nil)
	d, err := c.Receive(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d.Message.ID, string(d.Message.Body), d.Attempt)
	if err := d.Ack(); err != nil { // durable before it returns
		fmt.Println(err)
	}
	// Output: order-1 paid 1
}
