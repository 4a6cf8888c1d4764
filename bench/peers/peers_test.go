package peers

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// allPeers lists every peer's configurations under its benchmark's name.
func allPeers() []struct {
	name    string
	configs []config
} {
	return []struct {
		name    string
		configs []config
	}{
		{"Zeroloss", zerolossConfigs()},
		{"TidwallWAL", walConfigs()},
		{"Diskqueue", diskqueueConfigs()},
		{"Dque", dqueConfigs()},
		{"Goque", goqueConfigs()},
		{"Goqite", goqiteConfigs()},
		{"JetStream", jetstreamConfigs()},
		{"RedisStreams", redisConfigs()},
	}
}

// TestPeersSmoke checks the wiring of every peer configuration on 100
// messages: Send from 4 producers, Held, Consume, Held again; then the same
// with Fill instead of Send. Redis skips when redis-server is not installed.
func TestPeersSmoke(t *testing.T) {
	const n, size = 100, 1 << 10
	body := filledBody(size)
	for _, p := range allPeers() {
		for _, c := range p.configs {
			t.Run(p.name+"/"+c.name, func(t *testing.T) {
				if p.name == "RedisStreams" {
					if _, err := exec.LookPath("redis-server"); err != nil {
						t.Skip(redisMissing)
					}
				}
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()

				s := openStore(t, c.open)
				if err := produce(ctx, n, 4, func() error { return s.Send(ctx, body) }); err != nil {
					t.Fatalf("send: %v", err)
				}
				checkHeld(t, s, n)
				if err := s.Consume(ctx, n, size); err != nil {
					t.Fatalf("consume: %v", err)
				}
				checkHeld(t, s, 0)

				s = openStore(t, c.open)
				if err := s.Fill(ctx, body, n); err != nil {
					t.Fatalf("fill: %v", err)
				}
				checkHeld(t, s, n)
				if err := s.Consume(ctx, n, size); err != nil {
					t.Fatalf("consume after fill: %v", err)
				}
				checkHeld(t, s, 0)
			})
		}
	}
	t.Run("TidwallWAL/sync=batch", func(t *testing.T) {
		s := openStore(t, func(_ testing.TB, dir string) (store, error) { return openWAL(dir) }).(*walStore)
		if err := s.fillBatches(body, n, 64); err != nil {
			t.Fatal(err)
		}
		checkHeld(t, s, n)
	})
}

// TestShare checks that share splits every total evenly and completely.
func TestShare(t *testing.T) {
	for _, tc := range []struct{ total, producers int }{{0, 1}, {1, 16}, {100, 1}, {100, 16}, {7, 3}} {
		sum, lo, hi := 0, tc.total, 0
		for p := range tc.producers {
			k := share(tc.total, tc.producers, p)
			sum += k
			lo, hi = min(lo, k), max(hi, k)
		}
		if sum != tc.total || hi-lo > 1 {
			t.Errorf("total=%d producers=%d: sum %d, spread %d", tc.total, tc.producers, sum, hi-lo)
		}
	}
}
