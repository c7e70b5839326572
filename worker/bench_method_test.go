package worker

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/samdiffsr/samdiffsr/dataset"
)

// TestMethodBench runs the ablation on synthetic "photos" with the tiny model: a row
// per modulation, budget and sampler, DDIM marked unsound for paper only, loss
// bands from the window before each budget and x̂0 quality at the fixed t.
func TestMethodBench(t *testing.T) {
	cfg := tinySetup(t)
	cfg.Data.ValSize = 16
	cfg.Masks.Builtin.MinSize = 10
	photos, _, err := dataset.WriteSynth(context.Background(), filepath.Join(t.TempDir(), "photos"), dataset.SynthOptions{N: 3, W: 48, H: 48, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := MethodBench(context.Background(), MethodBenchOptions{Config: cfg, Photos: photos, TrainPhotos: 2, TrainCrops: 4, ValCrops: 2,
		CropSize: 32, Out: t.TempDir(), Budgets: []int{10, 4}, Modulations: []string{"none", "paper"}, DDIMSteps: 4, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 8 {
		t.Fatalf("%d rows, want 2 modulations × 2 budgets × 2 samplers", len(rows))
	}
	for i, r := range rows {
		wantSteps := []int{4, 10}[(i/2)%2]
		ddim := i%2 == 1
		if r.Steps != wantSteps || (r.Sampler == "ddpm") == ddim {
			t.Errorf("row %d: steps %d sampler %s, want %d and ddim=%v", i, r.Steps, r.Sampler, wantSteps, ddim)
		}
		if r.Sound != !(ddim && r.Modulation == "paper") {
			t.Errorf("row %d (%s, %s): sound %v", i, r.Modulation, r.Sampler, r.Sound)
		}
		if len(r.LossByT) == 0 || len(r.X0) != 5 || r.PSNRY <= 0 || r.BicubicPSNRY <= 0 {
			t.Errorf("row %d: %+v", i, r)
		}
		n := 0
		for _, b := range r.LossByT {
			n += b.N
		}
		if want := max(wantSteps/5, 1) * cfg.Train.BatchSize; n != want {
			t.Errorf("row %d: loss bands over %d samples, want the last fifth (%d)", i, n, want)
		}
	}
}
