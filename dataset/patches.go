package dataset

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/samdiffsr/samdiffsr/maskgen"
)

// Tile is one rectangle of an HR image (cropped to a multiple of the scale) that
// patches are sampled from (reference notes §5: images are cut offline into tiles and
// every tile is one dataset item).
type Tile struct {
	// Image indexes the image list the tiles were made from.
	Image int
	// X, Y is the tile's top-left corner in HR pixels (X = column, Y = row); W, H its size.
	X, Y, W, H int
}

// TileGrid cuts a w x h image into tiles as the reference does (crop_size, thresh_size):
// origins 0, size, 2·size, … while origin < dim - threshold, each tile reaching at most
// size pixels, so edge tiles are threshold+1 .. size pixels. The image index of every
// tile is img.
func TileGrid(img, w, h, size, threshold int) []Tile {
	var out []Tile
	for y := 0; y < h-threshold; y += size {
		for x := 0; x < w-threshold; x += size {
			out = append(out, Tile{Image: img, X: x, Y: y, W: min(size, w-x), H: min(size, h-y)})
		}
	}
	return out
}

// PatchRef names one training patch: a tile and the offset of the HR patch inside it
// (a multiple of the scale, so the LR patch starts at X/scale, Y/scale).
type PatchRef struct {
	Tile int
	X, Y int
}

// Batch is a batch of training samples as float32 NCHW tensors (METHOD §1 scaling).
type Batch struct {
	// N is the number of samples; H, W the HR patch size.
	N, H, W int
	// HR and Up hold N*3*H*W values in [-1, 1]: HR = uint8/127.5-1 (computed as the
	// reference's ToTensor+Normalize), Up = 2·imresize(LR/256, 4) - 1.
	HR, Up []float32
	// LR holds N*3*(H/4)*(W/4) values in [-1, 1].
	LR []float32
	// E holds N*1*H*W values: the structural mask of each patch (zeros without masks).
	E []float32
	// IDs names each sample's image.
	IDs []string
	// Refs are the patches the samples were cut from.
	Refs []PatchRef
	// Index gives each sample's position in the global batch of its step (keys
	// per-sample randomness such as the diffusion noise, whatever the split).
	Index []int
}

// NewBatch allocates a batch of n HR patches of size x size (scale 4).
func NewBatch(n, size int) *Batch {
	lr := size / 4
	return &Batch{N: n, H: size, W: size,
		HR: make([]float32, n*3*size*size), Up: make([]float32, n*3*size*size),
		LR: make([]float32, n*3*lr*lr), E: make([]float32, n*size*size),
		IDs: make([]string, n), Refs: make([]PatchRef, n), Index: make([]int, n)}
}

// pixelLUT maps uint8 to [-1, 1] as the reference does: ToTensor (x/255 in float32)
// then Normalize(0.5, 0.5): (x - 0.5)/0.5, all in float32.
var pixelLUT = func() (t [256]float32) {
	for i := range t {
		v := float32(i) / 255
		t[i] = (v - 0.5) / 0.5
	}
	return t
}()

// PixelToFloat maps a uint8 sample to [-1, 1] (METHOD §1).
func PixelToFloat(v uint8) float32 { return pixelLUT[v] }

// TileView is one tile's pixels: HR (W*H*3 bytes) and LR ((W/4)*(H/4)*3 bytes),
// interleaved RGB, and optionally what the E of its patches comes from: the tile's
// E itself (tile cache) or its labels and the image's region values (shards).
type TileView struct {
	Tile
	HR, LR []uint8
	// E, when not nil, holds the tile's unreduced E as W*H little-endian float32s
	// (row-major).
	E []byte
	// Labels, when not nil, are the tile's labels; Values the image's region values
	// for the configured SPE mean and Crop the mask crop (maskgen.TilePatch).
	Labels *maskgen.TileLabels
	Values []float32
	Crop   string
}

// sampleScratch holds per-goroutine buffers for fillSample.
type sampleScratch struct {
	lr, mid []float64
}

func newSampleScratch(size int) *sampleScratch {
	lp := size / 4
	return &sampleScratch{lr: make([]float64, lp*lp*3), mid: make([]float64, size*lp*3)}
}

// fillSample writes sample n of b from the tile tv and the patch offset ref:
// HR, LR, Up and (when tv.E is set) E, applying the reduce rule when reduce is set
// (a patch whose E holds a single value gets E = 0, the reference's test).
func fillSample(b *Batch, n int, tv *TileView, ref PatchRef, up *Resizer, sc *sampleScratch, reduce bool) error {
	p := b.H
	lp := p / 4
	if ref.X%4 != 0 || ref.Y%4 != 0 || ref.X < 0 || ref.Y < 0 || ref.X+p > tv.W || ref.Y+p > tv.H {
		return fmt.Errorf("dataset: patch %dx%d at (%d,%d) does not fit tile %dx%d of image %d", p, p, ref.X, ref.Y, tv.W, tv.H, tv.Image)
	}
	plane := p * p
	hr := b.HR[n*3*plane : (n+1)*3*plane]
	for y := 0; y < p; y++ {
		row := tv.HR[((ref.Y+y)*tv.W+ref.X)*3:][:p*3]
		r, g, bl := hr[y*p:][:p], hr[plane+y*p:][:p], hr[2*plane+y*p:][:p]
		for x := 0; x < p; x++ {
			r[x], g[x], bl[x] = pixelLUT[row[3*x]], pixelLUT[row[3*x+1]], pixelLUT[row[3*x+2]]
		}
	}
	lw := tv.W / 4
	lx, ly := ref.X/4, ref.Y/4
	lplane := lp * lp
	lr := b.LR[n*3*lplane : (n+1)*3*lplane]
	for y := 0; y < lp; y++ {
		row := tv.LR[((ly+y)*lw+lx)*3:][:lp*3]
		for x := 0; x < lp; x++ {
			for c := 0; c < 3; c++ {
				v := row[3*x+c]
				lr[c*lplane+y*lp+x] = pixelLUT[v]
				sc.lr[(y*lp+x)*3+c] = float64(v) / 256
			}
		}
	}
	u := b.Up[n*3*plane : (n+1)*3*plane]
	up.resizeUpPlanes(sc.lr, sc.mid, [3][]float32{u[:plane], u[plane : 2*plane], u[2*plane:]})
	e := b.E[n*plane : (n+1)*plane]
	switch {
	case tv.Labels != nil:
		// As the tile cache: a tile whose reference window lies in one region has
		// E = 0 (its interpolated values need not be bit-identical); otherwise the
		// unreduced E, and the patch's reduce rule below.
		if reduce && tv.Crop == maskgen.CropReference && singleLabel(tv.Labels.Window) {
			clear(e)
			return nil
		}
		if err := maskgen.TilePatch(tv.Values, maskgen.SPEOptions{Crop: tv.Crop}, *tv.Labels, ref.X, ref.Y, p, p, e); err != nil {
			return fmt.Errorf("dataset: E of a patch of image %d: %w", tv.Image, err)
		}
	case tv.E != nil:
		if len(tv.E) != tv.W*tv.H*4 {
			return fmt.Errorf("dataset: E of tile %dx%d of image %d has %d bytes, want %d", tv.W, tv.H, tv.Image, len(tv.E), tv.W*tv.H*4)
		}
		for y := 0; y < p; y++ {
			src := tv.E[((ref.Y+y)*tv.W+ref.X)*4:][:p*4]
			out := e[y*p : (y+1)*p]
			for x := range out {
				out[x] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*x:]))
			}
		}
	default:
		clear(e)
		return nil
	}
	if reduce && singleValue(e) {
		clear(e)
	}
	return nil
}

// singleLabel reports whether every label equals the first.
func singleLabel(l []uint16) bool {
	for _, v := range l {
		if v != l[0] {
			return false
		}
	}
	return true
}

// singleValue reports whether every value of e equals the first.
func singleValue(e []float32) bool {
	for _, v := range e {
		if v != e[0] {
			return false
		}
	}
	return true
}
