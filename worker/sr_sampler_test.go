package worker

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/model"
)

// TestLoadSRSampler: a DDIM sampler runs its few steps on a checkpoint trained with
// modulation none, and LoadSR refuses it, naming sr.sampler, for one trained with
// the paper's modulation.
func TestLoadSRSampler(t *testing.T) {
	ddim := model.Sampler{DDIM: true, Steps: 7}
	for _, mod := range []string{"none", "paper"} {
		cfg := tinySetup(t)
		cfg.Diffusion.Modulation = mod
		cfg.Train.ValEvery = 0
		run := filepath.Join(t.TempDir(), "run")
		for _, st := range []string{StageRRDB, StageDiffusion} {
			if _, err := Train(context.Background(), quietOpts(cfg, st, run)); err != nil {
				t.Fatal(err)
			}
		}
		steps := 0
		s, err := LoadSR(run, SROptions{Seed: 1, Log: discardLog(), Sampler: ddim, OnStep: func() { steps++ }})
		if mod == "paper" {
			if err == nil || !strings.Contains(err.Error(), "sr.sampler ddim") || !strings.Contains(err.Error(), "modulation paper") {
				t.Errorf("paper checkpoint with DDIM: %v, want a refusal naming sr.sampler and the modulation", err)
			}
			if err == nil {
				s.Close()
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out, err := s.Upscale(context.Background(), dataset.NewRGB(8, 8))
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		if out.W != 32 || out.H != 32 || steps != 7 || s.Steps != 7 {
			t.Errorf("DDIM 7 steps: %dx%d output after %d steps (SR.Steps %d)", out.W, out.H, steps, s.Steps)
		}
	}
}
