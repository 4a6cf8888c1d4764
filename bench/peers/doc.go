// Package peers benchmarks other embedded and local queues (tidwall/wal,
// go-diskqueue, dque, goque, goqite, NATS JetStream, Redis Streams) on the
// workloads of zeroloss's own benchmarks in bench/, next to zeroloss and a
// raw write+fdatasync loop, so their figures read as ratios in one run. It is
// a separate module, outside the main module's go test ./...; everything is
// in the _test.go files. See README.md for the workloads, how to run them
// (run.sh, ratios.sh, fsyncs.sh), what each peer's acknowledgement
// guarantees, and measured figures.
package peers
