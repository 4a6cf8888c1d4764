package prometheus_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/zerolossmq/zeroloss"
	zlprom "github.com/zerolossmq/zeroloss/prometheus"
)

// Serve a queue's metrics on /metrics. The example calls the handler
// directly; a program would pass mux to http.ListenAndServe.
func Example() {
	dir, err := os.MkdirTemp("", "zeroloss-metrics")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	q, err := zeroloss.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(zlprom.NewCollector(q, prometheus.Labels{"queue": "orders"}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	if _, err := q.Send(context.Background(), &zeroloss.Message{Body: []byte("hello")}); err != nil {
		log.Fatal(err)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	lines := bufio.NewScanner(rec.Body)
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), "zeroloss_messages_total") {
			fmt.Println(lines.Text())
		}
	}
	// Output:
	// zeroloss_messages_total{queue="orders"} 1
}
