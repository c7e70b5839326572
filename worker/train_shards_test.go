package worker

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// packedTiny packs tinySetup's images one per shard and returns a configuration
// training from that folder with its own cache.
func packedTiny(t *testing.T) (configs.Config, *dataset.Manifest) {
	t.Helper()
	cfg := tinySetup(t)
	layout, err := dataset.Discover(cfg.Data.Root)
	if err != nil {
		t.Fatal(err)
	}
	packed := t.TempDir()
	m, _, err := dataset.PackShards(context.Background(), layout.Train(), dataset.PackOptions{Out: packed, TileSize: cfg.Data.TileSize,
		TileThreshold: cfg.Data.TileThreshold, MasksDir: cfg.Masks.Dir, ShardBytes: 1, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Data.Packed, cfg.Data.Root, cfg.Data.CacheDir = packed, "", t.TempDir()
	return cfg, m
}

// TestPackedPrefetch: a worker prefetches the shards it would hold in a predicted
// world; when the generation comes with that world (in another rank order) its
// placement fetches nothing more and finds every shard as a hit. A prefetch for a
// world that does not come is cancelled and placement is still exact.
func TestPackedPrefetch(t *testing.T) {
	ctx := context.Background()
	cfg, m := packedTiny(t)
	d, err := openPacked(ctx, cfg, StageDiffusion, nil, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	predicted := []string{"a", "me"}
	owner, err := dataset.Assign(predicted, d.sizes)
	if err != nil {
		t.Fatal(err)
	}
	_, entries := d.shardsOf(owner, 1)
	if len(entries) == 0 || len(entries) == len(m.Shards) {
		t.Fatalf("me holds %d of %d shards in %v: pick another world", len(entries), len(m.Shards), predicted)
	}
	var want int64
	for _, e := range entries {
		want += e.Bytes
	}
	d.prefetchFor(predicted, 1)
	d.prefetchFor([]string{"me", "a"}, 0) // the same world: not started again
	d.stopPrefetch(true)
	if st := d.cache.Stats(); st.Prefetched != len(entries) || st.Fetched != len(entries) || st.BytesFetched != want || st.Hits != 0 {
		t.Fatalf("after the prefetch: %+v, want %d shards (%d bytes)", st, len(entries), want)
	}
	d.prefetchFor(predicted, 1)
	if _, err := d.place(ctx, []string{"me", "a"}, 0); err != nil {
		t.Fatal(err)
	}
	p := d.placement()
	if p.Shards != len(entries) || p.Hits != len(entries) || p.Fetched != len(entries) || p.Prefetched != len(entries) || p.BytesFetched != want {
		t.Fatalf("placement after the predicted generation: %+v", p)
	}
	// The placed world is not prefetched again.
	d.prefetchFor([]string{"a", "me"}, 1)
	if d.pf != nil {
		t.Fatal("prefetch started for the world already placed")
	}

	// A wrong guess: cancelled by the placement of the real world.
	cfg.Data.CacheDir = t.TempDir()
	d2, err := openPacked(ctx, cfg, StageDiffusion, nil, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer d2.close()
	d2.prefetchFor([]string{"x", "y", "me"}, 2)
	own, err := d2.place(ctx, []string{"me"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for tile := range own {
		if _, err := d2.set.Tile(tile); err != nil {
			t.Fatal(err)
		}
	}
	if p := d2.placement(); p.Shards != len(m.Shards) || p.Fetched < len(m.Shards)-p.Hits {
		t.Fatalf("placement after a wrong guess: %+v", p)
	}
}

// TestAwaitGenerationReportsOthers: a worker waiting to be admitted sees each
// generation formed without it (what it prefetches for).
func TestAwaitGenerationReportsOthers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := natsutil.StartEmbedded(ctx, natsutil.EmbeddedOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	names := natsutil.NamesFor("j")
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: names.TrainBucket()})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := openTrainControl(ctx, nc, "j", 20*time.Millisecond, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	put := func(g natsutil.GenerationInfo) {
		if _, err := kv.Put(ctx, natsutil.TrainGenerationKey, toJSON(t, g)); err != nil {
			t.Fatal(err)
		}
	}
	put(natsutil.GenerationInfo{Number: 4, Ranks: []natsutil.RankInfo{{Worker: "a"}, {Worker: "b"}}})
	seen := make(chan int, 4)
	type result struct {
		g    *natsutil.GenerationInfo
		rank int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		g, rank, err := ctl.awaitGeneration(ctx, natsutil.TrainReady{Worker: "me"}, func(g *natsutil.GenerationInfo) { seen <- g.Number })
		done <- result{g, rank, err}
	}()
	select {
	case n := <-seen:
		if n != 4 {
			t.Fatalf("saw generation %d, want 4", n)
		}
	case <-ctx.Done():
		t.Fatal("the generation without this worker was not reported")
	}
	put(natsutil.GenerationInfo{Number: 5, Ranks: []natsutil.RankInfo{{Worker: "a"}, {Worker: "me"}, {Worker: "b"}}})
	r := <-done
	if r.err != nil || r.g.Number != 5 || r.rank != 1 {
		t.Fatalf("admitted: generation %+v rank %d, %v", r.g, r.rank, r.err)
	}
	if len(seen) != 0 {
		t.Fatalf("the generation with this worker was reported as another's")
	}
}

func toJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
