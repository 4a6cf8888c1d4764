// Command example serves a live zeroloss queue's metrics over HTTP for
// Prometheus to scrape, while a small workload runs on it: a producer sends
// to topics "orders" (tagged eu or us) and "audit"; group "billing" reads
// orders and fails one message in seven (each such message is delivered
// twice and then dead-lettered), group "audit-log" reads audit and acks
// everything.
//
//	go run ./example -addr 127.0.0.1:2112 -dir /tmp/zl-example
//	curl -s 127.0.0.1:2112/metrics | grep ^zeroloss_
//
// Point a Prometheus scrape job at the address; prometheus/README.md lists
// the metrics and queries worth graphing. Ctrl-C stops it gracefully: the
// HTTP server shuts down, the workload stops, the queue closes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/zerolossmq/zeroloss"
	zlprom "github.com/zerolossmq/zeroloss/prometheus"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2112", "address to serve /metrics on")
	dir := flag.String("dir", "", "queue directory (default: a new temporary one, removed on exit)")
	rate := flag.Int("rate", 50, "messages sent per second")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *dir == "" {
		tmp, err := os.MkdirTemp("", "zeroloss-example")
		if err != nil {
			logger.Error("temporary directory", "error", err)
			os.Exit(1)
		}
		defer os.RemoveAll(tmp)
		*dir = tmp
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err := run(ctx, *dir, *addr, *rate, func(a net.Addr) {
		logger.Info("serving metrics", "url", fmt.Sprintf("http://%s/metrics", a), "dir", *dir)
	})
	if err != nil {
		logger.Error("example", "error", err)
		os.Exit(1)
	}
}

// run opens the queue in dir, serves its metrics on addr (listening is
// told the address once it listens), and runs the workload at rate messages
// per second until ctx ends; then it shuts everything down in order.
func run(ctx context.Context, dir, addr string, rate int, listening func(net.Addr)) error {
	q, err := zeroloss.Open(dir, nil)
	if err != nil {
		return err
	}
	defer q.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(zlprom.NewCollector(q, prometheus.Labels{"queue": "example"}))
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	listening(listener.Addr())

	work, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { produce(work, q, rate) })
	billing, err := q.Consumer("billing", &zeroloss.ConsumerOptions{Topic: "orders", MaxDeliveries: 2, Backoff: []time.Duration{time.Second}})
	if err != nil {
		stopWork()
		return err
	}
	audit, err := q.Consumer("audit-log", &zeroloss.ConsumerOptions{Topic: "audit"})
	if err != nil {
		stopWork()
		return err
	}
	wg.Go(func() { consume(work, "billing", billing, 7) })
	wg.Go(func() { consume(work, "audit-log", audit, 0) })

	select {
	case <-ctx.Done():
	case err = <-served:
	}
	stopWork()
	wg.Wait()
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := server.Shutdown(shutdown); err == nil && serr != nil {
		err = serr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if cerr := q.Close(); err == nil {
		err = cerr
	}
	return err
}

// produce sends rate messages a second until ctx ends: orders tagged eu or
// us, and one audit message for every four orders.
func produce(ctx context.Context, q *zeroloss.Queue, rate int) {
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		m := &zeroloss.Message{Topic: "orders", Tag: "eu", Body: fmt.Appendf(nil, "order %d", i)}
		switch {
		case i%5 == 4:
			m = &zeroloss.Message{Topic: "audit", Body: fmt.Appendf(nil, "audit %d", i)}
		case i%2 == 1:
			m.Tag = "us"
		}
		if _, err := q.Send(ctx, m); err != nil && ctx.Err() == nil {
			slog.Warn("send", "error", err)
		}
	}
}

// consume acks what c (of group) delivers, but for every failEvery-th message (0:
// none), which it nacks on every delivery until it is dead-lettered.
func consume(ctx context.Context, group string, c *zeroloss.Consumer, failEvery int) {
	defer c.Close()
	for {
		d, err := c.Receive(ctx)
		if err != nil {
			return // ctx ended, or the queue closed
		}
		if failEvery > 0 && d.Seq%uint64(failEvery) == 0 {
			err = d.Nack(0)
		} else {
			err = d.Ack()
		}
		if err != nil && ctx.Err() == nil {
			slog.Warn("ack", "group", group, "error", err)
		}
	}
}
