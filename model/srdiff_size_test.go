package model

import (
	"strings"
	"testing"
)

// TestTooSmallPatchIsAnError: a 4-level U-Net on an 8x8 patch would reach a 1x1
// innermost level, where reflection padding reads out of bounds; the loss must
// refuse it with an error naming the size, not panic.
func TestTooSmallPatchIsAnError(t *testing.T) {
	cfg := loadConfig(t, "quickstart.yaml")
	cfg.Model.UNet.DimMults = []int{1, 2, 2, 2}
	m, err := New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.MinSide() != 16 {
		t.Fatalf("MinSide %d, want 16", m.MinSide())
	}
	n, h, w := 1, 8, 8
	b := &Batch{N: n, H: h, W: w, HR: make([]float32, 3*h*w), Up: make([]float32, 3*h*w), LR: make([]float32, 3*h*w/16), E: make([]float32, h*w)}
	_, err = m.DiffusionLoss(b, []int{5}, make([]float32, 3*h*w))
	if err == nil || !strings.Contains(err.Error(), "8x8 is too small") || !strings.Contains(err.Error(), "at least 16") {
		t.Fatalf("8x8 patch: %v", err)
	}
}
