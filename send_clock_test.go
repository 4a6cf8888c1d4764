package zeroloss

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zerolossmq/zeroloss/internal/record"
	"github.com/zerolossmq/zeroloss/internal/vfs"
)

// TestRecordsCarryTheSendTime checks the time a message's record carries:
// with the real clock, the reading that also times the Send (taken when the
// call begins); with a test's clock, that clock's time, for Send and
// SendBatch, with and without a caller-set ID.
func TestRecordsCarryTheSendTime(t *testing.T) {
	for _, fake := range []bool{false, true} {
		for _, batch := range []bool{false, true} {
			for _, id := range []string{"", "m1"} {
				name := map[bool]string{false: "clock=real", true: "clock=fake"}[fake] +
					map[bool]string{false: "/send", true: "/batch"}[batch] +
					map[string]string{"": "/id=generated", "m1": "/id=set"}[id]
				t.Run(name, func(t *testing.T) {
					opts := &Options{fs: vfs.NewMem()}
					clock := newFakeClock()
					clock.Advance(-24 * time.Hour) // a day before the real clock: a mix-up shows
					if fake {
						opts.now = clock.Now
					}
					q, err := Open("/q", opts)
					require.NoError(t, err)
					defer q.Close()
					before := time.Now()
					m := &Message{ID: id, Body: []byte("x")}
					if batch {
						_, err = q.SendBatch(context.Background(), []*Message{m})
					} else {
						_, err = q.Send(context.Background(), m)
					}
					require.NoError(t, err)
					after := time.Now()

					r := q.log.NewUncappedReader(1)
					defer r.Close()
					var got int64
					for {
						rec, err := r.Next()
						require.NoError(t, err)
						if rec.Type == record.TypeMessage && rec.Stream == 0 {
							got = rec.Time
							break
						}
					}
					if fake {
						require.Equal(t, clock.Now().UnixNano(), got)
					} else {
						require.GreaterOrEqual(t, got, before.UnixNano())
						require.LessOrEqual(t, got, after.UnixNano())
					}
				})
			}
		}
	}
}

func TestMakeID(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		n      uint64
		want   string
	}{
		{"0123456789abcdef-", 1, "0123456789abcdef-1"},
		{"p-", 35, "p-z"},
		{"p-", 36, "p-10"},
		{"", 1<<64 - 1, "3w5e11264sgsf"},
		{string(make([]byte, 60)), 7, string(make([]byte, 60)) + "7"}, // longer than the stack buffer
	} {
		t.Run(tc.want[max(len(tc.want)-8, 0):], func(t *testing.T) {
			require.Equal(t, tc.want, makeID(tc.prefix, tc.n))
		})
	}
}
