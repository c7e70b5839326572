package worker

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// Training from a packed dataset (data.packed): every rank knows every tile from the
// manifest, so the global batch of a step is the same whatever the world; each
// generation assigns the partitions to its workers (dataset.Assign) and a rank holds
// (fetches, verifies, caches) only its own partitions' shards and computes the
// samples cut from them.

// PackedSource gives a rank the packed dataset: its manifest and where its shards
// come from.
type PackedSource func(ctx context.Context) (*dataset.Manifest, dataset.ShardFetcher, error)

// folderSource reads a packed dataset's folder (data.packed = DIR).
func folderSource(dir string) PackedSource {
	return func(context.Context) (*dataset.Manifest, dataset.ShardFetcher, error) {
		m, err := dataset.ReadManifest(dir)
		if err != nil {
			return nil, nil, err
		}
		return m, dataset.DirFetcher{Dir: dir}, nil
	}
}

// packedData is a rank's packed dataset: the tiles, the partitions and the shards
// it holds.
type packedData struct {
	set   *dataset.ShardSet
	parts [][]int
	sizes []int64
	cache *dataset.ShardCache
	log   *slog.Logger
	// placed is the world the held shards were placed for.
	placed []string
	owner  []int

	// mu guards held: the shards placed, read by the progress reporter.
	mu   sync.Mutex
	held natsutil.DataPlacement
	// pf is the background prefetch running (nil: none); only place, close and
	// prefetchFor touch it, from the rank's goroutine.
	pf *prefetch
}

// prefetch is a background fetch of the shards of a predicted world.
type prefetch struct {
	workers []string
	cancel  context.CancelFunc
	done    chan struct{}
}

// openPacked opens cfg's packed dataset for stage with no shard held yet.
func openPacked(ctx context.Context, cfg configs.Config, stage string, src PackedSource, log *slog.Logger) (*packedData, error) {
	if src == nil {
		if cfg.Data.Packed == PackedNATS {
			return nil, fmt.Errorf("worker: data.packed is %q but this worker has no NATS connection to fetch the dataset from; run it as a train worker of a job", PackedNATS)
		}
		src = folderSource(cfg.Data.Packed)
	}
	m, fetch, err := src(ctx)
	if err != nil {
		return nil, err
	}
	if m.TileSize != cfg.Data.TileSize || m.TileThreshold != cfg.Data.TileThreshold {
		return nil, fmt.Errorf("worker: the packed dataset was cut into %d/%d tiles but data.tile_size/data.tile_threshold are %d/%d; pack it again with this configuration",
			m.TileSize, m.TileThreshold, cfg.Data.TileSize, cfg.Data.TileThreshold)
	}
	masks := stage == StageDiffusion && cfg.Diffusion.Modulation != "none"
	set, err := dataset.NewShardSet(m, dataset.ShardSetOptions{Masks: masks, SPE: dataset.SPEOptions(cfg.Masks, cfg.Data.Scale)})
	if err != nil {
		return nil, err
	}
	base := cfg.Data.CacheDir
	if base == "" && cfg.Data.Root == "" {
		return nil, fmt.Errorf("worker: data.packed needs a folder for the shard cache: set data.cache_dir")
	}
	cache, err := dataset.NewShardCache(filepath.Join(dataset.CacheDir(cfg.Data), "shards"), cfg.Data.CacheMaxBytes, fetch, log)
	if err != nil {
		return nil, err
	}
	parts := dataset.Partitions(m, cfg.Data.Partitions)
	return &packedData{set: set, parts: parts, sizes: dataset.PartitionBytes(m, parts), cache: cache, log: log}, nil
}

// PackedNATS is the data.packed value for the dataset pushed to the job.
const PackedNATS = "nats"

// place makes this worker (rank me of workers, the generation's worker ids) hold
// exactly its partitions' shards, fetching what it lacks, and returns the rank that
// computes each tile's samples. The loader must not be reading meanwhile.
func (d *packedData) place(ctx context.Context, workers []string, me int) ([]int, error) {
	if d.owner != nil && equalStrings(d.placed, workers) {
		return d.owner, nil
	}
	// A prefetch for this world has fetched what Ensure needs: let it finish.
	d.stopPrefetch(d.pf != nil && sameSet(d.pf.workers, workers))
	owner, err := dataset.Assign(workers, d.sizes)
	if err != nil {
		return nil, err
	}
	mine, entries := d.shardsOf(owner, me)
	want := map[int]bool{}
	for _, s := range mine {
		want[s] = true
	}
	for i, held := range d.set.Attached() {
		if held && !want[i] {
			d.set.Detach(i)
		}
	}
	m := d.set.Manifest()
	shards, err := d.cache.Ensure(ctx, entries)
	if err != nil {
		return nil, err
	}
	for k, s := range mine {
		if err := d.set.Attach(s, shards[k]); err != nil {
			for _, sh := range shards[k:] {
				sh.Close()
			}
			return nil, err
		}
	}
	d.placed, d.owner = append([]string(nil), workers...), dataset.TileOwners(d.set.TileShards(), d.parts, owner)
	held := natsutil.DataPlacement{Shards: len(mine), Total: len(m.Shards)}
	for _, e := range entries {
		held.Bytes += e.Bytes
	}
	d.mu.Lock()
	d.held = held
	d.mu.Unlock()
	st := d.cache.Stats()
	d.log.Info("shards placed", "rank", me, "world", len(workers), "shards", len(mine), "of", len(m.Shards),
		"cache_hits", st.Hits, "fetched", st.Fetched, "bytes_fetched", st.BytesFetched)
	return d.owner, nil
}

// shardsOf lists the shards (indexes and manifest entries) that owner, a
// partition-to-worker assignment, gives worker me.
func (d *packedData) shardsOf(owner []int, me int) ([]int, []dataset.ManifestShard) {
	m := d.set.Manifest()
	var mine []int
	var entries []dataset.ManifestShard
	for p, w := range owner {
		if w == me {
			for _, s := range d.parts[p] {
				mine = append(mine, s)
				entries = append(entries, m.Shards[s])
			}
		}
	}
	return mine, entries
}

// prefetchFor starts fetching, in the background, the shards worker me would hold
// in the world workers, unless this world is placed already or being prefetched.
// The fetch stops at the cache's budget and never evicts (dataset.ShardCache.Prefetch).
func (d *packedData) prefetchFor(workers []string, me int) {
	if (d.owner != nil && sameSet(d.placed, workers)) || (d.pf != nil && sameSet(d.pf.workers, workers)) {
		return
	}
	d.stopPrefetch(false)
	owner, err := dataset.Assign(workers, d.sizes)
	if err != nil {
		d.log.Debug("no prefetch", "err", err)
		return
	}
	_, entries := d.shardsOf(owner, me)
	ctx, cancel := context.WithCancel(context.Background())
	pf := &prefetch{workers: slices.Clone(workers), cancel: cancel, done: make(chan struct{})}
	d.pf = pf
	go func() {
		defer close(pf.done)
		n, err := d.cache.Prefetch(ctx, entries)
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Warn("prefetching shards for the next generation", "err", err)
		case n > 0:
			d.log.Info("prefetched shards for the next generation", "shards", n, "of", len(entries), "world", len(workers))
		}
	}()
}

// stopPrefetch ends the background prefetch: it waits for it to finish when keep
// is set, else cancels it first.
func (d *packedData) stopPrefetch(keep bool) {
	if d.pf == nil {
		return
	}
	if !keep {
		d.pf.cancel()
	}
	<-d.pf.done
	d.pf.cancel()
	d.pf = nil
}

// sameSet says whether a and b hold the same worker ids, in any order (Assign
// does not depend on the order).
func sameSet(a, b []string) bool {
	return equalStrings(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// placement reports the shards this rank holds and what its cache did (safe to
// call while place runs).
func (d *packedData) placement() *natsutil.DataPlacement {
	d.mu.Lock()
	p := d.held
	d.mu.Unlock()
	st := d.cache.Stats()
	p.Hits, p.Fetched, p.Refetched, p.Evicted, p.Prefetched, p.BytesFetched = st.Hits, st.Fetched, st.Refetched, st.Evicted, st.Prefetched, st.BytesFetched
	return &p
}

// close releases the held shards.
func (d *packedData) close() {
	if d != nil {
		d.stopPrefetch(false)
		d.set.Close()
	}
}

// trainData is a stage's data: the loader and, with data.packed, the shards behind it.
type trainData struct {
	loader *dataset.Loader
	packed *packedData
}

// openTrainData opens the stage's data for a rank of generations: the tile cache
// (openLoader), or with data.packed the packed dataset, holding no shard until the
// first place.
func openTrainData(ctx context.Context, cfg configs.Config, stage string, ensureMasks func(context.Context, []dataset.Image, string) error, batch int, src PackedSource, log *slog.Logger) (*trainData, error) {
	if cfg.Data.Packed == "" {
		l, err := openLoader(ctx, cfg, stage, ensureMasks, batch, log)
		return &trainData{loader: l}, err
	}
	d, err := openPacked(ctx, cfg, stage, src, log)
	if err != nil {
		return nil, err
	}
	l, err := dataset.NewLoader(d.set, loaderOptions(cfg, batch))
	if err != nil {
		d.close()
		return nil, err
	}
	return &trainData{loader: l, packed: d}, nil
}

// loaderOptions are the Loader options of cfg for a global batch of batch.
func loaderOptions(cfg configs.Config, batch int) dataset.LoaderOptions {
	return dataset.LoaderOptions{Seed: cfg.Seed, BatchSize: batch, PatchSize: cfg.Data.PatchSize, Reduce: cfg.Masks.ReduceSingleRegion}
}
