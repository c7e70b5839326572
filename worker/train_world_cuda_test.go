//go:build cuda

package worker

import "testing"

// TestWorldSizeEquivalenceCUDA drives the distributed trainer through the CUDA Net
// (gradients pulled from the device, summed by the ring, pushed back): 2 ranks
// reach the 1-rank weights within 1e-5 after 20 steps, and the ranks of a world
// hold identical weights.
func TestWorldSizeEquivalenceCUDA(t *testing.T) {
	needGPU(t)
	cfg := tinySetup(t)
	cfg.Model.Backend = "cuda"
	cfg.Train.BatchSize, cfg.Train.Steps = 6, 20
	one := runWorld(t, cfg, StageDiffusion, 1, 20)[0]
	two := runWorld(t, cfg, StageDiffusion, 2, 20)
	if !bitsEqual(two[0], two[1]) {
		t.Fatal("CUDA world 2: the ranks' weights differ")
	}
	d, where := maxRelDiff(t, cfg, one, two[0])
	t.Logf("CUDA world 2 vs 1 after 20 steps: max relative difference %.3g (%s)", d, where)
	if d > 1e-5 {
		t.Errorf("CUDA world 2 differs from world 1 by %.3g relative in %s", d, where)
	}
}
