package worker

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/collective"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
)

func TestLossBandsAndX0Steps(t *testing.T) {
	if got := lossBands(100); fmt.Sprint(got) != "[[0 10] [10 50] [50 100]]" {
		t.Errorf("lossBands(100) = %v", got)
	}
	if got := lossBands(4); fmt.Sprint(got) != "[[0 2] [2 4]]" {
		t.Errorf("lossBands(4) = %v", got)
	}
	b := lossBands(100)
	for _, c := range [][2]int{{0, 0}, {9, 0}, {10, 1}, {49, 1}, {50, 2}, {99, 2}} {
		if got := bandOf(b, c[0]); got != c[1] {
			t.Errorf("bandOf(%d) = %d, want %d", c[0], got, c[1])
		}
	}
	if got := x0Steps(100); fmt.Sprint(got) != "[0 10 25 50 90]" {
		t.Errorf("x0Steps(100) = %v", got)
	}
}

// TestMetricsLossByTCombinesToLoss trains the tiny diffusion stage and checks every
// metrics line: its bands' losses, weighted by their sample counts, give the
// logged loss, and the counts add up to steps × batch; validation lines carry the
// x̂0 quality at the fixed t.
func TestMetricsLossByTCombinesToLoss(t *testing.T) {
	cfg := tinySetup(t)
	cfg.Train.LogEvery, cfg.Train.ValEvery = 3, 6
	run := filepath.Join(t.TempDir(), "run")
	if _, err := Train(context.Background(), quietOpts(cfg, StageRRDB, run)); err != nil {
		t.Fatal(err)
	}
	if _, err := Train(context.Background(), quietOpts(cfg, StageDiffusion, run)); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadMetrics(filepath.Join(StageDir(run, StageDiffusion), MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	lines, vals := 0, 0
	for _, r := range recs {
		if r.ValPSNRY != nil {
			vals++
			if len(r.ValX0) != 5 || r.ValX0[0].T != 0 || r.ValX0[4].T != 90 || r.ValX0[0].PSNRY <= 0 {
				t.Errorf("validation line of step %d: x̂0 quality %+v", r.Step, r.ValX0)
			}
			continue
		}
		if r.Loss == nil {
			continue
		}
		lines++
		var sum, n float64
		for _, b := range r.LossByT {
			sum += b.Loss * float64(b.N)
			n += float64(b.N)
		}
		if int(n) != r.Steps*cfg.Train.BatchSize {
			t.Errorf("step %d: bands count %v samples, want %d steps × %d", r.Step, n, r.Steps, cfg.Train.BatchSize)
		}
		if d := math.Abs(sum/n - *r.Loss); d > 1e-6*(1+*r.Loss) {
			t.Errorf("step %d: bands %+v combine to %v, logged loss %v", r.Step, r.LossByT, sum/n, *r.Loss)
		}
	}
	if lines != 2 || vals != 1 {
		t.Errorf("%d loss lines and %d validation lines, want 2 and 1", lines, vals)
	}
}

// TestBandTotalsSameForAnyWorld checks that 1, 2 and 3 ranks computing the same
// global batches agree on each step's band totals (the sum over ranks, as the
// loss) up to float rounding.
func TestBandTotalsSameForAnyWorld(t *testing.T) {
	cfg := tinySetup(t)
	cfg.Train.BatchSize = 6
	const steps = 3
	want := bandsOfWorld(t, cfg, 1, steps)
	for _, world := range []int{2, 3} {
		got := bandsOfWorld(t, cfg, world, steps)
		for s := range want {
			for k := range want[s].Sum {
				if got[s].N[k] != want[s].N[k] || math.Abs(got[s].Sum[k]-want[s].Sum[k]) > 1e-5 {
					t.Errorf("world %d step %d band %d: %v over %v samples, world 1: %v over %v",
						world, s, k, got[s].Sum[k], got[s].N[k], want[s].Sum[k], want[s].N[k])
				}
			}
		}
	}
}

// bandsOfWorld trains the diffusion stage for steps steps with world ranks over the
// in-memory collective and returns rank 0's band totals of every step (every rank
// must hold the same).
func bandsOfWorld(t *testing.T, cfg configs.Config, world, steps int) []bandTotals {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := discardLog()
	if l, err := openLoader(ctx, cfg, StageDiffusion, nil, 1, log); err != nil {
		t.Fatal(err)
	} else {
		l.Close()
	}
	eps, peers := memEndpoints(t, world)
	out := make([][]bandTotals, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := 0; r < world; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := collective.Group{Generation: 1, Rank: r, World: world, Peers: peers, Secret: []byte("bands"), Timeout: 30 * time.Second}
			out[r], errs[r] = rankBands(ctx, cfg, eps[r], g, steps)
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d of %d: %v", r, world, err)
		}
	}
	for r := 1; r < world; r++ {
		for s := range out[0] {
			if fmt.Sprint(out[r][s]) != fmt.Sprint(out[0][s]) {
				t.Errorf("world %d step %d: rank %d has band totals %v, rank 0 %v", world, s, r, out[r][s], out[0][s])
			}
		}
	}
	return out[0]
}

func rankBands(ctx context.Context, cfg configs.Config, ep *collective.Endpoint, g collective.Group, steps int) ([]bandTotals, error) {
	net, err := NewNet(cfg, cfg.Seed, discardLog())
	if err != nil {
		return nil, err
	}
	defer net.Close()
	tr, err := newTrainer(net, cfg, StageDiffusion, 0)
	if err != nil {
		return nil, err
	}
	loader, err := openLoader(ctx, cfg, StageDiffusion, nil, tr.spec.batch, discardLog())
	if err != nil {
		return nil, err
	}
	defer loader.Close()
	ring, err := ep.Join(ctx, g)
	if err != nil {
		return nil, err
	}
	defer ring.Close()
	var out []bandTotals
	for tr.step < steps {
		ring.SetStep(int64(tr.step))
		if err := tr.compute(ctx, loader, dataset.Share{Rank: g.Rank, World: g.World}); err != nil {
			return nil, err
		}
		if err := tr.reduce(ctx, ring, g.World); err != nil {
			return nil, err
		}
		if ok, _, err := tr.agree(ctx, ring, g.World); err != nil || !ok {
			return nil, fmt.Errorf("step %d: ok %v, %w", tr.step, ok, err)
		}
		b := newBandTotals(len(tr.bands))
		b.add(tr.stepBands)
		out = append(out, b)
		if _, err := tr.apply(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TestPlotLossDrawsBands checks that the band losses change loss.png.
func TestPlotLossDrawsBands(t *testing.T) {
	dir := t.TempDir()
	plain := []MetricsRecord{{Step: 1, Loss: ptr(1)}, {Step: 2, Loss: ptr(0.5)}}
	banded := []MetricsRecord{
		{Step: 1, Loss: ptr(1), LossByT: []BandLoss{{From: 0, To: 9, Loss: 2, N: 1}, {From: 50, To: 99, Loss: 0.2, N: 3}}},
		{Step: 2, Loss: ptr(0.5), LossByT: []BandLoss{{From: 0, To: 9, Loss: 1.5, N: 2}, {From: 50, To: 99, Loss: 0.1, N: 2}}},
	}
	a, b := filepath.Join(dir, "a.png"), filepath.Join(dir, "b.png")
	if err := PlotLoss(a, "diffusion", plain); err != nil {
		t.Fatal(err)
	}
	if err := PlotLoss(b, "diffusion", banded); err != nil {
		t.Fatal(err)
	}
	ia, err := dataset.LoadRGB(a)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := dataset.LoadRGB(b)
	if err != nil {
		t.Fatal(err)
	}
	diff := 0
	for i := range ia.Pix {
		if ia.Pix[i] != ib.Pix[i] {
			diff++
		}
	}
	if diff < 500 {
		t.Errorf("the band lines changed %d values of loss.png", diff)
	}
}
