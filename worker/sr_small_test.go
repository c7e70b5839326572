package worker

import (
	"context"
	"testing"

	"github.com/samdiffsr/samdiffsr/configs"
)

// TestSRTinyImagesDeepUNet: a 4-level U-Net (its coarsest level 1/8 of the HR side) on
// LR images of 1x1, 2x2, 1x40 and 3x5 pixels. Tiles are padded so that no level is
// under 2x2, so the sampler runs and the SR is 4x the input; unpadded, an 8x8 HR
// reached a 1x1 level and model.im2colPlane panicked.
func TestSRTinyImagesDeepUNet(t *testing.T) {
	cfg := configs.Default()
	cfg.Model.RRDB = configs.RRDB{NF: 4, NB: 2, GC: 4}
	cfg.Model.UNet = configs.UNet{Dim: 4, DimMults: []int{1, 2, 2, 2}}
	cfg.Diffusion.Timesteps = 2
	m, err := newCPUModel(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, rrdbOnly := range []bool{false, true} {
		s := NewSR(m, rrdbOnly, SROptions{Log: discardLog()})
		for _, sz := range [][2]int{{1, 1}, {2, 2}, {1, 40}, {3, 5}} {
			sr, err := s.Upscale(context.Background(), patternRGB(sz[0], sz[1]))
			if err != nil {
				t.Fatalf("rrdb-only %v, %dx%d: %v", rrdbOnly, sz[0], sz[1], err)
			}
			if sr.W != 4*sz[0] || sr.H != 4*sz[1] {
				t.Fatalf("rrdb-only %v: SR of %dx%d is %dx%d", rrdbOnly, sz[0], sz[1], sr.W, sr.H)
			}
		}
	}
}
