package record

import (
	"bytes"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the frame and message decoders: they
// must never panic, must stay within the input, and whatever decodes must
// encode back to the same bytes.
func FuzzDecode(f *testing.F) {
	m := Message{ID: "a", Key: "b", Headers: map[string]string{"c": "d"}, Body: []byte("e")}
	r := Record{Type: TypeMessage, Stream: 1, Epoch: 2, Seq: 3, Time: 4, Payload: AppendMessage(nil, &m)}
	frame := Append(nil, &r)
	f.Add(frame)
	f.Add(frame[:20])
	f.Add(make([]byte, 40))
	f.Add(append(bytes.Clone(frame), frame...))
	routed := Message{ID: "a", Topic: "orders", Tag: "paid", Body: []byte("e")}
	f.Add(AppendMessage(nil, &routed))
	routed.Topic = ""
	f.Add(AppendMessage(nil, &routed))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, n, err := Decode(data, 1<<20)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with n=%d", err, n)
			}
		} else {
			if n > len(data) || n < HeaderSize {
				t.Fatalf("bad size %d for %d bytes", n, len(data))
			}
			again := Append(nil, &rec)
			if !bytes.Equal(again, data[:n]) {
				t.Fatalf("re-encoding differs:\n got %x\nwant %x", again, data[:n])
			}
		}
		// The Reader must agree with Decode on the first frame.
		rd := NewReader(bytes.NewReader(data), 0, int64(len(data)), 1<<20)
		rrec, rerr := rd.Next()
		if (err == nil) != (rerr == nil) || (err == nil && rrec.Seq != rec.Seq) {
			t.Fatalf("Reader and Decode disagree: %v vs %v", rerr, err)
		}
		// Message payloads: decode, re-encode, decode again to the same value.
		msg, merr := DecodeMessage(data)
		if merr == nil {
			again := AppendMessage(nil, &msg)
			msg2, err := DecodeMessage(again)
			if err != nil {
				t.Fatalf("re-encoded message does not decode: %v", err)
			}
			if msg2.ID != msg.ID || msg2.Topic != msg.Topic || msg2.Tag != msg.Tag || msg2.Key != msg.Key || !bytes.Equal(msg2.Body, msg.Body) ||
				len(msg2.Headers) != len(msg.Headers) || !msg2.DeliverAt.Equal(msg.DeliverAt) {
				t.Fatalf("message round trip differs: %+v vs %+v", msg2, msg)
			}
			topic, tag, err := MessageRoute(data)
			if err != nil || string(topic) != msg.Topic || string(tag) != msg.Tag {
				t.Fatalf("MessageRoute %q %q %v, DecodeMessage %q %q", topic, tag, err, msg.Topic, msg.Tag)
			}
			if len(again) != MessageSize(&msg) {
				t.Fatalf("MessageSize %d, encoded %d", MessageSize(&msg), len(again))
			}
		}
	})
}
