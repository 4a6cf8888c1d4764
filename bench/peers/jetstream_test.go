package peers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkJetStream runs NATS JetStream with the server embedded in the
// test process (nats-server/v2/server on a random loopback port, JetStream
// on, StoreDir in b.TempDir()) and a client connected over TCP loopback. The
// stream is one subject, file storage, one replica:
//
//	sync=default  the server's default: a stored message is written to its
//	              block file, and block files are fsynced every
//	              SyncInterval (2 minutes)
//	sync=always   server option SyncAlways (jetstream { sync_interval:
//	              always }): each message block write is fsynced before the
//	              store returns, so before the PubAck
//
// op=send publishes with JetStream.Publish, which waits for the PubAck;
// producers share one connection. op=consume+ack is one durable pull
// consumer (AckExplicit) read through Consumer.Messages, each message
// acknowledged with DoubleAck, which waits for the server to confirm it.
func BenchmarkJetStream(b *testing.B) {
	runPeer(b, jetstreamConfigs())
}

const (
	jsStream   = "BENCH"
	jsSubject  = "bench"
	jsConsumer = "bench"
)

func jetstreamConfigs() []config {
	var cs []config
	for _, always := range []bool{false, true} {
		name := "sync=default"
		if always {
			name = "sync=always"
		}
		cs = append(cs, config{
			name: name,
			open: func(_ testing.TB, dir string) (store, error) { return openJetStream(dir, always) },
		})
	}
	return cs
}

type jetstreamStore struct {
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	cons jetstream.Consumer
}

func openJetStream(dir string, syncAlways bool) (_ *jetstreamStore, err error) {
	srv, err := server.NewServer(&server.Options{
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		NoLog:      true,
		NoSigs:     true,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: syncAlways,
	})
	if err != nil {
		return nil, err
	}
	srv.Start()
	s := &jetstreamStore{srv: srv}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if !srv.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("nats-server not ready after 10s")
	}
	if s.nc, err = nats.Connect(srv.ClientURL()); err != nil {
		return nil, err
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err = s.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     jsStream,
		Subjects: []string{jsSubject},
		Storage:  jetstream.FileStorage,
		Replicas: 1,
	}); err != nil {
		return nil, err
	}
	s.cons, err = s.js.CreateOrUpdateConsumer(ctx, jsStream, jetstream.ConsumerConfig{
		Durable:   jsConsumer,
		AckPolicy: jetstream.AckExplicitPolicy,
		AckWait:   time.Hour,
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *jetstreamStore) Send(ctx context.Context, body []byte) error {
	_, err := s.js.Publish(ctx, jsSubject, body)
	return err
}

// Fill publishes n messages asynchronously, 1000 at a time, waiting for
// each round's PubAcks (the client stalls past 4000 outstanding).
func (s *jetstreamStore) Fill(ctx context.Context, body []byte, n int) error {
	futures := make([]jetstream.PubAckFuture, 0, 1000)
	for done := 0; done < n; done += len(futures) {
		futures = futures[:0]
		for range min(1000, n-done) {
			f, err := s.js.PublishAsync(jsSubject, body)
			if err != nil {
				return err
			}
			futures = append(futures, f)
		}
		for i, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("publish %d of %d: %w", done+i+1, n, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// Consume is ConsumeConcurrently with one consumer.
func (s *jetstreamStore) Consume(ctx context.Context, n, size int) error {
	return s.ConsumeConcurrently(ctx, n, size, 1)
}

// Held is the stream's last sequence less the durable consumer's ack floor
// (every message up to it acknowledged). The stream was created empty, so
// its last sequence is the number of messages it stored. (The consumer's
// NumPending is not used: it can trail the stream just after a publish.)
func (s *jetstreamStore) Held(ctx context.Context) (int, error) {
	stream, err := s.js.Stream(ctx, jsStream)
	if err != nil {
		return 0, err
	}
	sinfo, err := stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	cinfo, err := s.cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	if sinfo.State.Msgs != sinfo.State.LastSeq {
		return 0, fmt.Errorf("the stream holds %d messages up to seq %d", sinfo.State.Msgs, sinfo.State.LastSeq)
	}
	return int(sinfo.State.LastSeq - cinfo.AckFloor.Stream), nil
}

func (s *jetstreamStore) Close() error {
	if s.nc != nil {
		s.nc.Close()
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	return nil
}
