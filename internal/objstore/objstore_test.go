package objstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/objstore"
	"github.com/samdiffsr/samdiffsr/internal/objstore/objstoretest"
)

func startJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := natsutil.StartEmbedded(context.Background(), natsutil.EmbeddedOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestPutGetSkipAndCorruption(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := startJS(t)
	if _, err := objstore.Open(ctx, js, "b", objstore.Options{}); err == nil {
		t.Fatal("opening a missing bucket without Create succeeded")
	}
	st, err := objstore.Open(ctx, js, "b", objstore.Options{Create: true, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := make([]byte, 300_000) // three 128 KiB chunks
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	src := filepath.Join(dir, "src.bin")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := hexSum(data)
	info, err := st.PutFile(ctx, "obj", src, map[string]string{"kind": "test"})
	if err != nil || info.Skipped || info.SHA256 != want || info.Size != int64(len(data)) {
		t.Fatalf("first put: %+v %v", info, err)
	}
	info, err = st.PutFile(ctx, "obj", src, nil)
	if err != nil || !info.Skipped {
		t.Fatalf("second put of the same bytes was not skipped: %+v %v", info, err)
	}
	if s, err := st.Stat(ctx, "obj"); err != nil || s.SHA256 != want || s.Size != int64(len(data)) {
		t.Fatalf("stat %+v %v", s, err)
	}

	dst := filepath.Join(dir, "out", "dst.bin")
	if _, err := st.GetFile(ctx, "obj", want, dst); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Fatal("GetFile wrote other bytes")
	}
	b, _, err := st.GetBytes(ctx, "obj", "")
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("GetBytes: %v", err)
	}

	// A wrong expected digest (the registry says otherwise): refused, dst untouched.
	if err := os.WriteFile(dst, []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := strings.Repeat("ab", 32)
	_, err = st.GetFile(ctx, "obj", other, dst)
	var de *objstore.DigestError
	if !errors.As(err, &de) || de.Want != other || de.Got != want || !strings.Contains(err.Error(), dst) {
		t.Fatalf("wrong digest: %v", err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "before" {
		t.Fatalf("dst changed after a refused get: %q", got)
	}

	// Bytes flipped inside the bucket below the API: refused, dst untouched, no temp left.
	if err := objstoretest.FlipByte(ctx, js, "b", "obj", 1000); err != nil {
		t.Fatal(err)
	}
	_, err = st.GetFile(ctx, "obj", want, dst)
	if !errors.As(err, &de) || de.Want != want {
		t.Fatalf("flipped byte not detected: %v", err)
	}
	t.Logf("flipped byte: %v", err)
	if got, _ := os.ReadFile(dst); string(got) != "before" {
		t.Fatalf("dst changed after a corrupt get: %q", got)
	}
	ents, _ := os.ReadDir(filepath.Dir(dst))
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	// A put of the right bytes over a corrupted object repairs it (its metadata
	// still claims the right digest, so compare sizes and digests is not enough:
	// the caller re-puts after a failed get by deleting first).
	if err := st.Delete(ctx, "obj"); err != nil {
		t.Fatal(err)
	}
	if info, err := st.PutFile(ctx, "obj", src, nil); err != nil || info.Skipped {
		t.Fatalf("re-put after delete: %+v %v", info, err)
	}
	if _, err := st.GetFile(ctx, "obj", want, dst); err != nil {
		t.Fatalf("get after repair: %v", err)
	}

	if _, err := st.GetFile(ctx, "missing", "", filepath.Join(dir, "m")); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
	if err := st.Delete(ctx, "missing"); err != nil {
		t.Fatalf("delete of a missing object: %v", err)
	}
	names, err := st.Names(ctx)
	if err != nil || len(names) != 1 || names[0] != "obj" {
		t.Fatalf("names %v %v", names, err)
	}
}

func TestRetryGivesUpWithContext(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	st, err := objstore.Open(ctx, js, "c", objstore.Options{Create: true, Attempts: 3, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = st.PutBytes(cctx, "x", []byte("hello"), nil)
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("put on a cancelled context: %v", err)
	}
}

// TestPutFileDigestRefusesChangedSource: a file whose bytes are not the digest the
// caller declared (changed on disk after its manifest was written) is not left in
// the bucket.
func TestPutFileDigestRefusesChangedSource(t *testing.T) {
	ctx := context.Background()
	js := startJS(t)
	st, err := objstore.Open(ctx, js, "d", objstore.Options{Create: true, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("written later"), 0o644); err != nil {
		t.Fatal(err)
	}
	declared := hexSum([]byte("what the manifest says"))
	_, err = st.PutFileDigest(ctx, "f", path, declared, 22, nil)
	if err == nil || !strings.Contains(err.Error(), declared) || !strings.Contains(err.Error(), "changed or is damaged") {
		t.Fatalf("changed source: %v", err)
	}
	if _, err := st.Stat(ctx, "f"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("the mismatched upload stayed in the bucket: %v", err)
	}
	good := hexSum([]byte("written later"))
	if info, err := st.PutFileDigest(ctx, "f", path, good, 13, nil); err != nil || info.Skipped {
		t.Fatalf("matching upload: %+v %v", info, err)
	}
}
