package collective

import (
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

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key, and
// returns their paths; the certificate is its own CA.
func selfSigned(t *testing.T) (cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "samdiffsr test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestRingOverTLS(t *testing.T) {
	leakCheck(t)
	cert, key := selfSigned(t)
	server, client, err := TLSFromConfig(configs.NATS{TLSCert: cert, TLSKey: key, TLSCA: cert})
	if err != nil {
		t.Fatal(err)
	}
	eps := listenN(t, TCP(server, client), tcpAddrs(3))
	checkSums(t, joinAll(t, eps, 1, smallFrames), []int{0, 5, 20011})

	// A plain-TCP peer cannot join a TLS ring.
	g := group(eps, 1, 0)
	g = g.withDefaults()
	if _, err := stranger(TCP(nil, nil)).dialOnce(t.Context(), &g); err == nil {
		t.Error("a plain-TCP dialer completed a handshake with a TLS endpoint")
	}
}

func TestTLSFromConfig(t *testing.T) {
	s, c, err := TLSFromConfig(configs.NATS{})
	if s != nil || c != nil || err != nil {
		t.Fatalf("no TLS files: %v %v %v", s, c, err)
	}
	cert, key := selfSigned(t)
	for _, tc := range []struct {
		c   configs.NATS
		msg string
	}{
		{configs.NATS{TLSCert: cert}, "cluster.nats.tls_key is empty"},
		{configs.NATS{TLSCA: cert}, "cluster.nats.tls_cert is empty"},
		{configs.NATS{TLSCert: cert, TLSKey: "/nonexistent/key.pem"}, "/nonexistent/key.pem"},
		{configs.NATS{TLSCert: cert, TLSKey: key, TLSCA: "/nonexistent/ca.pem"}, "cluster.nats.tls_ca"},
		{configs.NATS{TLSCert: cert, TLSKey: key, TLSCA: key}, "holds no PEM certificate"},
	} {
		_, _, err := TLSFromConfig(tc.c)
		mustContain(t, err, tc.msg)
	}
	s, c, err = TLSFromConfig(configs.NATS{TLSCert: cert, TLSKey: key})
	if err != nil || s == nil || c == nil {
		t.Fatalf("cert and key: %v", err)
	}
}
