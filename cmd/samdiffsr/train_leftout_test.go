package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/dataset"
)

// TestTrainSummaryNamesImagesLeftOut: a training image that cannot be used is
// left out (training goes on) and the final summary says so, naming it.
func TestTrainSummaryNamesImagesLeftOut(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := dataset.WriteSynth(context.Background(), filepath.Join(dir, "data"), dataset.SynthOptions{N: 3, W: 48, H: 48, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "data", "train", "zz_broken.png")
	if err := os.WriteFile(bad, []byte("\x89PNG\r\n\x1a\nnot really"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "c.yaml")
	yaml := fmt.Sprintf(`data: {root: %[1]s/data/train, cache_dir: %[1]s/cache, patch_size: 16, tile_size: 48, tile_threshold: 16}
model: {rrdb: {nf: 8, nb: 2, gc: 8}, unet: {dim: 8, dim_mults: [1, 2]}}
masks: {dir: %[1]s/masks}
train: {rrdb_batch_size: 2, rrdb_steps: 2, ckpt_every: 0, val_every: 0, log_every: 1, keep_checkpoints: 0, out: %[1]s/run}
`, dir)
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SAMDIFFSR_CLUSTER_NATS_URL", "")
	out, errs, code := runCLI(t, "train", "--config", cfgFile, "--stage", "rrdb")
	if code != 0 {
		t.Fatalf("train: exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "left out    1 training images") || !strings.Contains(out, bad) {
		t.Fatalf("summary does not name the image left out:\n%s", out)
	}
}
