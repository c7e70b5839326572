package collective

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/samdiffsr/samdiffsr/configs"
)

// Transport is the Listen/Dial seam between the ring and the network, in the
// manner of hashicorp/raft's StreamLayer: [TCP] in deployments, [Mem] in tests.
type Transport interface {
	// Listen opens a listener on addr.
	Listen(addr string) (net.Listener, error)
	// Dial connects to addr; it gives up when ctx is done.
	Dial(ctx context.Context, addr string) (net.Conn, error)
}

// socketBuffer is the kernel send and receive buffer size asked for on every TCP
// connection of a ring (the kernel may cap it at net.core.[rw]mem_max).
const socketBuffer = 4 << 20

// TCP returns the TCP transport. With non-nil configs, connections are TLS:
// tlsServer for accepted connections, tlsClient for dialed ones (its ServerName
// defaults to the dialed host). Nil configs give plain TCP.
func TCP(tlsServer, tlsClient *tls.Config) Transport {
	return &tcpTransport{server: tlsServer, client: tlsClient}
}

type tcpTransport struct {
	server, client *tls.Config
}

func (t *tcpTransport) Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("collective: listen on %s: %w", addr, err)
	}
	return &tcpListener{Listener: ln, tls: t.server}, nil
}

func (t *tcpTransport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("collective: dial %s: %w", addr, err)
	}
	tune(c)
	if t.client == nil {
		return c, nil
	}
	cfg := t.client
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg.ServerName = host
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("collective: TLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}

// tcpListener tunes accepted connections and wraps them in TLS when configured.
// The TLS handshake of an accepted connection runs on its first read, under the
// deadline the endpoint sets for the ring handshake.
type tcpListener struct {
	net.Listener
	tls *tls.Config
}

func (l *tcpListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tune(c)
	if l.tls != nil {
		return tls.Server(c, l.tls), nil
	}
	return c, nil
}

// tune asks for large socket buffers; bulk transfers need no Nagle either way,
// and Go sets TCP_NODELAY by default.
func tune(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(socketBuffer)
		_ = tc.SetWriteBuffer(socketBuffer)
	}
}

// TLSFromConfig builds the server and client TLS configurations of the ring from
// the cluster's NATS TLS files (cluster.nats.tls_cert, tls_key, tls_ca): every
// rank both accepts and dials, so it presents the same certificate either way.
// With tls_ca set, peers' certificates are verified against it on both sides
// (mutual TLS); without it the client verifies the server against the system
// roots. All three empty gives nil, nil, nil (plain TCP).
func TLSFromConfig(c configs.NATS) (server, client *tls.Config, err error) {
	if c.TLSCert == "" && c.TLSKey == "" && c.TLSCA == "" {
		return nil, nil, nil
	}
	switch {
	case c.TLSCert == "":
		return nil, nil, errors.New("collective: cluster.nats.tls_cert is empty but tls_key or tls_ca is set: a ring needs a certificate and key on every rank")
	case c.TLSKey == "":
		return nil, nil, fmt.Errorf("collective: cluster.nats.tls_key is empty but tls_cert is set (%s): set the key file too", c.TLSCert)
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, nil, fmt.Errorf("collective: cluster.nats.tls_cert %s / tls_key %s: %w", c.TLSCert, c.TLSKey, err)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, nil, fmt.Errorf("collective: cluster.nats.tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("collective: cluster.nats.tls_ca %s holds no PEM certificate", c.TLSCA)
		}
		server.ClientCAs = pool
		server.ClientAuth = tls.RequireAndVerifyClientCert
		client.RootCAs = pool
	}
	return server, client, nil
}
