// Package natsutil holds the small NATS helpers every samdiffsr role shares: an
// embedded nats-server with JetStream, client connections with the configured
// credentials and TLS, and the subject, stream and bucket names derived from a job.
package natsutil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/samdiffsr/samdiffsr/configs"
)

// Names are the NATS subjects, stream and buckets of one job.
type Names struct {
	// Job is the job name the others derive from.
	Job string
}

// NamesFor returns the names of job.
func NamesFor(job string) Names { return Names{Job: job} }

func (n Names) prefix() string { return "samdiffsr." + n.Job }

// TaskStream is the JetStream work-queue stream holding mask tasks.
func (n Names) TaskStream() string {
	return "SAMDIFFSR_" + strings.ToUpper(strings.ReplaceAll(n.Job, "-", "_")) + "_TASKS"
}

// MaskSubject is the subject mask tasks are published on.
func (n Names) MaskSubject() string { return n.prefix() + ".tasks.mask" }

// TaskSubjects is the stream's subject filter.
func (n Names) TaskSubjects() string { return n.prefix() + ".tasks.>" }

// MaskConsumer is the durable pull consumer every mask worker shares.
func (n Names) MaskConsumer() string { return "mask-workers" }

// MaskBucket is the Object Store bucket holding the job's label maps (key: image SHA-256).
func (n Names) MaskBucket() string { return "samdiffsr-masks-" + n.Job }

// Coord is the subject of a coordinator request kind ("status", "lease", "report", ...).
// Requests that change state are answered only by the raft leader.
func (n Names) Coord(kind string) string { return n.prefix() + ".coord." + kind }

// CoordNode is the subject of a request addressed to one coordinator voter.
func (n Names) CoordNode(id, kind string) string {
	return n.prefix() + ".coord.node." + id + "." + kind
}

// EmbeddedOptions configure an embedded nats-server.
type EmbeddedOptions struct {
	// NATS holds credentials, TLS files and Listen (empty: in-process connections only).
	NATS configs.NATS
	// StoreDir is the JetStream directory (required).
	StoreDir string
	// Log receives server start-up errors; nil discards.
	Log *slog.Logger
}

// StartEmbedded starts an in-process nats-server with JetStream on opts.StoreDir. It
// listens on a TCP address only when opts.NATS.Listen is set ("127.0.0.1:4222"; port 0
// or -1 picks a free one); a host is required so that nothing binds 0.0.0.0 by accident.
// Clients must present the configured credentials.
func StartEmbedded(ctx context.Context, opts EmbeddedOptions) (*server.Server, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("natsutil: embedded NATS needs a JetStream store dir (cluster.nats.store_dir)")
	}
	c := opts.NATS
	so := &server.Options{
		ServerName: "samdiffsr-embedded",
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 1 << 20,
	}
	if c.Listen == "" {
		so.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("natsutil: cluster.nats.listen %q: %w (use HOST:PORT, e.g. 127.0.0.1:4222)", c.Listen, err)
		}
		if host == "" {
			return nil, fmt.Errorf("natsutil: cluster.nats.listen %q has no host; name one (127.0.0.1, or 0.0.0.0 to listen everywhere on purpose)", c.Listen)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("natsutil: cluster.nats.listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		so.Host, so.Port = host, p
	}
	switch {
	case c.Token != "":
		so.Authorization = c.Token
	case c.User != "":
		so.Username, so.Password = c.User, c.Password
	}
	var nkeyUsers []*server.NkeyUser
	for _, pub := range c.NKeys {
		nkeyUsers = append(nkeyUsers, &server.NkeyUser{Nkey: pub})
	}
	if c.NKeySeedFile != "" {
		pub, err := PublicKeyFromSeedFile(c.NKeySeedFile)
		if err != nil {
			return nil, err
		}
		nkeyUsers = append(nkeyUsers, &server.NkeyUser{Nkey: pub})
	}
	if len(nkeyUsers) > 0 {
		if so.Username != "" || so.Authorization != "" {
			return nil, errors.New("natsutil: use nkeys or user/password/token for the embedded server, not both")
		}
		so.Nkeys = nkeyUsers
	}
	if c.TLSCert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: c.TLSCert, KeyFile: c.TLSKey, CaFile: c.TLSCA, Verify: c.TLSCA != ""})
		if err != nil {
			return nil, fmt.Errorf("natsutil: TLS for the embedded server (cluster.nats.tls_cert/tls_key/tls_ca): %w", err)
		}
		so.TLSConfig = tc
		so.TLS = true
		so.TLSVerify = c.TLSCA != ""
		so.TLSTimeout = 5
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("natsutil: embedded NATS: %w", err)
	}
	go srv.Start()
	deadline := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	if !srv.ReadyForConnections(deadline) {
		srv.Shutdown()
		return nil, fmt.Errorf("natsutil: embedded NATS (JetStream in %s) not ready within %s", opts.StoreDir, deadline)
	}
	return srv, nil
}

// ClientURL is the URL a separate process uses to reach srv ("" when it does not listen).
func ClientURL(srv *server.Server) string {
	if srv.Addr() == nil {
		return ""
	}
	return srv.ClientURL()
}

// PublicKeyFromSeedFile returns the public user nkey of the seed stored in file.
func PublicKeyFromSeedFile(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("natsutil: read nkey seed (cluster.nats.nkey_seed_file): %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return "", fmt.Errorf("natsutil: parse nkey seed %s: %w", file, err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", fmt.Errorf("natsutil: nkey public key of %s: %w", file, err)
	}
	return pub, nil
}

// ClientOptions are the credential and TLS options for a client of c.
func ClientOptions(c configs.NATS) ([]nats.Option, error) { return clientOptions(c, true) }

// clientOptions is ClientOptions, without TLS when useTLS is false (in-process
// connections: no network to protect, and the server does not require it there).
func clientOptions(c configs.NATS, useTLS bool) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("natsutil: nkey seed %s: %w", c.NKeySeedFile, err)
		}
		opts = append(opts, o)
	}
	if !useTLS {
		return opts, nil
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" && c.TLSKey != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts, nil
}

// Connect opens a client connection named name: in-process to srv when srv is not nil,
// otherwise to c.URL. It reconnects forever after a successful first connection, so a
// restarted server is picked up again.
func Connect(ctx context.Context, c configs.NATS, srv *server.Server, name string) (*nats.Conn, error) {
	opts, err := clientOptions(c, srv == nil)
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond), nats.Timeout(5*time.Second))
	url := c.URL
	if srv != nil {
		opts = append(opts, nats.InProcessServer(srv))
		url = ""
	} else if url == "" {
		return nil, errors.New("natsutil: no NATS URL (set cluster.nats.url or --nats)")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsutil: connect to NATS %s as %s: %w", redact(url), name, err)
	}
	return nc, nil
}

// redact hides a password in a URL of the form nats://user:pass@host.
func redact(u string) string {
	if at := strings.LastIndex(u, "@"); at >= 0 {
		if i := strings.Index(u, "://"); i >= 0 && i < at {
			return u[:i+3] + "***" + u[at:]
		}
	}
	return u
}
