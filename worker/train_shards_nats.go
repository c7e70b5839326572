package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/objstore"
)

// StoreFetcher fetches shards from an Object Store bucket (dataset.ShardFetcher):
// objstore verifies every byte against the manifest's digest before the file
// appears.
type StoreFetcher struct{ Store *objstore.Store }

// FetchShard implements dataset.ShardFetcher.
func (f StoreFetcher) FetchShard(ctx context.Context, name, want, path string) (int64, error) {
	info, err := f.Store.GetFile(ctx, name, want, path)
	if err != nil {
		return 0, fmt.Errorf("worker: shard %s: %w: %w", name, err, dataset.ErrDamagedShard)
	}
	return info.Size, nil
}

// PushStats counts what PushPacked sent.
type PushStats struct {
	// Sent and Skipped count shards uploaded and shards already stored with the
	// same digest; Bytes is what was uploaded.
	Sent, Skipped int
	Bytes         int64
}

// PushPacked uploads the packed dataset in dir to the job's data bucket: every
// shard (skipped when an object of its name holds the same digest), then the
// manifest, so a reader never sees a manifest whose shards are missing.
func PushPacked(ctx context.Context, js jetstream.JetStream, job, dir string, onShard func(dataset.ManifestShard, objstore.Info)) (*dataset.Manifest, PushStats, error) {
	var st PushStats
	m, err := dataset.ReadManifest(dir)
	if err != nil {
		return nil, st, err
	}
	store, err := objstore.Open(ctx, js, natsutil.Names{Job: job}.DataBucket(), objstore.Options{Create: true, Description: "samdiffsr packed dataset shards"})
	if err != nil {
		return nil, st, err
	}
	for _, s := range m.Shards {
		info, err := store.PutFile(ctx, s.Name, filepath.Join(dir, dataset.ShardDir, s.Name), map[string]string{"raw_sha256": s.RawSHA256})
		if err != nil {
			return nil, st, fmt.Errorf("worker: push shard %s: %w", s.Name, err)
		}
		if info.SHA256 != s.SHA256 {
			return nil, st, fmt.Errorf("worker: shard %s in %s has SHA-256 %s, its manifest says %s; pack the dataset again", s.Name, dir, info.SHA256, s.SHA256)
		}
		if info.Skipped {
			st.Skipped++
		} else {
			st.Sent++
			st.Bytes += info.Size
		}
		if onShard != nil {
			onShard(s, info)
		}
	}
	js2, err := json.Marshal(m)
	if err != nil {
		return nil, st, err
	}
	if _, err := store.PutBytes(ctx, natsutil.DataManifestObject, js2, map[string]string{"manifest_digest": m.Digest()}); err != nil {
		return nil, st, fmt.Errorf("worker: push the manifest: %w", err)
	}
	return m, st, nil
}

// NATSSource is the PackedSource of a job's pushed dataset (data.packed: nats).
func NATSSource(js jetstream.JetStream, job string) PackedSource {
	return func(ctx context.Context) (*dataset.Manifest, dataset.ShardFetcher, error) {
		store, err := objstore.Open(ctx, js, natsutil.Names{Job: job}.DataBucket(), objstore.Options{})
		if err != nil {
			return nil, nil, fmt.Errorf("worker: the job's packed dataset: %w (push one with `samdiffsr data push`)", err)
		}
		info, err := store.Stat(ctx, natsutil.DataManifestObject)
		if err != nil {
			return nil, nil, fmt.Errorf("worker: the job's dataset manifest: %w (push one with `samdiffsr data push`)", err)
		}
		js, _, err := store.GetBytes(ctx, natsutil.DataManifestObject, info.SHA256)
		if err != nil {
			return nil, nil, err
		}
		m, err := dataset.ParseManifest(natsutil.DataManifestObject, js)
		if err != nil {
			return nil, nil, err
		}
		return m, StoreFetcher{Store: store}, nil
	}
}

// PullPacked copies the job's pushed dataset into dir as a packed dataset folder
// (manifest and shards, every shard verified by digest), keeping shards already
// there intact; it returns the manifest and the bytes fetched.
func PullPacked(ctx context.Context, js jetstream.JetStream, job, dir string) (*dataset.Manifest, int64, error) {
	m, fetch, err := NATSSource(js, job)(ctx)
	if err != nil {
		return nil, 0, err
	}
	var n int64
	for _, s := range m.Shards {
		path := filepath.Join(dir, dataset.ShardDir, s.Name)
		if sum, _, err := fileDigest(path); err == nil && sum == s.SHA256 {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, n, err
		}
		k, err := fetch.FetchShard(ctx, s.Name, s.SHA256, path)
		if err != nil {
			return nil, n, err
		}
		n += k
	}
	return m, n, dataset.WriteManifest(dir, m)
}

// fileDigest is the SHA-256 (hex) and size of a file.
func fileDigest(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}
