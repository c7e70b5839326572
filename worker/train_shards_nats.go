package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/fsutil"
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

// PushStats counts what PushPacked sent and what the coordinator answered.
type PushStats struct {
	// Sent and Skipped count shards uploaded and shards already stored with the
	// same digest; Bytes is what was uploaded. Repaired counts stored shards
	// PushOptions.Verify found damaged and uploaded again (also in Sent).
	Sent, Skipped, Repaired int
	Bytes                   int64
	// Outcome is the registration's ("ok", or "duplicate" when the job already
	// had this manifest) and Seq its registration number.
	Outcome string
	Seq     uint64
}

// PushOptions tune PushPacked.
type PushOptions struct {
	// Replace allows replacing another registered manifest.
	Replace bool
	// Verify reads back every shard the bucket claims to hold already and
	// uploads again the ones whose bytes fail their digest (a shard damaged in
	// the store is otherwise skipped: its metadata still matches).
	Verify bool
	// OnShard, when set, sees every shard handled.
	OnShard func(dataset.ManifestShard, objstore.Info)
}

// dataRequestTimeout bounds one request to the coordinator about the dataset.
const dataRequestTimeout = 30 * time.Second

// PushPacked uploads the packed dataset in dir to the job's data bucket — every
// shard (skipped when an object of its name holds the same digest), then the
// manifest under its digest — and only then registers the manifest with the
// job's coordinator through raft (upload, then commit).
func PushPacked(ctx context.Context, nc *nats.Conn, job, dir string, o PushOptions) (*dataset.Manifest, PushStats, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, PushStats{}, fmt.Errorf("worker: JetStream: %w", err)
	}
	m, body, st, err := uploadPacked(ctx, js, job, dir, o)
	if err != nil {
		return nil, st, err
	}
	req := natsutil.DataRegister{SHA256: m.Digest(), Bytes: int64(len(body)), Replace: o.Replace, Client: nc.Opts.Name}
	rep, err := natsutil.RequestLeader(ctx, nc, natsutil.Names{Job: job}.Coord("data.register"), req, dataRequestTimeout)
	if err != nil {
		return m, st, fmt.Errorf("worker: register manifest %s with job %s's coordinator: %w", m.Digest(), job, err)
	}
	st.Outcome, st.Seq = rep.Outcome, rep.Seq
	return m, st, nil
}

// uploadPacked uploads dir's shards, then its manifest; it returns the manifest
// and the manifest JSON stored (whose SHA-256 is m.Digest()).
func uploadPacked(ctx context.Context, js jetstream.JetStream, job, dir string, o PushOptions) (*dataset.Manifest, []byte, PushStats, error) {
	var st PushStats
	m, err := dataset.ReadManifest(dir)
	if err != nil {
		return nil, nil, st, err
	}
	store, err := objstore.Open(ctx, js, natsutil.Names{Job: job}.DataBucket(), objstore.Options{Create: true, Description: "samdiffsr packed dataset shards"})
	if err != nil {
		return nil, nil, st, err
	}
	for _, s := range m.Shards {
		if o.Verify {
			repaired, err := dropDamaged(ctx, store, s.Name, s.SHA256)
			if err != nil {
				return nil, nil, st, err
			}
			if repaired {
				st.Repaired++
			}
		}
		info, err := store.PutFile(ctx, s.Name, filepath.Join(dir, dataset.ShardDir, s.Name), map[string]string{"raw_sha256": s.RawSHA256})
		if err != nil {
			return nil, nil, st, fmt.Errorf("worker: push shard %s: %w", s.Name, err)
		}
		if info.SHA256 != s.SHA256 {
			return nil, nil, st, fmt.Errorf("worker: shard %s in %s has SHA-256 %s, its manifest says %s; pack the dataset again", s.Name, dir, info.SHA256, s.SHA256)
		}
		if info.Skipped {
			st.Skipped++
		} else {
			st.Sent++
			st.Bytes += info.Size
		}
		if o.OnShard != nil {
			o.OnShard(s, info)
		}
	}
	body, err := json.Marshal(m) // its SHA-256 is m.Digest()
	if err != nil {
		return nil, nil, st, err
	}
	name := natsutil.DataManifestObject(m.Digest())
	if o.Verify {
		if _, err := dropDamaged(ctx, store, name, m.Digest()); err != nil {
			return nil, nil, st, err
		}
	}
	if _, err := store.PutBytes(ctx, name, body, nil); err != nil {
		return nil, nil, st, fmt.Errorf("worker: push the manifest: %w", err)
	}
	return m, body, st, nil
}

// dropDamaged reads back object name when the store claims it has SHA-256 sum
// and deletes it when its bytes do not, so the put that follows uploads it again.
func dropDamaged(ctx context.Context, store *objstore.Store, name, sum string) (bool, error) {
	if info, err := store.Stat(ctx, name); err != nil || info.SHA256 != sum {
		return false, nil // absent or different: the put sends it anyway
	}
	tmp, err := os.MkdirTemp("", "samdiffsr-verify-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	_, err = store.GetFile(ctx, name, sum, filepath.Join(tmp, "object"))
	var de *objstore.DigestError
	if !errors.As(err, &de) {
		return false, err
	}
	if err := store.Delete(ctx, name); err != nil {
		return false, fmt.Errorf("worker: delete damaged object %s: %w", name, err)
	}
	return true, nil
}

// RegisteredDataset asks the job's coordinator (any voter) which packed dataset
// the job trains on. A coordinator not answering yet is asked again a few times.
func RegisteredDataset(ctx context.Context, nc *nats.Conn, job string) (natsutil.DataManifest, error) {
	subj := natsutil.Names{Job: job}.Coord("data.manifest")
	wait := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		var rep natsutil.DataManifestReply
		err := natsutil.Request(ctx, nc, subj, natsutil.DataManifestRequest{}, &rep, dataRequestTimeout)
		switch {
		case err == nil && rep.Err != "":
			return natsutil.DataManifest{}, fmt.Errorf("worker: job %s's dataset: %w: %s", job, natsutil.ErrRemote, rep.Err)
		case err == nil && rep.Manifest == nil:
			return natsutil.DataManifest{}, fmt.Errorf("worker: job %s has no registered packed dataset; push one with `samdiffsr data push --packed DIR`", job)
		case err == nil:
			return *rep.Manifest, nil
		case !errors.Is(err, nats.ErrNoResponders) || attempt >= 6:
			return natsutil.DataManifest{}, fmt.Errorf("worker: ask job %s's coordinator for its dataset (is it running?): %w", job, err)
		}
		select {
		case <-ctx.Done():
			return natsutil.DataManifest{}, ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// NATSSource is the PackedSource of the job's registered dataset (data.packed:
// nats): the manifest whose digest the coordinator committed, every shard fetched
// from the job's data bucket and verified against it.
func NATSSource(nc *nats.Conn, job string) PackedSource {
	return func(ctx context.Context) (*dataset.Manifest, dataset.ShardFetcher, error) {
		rec, err := RegisteredDataset(ctx, nc, job)
		if err != nil {
			return nil, nil, err
		}
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, nil, fmt.Errorf("worker: JetStream: %w", err)
		}
		return registeredSource(js, job, rec)(ctx)
	}
}

// registeredSource is the PackedSource of the registered manifest rec: it reads
// the manifest object by rec's digest (refusing one changed in the bucket) and
// checks that its shards are the ones registered.
func registeredSource(js jetstream.JetStream, job string, rec natsutil.DataManifest) PackedSource {
	return func(ctx context.Context) (*dataset.Manifest, dataset.ShardFetcher, error) {
		store, err := objstore.Open(ctx, js, natsutil.Names{Job: job}.DataBucket(), objstore.Options{})
		if err != nil {
			return nil, nil, fmt.Errorf("worker: the job's packed dataset: %w (push one with `samdiffsr data push`)", err)
		}
		name := natsutil.DataManifestObject(rec.SHA256)
		refuse := func(err error) error {
			return fmt.Errorf("worker: manifest %s in bucket %s is not the one job %s registered (sha256 %s, %d bytes): %w; refusing to train on it (repair the store with `samdiffsr data push --verify`)",
				name, store.Bucket(), job, rec.SHA256, rec.Bytes, err)
		}
		info, err := store.Stat(ctx, name)
		if err != nil {
			return nil, nil, refuse(err)
		}
		if info.Size != rec.Bytes {
			return nil, nil, refuse(fmt.Errorf("it holds %d bytes", info.Size))
		}
		body, _, err := store.GetBytes(ctx, name, rec.SHA256)
		if err != nil {
			return nil, nil, refuse(err)
		}
		m, err := dataset.ParseManifest(name, body)
		if err != nil {
			return nil, nil, err
		}
		if err := checkRegistered(m, rec); err != nil {
			return nil, nil, err
		}
		return m, StoreFetcher{Store: store}, nil
	}
}

// checkRegistered reports the first shard of m that differs from the registered
// record (name, digest or size).
func checkRegistered(m *dataset.Manifest, rec natsutil.DataManifest) error {
	if len(m.Shards) != len(rec.Shards) {
		return fmt.Errorf("worker: manifest %.12s lists %d shards, the coordinator registered %d", rec.SHA256, len(m.Shards), len(rec.Shards))
	}
	for i, s := range m.Shards {
		r := rec.Shards[i]
		if s.Name != r.Name || s.SHA256 != r.SHA256 || s.Bytes != r.Bytes {
			return fmt.Errorf("worker: manifest %.12s: shard %d is %s (sha256 %.12s, %d bytes), the coordinator registered %s (sha256 %.12s, %d bytes)",
				rec.SHA256, i, s.Name, s.SHA256, s.Bytes, r.Name, r.SHA256, r.Bytes)
		}
	}
	return nil
}

// PullPacked copies the job's registered dataset into dir as a packed dataset
// folder (manifest and shards, every shard verified by digest), keeping shards
// already there intact; it returns the manifest and the bytes fetched.
func PullPacked(ctx context.Context, nc *nats.Conn, job, dir string) (*dataset.Manifest, int64, error) {
	m, fetch, err := NATSSource(nc, job)(ctx)
	if err != nil {
		return nil, 0, err
	}
	var n int64
	for _, s := range m.Shards {
		path := filepath.Join(dir, dataset.ShardDir, s.Name)
		if sum, _, err := fsutil.FileSHA256(path); err == nil && sum == s.SHA256 {
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
