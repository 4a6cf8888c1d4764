package peers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkRedisStreams runs Redis Streams on a redis-server that the
// benchmark starts as a child process (a random loopback port, its files in
// b.TempDir(), no RDB snapshots) with the append-only file on:
//
//	appendfsync=always    the AOF is fsynced (fdatasync) before replies go out;
//	                      commands handled in one event-loop pass share it
//	appendfsync=everysec  Redis's default: a background thread fsyncs the
//	                      AOF about once a second; replies go out after write(2)
//
// op=send is XADD, each producer waiting for its reply (go-redis, one pooled
// connection per producer). op=consume+ack is one consumer of a consumer
// group doing XREADGROUP COUNT 1 then XACK per message. It skips when
// redis-server is not on PATH.
func BenchmarkRedisStreams(b *testing.B) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		b.Skip(redisMissing)
	}
	runPeer(b, redisConfigs())
}

const (
	redisMissing = "redis-server not installed: apt-get install redis-server"
	redisStream  = "bench"
	redisGroup   = "bench"
	redisField   = "b"
)

func redisConfigs() []config {
	var cs []config
	for _, fsync := range []string{"always", "everysec"} {
		cs = append(cs, config{
			name: "appendfsync=" + fsync,
			open: func(_ testing.TB, dir string) (store, error) { return openRedis(dir, fsync) },
		})
	}
	return cs
}

type redisStore struct {
	cmd     *exec.Cmd
	out     *lockedBuffer // the server's log, for errors
	done    chan struct{} // closed when the server has exited
	waitErr error         // its exit status, once done is closed
	rdb     *redis.Client
}

// lockedBuffer is a bytes.Buffer safe for the server's output goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func openRedis(dir, appendfsync string) (_ *redisStore, err error) {
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	s := &redisStore{out: &lockedBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command("redis-server",
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--dir", dir,
		"--daemonize", "no",
		"--save", "",
		"--appendonly", "yes",
		"--appendfsync", appendfsync,
		"--logfile", "",
	)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	defer func() {
		if err != nil {
			s.Close()
			err = fmt.Errorf("%w; redis-server said:\n%s", err, s.out.String())
		}
	}()
	s.rdb = redis.NewClient(&redis.Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), PoolSize: 32})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if err = s.rdb.Ping(ctx).Err(); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("redis-server not answering after 10s: %w", err)
		case <-s.done:
			return nil, fmt.Errorf("redis-server exited: %v", s.waitErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	// Check that the server runs with the AOF as configured.
	got, err := s.rdb.ConfigGet(ctx, "appendfsync").Result()
	if err != nil {
		return nil, err
	}
	if got["appendfsync"] != appendfsync {
		return nil, fmt.Errorf("appendfsync is %q, want %q", got["appendfsync"], appendfsync)
	}
	if err := s.rdb.XGroupCreateMkStream(ctx, redisStream, redisGroup, "0").Err(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *redisStore) Send(ctx context.Context, body []byte) error {
	return s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: redisStream, Values: []any{redisField, body}}).Err()
}

// Fill pipelines XADDs, 1000 per round trip.
func (s *redisStore) Fill(ctx context.Context, body []byte, n int) error {
	for done := 0; done < n; {
		k := min(1000, n-done)
		p := s.rdb.Pipeline()
		for range k {
			p.XAdd(ctx, &redis.XAddArgs{Stream: redisStream, Values: []any{redisField, body}})
		}
		if _, err := p.Exec(ctx); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// Consume is ConsumeConcurrently with one consumer.
func (s *redisStore) Consume(ctx context.Context, n, size int) error {
	return s.ConsumeConcurrently(ctx, n, size, 1)
}

// Held is what the group has not acknowledged: pending (delivered, not
// acked) plus lag (not delivered yet). Before any read the lag is XLEN.
func (s *redisStore) Held(ctx context.Context) (int, error) {
	groups, err := s.rdb.XInfoGroups(ctx, redisStream).Result()
	if err != nil {
		return 0, err
	}
	for _, g := range groups {
		if g.Name == redisGroup {
			if g.Lag < 0 {
				return 0, errors.New("redis cannot tell the group's lag")
			}
			return int(g.Pending + g.Lag), nil
		}
	}
	return 0, fmt.Errorf("group %q not found", redisGroup)
}

// Close stops the server with SIGTERM (it fsyncs the AOF and exits) and
// waits for it, killing it after 10s.
func (s *redisStore) Close() error {
	if s.rdb != nil {
		s.rdb.Close()
	}
	select {
	case <-s.done:
		return fmt.Errorf("redis-server had exited: %v\n%s", s.waitErr, s.out.String())
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-s.done:
		if s.waitErr != nil {
			return fmt.Errorf("redis-server: %w\n%s", s.waitErr, s.out.String())
		}
		return nil
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		return errors.New("redis-server did not stop within 10s of SIGTERM; killed")
	}
}
