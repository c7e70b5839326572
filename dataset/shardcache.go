package dataset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
)

// ShardFetcher brings the packed shard of a manifest entry to a local file,
// verified against its SHA-256 (the object store, or a packed dataset's folder).
type ShardFetcher interface {
	// FetchShard writes shard name to path only if its bytes have SHA-256
	// wantSHA256 and returns the bytes transferred; a mismatch is an error naming
	// the shard and both digests.
	FetchShard(ctx context.Context, name, wantSHA256, path string) (int64, error)
}

// DirFetcher fetches shards from a packed dataset's folder (a shared or local copy).
type DirFetcher struct{ Dir string }

// FetchShard implements ShardFetcher.
func (d DirFetcher) FetchShard(ctx context.Context, name, want, path string) (int64, error) {
	src := filepath.Join(d.Dir, ShardDir, name)
	sum, n, err := fsutil.FileSHA256(src)
	if err != nil {
		return 0, err
	}
	if sum != want {
		return 0, fmt.Errorf("dataset: shard %s in %s has SHA-256 %s, the manifest says %s: %w", name, d.Dir, sum, want, ErrDamagedShard)
	}
	f, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return n, fsutil.WriteAtomic(path, 0o644, func(w io.Writer) error {
		_, err := io.Copy(w, f)
		return err
	})
}

// CacheStats counts what a ShardCache did.
type ShardCacheStats struct {
	// Hits are shards found in the cache and verified; Fetched those brought
	// (BytesFetched transferred); Refetched those found damaged in the cache and
	// brought again; Evicted those removed for room; Prefetched those Prefetch
	// brought (also counted in Fetched).
	Hits, Fetched, Refetched, Evicted, Prefetched int
	BytesFetched                                  int64
}

// ShardCache is a worker's local folder of raw shards, named by their raw SHA-256:
// Ensure brings the shards a worker needs, verifying every one by digest when it
// arrives and when it is reused, and evicts the least recently used others over
// a byte budget. It keeps its files across restarts.
type ShardCache struct {
	dir   string
	max   int64
	fetch ShardFetcher
	log   *slog.Logger

	mu    sync.Mutex
	stats ShardCacheStats
}

// NewShardCache opens (making it when absent) the cache folder dir; maxBytes ≤ 0
// means no limit (data.cache_max_bytes).
func NewShardCache(dir string, maxBytes int64, f ShardFetcher, log *slog.Logger) (*ShardCache, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("dataset: shard cache: %w", err)
	}
	return &ShardCache{dir: dir, max: maxBytes, fetch: f, log: log}, nil
}

// Stats returns the counts so far.
func (c *ShardCache) Stats() ShardCacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *ShardCache) path(s ManifestShard) string { return filepath.Join(c.dir, s.RawSHA256+".sds") }

// fetchAttempts bounds how often a shard is fetched before it is reported bad.
const fetchAttempts = 3

// Ensure makes every shard of want present and verified in the cache and opens
// them (in order). A cached file that fails its digest is removed and fetched
// again; a shard that still fails after a few fetches is an error naming it (the
// object store's copy is damaged: push the packed dataset again). Then the least
// recently used files not in want are evicted while the cache is over budget.
func (c *ShardCache) Ensure(ctx context.Context, want []ManifestShard) ([]*Shard, error) {
	// Several shards at once (one per core): a cache fill is bound by expanding
	// shards, which is one goroutine's work per shard.
	out := make([]*Shard, len(want))
	errs := make([]error, len(want))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(want)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if out[i], errs[i] = c.ensure(ctx, want[i]); errs[i] != nil {
					cancel()
				}
			}
		}()
	}
feed:
	for i := range want {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := firstError(errs, ctx.Err()); err != nil {
		for _, sh := range out {
			if sh != nil {
				sh.Close()
			}
		}
		return nil, err
	}
	c.evict(want)
	return out, nil
}

// firstError is the first non-nil of errs (a real failure before the cancellation
// it caused), else orElse.
func firstError(errs []error, orElse error) error {
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return orElse
}

func (c *ShardCache) ensure(ctx context.Context, s ManifestShard) (*Shard, error) {
	path := c.path(s)
	sum, _, err := fsutil.FileSHA256(path)
	switch {
	case err == nil && sum == s.RawSHA256:
		c.count(func(st *ShardCacheStats) { st.Hits++ })
		now := time.Now()
		os.Chtimes(path, now, now) // recency for eviction
		return OpenShard(path)
	case err == nil:
		c.log.Warn("cached shard failed its digest; fetching it again", "shard", s.Name, "file", path, "sha256", sum, "want", s.RawSHA256)
		os.Remove(path)
		c.count(func(st *ShardCacheStats) { st.Refetched++ })
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("dataset: shard cache: %w", err)
	}
	if c.fetch == nil {
		return nil, fmt.Errorf("dataset: shard %s is not in the cache %s and there is nowhere to fetch it from", s.Name, c.dir)
	}
	var last error
	for attempt := 0; attempt < fetchAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if last = c.fetchOne(ctx, s, path); last == nil {
			return OpenShard(path)
		}
		c.log.Warn("fetching a shard failed", "shard", s.Name, "attempt", attempt+1, "err", last)
	}
	return nil, fmt.Errorf("dataset: shard %s could not be fetched intact after %d attempts: %w; training never reads it (repair the store with `samdiffsr data push --verify`)", s.Name, fetchAttempts, last)
}

// fetchOne fetches the packed shard, expands it into path and checks the raw digest.
func (c *ShardCache) fetchOne(ctx context.Context, s ManifestShard, path string) error {
	tmp := filepath.Join(c.dir, ".fetch-"+s.Name)
	defer os.Remove(tmp)
	n, err := c.fetch.FetchShard(ctx, s.Name, s.SHA256, tmp)
	if err != nil {
		return err
	}
	c.count(func(st *ShardCacheStats) { st.Fetched++; st.BytesFetched += n })
	sum, _, err := ExpandShard(tmp, path)
	if err != nil {
		return err
	}
	if sum != s.RawSHA256 {
		os.Remove(path)
		return fmt.Errorf("dataset: shard %s expands to SHA-256 %s, the manifest says %s: %w", s.Name, sum, s.RawSHA256, ErrDamagedShard)
	}
	return nil
}

// Prefetch brings the shards of want that the cache lacks, in order, without
// opening them or evicting anything: it stops at the first shard that would take
// the cache over its budget, and returns how many it brought. A later Ensure
// verifies them as it verifies every cached shard. Callers must not run Prefetch
// and Ensure on the same cache at once.
func (c *ShardCache) Prefetch(ctx context.Context, want []ManifestShard) (int, error) {
	if c.fetch == nil {
		return 0, nil
	}
	used := c.bytes()
	n := 0
	for _, s := range want {
		path := c.path(s)
		if st, err := os.Stat(path); err == nil && st.Size() == s.RawBytes {
			continue
		}
		if c.max > 0 && used+s.RawBytes > c.max {
			break
		}
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if err := c.fetchOne(ctx, s, path); err != nil {
			return n, err
		}
		used += s.RawBytes
		n++
		c.count(func(st *ShardCacheStats) { st.Prefetched++ })
	}
	return n, nil
}

// bytes is the size of the cached shard files.
func (c *ShardCache) bytes() int64 {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return 0
	}
	var total int64
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() && strings.HasSuffix(e.Name(), ".sds") {
			total += info.Size()
		}
	}
	return total
}

func (c *ShardCache) count(f func(*ShardCacheStats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// evict removes the least recently used shard files not in keep while the cache
// holds more than its budget.
func (c *ShardCache) evict(keep []ManifestShard) {
	if c.max <= 0 {
		return
	}
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	kept := map[string]bool{}
	for _, s := range keep {
		kept[filepath.Base(c.path(s))] = true
	}
	type file struct {
		name string
		size int64
		used time.Time
	}
	var files []file
	var total int64
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || !strings.HasSuffix(e.Name(), ".sds") {
			continue
		}
		total += info.Size()
		if !kept[e.Name()] {
			files = append(files, file{e.Name(), info.Size(), info.ModTime()})
		}
	}
	slices.SortFunc(files, func(a, b file) int { return a.used.Compare(b.used) })
	for _, f := range files {
		if total <= c.max {
			break
		}
		if err := os.Remove(filepath.Join(c.dir, f.name)); err == nil {
			total -= f.size
			c.count(func(st *ShardCacheStats) { st.Evicted++ })
		}
	}
	if total > c.max {
		c.log.Warn("the shards this worker needs exceed data.cache_max_bytes; keeping them", "bytes", total, "max", c.max)
	}
}
