package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/worker"
)

// BenchmarkDataPush measures, in one run on loopback (an embedded nats-server on a
// TCP port and a single-voter coordinator in the same process), the packed
// dataset of the DIV2K-size photos (HR + LR, 320² tiles, 8 MiB shards: one or two images each) next to
// the local disk:
//
//	disk-MB/s     the same bytes written to a file and fsynced
//	push-MB/s     data push into an empty bucket: every shard uploaded (digest
//	              computed while it streams), the manifest, the raft registration
//	fetch-MB/s    every shard fetched to a file and verified against the
//	              registered manifest (StoreFetcher, as a worker's cache does)
//	cache-MB/s    a worker's empty shard cache filled: fetch, verify, expand to raw,
//	              verify the raw digest (packed bytes per second; cache-raw-MB/s
//	              counts the raw bytes written)
//	repush-ms     data push again: nothing sent (digests match), registration a
//	              duplicate
//	load1         the machine's 1-minute load average when the run ended
func BenchmarkDataPush(b *testing.B) {
	paths, _ := filepath.Glob(filepath.Join("..", "..", "..", "shared", "data", "photos", "*_2040.png"))
	if len(paths) == 0 {
		b.Skip("no ../../../shared/data/photos/*_2040.png (DIV2K-size photos); skipping")
	}
	var images []dataset.Image
	for _, p := range paths {
		images = append(images, dataset.Image{ID: strings.TrimSuffix(filepath.Base(p), ".png"), Set: dataset.SetPlain, HRPath: p})
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	packed := b.TempDir()
	m, _, err := dataset.PackShards(ctx, images, dataset.PackOptions{Out: packed, TileSize: 320, TileThreshold: 160, ShardBytes: 8 << 20, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	w := startRegistryWorld(b)
	js, err := jetstream.New(w.nc)
	if err != nil {
		b.Fatal(err)
	}
	bucket := natsutil.Names{Job: regJob}.DataBucket()
	mbs := func(d time.Duration) float64 { return float64(m.Bytes) / 1e6 / d.Seconds() }
	var disk, push, fetch, cache, repush time.Duration
	for i := 0; i < b.N; i++ {
		disk += diskWrite(b, m.Bytes)
		if err := js.DeleteObjectStore(ctx, bucket); err != nil && i > 0 {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, st, err := worker.PushPacked(ctx, w.nc, regJob, packed, worker.PushOptions{}); err != nil || st.Sent != len(m.Shards) {
			b.Fatal(st, err)
		}
		push += time.Since(t0)
		t0 = time.Now()
		if _, st, err := worker.PushPacked(ctx, w.nc, regJob, packed, worker.PushOptions{}); err != nil || st.Sent != 0 || st.Outcome != "duplicate" {
			b.Fatal(st, err)
		}
		repush += time.Since(t0)
		got, fetcher, err := worker.NATSSource(w.nc, regJob)(ctx)
		if err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		t0 = time.Now()
		for _, s := range got.Shards {
			if _, err := fetcher.FetchShard(ctx, s.Name, s.SHA256, filepath.Join(dir, s.Name)); err != nil {
				b.Fatal(err)
			}
		}
		fetch += time.Since(t0)
		c, err := dataset.NewShardCache(b.TempDir(), 0, fetcher, log)
		if err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		shards, err := c.Ensure(ctx, got.Shards)
		if err != nil {
			b.Fatal(err)
		}
		cache += time.Since(t0)
		for _, s := range shards {
			s.Close()
		}
	}
	n := time.Duration(b.N)
	b.ReportMetric(mbs(disk/n), "disk-MB/s")
	b.ReportMetric(mbs(push/n), "push-MB/s")
	b.ReportMetric(mbs(fetch/n), "fetch-MB/s")
	b.ReportMetric(mbs(cache/n), "cache-MB/s")
	b.ReportMetric(float64(m.RawBytes)/1e6/(cache/n).Seconds(), "cache-raw-MB/s")
	b.ReportMetric(float64((repush / n).Milliseconds()), "repush-ms")
	b.ReportMetric(float64(m.Bytes)/1e6, "packed-MB")
	b.ReportMetric(float64(len(m.Shards)), "shards")
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f, err := strconv.ParseFloat(strings.Fields(string(la))[0], 64); err == nil {
			b.ReportMetric(f, "load1")
		}
	}
}

// diskWrite writes n bytes to a new file and fsyncs it, returning the time taken.
func diskWrite(b *testing.B, n int64) time.Duration {
	b.Helper()
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
	return time.Since(start)
}
