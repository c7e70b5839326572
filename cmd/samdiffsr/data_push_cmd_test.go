package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/objstore"
	"github.com/samdiffsr/samdiffsr/internal/objstore/objstoretest"
	"github.com/samdiffsr/samdiffsr/worker"
)

// packTiny packs images synthetic 128x128 images into a packed dataset with
// shards of shardBytes.
func packTiny(t *testing.T, images int, shardBytes int64) (string, *dataset.Manifest) {
	t.Helper()
	dir := t.TempDir()
	if _, errs, code := runCLI(t, "data", "synth", "--out", dir, "--n", strconv.Itoa(images), "--size", "128x128"); code != 0 {
		t.Fatal(errs)
	}
	l, err := dataset.Discover(filepath.Join(dir, "train"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "packed")
	m, _, err := dataset.PackShards(context.Background(), l.Train(), dataset.PackOptions{Out: out, TileSize: 64, TileThreshold: 32,
		ShardBytes: shardBytes, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return out, m
}

// TestDataPushRegistered: data push registers the manifest with the coordinator
// through raft (only once everything is uploaded; again is a duplicate; another
// dataset only with --replace); workers take the digest from the coordinator, so
// a shard flipped in the store is detected and reported by name (and --verify
// repairs it) and a manifest replaced in the bucket behind the coordinator's back
// is refused.
func TestDataPushRegistered(t *testing.T) {
	w := startRegistryWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := jetstream.New(w.nc)
	if err != nil {
		t.Fatal(err)
	}
	bucket := natsutil.Names{Job: regJob}.DataBucket()
	nats := []string{"--nats", w.url, "--job", regJob}
	packed, m := packTiny(t, 3, 1) // one image per shard
	if len(m.Shards) != 3 {
		t.Fatalf("%d shards, want 3", len(m.Shards))
	}
	// Nothing uploaded: the leader refuses to register.
	_, err = natsutil.RequestLeader(ctx, w.nc, natsutil.Names{Job: regJob}.Coord("data.register"),
		natsutil.DataRegister{SHA256: m.Digest(), Bytes: 100}, 5*time.Second)
	if !errors.Is(err, natsutil.ErrRemote) || !strings.Contains(err.Error(), "data push") {
		t.Fatalf("registration before upload: %v", err)
	}
	if _, err := worker.RegisteredDataset(ctx, w.nc, regJob); err == nil || !strings.Contains(err.Error(), "no registered packed dataset") {
		t.Fatalf("dataset before any push: %v", err)
	}
	out, errs, code := runCLI(t, append([]string{"data", "push", "--packed", packed}, nats...)...)
	if code != 0 || !strings.Contains(out, "3 shards sent") || !strings.Contains(out, "manifest "+m.Digest()+" registered with the coordinator (registration 1)") {
		t.Fatalf("push: exit %d, %q, %q", code, out, errs)
	}
	out, errs, code = runCLI(t, append([]string{"data", "push", "--packed", packed}, nats...)...)
	if code != 0 || !strings.Contains(out, "0 shards sent") || !strings.Contains(out, "3 already there") || !strings.Contains(out, "already the job's dataset (registration 1)") {
		t.Fatalf("second push: exit %d, %q, %q", code, out, errs)
	}
	rec, err := worker.RegisteredDataset(ctx, w.nc, regJob)
	if err != nil || rec.SHA256 != m.Digest() || len(rec.Shards) != 3 || rec.Shards[2].SHA256 != m.Shards[2].SHA256 || rec.Tiles != m.Tiles {
		t.Fatalf("registered %+v, %v", rec, err)
	}
	if out, errs, code := runCLI(t, append([]string{"status"}, nats...)...); code != 0 ||
		!strings.Contains(out, "dataset manifest "+m.Digest()[:12]+": 3 images, "+strconv.Itoa(m.Tiles)+" tiles in 3 shards") {
		t.Fatalf("status: exit %d, %q, %q", code, out, errs)
	}
	copyDir := t.TempDir()
	if out, errs, code := runCLI(t, append([]string{"data", "pull", "--out", copyDir}, nats...)...); code != 0 || !strings.Contains(out, "manifest "+m.Digest()) {
		t.Fatalf("pull: exit %d, %q, %q", code, out, errs)
	}

	// A shard flipped in the store: the worker's cache refuses it by name; the
	// other shards are served.
	bad := m.Shards[1]
	if err := objstoretest.FlipByte(ctx, js, bucket, bad.Name, 100); err != nil {
		t.Fatal(err)
	}
	got, fetch, err := worker.NATSSource(w.nc, regJob)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := dataset.NewShardCache(t.TempDir(), 0, fetch, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Ensure(ctx, got.Shards); err == nil || !strings.Contains(err.Error(), bad.Name) || !errors.Is(err, dataset.ErrDamagedShard) {
		t.Fatalf("flipped shard: %v", err)
	}
	if st := cache.Stats(); st.Fetched != 1 {
		t.Fatalf("a damaged shard was counted as fetched: %+v", st)
	}
	if _, errs, code := runCLI(t, append([]string{"data", "pull", "--out", t.TempDir()}, nats...)...); code == 0 || !strings.Contains(errs, bad.Name) {
		t.Fatalf("pull of a damaged store: exit %d, %q", code, errs)
	}
	// A plain push trusts the metadata; --verify reads back and repairs.
	out, errs, code = runCLI(t, append([]string{"data", "push", "--packed", packed, "--verify"}, nats...)...)
	if code != 0 || !strings.Contains(out, "1 shards sent") || !strings.Contains(out, "1 damaged in the store and sent again") {
		t.Fatalf("push --verify: exit %d, %q, %q", code, out, errs)
	}
	if shards, err := cache.Ensure(ctx, got.Shards); err != nil {
		t.Fatalf("after --verify: %v", err)
	} else {
		for _, s := range shards {
			s.Close()
		}
	}

	// The manifest replaced behind the coordinator's back (another manifest's
	// JSON, or silently flipped bytes of the same size): refused.
	other := *m
	other.Shards = m.Shards[:2]
	otherJS, err := json.Marshal(other)
	if err != nil {
		t.Fatal(err)
	}
	store, err := objstore.Open(ctx, js, bucket, objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	name := natsutil.DataManifestObject(m.Digest())
	if _, err := store.Raw().PutBytes(ctx, name, otherJS); err != nil {
		t.Fatal(err)
	}
	if _, _, err := worker.NATSSource(w.nc, regJob)(ctx); err == nil || !strings.Contains(err.Error(), "is not the one job "+regJob+" registered") {
		t.Fatalf("replaced manifest: %v", err)
	}
	if _, st, err := worker.PushPacked(ctx, w.nc, regJob, packed, worker.PushOptions{Verify: true}); err != nil || st.Outcome != "duplicate" {
		t.Fatalf("repair the manifest: %+v %v", st, err)
	}
	if _, _, err := worker.NATSSource(w.nc, regJob)(ctx); err != nil {
		t.Fatalf("repaired manifest: %v", err)
	}
	if err := objstoretest.FlipByte(ctx, js, bucket, name, 20); err != nil {
		t.Fatal(err)
	}
	if _, _, err := worker.NATSSource(w.nc, regJob)(ctx); err == nil || !strings.Contains(err.Error(), "is not the one job "+regJob+" registered") {
		t.Fatalf("flipped manifest: %v", err)
	}

	// Another dataset: its manifest alone in the bucket is refused (shards
	// missing); pushed whole, it needs --replace.
	packed2, m2 := packTiny(t, 2, 1<<30)
	js2, _ := json.Marshal(m2)
	if _, err := store.PutBytes(ctx, natsutil.DataManifestObject(m2.Digest()), js2, nil); err != nil {
		t.Fatal(err)
	}
	_, err = natsutil.RequestLeader(ctx, w.nc, natsutil.Names{Job: regJob}.Coord("data.register"),
		natsutil.DataRegister{SHA256: m2.Digest(), Bytes: int64(len(js2)), Replace: true}, 5*time.Second)
	if !errors.Is(err, natsutil.ErrRemote) || !strings.Contains(err.Error(), m2.Shards[0].Name) {
		t.Fatalf("registration with a shard missing: %v", err)
	}
	if _, errs, code := runCLI(t, append([]string{"data", "push", "--packed", packed2}, nats...)...); code == 0 || !strings.Contains(errs, "--replace") {
		t.Fatalf("push of another dataset without --replace: exit %d, %q", code, errs)
	}
	out, errs, code = runCLI(t, append([]string{"data", "push", "--packed", packed2, "--replace"}, nats...)...)
	if code != 0 || !strings.Contains(out, "registered with the coordinator (registration 2)") {
		t.Fatalf("push --replace: exit %d, %q, %q", code, out, errs)
	}
	if got, _, err := worker.NATSSource(w.nc, regJob)(ctx); err != nil || got.Digest() != m2.Digest() {
		t.Fatalf("after --replace: %v", err)
	}
}
