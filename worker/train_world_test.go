package worker

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/collective"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// runWorld trains stage for steps steps with world ranks in lockstep over the
// in-memory collective (each rank its own model, loader and share of the global
// batch) and returns every rank's parameter values.
func runWorld(t *testing.T, cfg configs.Config, stage string, world, steps int) [][]float32 {
	w, _ := runWorldFetched(t, cfg, stage, world, steps, nil)
	return w
}

// runWorldFetched is runWorld that also returns the bytes each rank fetched (with
// data.packed).
func runWorldFetched(t *testing.T, cfg configs.Config, stage string, world, steps int, src PackedSource) ([][]float32, []int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := discardLog()
	// Pack the tile cache once before the ranks open it together.
	if cfg.Data.Packed == "" {
		if l, err := openLoader(ctx, cfg, stage, nil, 1, log); err != nil {
			t.Fatal(err)
		} else {
			l.Close()
		}
	}
	eps, peers := memEndpoints(t, world)
	out := make([][]float32, world)
	fetched := make([]int64, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := 0; r < world; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[r], errs[r] = runRank(ctx, cfg, stage, eps[r], collective.Group{Generation: 1, Rank: r, World: world, Peers: peers,
				Secret: []byte("equivalence"), Timeout: 30 * time.Second}, steps, fetched, src)
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d of %d: %v", r, world, err)
		}
	}
	return out, fetched
}

// memEndpoints listens world endpoints on one in-memory network (closed at the
// end of the test) and returns them with their addresses.
func memEndpoints(t *testing.T, world int) ([]*collective.Endpoint, []string) {
	t.Helper()
	mem := collective.NewMem()
	peers := make([]string, world)
	eps := make([]*collective.Endpoint, world)
	for r := range peers {
		ep, err := collective.Listen(mem, fmt.Sprintf("mem-%d", r), discardLog())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ep.Close() })
		eps[r], peers[r] = ep, ep.Addr()
	}
	return eps, peers
}

func runRank(ctx context.Context, cfg configs.Config, stage string, ep *collective.Endpoint, g collective.Group, steps int, fetched []int64, src PackedSource) ([]float32, error) {
	net, err := NewNet(cfg, cfg.Seed, discardLog())
	if err != nil {
		return nil, err
	}
	defer net.Close()
	tr, err := newTrainer(net, cfg, stage, 0)
	if err != nil {
		return nil, err
	}
	if cfg.Data.Packed != "" {
		// No shared folder: every rank its own shard cache.
		cfg.Data.CacheDir = filepath.Join(cfg.Data.CacheDir, fmt.Sprintf("rank-%d-of-%d", g.Rank, g.World))
	}
	td, err := openTrainData(ctx, cfg, stage, nil, tr.spec.batch, src, discardLog())
	if err != nil {
		return nil, err
	}
	loader := td.loader
	defer loader.Close()
	share := dataset.Share{Rank: g.Rank, World: g.World}
	if td.packed != nil {
		defer td.packed.close()
		workers := make([]string, g.World)
		for i := range workers {
			workers[i] = fmt.Sprintf("worker-%d", i)
		}
		if share.Owner, err = td.packed.place(ctx, workers, g.Rank); err != nil {
			return nil, err
		}
		if fetched != nil {
			fetched[g.Rank] = td.packed.cache.Stats().BytesFetched
		}
	}
	ring, err := ep.Join(ctx, g)
	if err != nil {
		return nil, err
	}
	defer ring.Close()
	for tr.step < steps {
		ring.SetStep(int64(tr.step))
		if err := tr.compute(ctx, loader, share); err != nil {
			return nil, err
		}
		if err := tr.reduce(ctx, ring, g.World); err != nil {
			return nil, err
		}
		ok, _, err := tr.agree(ctx, ring, g.World)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, tr.nonFiniteError("")
		}
		if _, err := tr.apply(); err != nil {
			return nil, err
		}
	}
	if err := net.PullValues(); err != nil {
		return nil, err
	}
	var vals []float32
	for _, p := range net.Model().Params() {
		vals = append(vals, p.Data...)
	}
	return vals, nil
}

// maxRelDiff is the largest difference between a and b over tensors, each scaled
// by its tensor's largest magnitude in a.
func maxRelDiff(t *testing.T, cfg configs.Config, a, b []float32) (float64, string) {
	t.Helper()
	net, err := NewNet(cfg, cfg.Seed, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	worst, where, o := 0.0, "", 0
	for _, p := range net.Model().Params() {
		n := len(p.Data)
		scale, d := 0.0, 0.0
		for i := o; i < o+n; i++ {
			scale = math.Max(scale, math.Abs(float64(a[i])))
			d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
		}
		if scale > 0 && d/scale > worst {
			worst, where = d/scale, p.Name
		}
		o += n
	}
	return worst, where
}

// TestWorldSizeEquivalence: with the same seed and global batch, 1, 2 and 3 ranks
// reach the same weights after 20 diffusion steps (within 1e-5 of each tensor's
// largest magnitude); every rank of a world holds the same weights bit for bit, and
// the same world size twice gives bit-identical weights.
func TestWorldSizeEquivalence(t *testing.T) {
	cfg := tinySetup(t)
	cfg.Train.BatchSize, cfg.Train.Steps = 6, 20
	const steps = 20
	one := runWorld(t, cfg, StageDiffusion, 1, steps)[0]
	for _, world := range []int{2, 3} {
		got := runWorld(t, cfg, StageDiffusion, world, steps)
		for r := 1; r < world; r++ {
			if !bitsEqual(got[0], got[r]) {
				t.Fatalf("world %d: rank %d's weights differ from rank 0's", world, r)
			}
		}
		d, where := maxRelDiff(t, cfg, one, got[0])
		t.Logf("world %d vs 1 after %d steps: max relative difference %.3g (%s)", world, steps, d, where)
		if d > 1e-5 {
			t.Errorf("world %d differs from world 1 by %.3g relative in %s", world, d, where)
		}
		if world == 2 {
			again := runWorld(t, cfg, StageDiffusion, 2, steps)
			if !bitsEqual(got[0], again[0]) {
				t.Errorf("two runs of world 2 are not bit-identical")
			}
		}
	}
	// The run must have moved: the weights are not the initial ones.
	net, _ := NewNet(cfg, cfg.Seed, discardLog())
	defer net.Close()
	var init []float32
	for _, p := range net.Model().Params() {
		init = append(init, p.Data...)
	}
	if d, _ := maxRelDiff(t, cfg, init, one); d < 1e-4 {
		t.Fatalf("training did not change the weights (max relative change %.3g)", d)
	}
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// TestWorldSizeEquivalencePacked: from a packed dataset with no shared folder (every
// rank its own shard cache, the shards reachable only through the fetcher: a folder,
// then the job's bucket on a NATS server with the registered manifest), 1, 2
// and 3 ranks reach the same weights as the tile cache's single rank (within 1e-5
// relative; world 1 bit for bit), each rank computing the samples of its own
// partitions, and each fetches exactly its assigned shards' bytes, every shard by
// one rank.
func TestWorldSizeEquivalencePacked(t *testing.T) {
	cfg := tinySetup(t)
	cfg.Train.BatchSize, cfg.Train.Steps = 6, 8
	const steps = 8
	ref := runWorld(t, cfg, StageDiffusion, 1, steps)[0]
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
	if len(m.Shards) != 3 {
		t.Fatalf("%d shards, want one per image", len(m.Shards))
	}
	var total int64
	for _, s := range m.Shards {
		total += s.Bytes
	}
	natsSrc := packedOverNATS(t, packed)
	for _, via := range []string{"folder", "nats"} {
		pc := cfg
		pc.Data.Packed, pc.Data.Root, pc.Data.CacheDir = packed, "", t.TempDir()
		var src PackedSource
		if via == "nats" {
			pc.Data.Packed, src = PackedNATS, natsSrc
		}
		checkPackedWorlds(t, cfg, pc, m, ref, src, via, total, steps)
	}
}

// packedOverNATS pushes the packed folder to a job's bucket on an embedded NATS
// server and returns the source workers read it through (the manifest as the
// coordinator registers it: cmd/samdiffsr's TestDataPushRegistered goes through a
// real coordinator).
func packedOverNATS(t *testing.T, packed string) PackedSource {
	t.Helper()
	ctx := context.Background()
	srv, err := natsutil.StartEmbedded(ctx, natsutil.EmbeddedOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	_, body, _, err := uploadPacked(ctx, js, "equiv", packed, PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := natsutil.DecodeDataManifest(body)
	if err != nil {
		t.Fatal(err)
	}
	return registeredSource(js, "equiv", rec)
}

// checkPackedWorlds trains 1, 2 and 3 ranks from the packed dataset (through src,
// or the folder when nil) and compares them with ref (the tile cache, world 1).
func checkPackedWorlds(t *testing.T, cfg, pc configs.Config, m *dataset.Manifest, ref []float32, src PackedSource, via string, total int64, steps int) {
	t.Helper()
	for _, world := range []int{1, 2, 3} {
		got, fetched := runWorldFetched(t, pc, StageDiffusion, world, steps, src)
		for r := 1; r < world; r++ {
			if !bitsEqual(got[0], got[r]) {
				t.Fatalf("world %d: rank %d's weights differ from rank 0's", world, r)
			}
		}
		d, where := maxRelDiff(t, cfg, ref, got[0])
		t.Logf("packed (%s) world %d vs tile cache world 1 after %d steps: max relative difference %.3g (%s); bytes fetched per rank %v of %d", via, world, steps, d, where, fetched, total)
		if world == 1 && !bitsEqual(ref, got[0]) {
			t.Errorf("packed world 1 differs from the tile cache's world 1 (%.3g in %s)", d, where)
		}
		if d > 1e-5 {
			t.Errorf("packed world %d differs from world 1 by %.3g relative in %s", world, d, where)
		}
		// Each rank fetched only its partitions: the same assignment, recomputed.
		workers := make([]string, world)
		for i := range workers {
			workers[i] = fmt.Sprintf("worker-%d", i)
		}
		parts := dataset.Partitions(m, pc.Data.Partitions)
		owner, _ := dataset.Assign(workers, dataset.PartitionBytes(m, parts))
		want := make([]int64, world)
		for p, w := range owner {
			for _, s := range parts[p] {
				want[w] += m.Shards[s].Bytes
			}
		}
		var sum int64
		for r := range fetched {
			sum += fetched[r]
			if fetched[r] != want[r] || (world > 1 && fetched[r] >= total) {
				t.Errorf("world %d rank %d fetched %d bytes, its shards hold %d (all shards %d)", world, r, fetched[r], want[r], total)
			}
		}
		if sum != total {
			t.Errorf("world %d: ranks fetched %d bytes in all, the shards hold %d", world, sum, total)
		}
	}
}
