package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// The server child is this program re-executed with serverCommand as its
// first argument and serverEnv=1 in its environment (a test binary's
// TestMain checks isServerChild too). It runs one nats-server until it is
// killed.
const (
	serverEnv     = "ZEROLOSS_LABJS_SERVER"
	serverCommand = "labjs-server"
)

// Exit statuses of serverMain. It never exits by itself while its parent
// lives: the parent kills it.
const (
	serverUsage    = 2 // bad arguments
	serverStart    = 3 // the server did not start
	serverDeadline = 5 // nobody killed it within --timeout
)

// readyTimeout bounds the start of a server: until it accepts connections,
// its streams recovered.
const readyTimeout = 30 * time.Second

// isServerChild reports whether this process is the server child: serverEnv
// is "1" and args (without the program name) start with serverCommand.
func isServerChild(args []string) bool {
	return os.Getenv(serverEnv) == "1" && len(args) > 0 && args[0] == serverCommand
}

// serverConfig is the configuration of the lab's nats-server: loopback, a
// random client port, JetStream with file storage in storeDir (fsync before
// every PubAck with syncAlways, else the default background sync), an
// account APP for the adapter and a system account SYS, through which the
// adapter checks the sync setting.
func serverConfig(storeDir string, syncAlways bool) string {
	sync := ""
	if syncAlways {
		sync = ", sync_interval: always"
	}
	return fmt.Sprintf(`server_name: labjs
listen: 127.0.0.1:-1
jetstream { store_dir: %q%s }
accounts {
  APP: { jetstream: enabled, users: [{user: app, password: app}] }
  SYS: { users: [{user: sys, password: sys}] }
}
system_account: SYS
`, storeDir, sync)
}

// startServer starts a nats-server in this process from the configuration
// file conf and waits until it accepts connections. Its store is recovered
// by then: JetStream restores its streams while the server starts.
func startServer(conf string) (*server.Server, error) {
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		return nil, err
	}
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats-server not ready within %v", readyTimeout)
	}
	return srv, nil
}

// serverMain is the child's side: it starts the server from --conf, prints
// "ready URL" on its stdout, and serves until it is killed. It exits when
// its stdin ends (the parent is gone), or after --timeout.
func serverMain(args []string) int {
	fs := flag.NewFlagSet(serverCommand, flag.ContinueOnError)
	conf := fs.String("conf", "", "nats-server configuration file")
	timeout := fs.Duration("timeout", 2*time.Minute, "exit if still alive after this long")
	if err := fs.Parse(args[1:]); err != nil || *conf == "" || fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: want --conf FILE [--timeout D]\n", serverCommand)
		return serverUsage
	}
	srv, err := startServer(*conf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", serverCommand, err)
		return serverStart
	}
	fmt.Printf("ready %s\n", srv.ClientURL())
	parentGone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(parentGone)
	}()
	select {
	case <-parentGone:
		srv.Shutdown()
		return 0
	case <-time.After(*timeout):
		fmt.Fprintf(os.Stderr, "%s: not killed within %v\n", serverCommand, *timeout)
		return serverDeadline
	}
}

// serverChild is a running server child, seen from the parent.
type serverChild struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	stderr *lockedBuffer
	url    string // the server's client URL
	done   chan struct{}
	err    error // cmd.Wait's, once done is closed
}

// startChild starts the server child of executable on the configuration
// file conf and waits for its "ready" line. The child lives at most
// lifetime.
func startChild(ctx context.Context, executable, conf string, lifetime time.Duration) (*serverChild, error) {
	cmd := exec.Command(executable, serverCommand, "--conf", conf, "--timeout", lifetime.String())
	cmd.Env = append(os.Environ(), serverEnv+"=1")
	c := &serverChild{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	c.stdin = stdin
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the server child: %w", err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		io.Copy(io.Discard, stdout)
	}()
	timer := time.NewTimer(readyTimeout + 5*time.Second)
	defer timer.Stop()
	select {
	case line := <-ready:
		url, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
		if ok && url != "" {
			c.url = url
			return c, nil
		}
		c.kill()
		return nil, fmt.Errorf("the server child did not start: %q (stderr: %q)", strings.TrimSpace(line), c.stderr.String())
	case <-timer.C:
		c.kill()
		return nil, fmt.Errorf("the server child was not ready within %v (stderr: %q)", readyTimeout, c.stderr.String())
	case <-ctx.Done():
		c.kill()
		return nil, ctx.Err()
	}
}

// kill kills the child with SIGKILL (TerminateProcess on Windows) and waits
// for it. It returns an error if the child had exited by itself before.
func (c *serverChild) kill() error {
	select {
	case <-c.done:
		return fmt.Errorf("the server child exited by itself: %v (stderr: %q)", c.err, c.stderr.String())
	default:
	}
	err := c.cmd.Process.Kill()
	<-c.done
	c.stdin.Close()
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing the server child: %w", err)
	}
	if c.cmd.ProcessState.Exited() {
		return fmt.Errorf("the server child exited by itself: %v (stderr: %q)", c.err, c.stderr.String())
	}
	return nil
}

// lockedBuffer collects a child's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 4<<10 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
