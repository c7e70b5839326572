package worker

import (
	"context"
	"fmt"
	"testing"

	"github.com/samdiffsr/samdiffsr/dataset"
)

func patternRGB(w, h int) *dataset.RGB {
	img := dataset.NewRGB(w, h)
	for i := range img.Pix {
		img.Pix[i] = uint8((i*37 + i/7) % 256)
	}
	return img
}

// nearestTile is a TileFunc whose output depends only on the LR pixel under each HR
// pixel, so any correct tiling must reproduce nearest-neighbour upscaling exactly.
func nearestTile(t *testing.T, calls *int) TileFunc {
	return nearestTileK(t, calls, 2)
}

func nearestTileK(t *testing.T, calls *int, k int) TileFunc {
	return func(_ context.Context, lr *dataset.RGB, _ int, _ func()) ([]float32, error) {
		*calls++
		if lr.W%k != 0 || lr.H%k != 0 {
			t.Errorf("tile %dx%d is not a multiple of %d", lr.W, lr.H, k)
		}
		W, H := 4*lr.W, 4*lr.H
		out := make([]float32, 3*W*H)
		for c := 0; c < 3; c++ {
			for y := 0; y < H; y++ {
				for x := 0; x < W; x++ {
					out[(c*H+y)*W+x] = float32(lr.Pix[((y/4)*lr.W+x/4)*3+c])/127.5 - 1
				}
			}
		}
		return out, nil
	}
}

func TestTiledReproducesUntiledOutput(t *testing.T) {
	tests := []struct{ w, h, tile, overlap, multiple int }{
		{16, 16, 64, -1, 0}, // one tile
		{7, 5, 64, -1, 0},   // odd sides, padded
		{1, 1, 8, -1, 0},    // a single pixel
		{40, 24, 16, 4, 0},  // several tiles each way
		{37, 29, 16, 6, 0},  // odd sides with tiling
		{100, 9, 10, 2, 0},  // long strip
		{33, 33, 12, -1, 0}, // default overlap
		{64, 64, 32, 30, 0}, // heavy overlap
		{13, 11, 8, 2, 4},   // a U-Net needing HR multiples of 16
		{30, 3, 12, 4, 8},   // padding larger than the image
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%dx%d_t%d_o%d", tc.w, tc.h, tc.tile, tc.overlap), func(t *testing.T) {
			lr := patternRGB(tc.w, tc.h)
			calls := 0
			opt := TileOptions{Tile: tc.tile, Overlap: tc.overlap, Multiple: tc.multiple}
			k := tc.multiple
			if k == 0 {
				k = 2
			}
			got, err := Tiled(context.Background(), lr, opt, nearestTileK(t, &calls, k))
			if err != nil {
				t.Fatal(err)
			}
			if calls != TileCount(tc.w, tc.h, opt) {
				t.Fatalf("%d tile calls, TileCount says %d", calls, TileCount(tc.w, tc.h, opt))
			}
			if got.W != 4*tc.w || got.H != 4*tc.h {
				t.Fatalf("output %dx%d", got.W, got.H)
			}
			for y := 0; y < got.H; y++ {
				for x := 0; x < got.W; x++ {
					for c := 0; c < 3; c++ {
						want := lr.Pix[((y/4)*lr.W+x/4)*3+c]
						if g := got.Pix[(y*got.W+x)*3+c]; g != want {
							t.Fatalf("pixel (%d,%d,%d) = %d, want %d", x, y, c, g, want)
						}
					}
				}
			}
		})
	}
}

// TestTiledBlendsOverlaps: two tiles side by side returning -1 and +1 give a monotone
// ramp across the overlap and untouched values outside it.
func TestTiledBlendsOverlaps(t *testing.T) {
	lr := patternRGB(24, 8) // tiles of 16 at x = 0 and 8: overlap 8 LR = 32 HR pixels
	fn := func(_ context.Context, tl *dataset.RGB, idx int, _ func()) ([]float32, error) {
		out := make([]float32, 3*16*tl.W*tl.H)
		v := float32(-1)
		if idx == 1 {
			v = 1
		}
		for i := range out {
			out[i] = v
		}
		return out, nil
	}
	got, err := Tiled(context.Background(), lr, TileOptions{Tile: 16, Overlap: 8}, fn)
	if err != nil {
		t.Fatal(err)
	}
	row := func(x int) uint8 { return got.Pix[(5*got.W+x)*3] }
	if row(0) != 0 || row(31) != 0 || row(64) != 255 || row(95) != 255 {
		t.Fatalf("outside the overlap: %d %d %d %d", row(0), row(31), row(64), row(95))
	}
	prev := row(31)
	for x := 32; x < 64; x++ {
		if row(x) < prev {
			t.Fatalf("blend not monotone at x=%d: %d after %d", x, row(x), prev)
		}
		prev = row(x)
	}
	if m := row(48); m < 100 || m > 155 {
		t.Fatalf("middle of the overlap = %d, want about 128", m)
	}
}

func TestTiledErrors(t *testing.T) {
	lr := patternRGB(8, 8)
	if _, err := Tiled(context.Background(), lr, TileOptions{Tile: 8, Overlap: 8}, nil); err == nil {
		t.Fatal("overlap >= tile accepted")
	}
	bad := func(context.Context, *dataset.RGB, int, func()) ([]float32, error) { return make([]float32, 5), nil }
	if _, err := Tiled(context.Background(), lr, TileOptions{}, bad); err == nil {
		t.Fatal("wrong tile output size accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	if _, err := Tiled(ctx, lr, TileOptions{}, nearestTile(t, &calls)); err == nil || calls != 0 {
		t.Fatalf("cancelled: err %v after %d calls", err, calls)
	}
}
