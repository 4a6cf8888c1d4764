package jetstream_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// testServer is a nats-server running in the test process on loopback,
// with JetStream in the account APP and a system account SYS (for the sync
// check's VARZ request).
type testServer struct {
	name string
	conf string // config file
	port int    // client port, kept across restarts
	srv  *server.Server
}

// serverConfig is the config file of one server. syncAlways sets
// sync_interval: always; cluster, if not empty, is the cluster block.
func serverConfig(name, storeDir string, syncAlways bool, cluster string) string {
	sync := ""
	if syncAlways {
		sync = "sync_interval: always"
	}
	return fmt.Sprintf(`
server_name: %s
listen: 127.0.0.1:-1
jetstream { store_dir: %q, %s }
accounts {
  APP: { jetstream: enabled, users: [{user: app, password: app}] }
  SYS: { users: [{user: sys, password: sys}] }
}
system_account: SYS
%s
`, name, storeDir, sync, cluster)
}

// startServer writes conf to a file in dir and starts a server from it.
func startServer(t *testing.T, name, dir, conf string) *testServer {
	t.Helper()
	path := filepath.Join(dir, name+".conf")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	s := &testServer{name: name, conf: path}
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

func (s *testServer) start(t *testing.T) {
	t.Helper()
	opts, err := server.ProcessConfigFile(s.conf)
	require.NoError(t, err)
	opts.NoLog, opts.NoSigs = true, true
	if s.port != 0 {
		opts.Port = s.port // a restart: where the clients reconnect
	}
	srv, err := server.NewServer(opts)
	require.NoError(t, err)
	srv.Start()
	require.True(t, srv.ReadyForConnections(10*time.Second), "server %s not ready", s.name)
	s.srv = srv
	s.port = srv.Addr().(*net.TCPAddr).Port
}

// stop shuts the server down (a clean stop: its store is flushed).
func (s *testServer) stop() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
		s.srv = nil
	}
}

// connect returns a connection as user (app or sys) to the given servers.
func connect(t *testing.T, user string, servers ...*testServer) *nats.Conn {
	t.Helper()
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.srv.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.UserInfo(user, user),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// freePorts returns n TCP ports on loopback that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var listeners []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range listeners {
		l.Close()
	}
	return ports
}
