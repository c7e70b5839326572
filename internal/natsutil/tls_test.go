package natsutil

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/configs"
)

// selfSigned writes a CA-signed server certificate for 127.0.0.1 and returns the
// cert, key and CA file paths.
func selfSigned(t *testing.T) (cert, key, ca string) {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kd, _ := x509.MarshalECPrivateKey(srvKey)
	return write("server.pem", "CERTIFICATE", srvDER), write("server-key.pem", "EC PRIVATE KEY", kd), write("ca.pem", "CERTIFICATE", caDER)
}

func TestTLS(t *testing.T) {
	cert, key, ca := selfSigned(t)
	srvCfg := configs.NATS{Listen: "127.0.0.1:0", TLSCert: cert, TLSKey: key, Token: "t"}
	srv, err := StartEmbedded(context.Background(), EmbeddedOptions{NATS: srvCfg, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx := context.Background()
	// A client that trusts the CA connects over TLS.
	nc, err := Connect(ctx, configs.NATS{URL: ClientURL(srv), TLSCA: ca, Token: "t"}, nil, "tls client")
	if err != nil {
		t.Fatalf("TLS client with the CA: %v", err)
	}
	if _, err := nc.TLSConnectionState(); err != nil {
		t.Errorf("connection is not TLS: %v", err)
	}
	nc.Close()
	// One that does not trust it is refused.
	if nc, err := Connect(ctx, configs.NATS{URL: ClientURL(srv), Token: "t"}, nil, "untrusting client"); err == nil {
		nc.Close()
		t.Errorf("client without the CA connected to a TLS server")
	}
	// In-process connections (samdiffsr run) work with the same config.
	nc, err = Connect(ctx, srvCfg, srv, "in-process")
	if err != nil {
		t.Fatalf("in-process client of a TLS server: %v", err)
	}
	nc.Close()
}
