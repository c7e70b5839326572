package dataset

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/samdiffsr/samdiffsr/configs"
)

// Synth returns a deterministic procedural w x h image for seed: a gradient background
// overlaid with 6–13 regions (ellipses, star-shaped polygons, rectangles), each filled
// with a flat colour plus a linear gradient and, for most, a texture (stripes at a
// random angle and period, a checkerboard, or smooth value noise), and a little pixel
// noise. Regions give a segmenter something to find; edges and textures give
// super-resolution something to restore. The same (seed, w, h) always gives the same
// bytes.
func Synth(seed int64, w, h int) *RGB {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5e7d))
	img := NewRGB(w, h)
	// Background: a two-colour linear gradient.
	c0, c1 := randColour(rng), randColour(rng)
	ang := rng.Float64() * 2 * math.Pi
	dx, dy := math.Cos(ang), math.Sin(ang)
	span := math.Abs(dx)*float64(w) + math.Abs(dy)*float64(h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			t := (dx*float64(x) + dy*float64(y)) / span
			t = t - math.Floor(t)
			for c := 0; c < 3; c++ {
				img.Pix[(y*w+x)*3+c] = clampU8(c0[c]*(1-t) + c1[c]*t)
			}
		}
	}
	n := 6 + rng.IntN(8)
	scale := float64(min(w, h))
	for s := 0; s < n; s++ {
		cx, cy := rng.Float64()*float64(w), rng.Float64()*float64(h)
		r := scale * (0.08 + 0.25*rng.Float64())
		var inside func(x, y float64) bool
		switch rng.IntN(3) {
		case 0: // ellipse, rotated
			a, b := r, r*(0.3+0.7*rng.Float64())
			th := rng.Float64() * math.Pi
			ct, st := math.Cos(th), math.Sin(th)
			inside = func(x, y float64) bool {
				u, v := (x-cx)*ct+(y-cy)*st, -(x-cx)*st+(y-cy)*ct
				return (u*u)/(a*a)+(v*v)/(b*b) <= 1
			}
		case 1: // star-shaped polygon
			k := 3 + rng.IntN(6)
			px, py := make([]float64, k), make([]float64, k)
			base := rng.Float64() * 2 * math.Pi
			for i := 0; i < k; i++ {
				t := base + 2*math.Pi*(float64(i)+0.6*rng.Float64())/float64(k)
				rr := r * (0.4 + 0.6*rng.Float64())
				px[i], py[i] = cx+rr*math.Cos(t), cy+rr*math.Sin(t)
			}
			inside = func(x, y float64) bool { return inPolygon(px, py, x, y) }
		default: // axis-aligned rectangle
			hw, hh := r, r*(0.3+0.9*rng.Float64())
			inside = func(x, y float64) bool { return math.Abs(x-cx) <= hw && math.Abs(y-cy) <= hh }
		}
		fill := newFill(rng, scale)
		x0, x1 := max(0, int(cx-r-1)), min(w, int(cx+r+2))
		y0, y1 := max(0, int(cy-1.5*r-1)), min(h, int(cy+1.5*r+2))
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				if !inside(float64(x)+0.5, float64(y)+0.5) {
					continue
				}
				col := fill(float64(x), float64(y))
				for c := 0; c < 3; c++ {
					img.Pix[(y*w+x)*3+c] = clampU8(col[c])
				}
			}
		}
	}
	// Mild pixel noise (sensor-like), deterministic.
	for i := range img.Pix {
		img.Pix[i] = clampU8(float64(img.Pix[i]) + float64(rng.IntN(5)-2))
	}
	return img
}

func randColour(rng *rand.Rand) [3]float64 {
	return [3]float64{rng.Float64() * 255, rng.Float64() * 255, rng.Float64() * 255}
}

func clampU8(v float64) uint8 {
	if v <= 0 {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(v + 0.5)
}

// inPolygon is the even-odd rule.
func inPolygon(px, py []float64, x, y float64) bool {
	in := false
	for i, j := 0, len(px)-1; i < len(px); j, i = i, i+1 {
		if (py[i] > y) != (py[j] > y) && x < (px[j]-px[i])*(y-py[i])/(py[j]-py[i])+px[i] {
			in = !in
		}
	}
	return in
}

// newFill returns a region's colour function: flat + gradient + optional texture.
func newFill(rng *rand.Rand, scale float64) func(x, y float64) [3]float64 {
	base := randColour(rng)
	ga := rng.Float64() * 2 * math.Pi
	gdx, gdy := math.Cos(ga), math.Sin(ga)
	gain := (rng.Float64()*2 - 1) * 80 / scale // up to ±80 levels over the image side
	tex := rng.IntN(4)
	amp := 20 + 50*rng.Float64()
	period := 3 + 10*rng.Float64()
	ta := rng.Float64() * math.Pi
	tdx, tdy := math.Cos(ta), math.Sin(ta)
	tint := randColour(rng)
	noiseSeed := rng.Uint64()
	cell := 4 + 12*rng.Float64()
	return func(x, y float64) [3]float64 {
		g := gain * (gdx*x + gdy*y)
		var t float64
		switch tex {
		case 0: // stripes
			t = math.Sin(2 * math.Pi * (tdx*x + tdy*y) / period)
		case 1: // checkerboard
			if (int(math.Floor(x/period))+int(math.Floor(y/period)))%2 == 0 {
				t = 1
			} else {
				t = -1
			}
		case 2: // smooth value noise
			t = valueNoise(noiseSeed, x/cell, y/cell)*2 - 1
		default: // flat
		}
		var out [3]float64
		for c := 0; c < 3; c++ {
			out[c] = base[c] + g + t*amp*(tint[c]/255-0.3)
		}
		return out
	}
}

// valueNoise is bilinearly interpolated lattice noise in [0, 1].
func valueNoise(seed uint64, x, y float64) float64 {
	x0, y0 := math.Floor(x), math.Floor(y)
	fx, fy := x-x0, y-y0
	fx, fy = fx*fx*(3-2*fx), fy*fy*(3-2*fy)
	h := func(i, j float64) float64 {
		v := splitmix64(seed ^ uint64(int64(i))*0x9e3779b97f4a7c15 ^ uint64(int64(j))*0xc2b2ae3d27d4eb4f)
		return float64(v>>11) / (1 << 53)
	}
	a := h(x0, y0)*(1-fx) + h(x0+1, y0)*fx
	b := h(x0, y0+1)*(1-fx) + h(x0+1, y0+1)*fx
	return a*(1-fy) + b*fy
}

// SynthOptions configure WriteSynth.
type SynthOptions struct {
	// N training and Val validation images of W x H pixels.
	N, Val, W, H int
	// Seed makes the set reproducible; image i uses seed Seed+i (validation images
	// continue after the training ones).
	Seed int64
	// WithLR also writes each image's x4 LR (MATLAB bicubic) under an LR folder.
	WithLR bool
	// OnImage, when set, is called after each image is written.
	OnImage func(path string)
}

// WriteSynth writes a synthetic dataset under dir: dir/train/0001.png … (plain
// folders of HR PNGs, the layout data.root expects) and, when Val > 0,
// dir/val/0001.png …; with WithLR also dir/train/LR_bicubic/X4/0001x4.png (and
// likewise under val), which Discover pairs with the HR images. It returns the
// training and validation folders.
func WriteSynth(ctx context.Context, dir string, o SynthOptions) (train, val string, err error) {
	if o.N <= 0 || o.W < 8 || o.H < 8 {
		return "", "", fmt.Errorf("dataset: synthetic set needs n > 0 and a size of at least 8x8, got n=%d %dx%d", o.N, o.W, o.H)
	}
	train = filepath.Join(dir, "train")
	if o.Val > 0 {
		val = filepath.Join(dir, "val")
	}
	write := func(sub string, i int, seed int64) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		img := Synth(seed, o.W, o.H)
		p := filepath.Join(dir, sub, fmt.Sprintf("%04d.png", i+1))
		if err := SavePNG(p, img); err != nil {
			return err
		}
		if o.WithLR {
			lr, err := Downscale4(img)
			if err != nil {
				return err
			}
			if err := SavePNG(filepath.Join(dir, sub, "LR_bicubic", "X4", fmt.Sprintf("%04dx4.png", i+1)), lr); err != nil {
				return err
			}
		}
		if o.OnImage != nil {
			o.OnImage(p)
		}
		return nil
	}
	for i := 0; i < o.N; i++ {
		if err := write("train", i, o.Seed+int64(i)); err != nil {
			return "", "", err
		}
	}
	for i := 0; i < o.Val; i++ {
		if err := write("val", i, o.Seed+int64(o.N+i)); err != nil {
			return "", "", err
		}
	}
	return train, val, nil
}

// SynthConfig is the synthetic set data.synthetic describes: data.synthetic.n training
// images of its width x height and data.val_images validation images, seeded with the
// config's seed, written to data.synthetic.dir. ok is false when data.synthetic.n is 0.
func SynthConfig(cfg configs.Config) (dir string, o SynthOptions, ok bool) {
	s := cfg.Data.Synthetic
	if s.N <= 0 {
		return "", SynthOptions{}, false
	}
	return s.Dir, SynthOptions{N: s.N, Val: cfg.Data.ValImages, W: s.Width, H: s.Height, Seed: cfg.Seed}, true
}

// EnsureSynthetic writes the synthetic set of data.synthetic (SynthConfig) when
// data.synthetic.n > 0 and data.root does not exist yet, and reports whether it wrote
// it. An existing data.root is never touched.
func EnsureSynthetic(ctx context.Context, cfg configs.Config) (bool, error) {
	dir, o, ok := SynthConfig(cfg)
	if !ok {
		return false, nil
	}
	if _, err := os.Stat(cfg.Data.Root); !errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if _, _, err := WriteSynth(ctx, dir, o); err != nil {
		return false, err
	}
	if _, err := os.Stat(cfg.Data.Root); err != nil {
		return true, fmt.Errorf("dataset: wrote the synthetic set to %s but data.root %s still does not exist; set data.root to %s", dir, cfg.Data.Root, filepath.Join(dir, "train"))
	}
	return true, nil
}
