package zeroloss

import (
	"bufio"
	"fmt"
	"io"

	"github.com/zerolossmq/zeroloss/internal/repl"
)

// fakeFollowerHandshake does a follower's side of the handshake on link
// with key: the hello, the leader's auth, then pos (its proof computed
// here). It does not read the welcome.
func fakeFollowerHandshake(link io.Writer, br *bufio.Reader, key []byte, pos repl.Position) error {
	nonce, err := repl.NewNonce()
	if err != nil {
		return err
	}
	if err := repl.WriteMessage(link, &repl.Message{Type: repl.TypeHello, Hello: repl.Hello{Version: repl.Version, Nonce: nonce}}); err != nil {
		return err
	}
	m, err := repl.ReadMessage(br, repl.ControlBody)
	if err == nil {
		err = repl.Expect(&m, repl.TypeAuth)
	}
	if err != nil {
		return err
	}
	pos.MAC = repl.FollowerMAC(key, nonce, &m.Auth, &pos)
	return repl.WriteMessage(link, &repl.Message{Type: repl.TypePosition, Position: pos})
}

// fakeLeaderHandshake does a leader's side of the handshake on link with
// key, as queue at epoch: it reads the hello, sends its auth and returns the
// follower's position (its proof checked). It does not send the welcome.
func fakeLeaderHandshake(link io.Writer, br *bufio.Reader, key []byte, queue queueID, epoch repl.Epoch) (repl.Position, error) {
	m, err := repl.ReadMessage(br, repl.ControlBody)
	if err == nil {
		err = repl.Expect(&m, repl.TypeHello)
	}
	if err != nil {
		return repl.Position{}, err
	}
	nonce, err := repl.NewNonce()
	if err != nil {
		return repl.Position{}, err
	}
	auth := repl.Auth{Version: repl.Version, Queue: queue, Nonce: nonce, Epoch: epoch}
	auth.MAC = repl.LeaderMAC(key, m.Hello.Nonce, &auth)
	if err := repl.WriteMessage(link, &repl.Message{Type: repl.TypeAuth, Auth: auth}); err != nil {
		return repl.Position{}, err
	}
	p, err := repl.ReadMessage(br, repl.ControlBody)
	if err == nil {
		err = repl.Expect(&p, repl.TypePosition)
	}
	if err != nil {
		return repl.Position{}, err
	}
	if !repl.VerifyFollower(key, m.Hello.Nonce, &auth, &p.Position) {
		return repl.Position{}, fmt.Errorf("the follower's proof does not verify")
	}
	return p.Position, nil
}
