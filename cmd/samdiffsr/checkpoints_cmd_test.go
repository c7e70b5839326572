package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/checkpoints"
)

func saveTestCheckpoint(t *testing.T, run string, step int64) string {
	t.Helper()
	dir := filepath.Join(run, checkpoints.SubDir, checkpoints.DirName(step))
	err := checkpoints.Save(dir, checkpoints.Checkpoint{
		Meta: checkpoints.Meta{Step: step, Stage: "diffusion", Modulation: "paper", ConfigHash: "abc",
			Metrics: map[string]float64{"psnr_y": 30.5}},
		Model: map[string]checkpoints.Tensor{
			"denoise_fn.final_conv.weight": {Shape: []int{3, 2}, Data: []float32{1, 2, 3, 4, 5, 6}},
			"rrdb.conv_first.bias":         {Shape: []int{2}, Data: []float32{7, 8}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCheckpointsListVerifyShow(t *testing.T) {
	run := t.TempDir()
	saveTestCheckpoint(t, run, 100)
	d200 := saveTestCheckpoint(t, run, 200)

	out, errs, code := runCLI(t, "checkpoints", "list", run)
	if code != 0 || !strings.Contains(out, "100") || !strings.Contains(out, "200") || strings.Contains(out, "DAMAGED") {
		t.Fatalf("list: exit %d out %q err %q", code, out, errs)
	}
	out, errs, code = runCLI(t, "checkpoints", "show", run, "--json")
	if code != 0 || !strings.Contains(out, `"step": 200`) || !strings.Contains(out, `"parameters": 8`) || !strings.Contains(out, `"psnr_y": 30.5`) {
		t.Fatalf("show: exit %d out %q err %q", code, out, errs)
	}

	// Damage the latest: verify fails naming it, list marks it, show falls back to step 100.
	mf := filepath.Join(d200, checkpoints.ModelFile)
	data, err := os.ReadFile(mf)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 0xff
	if err := os.WriteFile(mf, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errs, code = runCLI(t, "checkpoints", "verify", d200)
	if code != 1 || !strings.Contains(errs, mf) {
		t.Fatalf("verify of damaged: exit %d err %q", code, errs)
	}
	out, _, code = runCLI(t, "checkpoints", "list", run)
	if code != 1 || !strings.Contains(out, "DAMAGED") {
		t.Fatalf("list with damaged: exit %d out %q", code, out)
	}
	out, errs, code = runCLI(t, "checkpoints", "show", run, "--json")
	if code != 0 || !strings.Contains(out, `"step": 100`) {
		t.Fatalf("show should use the latest complete checkpoint: exit %d out %q err %q", code, out, errs)
	}
	_, errs, code = runCLI(t, "checkpoints", "show", filepath.Join(run, "nope"))
	if code == 0 || !strings.Contains(errs, "nope") {
		t.Fatalf("missing checkpoint not named: exit %d err %q", code, errs)
	}
}
