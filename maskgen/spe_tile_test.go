package maskgen

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestTilePatchMatchesEncoder: E cut from a tile's stored labels and the image's
// region values equals Encoder.PatchInWindow with the tile as the window, bit for
// bit, for both crops and means, reduce on and off, over random tiles and patches.
func TestTilePatchMatchesEncoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const W, H = 96, 72
	m := NewLabelMap(W, H)
	for y := 0; y < H; y++ {
		for x := 0; x < W; x++ {
			m.Labels[y*W+x] = uint16((y/12)*8 + x/12) // 48 block regions, label 0 included
		}
	}
	m.Labels[5*W+7] = 47
	m.Regions = 47
	n := 0
	for _, crop := range []string{CropAligned, CropReference} {
		for _, mean := range []string{MeanRegion, MeanImage} {
			for _, reduce := range []bool{false, true} {
				opt := SPEOptions{Mean: mean, Crop: crop, ReduceSingleRegion: reduce}
				e, err := NewEncoder(m, opt)
				if err != nil {
					t.Fatal(err)
				}
				for k := 0; k < 40; k++ {
					ww, wh := 4*(2+rng.IntN(10)), 4*(2+rng.IntN(8))
					wx, wy := 4*rng.IntN((W-ww)/4+1), 4*rng.IntN((H-wh)/4+1)
					tl, err := e.TileLabels(wx, wy, ww, wh)
					if err != nil {
						t.Fatal(err)
					}
					pw, ph := 4*(1+rng.IntN(ww/4)), 4*(1+rng.IntN(wh/4))
					px, py := rng.IntN(ww-pw+1), rng.IntN(wh-ph+1)
					want := make([]float32, pw*ph)
					got := make([]float32, pw*ph)
					if err := e.PatchInWindow(wx, wy, ww, wh, wx+px, wy+py, pw, ph, want); err != nil {
						t.Fatal(err)
					}
					if err := TilePatch(e.Values(), opt, tl, px, py, pw, ph, got); err != nil {
						t.Fatal(err)
					}
					for i := range want {
						if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
							t.Fatalf("%+v tile %dx%d@(%d,%d) patch %dx%d@(%d,%d): E[%d] = %v, encoder %v", opt, ww, wh, wx, wy, pw, ph, px, py, i, got[i], want[i])
						}
					}
					n++
				}
			}
		}
	}
	if n != 320 {
		t.Fatalf("compared %d patches", n)
	}
}

func TestTilePatchErrors(t *testing.T) {
	tl := TileLabels{W: 8, H: 8, Aligned: make([]uint16, 64), Window: make([]uint16, 4)}
	tl.Aligned[9] = 5
	dst := make([]float32, 64)
	for _, tc := range []struct {
		name       string
		tl         TileLabels
		values     []float32
		x, y, w, h int
		want       string
	}{
		{"outside", tl, make([]float32, 8), 4, 4, 8, 8, "outside the 8x8 tile"},
		{"label without value", tl, make([]float32, 2), 0, 0, 8, 8, "tile label 5"},
		{"short labels", TileLabels{W: 8, H: 8, Aligned: make([]uint16, 10)}, make([]float32, 8), 0, 0, 4, 4, "hold 10 and 0 labels"},
	} {
		err := TilePatch(tc.values, SPEOptions{}, tc.tl, tc.x, tc.y, tc.w, tc.h, dst)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
}
