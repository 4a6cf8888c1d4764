package conformance

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss"
)

// CheckSendOK checks what a SendOK promises, whatever the backend's
// configuration: every message Send or SendBatch confirmed with SendOK is
// kept until it is delivered, to a group created after it was sent and to a
// second group created after the first acked it, and a resend of its ID
// after wait (which must be within the backend's dedup window) is answered
// as a duplicate at the same seq.
//
// A message confirmed with another status, or not confirmed, may be
// missing: a backend whose configuration is weaker than its SendOK passes by
// saying so in the status, or by refusing to open, which its own test
// checks. wait lets time-based limits (a maximum age, a short dedup window)
// act before the messages are read. The Run suite calls it with no wait;
// the JetStream adapter's tests call it on streams with each setting that
// can make a PubAck mean less than stored.
func CheckSendOK(t *testing.T, b zeroloss.Backend, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	confirmed := map[string]uint64{} // ID → seq of the messages confirmed with SendOK
	record := func(res zeroloss.SendResult, err error) {
		if err != nil {
			t.Logf("not confirmed: %v", err)
			return
		}
		if res.Status == zeroloss.SendOK {
			confirmed[res.ID] = res.Seq
		} else {
			t.Logf("%s at seq %d: %v", res.ID, res.Seq, res.Status)
		}
	}
	for i := 1; i <= 3; i++ {
		record(b.Send(ctx, &zeroloss.Message{ID: fmt.Sprintf("kept-%d", i), Body: []byte("x")}))
	}
	results, err := b.SendBatch(ctx, []*zeroloss.Message{
		{ID: "kept-4", Body: []byte("y")}, {ID: "kept-5", Body: []byte("z")},
	})
	for _, res := range results {
		record(res, nil)
	}
	if err != nil {
		t.Logf("batch: %d of 2 confirmed: %v", len(results), err)
	}
	if len(confirmed) == 0 {
		return // nothing promised
	}
	if wait > 0 {
		<-time.After(wait) // let the backend's time limits act
	}
	for id, seq := range confirmed {
		res, err := b.Send(ctx, &zeroloss.Message{ID: id, Body: []byte("resent")})
		if err != nil {
			continue // stored nothing, as a duplicate must
		}
		assert.True(t, res.Duplicate, "%s (seq %d) resent after %v: stored again at seq %d", id, seq, wait, res.Seq)
		if res.Duplicate {
			assert.Equal(t, seq, res.Seq, "%s resent: a duplicate answers the original's seq", id)
		}
	}
	for _, group := range []string{"kept-first", "kept-second"} {
		s, err := b.Consumer(group, options(5))
		require.NoError(t, err, "a group created after SendOK must receive the message")
		missing := map[string]uint64{}
		for id, seq := range confirmed {
			missing[id] = seq
		}
		for len(missing) > 0 {
			rctx, rcancel := context.WithTimeout(context.Background(), quiet)
			d, err := s.Receive(rctx)
			rcancel()
			if errors.Is(err, context.DeadlineExceeded) {
				break
			}
			require.NoError(t, err)
			info := d
			if seq, ok := missing[info.Message.ID]; ok {
				assert.Equal(t, seq, info.Seq, "%s delivered at another seq than its SendOK named", info.Message.ID)
				delete(missing, info.Message.ID)
			}
			require.NoError(t, d.Ack())
		}
		for id, seq := range missing {
			t.Errorf("%s confirmed with SendOK at seq %d, not delivered to the group %s", id, seq, group)
		}
	}
}
