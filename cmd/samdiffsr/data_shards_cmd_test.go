package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/dataset"
)

// TestDataPackShards: data pack --out writes a manifest and shards, lists a
// corrupt image as a problem (exit 1), and a second run writes nothing new.
func TestDataPackShards(t *testing.T) {
	dir := t.TempDir()
	if _, errs, code := runCLI(t, "data", "synth", "--out", dir, "--n", "3", "--size", "128x128"); code != 0 {
		t.Fatal(errs)
	}
	bad := filepath.Join(dir, "train", "0002.png")
	if err := os.WriteFile(bad, []byte("\x89PNG\r\n\x1a\nbroken"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("data:\n  patch_size: 32\n  tile_size: 64\n  tile_threshold: 32\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	packed := filepath.Join(dir, "packed")
	args := []string{"data", "pack", "--config", cfg, "--root", filepath.Join(dir, "train"), "--out", packed, "--no-masks", "--shard-mb", "1"}
	out, errs, code := runCLI(t, args...)
	if code != 1 || !strings.Contains(out, "2 images, 8 tiles in 1 shards (1 written now") || !strings.Contains(out, "problem: "+bad) {
		t.Fatalf("pack: exit %d, out %q, err %q", code, out, errs)
	}
	m, err := dataset.ReadManifest(packed)
	if err != nil || m.Images != 2 || len(m.Skipped) != 1 {
		t.Fatalf("manifest %+v, %v", m, err)
	}
	out, _, _ = runCLI(t, args...)
	if !strings.Contains(out, "(0 written now") || !strings.Contains(out, "manifest "+m.Digest()) {
		t.Fatalf("second pack: %q", out)
	}
}
