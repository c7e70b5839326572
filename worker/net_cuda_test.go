//go:build cuda

package worker

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/model/cuda"
)

// needGPU skips without a GPU (or the fake driver), unless CUDA_TEST_REQUIRED=1
// (not SAMDIFFSR_…: configs rejects unknown SAMDIFFSR_ variables).
func needGPU(t *testing.T) {
	t.Helper()
	d, err := cuda.Open(0)
	if err != nil {
		if os.Getenv("CUDA_TEST_REQUIRED") == "1" {
			t.Fatalf("no GPU: %v", err)
		}
		t.Skipf("no GPU: %v", err)
	}
	d.Close()
}

func closeLosses(t *testing.T, what string, a, b []float32, tol float64) {
	t.Helper()
	if len(a) != len(b) || len(a) == 0 {
		t.Fatalf("%s: %d and %d losses", what, len(a), len(b))
	}
	for i := range a {
		if d := math.Abs(float64(a[i]) - float64(b[i])); d > tol {
			t.Fatalf("%s: step %d loss %v vs %v (|d| %.3g > %g)", what, i, a[i], b[i], d, tol)
		}
	}
}

// TestTrainCUDAMatchesCPU runs both stages through Train on the CPU net and on
// the CUDA net (validation, checkpoints and a resume included): the losses agree
// within 1e-4, the CUDA run's checkpoints load on the CPU path with weights close
// to the CPU run's, and an interrupted and resumed CUDA run repeats the
// uninterrupted one exactly (Adam state through AdamState/LoadAdamState).
func TestTrainCUDAMatchesCPU(t *testing.T) {
	needGPU(t)
	base := tinySetup(t)
	run := func(backend, stage, dir, rrdb string, ctx context.Context, stopAfter int, resume bool) ([]float32, *TrainResult, error) {
		cfg := base
		cfg.Model.Backend = backend
		o := quietOpts(cfg, stage, dir)
		o.RRDB, o.Resume = rrdb, resume
		var losses []float32
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		o.OnStep = func(s int, l float32) {
			losses = append(losses, l)
			if s+1 == stopAfter {
				cancel()
			}
		}
		r, err := Train(ctx, o)
		return losses, r, err
	}
	bg := context.Background()
	cpuRun, gpuRun := filepath.Join(t.TempDir(), "cpu"), filepath.Join(t.TempDir(), "gpu")

	lc, rc, err := run("cpu", StageRRDB, cpuRun, "", bg, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	lg, rg, err := run("cuda", StageRRDB, gpuRun, "", bg, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	closeLosses(t, "rrdb stage", lc, lg, 1e-4)
	if rg.Val == nil || math.Abs(rg.Val.PSNRY-rc.Val.PSNRY) > 0.05 {
		t.Fatalf("rrdb validation: cpu %+v, cuda %+v", rc.Val, rg.Val)
	}

	// Diffusion from the same (CPU) RRDB on both.
	rrdb := rc.Checkpoint
	lc, rc, err = run("cpu", StageDiffusion, cpuRun, rrdb, bg, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	lg, rg, err = run("cuda", StageDiffusion, gpuRun, rrdb, bg, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	closeLosses(t, "diffusion stage", lc, lg, 1e-4)
	if rg.Val == nil {
		t.Fatal("no validation on the CUDA net")
	}

	// The CUDA run's checkpoint loads on the CPU path, close to the CPU run's.
	mc, ckc, _, err := LoadModel(rc.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	mg, ckg, rrdbOnly, err := LoadModel(rg.Checkpoint)
	if err != nil || rrdbOnly {
		t.Fatalf("load the CUDA checkpoint on the CPU: %v (rrdb-only %v)", err, rrdbOnly)
	}
	if len(ckg.Model) != len(ckc.Model) || len(ckg.Optimizer) != len(ckc.Optimizer) ||
		ckg.OptimizerMeta["adam_step"] != ckc.OptimizerMeta["adam_step"] {
		t.Fatalf("checkpoint layout: cuda %d tensors, %d moments, step %s; cpu %d, %d, %s",
			len(ckg.Model), len(ckg.Optimizer), ckg.OptimizerMeta["adam_step"], len(ckc.Model), len(ckc.Optimizer), ckc.OptimizerMeta["adam_step"])
	}
	for name := range ckc.Optimizer {
		if _, ok := ckg.Optimizer[name]; !ok {
			t.Fatalf("CUDA checkpoint lacks %s", name)
		}
	}
	gv, cv := mg.UNetValues(), mc.UNetValues()
	for i := range cv {
		if d := math.Abs(float64(gv[i] - cv[i])); d > 1e-4 {
			t.Fatalf("U-Net value %d: cuda %v, cpu %v", i, gv[i], cv[i])
		}
	}
	s, err := LoadSR(gpuRun, SROptions{Seed: 1, Log: discardLog(), Backend: "cpu"})
	if err != nil || !strings.HasPrefix(s.Backend(), "cpu") {
		t.Fatalf("LoadSR on the CPU: %v", err)
	}
	s.Close()

	// Interrupted after 3 steps and resumed on the CUDA net: the same losses.
	resRun := filepath.Join(t.TempDir(), "gpu-resumed")
	l1, r1, err := run("cuda", StageDiffusion, resRun, rrdb, bg, 3, false)
	if !errors.Is(err, context.Canceled) || r1.Step != 3 {
		t.Fatalf("interrupted run: step %d, err %v", r1.Step, err)
	}
	l2, _, err := run("cuda", StageDiffusion, resRun, rrdb, bg, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	closeLosses(t, "resumed cuda run", lg, append(l1, l2...), 0)
}
