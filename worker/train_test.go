package worker

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

// tinySetup writes 3 training and 1 validation synthetic 32x32 images, a two-region
// label map per training image, and returns a tiny configuration over them.
func tinySetup(t testing.TB) configs.Config {
	t.Helper()
	root := t.TempDir()
	train, val, err := dataset.WriteSynth(context.Background(), filepath.Join(root, "data"), dataset.SynthOptions{N: 3, Val: 1, W: 32, H: 32, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	masks := filepath.Join(root, "masks")
	layout, err := dataset.Discover(train)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range layout.Images {
		lm := maskgen.NewLabelMap(32, 32)
		lm.Regions = 2
		for y := 0; y < 32; y++ {
			for x := 0; x < 32; x++ {
				lm.Labels[y*32+x] = uint16(1 + (x+y/3)/21)
			}
		}
		src, _ := os.ReadFile(im.HRPath)
		sc := &maskgen.Sidecar{Format: maskgen.SidecarFormat, Segmenter: "test", Regions: 2, Width: 32, Height: 32,
			Source: im.ID, SourceSHA256: maskgen.SHA256Hex(src)}
		if err := maskgen.WriteLabelMap(dataset.MaskPath(masks, im.ID), lm, sc); err != nil {
			t.Fatal(err)
		}
	}
	cfg := configs.Default()
	cfg.Seed = 3
	cfg.Data.Root, cfg.Data.ValRoot, cfg.Data.CacheDir = train, val, filepath.Join(root, "cache")
	cfg.Data.PatchSize, cfg.Data.TileSize, cfg.Data.TileThreshold = 16, 32, 16
	cfg.Data.ValImages, cfg.Data.ValSize = 1, 32
	cfg.Masks.Dir = masks
	cfg.Model.RRDB = configs.RRDB{NF: 4, NB: 2, GC: 4}
	cfg.Model.UNet = configs.UNet{Dim: 4, DimMults: []int{1, 2}}
	cfg.Train.BatchSize, cfg.Train.Steps, cfg.Train.LR = 2, 6, 1e-3
	cfg.Train.RRDBBatchSize, cfg.Train.RRDBSteps, cfg.Train.RRDBLR = 2, 4, 1e-3
	cfg.Train.LogEvery, cfg.Train.ValEvery, cfg.Train.CkptEvery = 1, 3, 2
	cfg.Train.KeepCheckpoints = 0
	return cfg
}

func quietOpts(cfg configs.Config, stage, run string) TrainOptions {
	return TrainOptions{Config: cfg, Stage: stage, Run: run, Log: discardLog()}
}

// TestTrainResumeIsBitIdentical runs the diffusion stage uninterrupted, and again
// interrupted by a context cancel (Ctrl-C) after 3 steps and resumed: the loss of every
// step and the final weights must be identical bit for bit.
func TestTrainResumeIsBitIdentical(t *testing.T) {
	cfg := tinySetup(t)
	runA := filepath.Join(t.TempDir(), "a")
	r, err := Train(context.Background(), quietOpts(cfg, StageRRDB, runA))
	if err != nil {
		t.Fatal(err)
	}
	if r.Step != 4 || r.Val == nil || r.Checkpoint == "" {
		t.Fatalf("rrdb stage result %+v", r)
	}
	rrdb := r.Checkpoint

	var lossA []float32
	oa := quietOpts(cfg, StageDiffusion, runA)
	oa.OnStep = func(_ int, l float32) { lossA = append(lossA, l) }
	ra, err := Train(context.Background(), oa)
	if err != nil {
		t.Fatal(err)
	}
	if len(lossA) != 6 || ra.Step != 6 {
		t.Fatalf("uninterrupted run: %d losses, step %d", len(lossA), ra.Step)
	}

	runB := filepath.Join(t.TempDir(), "b")
	ctx, cancel := context.WithCancel(context.Background())
	var lossB []float32
	ob := quietOpts(cfg, StageDiffusion, runB)
	ob.RRDB = rrdb
	ob.OnStep = func(s int, l float32) {
		lossB = append(lossB, l)
		if s == 2 {
			cancel()
		}
	}
	rb, err := Train(ctx, ob)
	if !errors.Is(err, context.Canceled) || rb.Step != 3 {
		t.Fatalf("interrupted run: step %d, err %v", rb.Step, err)
	}
	if _, err := os.Stat(filepath.Join(StageDir(runB, StageDiffusion), checkpoints.SubDir, checkpoints.DirName(3), checkpoints.ManifestFile)); err != nil {
		t.Fatalf("no final checkpoint after the interrupt: %v", err)
	}
	// Without --resume the stage refuses to overwrite.
	if _, err := Train(context.Background(), ob); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("fresh start over checkpoints: %v", err)
	}
	ob.Resume = true
	if _, err := Train(context.Background(), ob); err != nil {
		t.Fatal(err)
	}
	if len(lossB) != 6 {
		t.Fatalf("interrupted+resumed run has %d losses", len(lossB))
	}
	for i := range lossA {
		if math.Float32bits(lossA[i]) != math.Float32bits(lossB[i]) {
			t.Fatalf("step %d: loss %v uninterrupted, %v resumed", i, lossA[i], lossB[i])
		}
	}
	ca, err := checkpoints.Load(StageDir(runA, StageDiffusion))
	if err != nil {
		t.Fatal(err)
	}
	cb, err := checkpoints.Load(StageDir(runB, StageDiffusion))
	if err != nil {
		t.Fatal(err)
	}
	if ca.Meta.Step != 6 || cb.Meta.Step != 6 || len(ca.Model) != len(cb.Model) {
		t.Fatalf("final checkpoints: steps %d %d", ca.Meta.Step, cb.Meta.Step)
	}
	for name, ta := range ca.Model {
		tb := cb.Model[name]
		for i := range ta.Data {
			if math.Float32bits(ta.Data[i]) != math.Float32bits(tb.Data[i]) {
				t.Fatalf("weight %s[%d] differs: %v vs %v", name, i, ta.Data[i], tb.Data[i])
			}
		}
	}
	// The resumed run's metrics.jsonl reads as an uninterrupted one.
	recA, _ := ReadMetrics(filepath.Join(StageDir(runA, StageDiffusion), MetricsFile))
	recB, _ := ReadMetrics(filepath.Join(StageDir(runB, StageDiffusion), MetricsFile))
	if len(recA) != len(recB) {
		t.Fatalf("metrics.jsonl: %d lines vs %d", len(recA), len(recB))
	}
	for i := range recA {
		if recA[i].Step != recB[i].Step || (recA[i].Loss != nil) != (recB[i].Loss != nil) ||
			(recA[i].Loss != nil && *recA[i].Loss != *recB[i].Loss) {
			t.Fatalf("metrics line %d differs: %+v vs %+v", i, recA[i], recB[i])
		}
	}
	for _, f := range []string{ConfigFile, LossPlot, "val_000003.png", "val_000006.png"} {
		if _, err := os.Stat(filepath.Join(StageDir(runA, StageDiffusion), f)); err != nil {
			t.Errorf("run folder lacks %s", f)
		}
	}
	// The trained checkpoint super-resolves through the run directory.
	sr, err := LoadSR(runA, SROptions{Seed: 1, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	if sr.RRDBOnly() || sr.Meta.Step != 6 {
		t.Fatalf("LoadSR picked %+v", sr.Meta)
	}
	lr := patternRGB(9, 6)
	out, err := sr.Upscale(context.Background(), lr)
	if err != nil || out.W != 36 || out.H != 24 {
		t.Fatalf("SR: %v", err)
	}
}

func TestTrainResumeAndRRDBErrors(t *testing.T) {
	cfg := tinySetup(t)
	run := filepath.Join(t.TempDir(), "run")
	o := quietOpts(cfg, StageDiffusion, run)
	// No RRDB yet.
	if _, err := Train(context.Background(), o); err == nil || !strings.Contains(err.Error(), filepath.Join(run, StageRRDB)) {
		t.Fatalf("diffusion without RRDB: %v", err)
	}
	// Resume with nothing to resume from names the folder.
	o.Resume = true
	if _, err := Train(context.Background(), o); err == nil || !strings.Contains(err.Error(), StageDir(run, StageDiffusion)) {
		t.Fatalf("resume from nothing: %v", err)
	}
	// Every checkpoint damaged: an error naming what was skipped, never a fresh start.
	cfg.Train.RRDBSteps = 2
	if _, err := Train(context.Background(), quietOpts(cfg, StageRRDB, run)); err != nil {
		t.Fatal(err)
	}
	ck := filepath.Join(StageDir(run, StageRRDB), checkpoints.SubDir, checkpoints.DirName(2), checkpoints.ModelFile)
	b, _ := os.ReadFile(ck)
	os.WriteFile(ck, b[:len(b)-8], 0o644)
	or := quietOpts(cfg, StageRRDB, run)
	or.Resume = true
	if _, err := Train(context.Background(), or); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("resume from a damaged checkpoint: %v", err)
	}
}

// TestTrainStopsOnNonFiniteLoss: an RRDB with a NaN weight makes the first diffusion
// loss NaN; the run stops naming the step and writes no checkpoint and no metrics.
func TestTrainStopsOnNonFiniteLoss(t *testing.T) {
	cfg := tinySetup(t)
	run := filepath.Join(t.TempDir(), "run")
	cfg.Train.RRDBSteps = 1
	r, err := Train(context.Background(), quietOpts(cfg, StageRRDB, run))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := checkpoints.Load(r.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	for name, tn := range ck.Model {
		if strings.Contains(name, "conv_first.weight") {
			tn.Data[0] = float32(math.NaN())
		}
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := checkpoints.Save(bad, *ck); err != nil {
		t.Fatal(err)
	}
	o := quietOpts(cfg, StageDiffusion, run)
	o.RRDB = bad
	_, err = Train(context.Background(), o)
	if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), "step 0") {
		t.Fatalf("NaN loss: %v", err)
	}
	if es, _ := checkpoints.List(StageDir(run, StageDiffusion)); len(es) != 0 {
		t.Fatalf("checkpoints written after a NaN loss: %+v", es)
	}
	recs, _ := ReadMetrics(filepath.Join(StageDir(run, StageDiffusion), MetricsFile))
	if len(recs) != 0 {
		t.Fatalf("metrics written after a NaN loss: %+v", recs)
	}
}
