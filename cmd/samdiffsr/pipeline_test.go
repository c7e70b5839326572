package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/dataset"
)

// TestPipelineEndToEnd runs the single-machine job through the CLI with a tiny model:
// synthetic data, RRDB pretraining, diffusion training (label maps made on the fly),
// the checkpoint registry, tiled super-resolution and evaluation from the checkpoint.
func TestPipelineEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end pipeline: skipped with -short")
	}
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	cfg := filepath.Join(dir, "tiny.yaml")
	body := fmt.Sprintf(`seed: 3
data:
  root: %[1]s/data/train
  val_root: %[1]s/data/val
  patch_size: 16
  tile_size: 32
  tile_threshold: 16
  val_images: 1
  val_size: 16
masks:
  dir: %[1]s/masks
  builtin: {sigma: 0.8, k: 300, min_size: 20}
model:
  rrdb: {nf: 4, nb: 2, gc: 4}
  unet: {dim: 8, dim_mults: [1, 2]}
diffusion: {timesteps: 100, modulation: paper}
train:
  batch_size: 2
  steps: 4
  lr: 1.0e-3
  rrdb_steps: 3
  rrdb_batch_size: 2
  val_every: 4
  ckpt_every: 2
  log_every: 1
  out: %[2]s
`, dir, run)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) string {
		t.Helper()
		out, errs, code := runCLI(t, append([]string{"--log-level", "error", "--config", cfg}, args...)...)
		if code != 0 {
			t.Fatalf("samdiffsr %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	cli("data", "synth", "--out", filepath.Join(dir, "data"), "--n", "3", "--val", "1", "--size", "48x48", "--seed", "5")
	cli("train", "--stage", "rrdb")
	cli("train", "--stage", "diffusion")

	// Label maps were made for every training image.
	maps, _ := filepath.Glob(filepath.Join(dir, "masks", "*.png"))
	if len(maps) != 3 {
		t.Fatalf("want 3 label maps made by train, found %v", maps)
	}
	// Run folder contents.
	for _, f := range []string{"config.yaml", "metrics.jsonl", "loss.png"} {
		if _, err := os.Stat(filepath.Join(run, "diffusion", f)); err != nil {
			t.Errorf("run folder lacks %s: %v", f, err)
		}
	}
	grids, _ := filepath.Glob(filepath.Join(run, "diffusion", "val_*.png"))
	if len(grids) == 0 {
		t.Errorf("no validation grid written")
	}
	// Checkpoints at steps 2 and 4, both complete; show reads the latest.
	out := cli("checkpoints", "list", filepath.Join(run, "diffusion"))
	if !strings.Contains(out, "step_000000002") || !strings.Contains(out, "step_000000004") {
		t.Fatalf("checkpoints list:\n%s", out)
	}
	out = cli("checkpoints", "show", filepath.Join(run, "diffusion"), "--json")
	var info checkpointInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Step != 4 || info.Stage != "diffusion" || info.Modulation != "paper" {
		t.Fatalf("checkpoints show: %v %+v", err, info)
	}

	// Super-resolve an LR image (made with the MATLAB-compatible downscale), tiled.
	val, _ := filepath.Glob(filepath.Join(dir, "data", "val", "*.png"))
	if len(val) != 1 {
		t.Fatalf("val images: %v", val)
	}
	lr := filepath.Join(dir, "lr.png")
	sr := filepath.Join(dir, "sr.png")
	cli("data", "downscale", "--in", val[0], "--out", lr)
	cli("sr", "--checkpoint", run+"/diffusion", "--in", lr, "--out", sr, "--tile", "8", "--overlap", "4", "--seed", "1")
	img, err := dataset.LoadRGB(sr)
	if err != nil {
		t.Fatal(err)
	}
	if img.W != 48 || img.H != 48 {
		t.Fatalf("SR of a 12x12 LR is %dx%d, want 48x48", img.W, img.H)
	}
	// Evaluate the checkpoint (full sampling) on the held-out image.
	out = cli("eval", "--checkpoint", run+"/diffusion", "--data", filepath.Join(dir, "data", "val"), "--json", "--tile", "8")
	var m map[string]float64
	if err := json.Unmarshal([]byte(out), &m); err != nil || m["images"] != 1 || !(m["psnr_y"] > 5) {
		t.Fatalf("eval: %v %q", err, out)
	}
}
