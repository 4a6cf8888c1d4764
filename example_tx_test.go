package zeroloss_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/zerolossmq/zeroloss"
)

// The reference write-up's order-payment case: the "order paid" message must
// go out iff the order row says paid. The order is written in the local
// transaction; while the payment is pending its state is unknown, and the
// queue checks back (TxChecker) until the order is paid. TxCheckMax bounds
// how long the payment may take before the message is rolled back.
func ExampleQueue_SendInTransaction() {
	dir, _ := os.MkdirTemp("", "zeroloss-tx-example")
	defer os.RemoveAll(dir)

	// The application's own database, reduced to a map: order → status.
	var mu sync.Mutex
	orders := map[string]string{}
	orderStatus := func(id string) string { mu.Lock(); defer mu.Unlock(); return orders[id] }
	setOrder := func(id, status string) { mu.Lock(); defer mu.Unlock(); orders[id] = status }

	q, err := zeroloss.Open(dir, &zeroloss.Options{
		// Asked about a half message whose local transaction said unknown.
		TxChecker: func(ctx context.Context, m *zeroloss.Message) zeroloss.TxState {
			switch orderStatus(m.ID) {
			case "paid":
				return zeroloss.TxCommit
			case "cancelled", "":
				return zeroloss.TxRollback
			}
			return zeroloss.TxUnknown // payment still pending: ask again later
		},
		TxTimeout:       10 * time.Millisecond, // defaults: 6s, 60s and 15 checks
		TxCheckInterval: 10 * time.Millisecond,
		TxCheckMax:      100,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer q.Close()
	c, _ := q.Consumer("shipping", nil)

	_, state, err := q.SendInTransaction(context.Background(),
		&zeroloss.Message{ID: "order-42", Body: []byte("order 42 paid")},
		func(ctx context.Context) zeroloss.TxState {
			setOrder("order-42", "payment-pending") // the local transaction commits the order row
			return zeroloss.TxUnknown               // but the payment is not confirmed yet
		})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("after the local transaction:", state)

	setOrder("order-42", "paid") // the payment provider calls back
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := c.Receive(ctx) // the checker commits it
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("shipping received:", string(d.Message.Body))
	_ = d.Ack()
	// Output:
	// after the local transaction: unknown
	// shipping received: order 42 paid
}
