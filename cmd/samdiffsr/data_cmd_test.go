package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/dataset"
)

func TestDataSynthCheckAndCorruptFile(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := runCLI(t, "data", "synth", "--out", dir, "--n", "3", "--val", "1", "--size", "64x48", "--seed", "4")
	if code != 0 || !strings.Contains(out, "wrote 3 training images") {
		t.Fatalf("synth: exit %d, out %q, err %q", code, out, errs)
	}
	train := filepath.Join(dir, "train")
	out, errs, code = runCLI(t, "data", "check", "--root", train)
	if code != 0 || !strings.Contains(out, "plain") || !strings.Contains(out, "0 problems") {
		t.Fatalf("check of a good folder: exit %d, out %q, err %q", code, out, errs)
	}
	// Corrupt one PNG: check names it, exits non-zero and still reports the others.
	bad := filepath.Join(train, "0002.png")
	data, err := os.ReadFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, code = runCLI(t, "data", "check", "--root", train)
	if code != 1 {
		t.Fatalf("check with a corrupt file: exit %d, want 1 (out %q)", code, out)
	}
	if !strings.Contains(out, "problem: "+bad) || !strings.Contains(out, "3 images") || !strings.Contains(out, "1 problems") {
		t.Fatalf("check output does not name %s or miss the other images:\n%s\n%s", bad, out, errs)
	}
}

func TestDataCheckDIV2KMismatch(t *testing.T) {
	root := t.TempDir()
	hr := dataset.Synth(1, 64, 64)
	dataset.SavePNG(filepath.Join(root, "DIV2K_train_HR", "0001.png"), hr)
	dataset.SavePNG(filepath.Join(root, "DIV2K_train_HR", "0002.png"), hr)
	dataset.SavePNG(filepath.Join(root, "DIV2K_train_LR_bicubic", "X4", "0001x4.png"), dataset.NewRGB(20, 16))
	out, _, code := runCLI(t, "data", "check", "--root", root)
	if code != 1 || !strings.Contains(out, "0001x4.png") || !strings.Contains(out, "must be 16x16") ||
		!strings.Contains(out, "missing LR pair") || !strings.Contains(out, "DIV2K_train") {
		t.Fatalf("exit %d, out:\n%s", code, out)
	}
}

func TestDataDownscale(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "hr.png")
	img := dataset.Synth(3, 66, 50) // cropped to 64x48 first
	if err := dataset.SavePNG(in, img); err != nil {
		t.Fatal(err)
	}
	outPath := filepath.Join(dir, "lr.png")
	out, errs, code := runCLI(t, "data", "downscale", "--in", in, "--out", outPath)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errs)
	}
	got, err := dataset.LoadRGB(outPath)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := dataset.Downscale4(img)
	if got.W != 16 || got.H != 12 || !bytes.Equal(got.Pix, want.Pix) {
		t.Fatalf("LR %dx%d differs from Downscale4", got.W, got.H)
	}
	if _, errs, code := runCLI(t, "data", "downscale", "--in", filepath.Join(dir, "absent.png"), "--out", outPath); code == 0 || !strings.Contains(errs, "absent.png") {
		t.Fatalf("missing input: exit %d, err %q", code, errs)
	}
}

func TestDataPack(t *testing.T) {
	dir := t.TempDir()
	if _, errs, code := runCLI(t, "data", "synth", "--out", dir, "--n", "2", "--size", "128x128"); code != 0 {
		t.Fatal(errs)
	}
	cfg := filepath.Join(dir, "c.yaml")
	yaml := "data:\n  root: " + filepath.Join(dir, "train") + "\n  patch_size: 32\n  tile_size: 64\n  tile_threshold: 32\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, code := runCLI(t, "data", "pack", "--config", cfg)
	if code != 0 || !strings.Contains(out, "2 images, 8 tiles, 2 packed now") {
		t.Fatalf("pack: exit %d, out %q, err %q", code, out, errs)
	}
	out, _, code = runCLI(t, "data", "pack", "--config", cfg)
	if code != 0 || !strings.Contains(out, "0 packed now") {
		t.Fatalf("second pack: exit %d, out %q", code, out)
	}
}

func TestDataHelpHasExamples(t *testing.T) {
	for _, sub := range []string{"check", "downscale", "synth", "pack"} {
		out, _, code := runCLI(t, "data", sub, "--help")
		if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "samdiffsr data "+sub) {
			t.Errorf("data %s --help: exit %d, out %q", sub, code, out)
		}
	}
}
