package dataset

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[at%int64(len(b))] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestShardCacheFetchVerifyEvict: a cache fetches only the shards asked for
// (counting bytes), reuses verified ones, refetches one whose cached bytes were
// flipped, reports by name a shard whose source copy is damaged (never opening
// it), and evicts the least recently used over its budget.
func TestShardCacheFetchVerifyEvict(t *testing.T) {
	ctx := context.Background()
	images, masks := packTestSet(t, 6, 96, 96)
	packed := t.TempDir()
	m, _, err := PackShards(ctx, images, PackOptions{Out: packed, TileSize: 64, TileThreshold: 32, MasksDir: masks, ShardBytes: 40_000, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Shards) < 4 {
		t.Fatalf("%d shards", len(m.Shards))
	}
	dir := t.TempDir()
	c, err := NewShardCache(dir, 0, DirFetcher{Dir: packed}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	want := m.Shards[:2]
	got, err := c.Ensure(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range got {
		s.Close()
	}
	st := c.Stats()
	if st.Fetched != 2 || st.BytesFetched != want[0].Bytes+want[1].Bytes || st.Hits != 0 {
		t.Fatalf("first ensure: %+v", st)
	}
	// Reuse; then a flipped byte in the cache is found and fetched again.
	flipByte(t, filepath.Join(dir, want[1].RawSHA256+".sds"), 5000)
	got, err = c.Ensure(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	set := openSetFrom(t, m, got, []int{0, 1})
	for i := range set.AllTiles() {
		if set.TileShards()[i] > 1 {
			if _, err := set.Tile(i); err == nil || !strings.Contains(err.Error(), m.Shards[set.TileShards()[i]].Name) {
				t.Fatalf("tile of a shard not held: %v", err)
			}
			continue
		}
		if _, err := set.Tile(i); err != nil {
			t.Fatal(err)
		}
	}
	set.Close()
	st = c.Stats()
	if st.Hits != 1 || st.Refetched != 1 || st.Fetched != 3 {
		t.Fatalf("after a flipped cached byte: %+v", st)
	}
	// A damaged source: reported by name, nothing opened.
	flipByte(t, filepath.Join(packed, ShardDir, m.Shards[2].Name), 3000)
	if _, err := c.Ensure(ctx, m.Shards[2:3]); err == nil || !strings.Contains(err.Error(), m.Shards[2].Name) || !errors.Is(err, ErrDamagedShard) {
		t.Fatalf("damaged source: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, m.Shards[2].RawSHA256+".sds")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("damaged shard reached the cache: %v", err)
	}
	// Budget: room for about two shards; asking for shard 3 evicts the oldest.
	small, _ := NewShardCache(dir, want[0].RawBytes+want[1].RawBytes+10, DirFetcher{Dir: packed}, quietLog())
	got, err = small.Ensure(ctx, m.Shards[3:4])
	if err != nil {
		t.Fatal(err)
	}
	got[0].Close()
	if st := small.Stats(); st.Evicted < 1 {
		t.Fatalf("nothing evicted: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(dir, m.Shards[3].RawSHA256+".sds")); err != nil {
		t.Fatal("the shard asked for was evicted")
	}
}

func openSetFrom(t *testing.T, m *Manifest, shards []*Shard, which []int) *ShardSet {
	t.Helper()
	set, err := NewShardSet(m, ShardSetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, i := range which {
		if err := set.Attach(i, shards[k]); err != nil {
			t.Fatal(err)
		}
	}
	return set
}

// TestShardCachePrefetch: Prefetch brings only the shards the cache lacks, stops
// at the budget without evicting, and a later Ensure finds them as verified hits
// (also in a new cache over the same folder: a restart).
func TestShardCachePrefetch(t *testing.T) {
	ctx := context.Background()
	images, masks := packTestSet(t, 6, 96, 96)
	packed := t.TempDir()
	m, _, err := PackShards(ctx, images, PackOptions{Out: packed, TileSize: 64, TileThreshold: 32, MasksDir: masks, ShardBytes: 40_000, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Shards) < 4 {
		t.Fatalf("%d shards", len(m.Shards))
	}
	dir := t.TempDir()
	budget := m.Shards[0].RawBytes + m.Shards[1].RawBytes + m.Shards[2].RawBytes/2
	c, err := NewShardCache(dir, budget, DirFetcher{Dir: packed}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Ensure(ctx, m.Shards[:1])
	if err != nil {
		t.Fatal(err)
	}
	got[0].Close()
	n, err := c.Prefetch(ctx, m.Shards[:4])
	if err != nil || n != 1 {
		t.Fatalf("prefetch brought %d (%v), want only shard 1 (0 is cached, 2 is over the budget)", n, err)
	}
	if st := c.Stats(); st.Prefetched != 1 || st.Fetched != 2 || st.Evicted != 0 {
		t.Fatalf("after prefetch: %+v", st)
	}
	for i, s := range m.Shards[:4] {
		_, err := os.Stat(filepath.Join(dir, s.RawSHA256+".sds"))
		if (i < 2) != (err == nil) {
			t.Fatalf("shard %d cached: %v", i, err)
		}
	}
	restarted, err := NewShardCache(dir, budget, DirFetcher{Dir: packed}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	got, err = restarted.Ensure(ctx, m.Shards[:2])
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range got {
		s.Close()
	}
	if st := restarted.Stats(); st.Hits != 2 || st.Fetched != 0 {
		t.Fatalf("ensure after prefetch and restart: %+v", st)
	}
	// A damaged source stops the prefetch with the shard's name.
	flipByte(t, filepath.Join(packed, ShardDir, m.Shards[3].Name), 3000)
	big, _ := NewShardCache(dir, 0, DirFetcher{Dir: packed}, quietLog())
	if _, err := big.Prefetch(ctx, m.Shards[3:4]); err == nil || !strings.Contains(err.Error(), m.Shards[3].Name) {
		t.Fatalf("prefetch of a damaged shard: %v", err)
	}
}
