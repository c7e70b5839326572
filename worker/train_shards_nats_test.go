package worker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/objstore/objstoretest"
)

// TestPackedOverNATS: a packed dataset uploaded to the job's bucket (again: nothing
// sent) is fetched by two workers with their own caches, each exactly its assigned
// shards' bytes; a shard with a flipped byte in the store is reported by name and
// never reaches a cache.
func TestPackedOverNATS(t *testing.T) {
	ctx := context.Background()
	cfg := tinySetup(t)
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
	layout, err := dataset.Discover(cfg.Data.Root)
	if err != nil {
		t.Fatal(err)
	}
	packed := t.TempDir()
	m, _, err := dataset.PackShards(ctx, layout.Train(), dataset.PackOptions{Out: packed, TileSize: cfg.Data.TileSize,
		TileThreshold: cfg.Data.TileThreshold, MasksDir: cfg.Masks.Dir, ShardBytes: 1, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, st, err := uploadPacked(ctx, js, "job1", packed, PushOptions{}); err != nil || st.Sent != len(m.Shards) {
		t.Fatalf("push: %+v %v", st, err)
	}
	_, body, st, err := uploadPacked(ctx, js, "job1", packed, PushOptions{})
	if err != nil || st.Sent != 0 || st.Skipped != len(m.Shards) || st.Bytes != 0 {
		t.Fatalf("second push sent again: %+v %v", st, err)
	}
	// What the coordinator registers (cmd/samdiffsr's TestDataPushRegistered goes
	// through a real one).
	rec, err := natsutil.DecodeDataManifest(body)
	if err != nil || rec.SHA256 != m.Digest() {
		t.Fatalf("manifest object %s is not the manifest's digest %s: %v", rec.SHA256, m.Digest(), err)
	}
	src := registeredSource(js, "job1", rec)
	workers := []string{"a", "b"}
	pc := cfg
	pc.Data.Packed, pc.Data.Root = PackedNATS, ""
	var total int64
	for rank := range workers {
		pc.Data.CacheDir = t.TempDir()
		d, err := openPacked(ctx, pc, StageDiffusion, src, discardLog())
		if err != nil {
			t.Fatal(err)
		}
		owner, err := d.place(ctx, workers, rank)
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		for tile, r := range owner {
			if r == rank {
				if _, err := d.set.Tile(tile); err != nil {
					t.Fatal(err)
				}
			}
		}
		held := d.set.Attached()
		for i, h := range held {
			if h {
				want += m.Shards[i].Bytes
			}
		}
		if got := d.cache.Stats().BytesFetched; got != want || want == 0 {
			t.Fatalf("rank %d fetched %d bytes, its shards hold %d", rank, got, want)
		}
		// What the rank reports for `samdiffsr status`.
		nheld := 0
		for _, h := range held {
			if h {
				nheld++
			}
		}
		rep := &progressReporter{worker: workers[rank], rank: rank, last: time.Now()}
		rep.setData(d.placement)
		p := rep.report().Data
		wantP := natsutil.DataPlacement{Shards: nheld, Total: len(m.Shards), Bytes: want, Fetched: nheld, BytesFetched: want}
		if p == nil || *p != wantP {
			t.Fatalf("rank %d reports placement %+v, want %+v", rank, p, wantP)
		}
		total += want
		d.close()
		// Restarted on the same cache folder: every shard is a hit, nothing fetched.
		d, err = openPacked(ctx, pc, StageDiffusion, src, discardLog())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.place(ctx, workers, rank); err != nil {
			t.Fatal(err)
		}
		wantP.Hits, wantP.Fetched, wantP.BytesFetched = nheld, 0, 0
		if p := d.placement(); *p != wantP {
			t.Fatalf("rank %d after a restart reports %+v, want %+v", rank, p, wantP)
		}
		d.close()
	}
	if total != m.Bytes {
		t.Fatalf("the two workers fetched %d bytes, the dataset has %d", total, m.Bytes)
	}
	// A record whose shards differ from the manifest's is refused, naming the shard.
	other := rec
	other.Shards = append([]natsutil.DataShard(nil), rec.Shards...)
	other.Shards[1].SHA256 = strings.Repeat("0", 64)
	if err := checkRegistered(m, other); err == nil || !strings.Contains(err.Error(), m.Shards[1].Name) {
		t.Fatalf("shard list differing from the registered one: %v", err)
	}
	// A flipped byte in the store: detected, reported by name, not cached.
	bad := m.Shards[1]
	if err := objstoretest.FlipByte(ctx, js, natsutil.Names{Job: "job1"}.DataBucket(), bad.Name, 200); err != nil {
		t.Fatal(err)
	}
	pc.Data.CacheDir = t.TempDir()
	d, err := openPacked(ctx, pc, StageDiffusion, src, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	_, err = d.place(ctx, []string{"solo"}, 0)
	if err == nil || !strings.Contains(err.Error(), bad.Name) || !errors.Is(err, dataset.ErrDamagedShard) {
		t.Fatalf("corrupt shard in the store: %v", err)
	}
}
