package worker

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/collective"
	"github.com/samdiffsr/samdiffsr/configs"
)

// runWorld trains stage for steps steps with world ranks in lockstep over the
// in-memory collective (each rank its own model, loader and share of the global
// batch) and returns every rank's parameter values.
func runWorld(t *testing.T, cfg configs.Config, stage string, world, steps int) [][]float32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := discardLog()
	// Pack the tile cache once before the ranks open it together.
	if l, err := openLoader(ctx, cfg, stage, nil, 1, log); err != nil {
		t.Fatal(err)
	} else {
		l.Close()
	}
	mem := collective.NewMem()
	peers := make([]string, world)
	eps := make([]*collective.Endpoint, world)
	for r := range peers {
		ep, err := collective.Listen(mem, fmt.Sprintf("mem-%d", r), log)
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		eps[r], peers[r] = ep, ep.Addr()
	}
	out := make([][]float32, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := 0; r < world; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[r], errs[r] = runRank(ctx, cfg, stage, eps[r], collective.Group{Generation: 1, Rank: r, World: world, Peers: peers,
				Secret: []byte("equivalence"), Timeout: 30 * time.Second}, steps)
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d of %d: %v", r, world, err)
		}
	}
	return out
}

func runRank(ctx context.Context, cfg configs.Config, stage string, ep *collective.Endpoint, g collective.Group, steps int) ([]float32, error) {
	net, err := NewNet(cfg, cfg.Seed, discardLog())
	if err != nil {
		return nil, err
	}
	defer net.Close()
	tr, err := newTrainer(net, cfg, stage, 0)
	if err != nil {
		return nil, err
	}
	loader, err := openLoader(ctx, cfg, stage, nil, tr.spec.batch, discardLog())
	if err != nil {
		return nil, err
	}
	defer loader.Close()
	ring, err := ep.Join(ctx, g)
	if err != nil {
		return nil, err
	}
	defer ring.Close()
	for tr.step < steps {
		ring.SetStep(int64(tr.step))
		if err := tr.compute(ctx, loader, g.Rank, g.World); err != nil {
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
