package dataset

import (
	"context"

	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/maskgen"
)

// BenchmarkShardsDIV2KSize packs the DIV2K-size photos into shards (LR generated,
// label maps packed), expands them as a worker's cache does, and delivers training
// patches from the raw shards next to the tile cache, in one run:
//
//	pack-images/s   PackShards throughput (all cores)
//	packed/png      packed shard bytes (HR + LR + labels) over the HR PNG files' bytes
//	raw/png         the raw (cached) form over the same
//	expand-MB/s     ExpandShard output rate, next to disk-MB/s (the same bytes
//	                written and fsynced raw)
//	shard-patches/s and cache-patches/s: Loader batch 16, world 1, prefetch on
func BenchmarkShardsDIV2KSize(b *testing.B) {
	images := photos(b)
	masks := benchMasks(b, images)
	ctx := context.Background()
	for b.Loop() {
		out := b.TempDir()
		start := time.Now()
		m, _, err := PackShards(ctx, images, PackOptions{Out: out, TileSize: 320, TileThreshold: 160, MasksDir: masks, ShardBytes: 32 << 20, Log: quietLog()})
		if err != nil || len(m.Skipped) > 0 {
			b.Fatal(err, m)
		}
		b.ReportMetric(float64(len(images))/time.Since(start).Seconds(), "pack-images/s")
		var png int64
		for _, im := range images {
			st, _ := os.Stat(im.HRPath)
			png += st.Size()
		}
		b.ReportMetric(float64(m.Bytes)/float64(png), "packed/png")
		b.ReportMetric(float64(m.RawBytes)/float64(png), "raw/png")
		raw := b.TempDir()
		start = time.Now()
		for _, s := range m.Shards {
			if _, _, err := ExpandShard(filepath.Join(out, ShardDir, s.Name), filepath.Join(raw, s.Name)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(m.RawBytes)/1e6/time.Since(start).Seconds(), "expand-MB/s")
		b.ReportMetric(diskWriteMBs(b, m.RawBytes), "disk-MB/s")
		set := shardSetFrom(b, m, raw)
		md, err := NewMaskDir(masks, images, maskgen.SPEOptions{Mean: "region", Crop: "aligned", ReduceSingleRegion: true, Scale: 4}, 0)
		if err != nil {
			b.Fatal(err)
		}
		c, _, _, err := BuildCache(ctx, images, CacheOptions{Dir: b.TempDir(), TileSize: 320, TileThreshold: 160, Masks: md, Log: quietLog()})
		if err != nil {
			b.Fatal(err)
		}
		for name, src := range map[string]TileSource{"shard": set, "cache": c} {
			b.ReportMetric(patchRate(b, src, 16, 200), name+"-patches/s")
		}
		c.Close()
		set.Close()
	}
}

func shardSetFrom(b *testing.B, m *Manifest, dir string) *ShardSet {
	set, err := NewShardSet(m, ShardSetOptions{Masks: true, SPE: maskgen.SPEOptions{Mean: "region", Crop: "aligned", ReduceSingleRegion: true, Scale: 4}})
	if err != nil {
		b.Fatal(err)
	}
	for i, s := range m.Shards {
		sh, err := OpenShard(filepath.Join(dir, s.Name))
		if err != nil {
			b.Fatal(err)
		}
		if err := set.Attach(i, sh); err != nil {
			b.Fatal(err)
		}
	}
	return set
}

// patchRate is the Loader's steady-state patches/s from src over steps batches of bs
// (after one pass touching every tile).
func patchRate(b *testing.B, src TileSource, bs, steps int) float64 {
	for i := range src.AllTiles() {
		if _, err := src.Tile(i); err != nil {
			b.Fatal(err)
		}
	}
	ld, err := NewLoader(src, LoaderOptions{Seed: 1, BatchSize: bs, PatchSize: 160, Reduce: true})
	if err != nil {
		b.Fatal(err)
	}
	defer ld.Close()
	start := time.Now()
	for s := 0; s < steps; s++ {
		bt, err := ld.Batch(context.Background(), int64(s), 0, 1)
		if err != nil {
			b.Fatal(err)
		}
		ld.Recycle(bt)
	}
	return float64(steps*bs) / time.Since(start).Seconds()
}

// diskWriteMBs writes n bytes to a file, fsyncs it and returns MB/s.
func diskWriteMBs(b *testing.B, n int64) float64 {
	f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	for w := int64(0); w < n; w += int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), n-w)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds()
}
