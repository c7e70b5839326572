package natsutil

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/samdiffsr/samdiffsr/configs"
)

func start(t *testing.T, c configs.NATS) string {
	t.Helper()
	srv, err := StartEmbedded(context.Background(), EmbeddedOptions{NATS: c, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return ClientURL(srv)
}

func TestEmbeddedListensOnlyWhenAsked(t *testing.T) {
	if u := start(t, configs.NATS{}); u != "" {
		t.Errorf("embedded server without cluster.nats.listen listens on %s", u)
	}
	u := start(t, configs.NATS{Listen: "127.0.0.1:0"})
	if !strings.HasPrefix(u, "nats://127.0.0.1:") {
		t.Errorf("client URL %q, want a loopback listener", u)
	}
	if _, err := StartEmbedded(context.Background(), EmbeddedOptions{NATS: configs.NATS{Listen: ":4222"}, StoreDir: t.TempDir()}); err == nil {
		t.Errorf("listen address without a host accepted (it would bind every interface)")
	}
}

func TestCredentials(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherFile := filepath.Join(t.TempDir(), "other.nk")
	os.WriteFile(otherFile, otherSeed, 0o600)

	cases := []struct {
		name   string
		server configs.NATS
		client configs.NATS
		ok     bool
	}{
		{"token ok", configs.NATS{Token: "t0k"}, configs.NATS{Token: "t0k"}, true},
		{"token wrong", configs.NATS{Token: "t0k"}, configs.NATS{Token: "nope"}, false},
		{"token missing", configs.NATS{Token: "t0k"}, configs.NATS{}, false},
		{"user ok", configs.NATS{User: "u", Password: "p"}, configs.NATS{User: "u", Password: "p"}, true},
		{"user wrong password", configs.NATS{User: "u", Password: "p"}, configs.NATS{User: "u", Password: "x"}, false},
		{"nkey ok", configs.NATS{NKeySeedFile: seedFile}, configs.NATS{NKeySeedFile: seedFile}, true},
		{"nkey unknown", configs.NATS{NKeySeedFile: seedFile}, configs.NATS{NKeySeedFile: otherFile}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.server.Listen = "127.0.0.1:0"
			tc.client.URL = start(t, tc.server)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			nc, err := Connect(ctx, tc.client, nil, "test")
			if tc.ok != (err == nil) {
				t.Fatalf("connect: err %v, want ok=%v", err, tc.ok)
			}
			if err == nil {
				nc.Close()
			} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Errorf("refusal %q does not say why", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	if got := redact("nats://u:secret@h:4222"); strings.Contains(got, "secret") {
		t.Errorf("redact left the password: %s", got)
	}
}
