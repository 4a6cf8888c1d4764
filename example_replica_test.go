package zeroloss_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"

	"github.com/zerolossmq/zeroloss"
)

// Replicate over TCP with mutual TLS. The follower listens (ListenFollower)
// and serves leader connections (ServeFollower); the leader, under
// ReplicateSync, dials it and dials again whenever the link fails
// (ReplicateTo), so SendOK means the message is durable on both machines.
// Once the follower stops, its directory opens as a queue (promotion).
func ExampleQueue_ReplicateTo() {
	ca, followerCert, leaderCert, err := examplePKI() // a throwaway CA and two certificates
	if err != nil {
		fmt.Println(err)
		return
	}

	// The follower: only a leader with a certificate from ca gets in.
	followerDir, _ := os.MkdirTemp("", "zeroloss-follower")
	defer os.RemoveAll(followerDir)
	ln, err := zeroloss.ListenFollower("tcp:127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{followerCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca,
		MinVersion:   tls.VersionTLS13,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	followerCtx, stopFollower := context.WithCancel(context.Background())
	defer stopFollower()
	served := make(chan error, 1)
	go func() { served <- zeroloss.ServeFollower(followerCtx, followerDir, ln, nil) }()

	// The leader.
	leaderDir, _ := os.MkdirTemp("", "zeroloss-leader")
	defer os.RemoveAll(leaderDir)
	q, err := zeroloss.Open(leaderDir, &zeroloss.Options{Replication: zeroloss.ReplicateSync})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer q.Close()
	r, err := q.ReplicateTo("tcp:"+ln.Addr().String(), &tls.Config{
		Certificates: []tls.Certificate{leaderCert},
		RootCAs:      ca,
		MinVersion:   tls.VersionTLS13,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.WaitAttached(ctx); err != nil {
		fmt.Println(err)
		return
	}

	res, err := q.Send(ctx, &zeroloss.Message{ID: "order-42", Body: []byte("paid")})
	if err != nil {
		fmt.Println("not appended:", err)
		return
	}
	fmt.Println("leader:", res.Status, "replica lag:", q.Stats().ReplicaLag)

	// Failover: the leader is gone, the follower stops and is promoted.
	r.Close()
	q.Close()
	stopFollower()
	<-served
	promoted, err := zeroloss.Open(followerDir, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer promoted.Close()
	c, err := promoted.Consumer("billing", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	d, err := c.Receive(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("promoted follower:", d.Message.ID, string(d.Message.Body))
	// Output:
	// leader: SendOK replica lag: 0
	// promoted follower: order-42 paid
}

// examplePKI makes a certificate authority, a server certificate for
// 127.0.0.1 (the follower's) and a client certificate (the leader's).
func examplePKI() (ca *x509.CertPool, follower, leader tls.Certificate, err error) {
	newCert := func(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		if parent == nil {
			parent, parentKey = tmpl, key // self-signed
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			return nil, nil, err
		}
		cert, err := x509.ParseCertificate(der)
		return cert, key, err
	}
	tmpl := func(serial int64, name string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature}
	}
	caTmpl := tmpl(1, "example CA")
	caTmpl.KeyUsage, caTmpl.IsCA, caTmpl.BasicConstraintsValid = x509.KeyUsageCertSign, true, true
	caCert, caKey, err := newCert(caTmpl, nil, nil)
	if err != nil {
		return nil, follower, leader, err
	}
	followerTmpl := tmpl(2, "follower")
	followerTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	followerTmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	leaderTmpl := tmpl(3, "leader")
	leaderTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	for _, c := range []struct {
		tmpl *x509.Certificate
		out  *tls.Certificate
	}{{followerTmpl, &follower}, {leaderTmpl, &leader}} {
		cert, key, err := newCert(c.tmpl, caCert, caKey)
		if err != nil {
			return nil, follower, leader, err
		}
		*c.out = tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	}
	ca = x509.NewCertPool()
	ca.AddCert(caCert)
	return ca, follower, leader, nil
}
