package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/model"
)

// paperCheckpoint is a checkpoint of the paper-size model as the diffusion stage
// writes it: every weight (RRDB and U-Net) and the U-Net's two Adam moments.
func paperCheckpoint(b *testing.B) (checkpoints.Checkpoint, *model.SRDiff, configs.Config) {
	b.Helper()
	cfg, err := configs.LoadFiles(filepath.Join("..", "..", "configs", "sam_diffsr_x4.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	m, err := model.New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	ck := checkpoints.Checkpoint{Meta: checkpoints.Meta{Step: 1, Stage: "diffusion", ConfigHash: cfg.Hash(), Modulation: cfg.Diffusion.Modulation,
		Metrics: map[string]float64{"val_psnr_y": 27}},
		Model: map[string]checkpoints.Tensor{}, Optimizer: map[string]checkpoints.Tensor{}, OptimizerMeta: map[string]string{"adam_step": "1"}}
	for _, p := range m.Params() {
		ck.Model[p.Name] = checkpoints.Tensor{Shape: p.Shape, Data: p.Data}
	}
	for _, p := range m.UNetParams() {
		for _, k := range []string{".exp_avg", ".exp_avg_sq"} {
			d := make([]float32, len(p.Data))
			for i := range d {
				d[i] = float32(i%97) * 1e-4
			}
			ck.Optimizer[p.Name+k] = checkpoints.Tensor{Shape: p.Shape, Data: d}
		}
	}
	return ck, m, cfg
}

// perturb changes one value of every tensor so that each saved file is new to the
// bucket (content-addressed objects are otherwise not sent again).
func perturb(ck checkpoints.Checkpoint, i int) {
	for _, ts := range []map[string]checkpoints.Tensor{ck.Model, ck.Optimizer} {
		for _, t := range ts {
			t.Data[0] = float32(i)
			break
		}
	}
}

func dirBytes(b *testing.B, dir string) int64 {
	man, err := checkpoints.Verify(dir)
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, f := range man.Files {
		n += f.Size
	}
	return n
}

// BenchmarkRegistry measures, in one run on loopback, a paper-size checkpoint
// (weights + the U-Net's Adam moments, ≈ 205 MB): writing it to the local disk
// (checkpoints.Save, fsynced), publishing it (upload of every file to the Object
// Store of an embedded nats-server on a TCP port, then the raft commit), and
// pulling it into an empty cache (verified, assembled, swapped in). Throughputs are
// MB/s of checkpoint bytes, to compare with disk. Then the stall: paper-size
// diffusion steps (batch 1, 160² patches) without and during a publish running in
// the background, as the writer rank's publisher runs it.
func BenchmarkRegistry(b *testing.B) {
	ck, m, cfg := paperCheckpoint(b)
	w := startRegistryWorld(b)
	tmp := b.TempDir()
	ctx := context.Background()
	var size int64
	for _, kind := range []string{"disk", "publish", "pull"} {
		var total time.Duration
		for i := 0; i < b.N; i++ {
			dir := filepath.Join(tmp, "run", "diffusion", checkpoints.SubDir, checkpoints.DirName(int64(i+1)))
			ck.Meta.Step = int64(i + 1)
			perturb(ck, i+1)
			t0 := time.Now()
			if kind == "disk" || kind == "publish" {
				os.RemoveAll(dir)
				if err := checkpoints.Save(dir, ck); err != nil {
					b.Fatal(err)
				}
				if kind == "disk" {
					total += time.Since(t0)
					size = dirBytes(b, dir)
					continue
				}
			}
			switch kind {
			case "publish":
				t0 = time.Now()
				if _, err := w.reg.Publish(ctx, dir, testRetention, "bench"); err != nil {
					b.Fatal(err)
				}
			case "pull":
				info, err := w.reg.Resolve(ctx, checkpoints.Selector{Alias: "latest"})
				if err != nil {
					b.Fatal(err)
				}
				cache, out := filepath.Join(tmp, fmt.Sprint("cache", i)), filepath.Join(tmp, fmt.Sprint("out", i))
				t0 = time.Now()
				if _, err := w.reg.Pull(ctx, info, out, cache); err != nil {
					b.Fatal(err)
				}
				total += time.Since(t0)
				os.RemoveAll(cache)
				os.RemoveAll(out)
				continue
			}
			total += time.Since(t0)
		}
		b.ReportMetric(float64(size)*float64(b.N)/total.Seconds()/1e6, kind+"-MB/s")
	}
	b.ReportMetric(float64(size)/1e6, "checkpoint-MB")

	// The stall: diffusion steps of the paper model (batch 1, 160² patches) with
	// and without a publish of the checkpoint running in the background.
	step := stepper(b, m, cfg)
	step()
	timeSteps := func(k int) time.Duration {
		t0 := time.Now()
		for range k {
			step()
		}
		return time.Since(t0)
	}
	dir := filepath.Join(tmp, "stall")
	perturb(ck, 1000)
	if err := checkpoints.Save(dir, ck); err != nil {
		b.Fatal(err)
	}
	quiet := timeSteps(3)
	done := make(chan time.Duration, 1)
	go func() {
		t1 := time.Now()
		if _, err := w.reg.Publish(ctx, dir, testRetention, "bench"); err != nil {
			b.Error(err)
		}
		done <- time.Since(t1)
	}()
	// Steps while the upload runs, and one more (the publish may end mid-step).
	var busy time.Duration
	var n int
	var upload time.Duration
	for finished := false; !finished; {
		busy += timeSteps(1)
		n++
		select {
		case upload = <-done:
			finished = true
		default:
		}
	}
	quiet += timeSteps(3)
	perStep := quiet / 6
	extra := busy - time.Duration(n)*perStep
	b.ReportMetric(float64(perStep.Milliseconds()), "step-ms")
	b.ReportMetric(float64(n), "steps-during-publish")
	b.ReportMetric(100*extra.Seconds()/perStep.Seconds(), "publish-cost-%-of-a-step")
	b.ReportMetric(upload.Seconds(), "publish-s")
}

// stepper returns one diffusion training step (loss and gradients) of m on a
// random batch of one 160x160 patch.
func stepper(b *testing.B, m *model.SRDiff, cfg configs.Config) func() {
	rng := rand.New(rand.NewPCG(3, 3))
	const n, h, w = 1, 160, 160
	rnd := func(k int) []float32 {
		d := make([]float32, k)
		for i := range d {
			d[i] = rng.Float32()*2 - 1
		}
		return d
	}
	batch := &model.Batch{N: n, H: h, W: w, HR: rnd(n * 3 * h * w), Up: rnd(n * 3 * h * w), LR: rnd(n * 3 * h / 4 * w / 4), E: rnd(n * h * w)}
	ts := []int{rng.IntN(cfg.Diffusion.Timesteps)}
	noise := rnd(n * 3 * h * w)
	return func() {
		if _, err := m.DiffusionLoss(batch, ts, noise); err != nil {
			b.Fatal(err)
		}
	}
}
