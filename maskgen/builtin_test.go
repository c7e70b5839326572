package maskgen

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"testing"
)

// scene is a synthetic image with known regions: flat colour shapes painted over a
// background, plus mild Gaussian noise.
type scene struct {
	img   *image.RGBA
	truth []int // true region per pixel (shape index; 0 = background)
}

// palette colours differ pairwise by at least 80 in some channel: every true boundary
// is a strong edge.
var palette = []color.RGBA{
	{40, 40, 40, 255}, {220, 60, 50, 255}, {60, 180, 70, 255}, {50, 80, 210, 255},
	{230, 210, 60, 255}, {200, 90, 200, 255}, {60, 200, 210, 255}, {240, 240, 240, 255},
	{140, 90, 30, 255}, {130, 130, 130, 255},
}

// makeScene paints rectangles, discs and triangles with a deterministic seed.
func makeScene(w, h int, seed uint64, noise float64) *scene {
	rng := rand.New(rand.NewPCG(seed, 7))
	truth := make([]int, w*h)
	type shape func(x, y float64) bool
	var shapes []shape
	for i := 1; i < len(palette); i++ {
		cx, cy := rng.Float64()*float64(w), rng.Float64()*float64(h)
		r := (0.08 + 0.12*rng.Float64()) * float64(min(w, h))
		switch i % 3 {
		case 0: // rectangle
			rw, rh := r*(0.6+rng.Float64()), r*(0.6+rng.Float64())
			shapes = append(shapes, func(x, y float64) bool { return math.Abs(x-cx) < rw && math.Abs(y-cy) < rh })
		case 1: // disc
			shapes = append(shapes, func(x, y float64) bool { return (x-cx)*(x-cx)+(y-cy)*(y-cy) < r*r })
		case 2: // triangle: intersection of three half-planes
			var px, py [3]float64
			a0 := rng.Float64() * 2 * math.Pi
			for j := range px {
				a := a0 + float64(j)*2*math.Pi/3
				px[j], py[j] = cx+1.4*r*math.Cos(a), cy+1.4*r*math.Sin(a)
			}
			shapes = append(shapes, func(x, y float64) bool {
				for j := 0; j < 3; j++ {
					k := (j + 1) % 3
					if (px[k]-px[j])*(y-py[j])-(py[k]-py[j])*(x-px[j]) < 0 {
						return false
					}
				}
				return true
			})
		}
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			t := 0
			for i, s := range shapes {
				if s(float64(x)+0.5, float64(y)+0.5) {
					t = i + 1
				}
			}
			truth[y*w+x] = t
			c := palette[t]
			o := img.PixOffset(x, y)
			for ch, v := range []uint8{c.R, c.G, c.B} {
				f := float64(v) + noise*rng.NormFloat64()
				img.Pix[o+ch] = uint8(max(0, min(255, math.Round(f))))
			}
			img.Pix[o+3] = 255
		}
	}
	return &scene{img: img, truth: truth}
}

// boundary marks pixels with a 4-neighbour of another label.
func boundary[T comparable](lab []T, w, h int) []bool {
	b := make([]bool, w*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			p := y*w + x
			if (x+1 < w && lab[p] != lab[p+1]) || (y+1 < h && lab[p] != lab[p+w]) {
				b[p] = true
				if x+1 < w && lab[p] != lab[p+1] {
					b[p+1] = true
				}
				if y+1 < h && lab[p] != lab[p+w] {
					b[p+w] = true
				}
			}
		}
	}
	return b
}

// boundaryRecall is the fraction of true boundary pixels with a predicted boundary
// pixel within tol pixels (Chebyshev distance).
func boundaryRecall(truth []int, pred []uint16, w, h, tol int) float64 {
	bt, bp := boundary(truth, w, h), boundary(pred, w, h)
	found, total := 0, 0
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if !bt[y*w+x] {
				continue
			}
			total++
		search:
			for dy := -tol; dy <= tol; dy++ {
				for dx := -tol; dx <= tol; dx++ {
					xx, yy := x+dx, y+dy
					if xx >= 0 && yy >= 0 && xx < w && yy < h && bp[yy*w+xx] {
						found++
						break search
					}
				}
			}
		}
	}
	return float64(found) / float64(total)
}

// straddlers lists predicted regions that hold at least 20% (and 30 px) of two or
// more true regions, i.e. that cross a strong edge.
func straddlers(truth []int, pred *LabelMap) []int {
	trueSize := map[int]int{}
	overlap := map[[2]int]int{}
	for i, t := range truth {
		trueSize[t]++
		overlap[[2]int{int(pred.Labels[i]), t}]++
	}
	held := map[int]int{}
	for k, n := range overlap {
		if n*5 >= trueSize[k[1]] && n >= 30 {
			held[k[0]]++
		}
	}
	var out []int
	for p, n := range held {
		if n >= 2 {
			out = append(out, p)
		}
	}
	return out
}

func TestBuiltinSyntheticScene(t *testing.T) {
	tests := []struct {
		name     string
		seed     uint64
		opt      BuiltinOptions
		wantGood bool
	}{
		{"seed 1", 1, BuiltinOptions{Sigma: 0.8, K: 300, MinSize: 50}, true},
		{"seed 2", 2, BuiltinOptions{Sigma: 0.8, K: 300, MinSize: 50}, true},
		{"seed 3, 1 thread", 3, BuiltinOptions{Sigma: 0.8, K: 300, MinSize: 50, Threads: 1}, true},
		{"seed 4, no smoothing", 4, BuiltinOptions{Sigma: 0, K: 300, MinSize: 50}, true},
		// Controls: the metrics reject a segmentation that merges everything.
		{"control: huge k", 1, BuiltinOptions{Sigma: 0.8, K: 1e7, MinSize: 50}, false},
		{"control: huge min_size", 2, BuiltinOptions{Sigma: 0.8, K: 300, MinSize: 30000}, false},
	}
	const w, h = 240, 200
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc := makeScene(w, h, tc.seed, 4)
			seg, err := NewBuiltin(tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			m, err := seg.Segment(context.Background(), sc.img)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			rec := boundaryRecall(sc.truth, m.Labels, w, h, 2)
			str := straddlers(sc.truth, m)
			good := rec >= 0.9 && len(str) == 0
			t.Logf("regions %d, boundary recall %.3f, straddling regions %v", m.Regions, rec, str)
			if good != tc.wantGood {
				t.Errorf("boundary recall %.3f (want >= 0.9), straddling regions %v (want none): good = %v, want %v",
					rec, str, good, tc.wantGood)
			}
		})
	}
}

func TestBuiltinCoverageAndOrder(t *testing.T) {
	sc := makeScene(160, 120, 5, 6)
	opt := BuiltinOptions{Sigma: 0.5, K: 200, MinSize: 40}
	seg, _ := NewBuiltin(opt)
	m, err := seg.Segment(context.Background(), sc.img)
	if err != nil {
		t.Fatal(err)
	}
	size := make([]int, m.Regions+1)
	next := uint16(1)
	for i, l := range m.Labels {
		if l == 0 {
			t.Fatalf("pixel %d has no region; the built-in segmenter covers the image", i)
		}
		if l > next {
			t.Fatalf("region %d appears before region %d in raster order", l, next)
		}
		if l == next {
			next++
		}
		size[l]++
	}
	if int(next-1) != m.Regions {
		t.Fatalf("Regions = %d, but %d ids are used", m.Regions, next-1)
	}
	for l, n := range size[1:] {
		if n < opt.MinSize {
			t.Errorf("region %d has %d pixels < min_size %d", l+1, n, opt.MinSize)
		}
	}
	// Every region is 8-connected (FH merges along graph edges only).
	seen := make([]bool, len(m.Labels))
	comps := 0
	for p := range m.Labels {
		if seen[p] {
			continue
		}
		comps++
		stack := []int{p}
		seen[p] = true
		for len(stack) > 0 {
			q := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			x, y := q%m.Width, q/m.Width
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					xx, yy := x+dx, y+dy
					if xx < 0 || yy < 0 || xx >= m.Width || yy >= m.Height {
						continue
					}
					r := yy*m.Width + xx
					if !seen[r] && m.Labels[r] == m.Labels[q] {
						seen[r] = true
						stack = append(stack, r)
					}
				}
			}
		}
	}
	if comps != m.Regions {
		t.Errorf("%d 8-connected components for %d regions", comps, m.Regions)
	}
}

func TestBuiltinDeterministic(t *testing.T) {
	sc := makeScene(200, 150, 9, 5)
	var first *LabelMap
	var firstPNG []byte
	for _, threads := range []int{1, 2, 3, 1} {
		seg, _ := NewBuiltin(BuiltinOptions{Sigma: 0.8, K: 300, MinSize: 30, Threads: threads})
		// Twice with the same segmenter: reused buffers must not leak state.
		for rep := 0; rep < 2; rep++ {
			m, err := seg.Segment(context.Background(), sc.img)
			if err != nil {
				t.Fatal(err)
			}
			data, err := EncodeLabelMapPNG(m)
			if err != nil {
				t.Fatal(err)
			}
			if first == nil {
				first, firstPNG = m, data
				continue
			}
			if m.Regions != first.Regions || !equalLabels(m.Labels, first.Labels) {
				t.Fatalf("threads %d rep %d: labels differ from the first run", threads, rep)
			}
			if !bytes.Equal(data, firstPNG) {
				t.Fatalf("threads %d rep %d: PNG bytes differ", threads, rep)
			}
		}
	}
	// A different image in between, then the first again.
	seg, _ := NewBuiltin(BuiltinOptions{Sigma: 0.8, K: 300, MinSize: 30})
	seg.Segment(context.Background(), makeScene(90, 300, 1, 5).img)
	m, _ := seg.Segment(context.Background(), sc.img)
	if !equalLabels(m.Labels, first.Labels) {
		t.Fatal("labels changed after segmenting an image of another size")
	}
}

// TestBuiltinMatchesReference compares the fast segmenter (bucketed edge order) with a
// direct transcription of FH (exact comparison sort): pixel pairs grouped together by
// one and apart by the other must be rare.
func TestBuiltinMatchesReference(t *testing.T) {
	for _, tc := range []struct {
		name string
		img  image.Image
		opt  BuiltinOptions
	}{
		{"scene", makeScene(150, 120, 11, 6).img, BuiltinOptions{Sigma: 0.8, K: 300, MinSize: 40}},
		{"smooth gradient", gradient(128, 96), BuiltinOptions{Sigma: 0.8, K: 500, MinSize: 20}},
		{"no min size", makeScene(100, 80, 12, 8).img, BuiltinOptions{Sigma: 0.5, K: 150}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seg, _ := NewBuiltin(tc.opt)
			got, err := seg.Segment(context.Background(), tc.img)
			if err != nil {
				t.Fatal(err)
			}
			want := referenceFH(tc.img, tc.opt)
			agree := pairAgreement(got, want)
			t.Logf("regions %d (reference %d), neighbour-pair agreement %.4f", got.Regions, want.Regions, agree)
			if agree < 0.99 {
				t.Errorf("neighbour-pair agreement with the reference %.4f < 0.99", agree)
			}
		})
	}
}

// gradient is a smooth image with mild texture, where FH's result depends on fine
// edge-weight order.
func gradient(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			o := img.PixOffset(x, y)
			img.Pix[o] = uint8(x * 255 / w)
			img.Pix[o+1] = uint8(128 + 60*math.Sin(float64(y)/9))
			img.Pix[o+2] = uint8((x*y/7 + x) % 256 / 4)
			img.Pix[o+3] = 255
		}
	}
	return img
}

// pairAgreement is the fraction of horizontal and vertical neighbour pairs on which
// a and b agree about "same region".
func pairAgreement(a, b *LabelMap) float64 {
	w, h := a.Width, a.Height
	agree, total := 0, 0
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			p := y*w + x
			for _, q := range []int{p + 1, p + w} {
				if (q == p+1 && x+1 >= w) || (q == p+w && y+1 >= h) {
					continue
				}
				total++
				if (a.Labels[p] == a.Labels[q]) == (b.Labels[p] == b.Labels[q]) {
					agree++
				}
			}
		}
	}
	return float64(agree) / float64(total)
}

func TestBuiltinImageTypes(t *testing.T) {
	sc := makeScene(64, 48, 3, 0)
	rgba := sc.img
	nrgba := image.NewNRGBA(rgba.Bounds())
	rgba64 := image.NewRGBA64(rgba.Bounds())
	gray := image.NewGray(rgba.Bounds())
	grayRGB := image.NewRGBA(rgba.Bounds())
	for y := 0; y < 48; y++ {
		for x := 0; x < 64; x++ {
			c := rgba.RGBAAt(x, y)
			nrgba.SetNRGBA(x, y, color.NRGBA{c.R, c.G, c.B, 255})
			rgba64.Set(x, y, c)
			gray.SetGray(x, y, color.Gray{c.G})
			grayRGB.SetRGBA(x, y, color.RGBA{c.G, c.G, c.G, 255})
		}
	}
	// A sub-image whose bounds do not start at (0, 0).
	big := image.NewRGBA(image.Rect(0, 0, 80, 60))
	for y := 0; y < 48; y++ {
		for x := 0; x < 64; x++ {
			big.SetRGBA(x+10, y+5, rgba.RGBAAt(x, y))
		}
	}
	sub := big.SubImage(image.Rect(10, 5, 74, 53))
	opt := BuiltinOptions{Sigma: 0.8, K: 300, MinSize: 20}
	seg, _ := NewBuiltin(opt)
	ref, _ := seg.Segment(context.Background(), rgba)
	grayRef, _ := seg.Segment(context.Background(), grayRGB)
	for _, tc := range []struct {
		name string
		img  image.Image
		want *LabelMap
	}{
		{"NRGBA", nrgba, ref}, {"RGBA64 (generic path)", rgba64, ref}, {"sub-image", sub, ref}, {"Gray", gray, grayRef},
	} {
		m, err := seg.Segment(context.Background(), tc.img)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if m.Width != 64 || m.Height != 48 || !equalLabels(m.Labels, tc.want.Labels) {
			t.Errorf("%s: labels differ from the RGBA result", tc.name)
		}
	}
	// YCbCr (JPEG) is converted with the standard formula: nearly the same partition.
	ycc := image.NewYCbCr(rgba.Bounds(), image.YCbCrSubsampleRatio444)
	for y := 0; y < 48; y++ {
		for x := 0; x < 64; x++ {
			c := rgba.RGBAAt(x, y)
			yy, cb, cr := color.RGBToYCbCr(c.R, c.G, c.B)
			ycc.Y[ycc.YOffset(x, y)], ycc.Cb[ycc.COffset(x, y)], ycc.Cr[ycc.COffset(x, y)] = yy, cb, cr
		}
	}
	m, err := seg.Segment(context.Background(), ycc)
	if err != nil {
		t.Fatal(err)
	}
	if a := pairAgreement(m, ref); a < 0.98 {
		t.Errorf("YCbCr: pair agreement with RGBA %.3f < 0.98", a)
	}
}

func TestBuiltinErrors(t *testing.T) {
	for _, opt := range []BuiltinOptions{{Sigma: -1, K: 1}, {Sigma: 11, K: 1}, {K: 0}, {K: math.NaN()}, {K: 1, MinSize: -1}, {K: 1, Threads: -1}} {
		if _, err := NewBuiltin(opt); err == nil {
			t.Errorf("NewBuiltin(%+v) accepted", opt)
		}
	}
	seg, _ := NewBuiltin(BuiltinOptions{Sigma: 0, K: 1e-6})
	if _, err := seg.Segment(context.Background(), image.NewRGBA(image.Rect(0, 0, 0, 5))); err == nil {
		t.Error("empty image accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := seg.Segment(ctx, makeScene(32, 32, 1, 3).img); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err = %v, want context.Canceled", err)
	}
	// Pure noise with a tiny k and no minimum size: every pixel its own region.
	noisy := makeScene(300, 300, 1, 60).img
	if _, err := seg.Segment(context.Background(), noisy); err == nil {
		t.Error("more than 65535 regions accepted")
	}
	if seg.Name() != "builtin" {
		t.Errorf("Name = %q", seg.Name())
	}
	p := seg.Params()
	if p["k"] != 1e-6 || p["sigma"] != 0.0 || p["min_size"] != 0 {
		t.Errorf("Params = %v", p)
	}
	var _ Segmenter = seg
}
