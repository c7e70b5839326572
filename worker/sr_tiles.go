package worker

import (
	"context"
	"fmt"
	"math"

	"github.com/samdiffsr/samdiffsr/dataset"
)

// TileFunc super-resolves one LR tile. lr is w x h with w and h multiples of
// TileOptions.Multiple and at least twice it (so the HR tile suits the U-Net); index
// numbers the tile within the image (seed noise with it). It returns the HR tile as 3·4h·4w float32 values in [-1, 1], NCHW
// (channel planes), and calls onStep after each denoising step, if it has steps.
type TileFunc func(ctx context.Context, lr *dataset.RGB, index int, onStep func()) ([]float32, error)

// DefaultTile is the LR tile side used when none is given.
const DefaultTile = 64

// MinTile is the smallest LR tile side sr and eval accept.
const MinTile = 8

// TileOptions configure Tiled.
type TileOptions struct {
	// Tile is the LR tile side in pixels (even; <= 0 means 64).
	Tile int
	// Overlap is the minimum LR overlap between neighbouring tiles (rounded up to
	// even; < 0 means max(Tile/8, 4)); 0 gives abutting tiles.
	Overlap int
	// Multiple is what LR tile sides must be divisible by (<= 0 means 2: HR multiples of
	// 8, what a 4-level U-Net needs). Tiles are padded by mirroring to reach it.
	Multiple int
	// OnStep, when set, is passed to the TileFunc (progress over denoising steps).
	OnStep func()
	// OnTile, when set, is called with (done, total) after each tile.
	OnTile func(done, total int)
}

// TileCount is the number of tiles Tiled cuts a w x h LR image into (0 for invalid
// options).
func TileCount(w, h int, opt TileOptions) int {
	t, o, err := tileGeometry(opt)
	if err != nil {
		return 0
	}
	return len(tilePositions(w, min(t, w), o)) * len(tilePositions(h, min(t, h), o))
}

func multipleOf(opt TileOptions) int {
	if opt.Multiple <= 0 {
		return 2
	}
	return opt.Multiple
}

func roundUp(n, k int) int { return (n + k - 1) / k * k }

func tileGeometry(opt TileOptions) (t, o int, err error) {
	k := multipleOf(opt)
	t = opt.Tile
	if t <= 0 {
		t = DefaultTile
	}
	t = roundUp(t, k)
	o = opt.Overlap
	if o < 0 {
		o = max(t/8, min(4, t/2))
	}
	o += o % 2
	if o >= t {
		return 0, 0, fmt.Errorf("worker: tile overlap %d must be smaller than the tile %d", o, t)
	}
	return t, o, nil
}

// tilePositions returns the tile origins along a dimension of n LR pixels for tiles of
// side t (t <= n) overlapping by at least o: 0, ..., n-t, evenly spread.
func tilePositions(n, t, o int) []int {
	if n <= t {
		return []int{0}
	}
	stride := t - o
	if stride < 2 {
		stride = 2
	}
	k := (n - t + stride - 1) / stride // number of steps after the first tile
	pos := make([]int, k+1)
	for i := 0; i <= k; i++ {
		pos[i] = int(math.Round(float64(i) * float64(n-t) / float64(k)))
	}
	return pos
}

// rampWeights is the 1-D blending weight of a tile of hr HR pixels whose left edge has
// a neighbour overlapping by lo HR pixels and right edge one overlapping by ro: a linear
// ramp over each overlap, 1 elsewhere (never 0, so every pixel has weight).
func rampWeights(hr, lo, ro int) []float32 {
	w := make([]float32, hr)
	for i := range w {
		v := float32(1)
		if lo > 0 && i < lo {
			v = min(v, (float32(i)+0.5)/float32(lo))
		}
		if ro > 0 && i >= hr-ro {
			v = min(v, (float32(hr-i)-0.5)/float32(ro))
		}
		w[i] = v
	}
	return w
}

// Tiled super-resolves an LR image of any size with bounded memory: the image is cut
// into overlapping tiles (origins spread evenly, neighbouring tiles overlapping by at
// least opt.Overlap LR pixels), each tile is super-resolved by fn, and the HR tiles are
// blended with linear ramps across the overlaps. Only one band of tile rows is held
// in float32 at a time; finished rows go straight to the uint8 output
// (round((x+1)·127.5), clipped, METHOD §5). Odd image sides are handled by padding the
// last tile by mirroring its last column/row and cropping the output.
func Tiled(ctx context.Context, lr *dataset.RGB, opt TileOptions, fn TileFunc) (*dataset.RGB, error) {
	if lr.W <= 0 || lr.H <= 0 {
		return nil, fmt.Errorf("worker: empty LR image")
	}
	t, o, err := tileGeometry(opt)
	if err != nil {
		return nil, err
	}
	tw, th := min(t, lr.W), min(t, lr.H)
	xs := tilePositions(lr.W, tw, o)
	ys := tilePositions(lr.H, th, o)
	// Tile sides padded to the multiple, and to at least two of it, so the U-Net's
	// coarsest level is never under 2x2 pixels (its 3x3 convolutions need that).
	k := multipleOf(opt)
	ptw, pth := max(roundUp(tw, k), 2*k), max(roundUp(th, k), 2*k)
	W, H := 4*lr.W, 4*lr.H
	out := dataset.NewRGB(W, H)
	bandH := 4 * pth
	acc := make([]float32, 3*bandH*W)
	wsum := make([]float32, bandH*W)
	origin := 0 // HR row of band row 0
	idx := 0
	for r, y0 := range ys {
		hy := 4 * th
		loY, roY := 0, 0
		if r > 0 {
			loY = 4 * (ys[r-1] + th - y0)
		}
		if r+1 < len(ys) {
			roY = 4 * (y0 + th - ys[r+1])
		}
		wy := rampWeights(hy, loY, roY)
		for c, x0 := range xs {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			hx := 4 * tw
			loX, roX := 0, 0
			if c > 0 {
				loX = 4 * (xs[c-1] + tw - x0)
			}
			if c+1 < len(xs) {
				roX = 4 * (x0 + tw - xs[c+1])
			}
			wx := rampWeights(hx, loX, roX)
			tile := cropPad(lr, x0, y0, tw, th, ptw, pth)
			sr, err := fn(ctx, tile, idx, opt.OnStep)
			idx++
			if err != nil {
				return nil, err
			}
			if opt.OnTile != nil {
				opt.OnTile(idx, len(xs)*len(ys))
			}
			PW, PH := 4*ptw, 4*pth
			if len(sr) != 3*PW*PH {
				return nil, fmt.Errorf("worker: tile %dx%d gave %d values, want %d", ptw, pth, len(sr), 3*PW*PH)
			}
			for yy := 0; yy < hy; yy++ {
				br := 4*y0 + yy - origin
				for xx := 0; xx < hx; xx++ {
					w := wy[yy] * wx[xx]
					p := br*W + 4*x0 + xx
					wsum[p] += w
					for ch := 0; ch < 3; ch++ {
						acc[ch*bandH*W+p] += w * sr[(ch*PH+yy)*PW+xx]
					}
				}
			}
		}
		// Rows before the next tile row's top are final.
		done := H
		if r+1 < len(ys) {
			done = 4 * ys[r+1]
		}
		for y := origin; y < done; y++ {
			br := y - origin
			for x := 0; x < W; x++ {
				p := br*W + x
				for ch := 0; ch < 3; ch++ {
					out.Pix[(y*W+x)*3+ch] = toUint8(acc[ch*bandH*W+p] / wsum[p])
				}
			}
		}
		shift := done - origin
		if shift > 0 && done < H {
			keep := bandH - shift
			for ch := 0; ch < 3; ch++ {
				plane := acc[ch*bandH*W : (ch+1)*bandH*W]
				copy(plane, plane[shift*W:])
				clear(plane[keep*W:])
			}
			copy(wsum, wsum[shift*W:])
			clear(wsum[keep*W:])
			origin = done
		}
	}
	return out, nil
}

// toUint8 maps x in [-1, 1] to round((x+1)·127.5) clipped to [0, 255] (ties to even,
// as torch.round).
func toUint8(x float32) uint8 {
	v := math.RoundToEven((float64(x) + 1) * 127.5)
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// cropPad copies the w x h rectangle at (x, y) of img into a pw x ph image, filling the
// padding by mirroring (symmetric reflection without repeating the edge).
func cropPad(img *dataset.RGB, x, y, w, h, pw, ph int) *dataset.RGB {
	out := dataset.NewRGB(pw, ph)
	for r := 0; r < ph; r++ {
		sr := reflectIdx(r, h)
		for c := 0; c < pw; c++ {
			sc := reflectIdx(c, w)
			copy(out.Pix[(r*pw+c)*3:(r*pw+c)*3+3], img.Pix[((y+sr)*img.W+x+sc)*3:((y+sr)*img.W+x+sc)*3+3])
		}
	}
	return out
}

// reflectIdx maps i >= 0 into [0, n) by reflection about the last sample (n, n+1, ...
// read n-2, n-3, ...), clamped for tiny n.
func reflectIdx(i, n int) int {
	if n == 1 {
		return 0
	}
	period := 2 * (n - 1)
	i %= period
	if i >= n {
		i = period - i
	}
	return i
}
