package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/dataset"
)

func TestEvalBicubicJSON(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		if err := dataset.SavePNG(filepath.Join(dir, fmt.Sprintf("%d.png", i)), dataset.Synth(int64(i), 48, 40)); err != nil {
			t.Fatal(err)
		}
	}
	out, errs, code := runCLI(t, "--log-level", "error", "eval", "--baseline", "bicubic", "--data", dir, "--json", "--crop-border", "4")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var got map[string]float64
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stdout is not one JSON object: %q (%v)", out, err)
	}
	if len(got) != 3 || got["images"] != 2 || !(got["psnr_y"] > 10 && got["psnr_y"] < 100) || !(got["ssim_y"] > 0 && got["ssim_y"] < 1) {
		t.Fatalf("JSON = %v", got)
	}
	// Without --json: a CSV line per image and a summary.
	out, _, code = runCLI(t, "--log-level", "error", "eval", "--baseline", "bicubic", "--data", dir)
	if code != 0 || strings.Count(out, "\n") != 4 || !strings.Contains(out, "2 images: PSNR-Y") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}

func TestTrainSREvalUsageErrors(t *testing.T) {
	tests := [][]string{
		{"eval", "--data", "x"},
		{"eval", "--baseline", "bicubic", "--checkpoint", "c", "--data", "x"},
		{"eval", "--baseline", "lanczos", "--data", "x"},
		{"eval", "--baseline", "bicubic"},
		{"sr", "--in", "a.png", "--out", "b.png"},
		{"train", "--config", filepath.Join("..", "..", "configs", "quickstart.yaml"), "--stage", "gan"},
	}
	for _, args := range tests {
		if _, errs, code := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, errs)
		}
	}
	// A missing checkpoint is an error naming the path, never a random start.
	in := filepath.Join(t.TempDir(), "a.png")
	if err := dataset.SavePNG(in, dataset.Synth(1, 16, 16)); err != nil {
		t.Fatal(err)
	}
	_, errs, code := runCLI(t, "sr", "--checkpoint", "/nonexistent/ckpt", "--in", in, "--out", in+".sr.png")
	if code != 1 || !strings.Contains(errs, "/nonexistent/ckpt") {
		t.Fatalf("missing checkpoint: exit %d, %s", code, errs)
	}
}
