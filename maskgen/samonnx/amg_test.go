package samonnx

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

func TestPointGrid(t *testing.T) {
	for _, n := range []int{1, 2, 7, 32} {
		pts := pointGrid(n)
		if len(pts) != n*n {
			t.Fatalf("n=%d: %d points", n, len(pts))
		}
		for i, p := range pts {
			// Row-major: y outer, x inner, at (k+0.5)/n.
			wx, wy := (float64(i%n)+0.5)/float64(n), (float64(i/n)+0.5)/float64(n)
			if math.Abs(p[0]-wx) > 1e-15 || math.Abs(p[1]-wy) > 1e-15 {
				t.Fatalf("n=%d: point %d = %v, want (%v, %v)", n, i, p, wx, wy)
			}
		}
	}
}

func TestPromptCoords(t *testing.T) {
	// 2040x1356 → 1024x681: x scales by 1024/2040, y by 681/1356.
	pts := promptCoords(32, 2040, 1356)
	for _, i := range []int{0, 31, 32, 1023} {
		gx, gy := (float64(i%32)+0.5)/32, (float64(i/32)+0.5)/32
		wx, wy := float32(gx*2040*(1024.0/2040)), float32(gy*1356*(681.0/1356))
		if d := math.Abs(float64(pts[i][0]-wx)) + math.Abs(float64(pts[i][1]-wy)); d > 1e-4 {
			t.Errorf("point %d = %v, want (%v, %v)", i, pts[i], wx, wy)
		}
	}
	if pts[0][0] != 16 || pts[1][0] != 48 {
		t.Errorf("first points %v %v, want x 16 and 48", pts[0], pts[1])
	}
}

func TestStabilityScore(t *testing.T) {
	for _, c := range []struct {
		logits []float32
		t, off float32
		want   float32
	}{
		// > 1: {1.5, 3}; > -1: {-0.5, 0.5, 1.5, 3} → 2/4.
		{[]float32{-2, -0.5, 0.5, 1.5, 3}, 0, 1, 0.5},
		// Strictly greater: values exactly at t±off do not count.
		{[]float32{-1, 1, 1, 2}, 0, 1, float32(1) / 3},
		{[]float32{5, 6, 7}, 0, 1, 1},
		{[]float32{-5, -6}, 0, 1, 0}, // empty union: 0 (SAM: NaN, also dropped)
		// A sharp edge (no values between the thresholds) is perfectly stable.
		{[]float32{-10, -10, 10, 10}, 0, 1, 1},
		// Threshold and offset shift the bands: > 2.5 {3, 4}, > 0.5 {1, 2, 3, 4}.
		{[]float32{0, 1, 2, 3, 4}, 1.5, 1, 0.5},
	} {
		if got := stabilityScore(c.logits, c.t, c.off); got != c.want {
			t.Errorf("stabilityScore(%v, %v, %v) = %v, want %v", c.logits, c.t, c.off, got, c.want)
		}
	}
}

func TestMaskBox(t *testing.T) {
	m := make([]bool, 6*4)
	if got := maskBox(m, 6, 4); got != [4]int{} {
		t.Errorf("empty mask box %v", got)
	}
	m[1*6+2], m[3*6+4] = true, true
	if got := maskBox(m, 6, 4); got != [4]int{2, 1, 4, 3} {
		t.Errorf("box %v, want inclusive [2 1 4 3]", got)
	}
}

func TestNMS(t *testing.T) {
	for _, c := range []struct {
		name   string
		boxes  [][4]int
		scores []float32
		want   []int
	}{
		{"overlap above threshold suppressed", [][4]int{{0, 0, 10, 10}, {1, 0, 11, 10}}, []float32{0.9, 0.8}, []int{0}},
		{"lower score first in input", [][4]int{{1, 0, 11, 10}, {0, 0, 10, 10}}, []float32{0.8, 0.9}, []int{1}},
		{"overlap below threshold kept, in score order", [][4]int{{5, 0, 15, 10}, {0, 0, 10, 10}}, []float32{0.5, 0.9}, []int{1, 0}},
		// IoU exactly 7/10: float32(0.7) < 0.7 (double), as in torchvision: kept.
		{"IoU 0.7 is not above 0.7", [][4]int{{0, 0, 10, 10}, {0, 0, 7, 10}}, []float32{0.9, 0.8}, []int{0, 1}},
		// A suppressed box suppresses nothing: 1 is dropped by 0 (IoU 0.82); 2 overlaps
		// 1 by 0.82 but 0 by only 0.67.
		{"suppressed boxes do not suppress", [][4]int{{0, 0, 10, 10}, {1, 0, 11, 10}, {2, 0, 12, 10}}, []float32{0.9, 0.8, 0.7}, []int{0, 2}},
		// Equal scores keep input order (stable sort).
		{"ties keep input order", [][4]int{{20, 20, 30, 30}, {0, 0, 10, 10}, {40, 40, 50, 50}}, []float32{0.5, 0.5, 0.5}, []int{0, 1, 2}},
		// Zero-area boxes (one-pixel masks) have IoU 0/0 = NaN: never suppressed.
		{"zero-area boxes", [][4]int{{3, 3, 3, 3}, {3, 3, 3, 3}}, []float32{0.9, 0.8}, []int{0, 1}},
		{"contained box", [][4]int{{0, 0, 100, 100}, {10, 10, 90, 90}}, []float32{0.9, 0.95}, []int{1, 0}},
		{"identical boxes", [][4]int{{0, 0, 10, 10}, {0, 0, 10, 10}}, []float32{0.7, 0.9}, []int{1}},
	} {
		got := nms(c.boxes, c.scores, 0.7)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: nms = %v, want %v", c.name, got, c.want)
		}
	}
}

// torchTaps is PyTorch's upsample_bilinear2d source index and weights for output
// index d (align_corners=False, scale in/out, float32), written out again here.
func torchTaps(in, out, d int) (i0, i1 int, w0, w1 float32) {
	scale := float32(in) / float32(out)
	src := float32(scale*float32(float32(d)+0.5)) - 0.5
	if src < 0 {
		src = 0
	}
	i0 = int(math.Floor(float64(src)))
	if i0 > in-1 {
		i0 = in - 1
	}
	l := src - float32(i0)
	l = float32(math.Min(math.Max(float64(l), 0), 1))
	i1 = i0
	if i0 < in-1 {
		i1++
	}
	return i0, i1, 1 - l, l
}

// tapTable is torchTaps for every output index.
type tapTable struct {
	i0, i1 []int
	w0, w1 []float32
}

func newTapTable(in, out int) tapTable {
	var t tapTable
	for d := 0; d < out; d++ {
		i0, i1, w0, w1 := torchTaps(in, out, d)
		t.i0, t.i1 = append(t.i0, i0), append(t.i1, i1)
		t.w0, t.w1 = append(t.w0, w0), append(t.w1, w1)
	}
	return t
}

// naiveUpscaler is SAM's postprocess_masks done literally for one image size: the
// 1024x1024 bilinear upsampling of the 256x256 logits (only at the rows and columns
// the second stage reads), cropped to the resized size, then bilinear to w x h.
type naiveUpscaler struct {
	w, h       int
	ax, ay     tapTable // 1024 → 256
	bx, by     tapTable // w → nw, h → nh
	ri, ci     []int    // position of a 1024-frame row / column in the stage-A store
	rows, cols []int
}

func newNaiveUpscaler(w, h int) *naiveUpscaler {
	scale := 1024.0 / float64(max(w, h))
	nw, nh := int(float64(w)*scale+0.5), int(float64(h)*scale+0.5)
	u := &naiveUpscaler{w: w, h: h, ax: newTapTable(256, 1024), ay: newTapTable(256, 1024),
		bx: newTapTable(nw, w), by: newTapTable(nh, h), ri: make([]int, 1024), ci: make([]int, 1024)}
	for i := range u.ri {
		u.ri[i], u.ci[i] = -1, -1
	}
	for y := 0; y < h; y++ {
		for _, j := range []int{u.by.i0[y], u.by.i1[y]} {
			if u.ri[j] < 0 {
				u.ri[j] = len(u.rows)
				u.rows = append(u.rows, j)
			}
		}
	}
	for x := 0; x < w; x++ {
		for _, i := range []int{u.bx.i0[x], u.bx.i1[x]} {
			if u.ci[i] < 0 {
				u.ci[i] = len(u.cols)
				u.cols = append(u.cols, i)
			}
		}
	}
	return u
}

func (u *naiveUpscaler) logits(low []float32) []float32 {
	nc := len(u.cols)
	up := make([]float32, len(u.rows)*nc)
	for a, j := range u.rows {
		y0, y1, wy0, wy1 := u.ay.i0[j], u.ay.i1[j], u.ay.w0[j], u.ay.w1[j]
		for b, i := range u.cols {
			x0, x1, wx0, wx1 := u.ax.i0[i], u.ax.i1[i], u.ax.w0[i], u.ax.w1[i]
			t0 := float32(low[y0*256+x0]*wx0) + float32(low[y0*256+x1]*wx1)
			t1 := float32(low[y1*256+x0]*wx0) + float32(low[y1*256+x1]*wx1)
			up[a*nc+b] = float32(t0*wy0) + float32(t1*wy1)
		}
	}
	out := make([]float32, u.w*u.h)
	for y := 0; y < u.h; y++ {
		r0, r1, wy0, wy1 := u.ri[u.by.i0[y]]*nc, u.ri[u.by.i1[y]]*nc, u.by.w0[y], u.by.w1[y]
		for x := 0; x < u.w; x++ {
			c0, c1, wx0, wx1 := u.ci[u.bx.i0[x]], u.ci[u.bx.i1[x]], u.bx.w0[x], u.bx.w1[x]
			t0 := float32(up[r0+c0]*wx0) + float32(up[r0+c1]*wx1)
			t1 := float32(up[r1+c0]*wx0) + float32(up[r1+c1]*wx1)
			out[y*u.w+x] = float32(t0*wy0) + float32(t1*wy1)
		}
	}
	return out
}

// naiveLogits is naiveUpscaler for one mask.
func naiveLogits(low []float32, w, h int) []float32 { return newNaiveUpscaler(w, h).logits(low) }

// testFields are hand-made 256x256 low-res logit fields.
func testFields() map[string][]float32 {
	fields := map[string][]float32{}
	mk := func(name string, fn func(i, j int) float32) {
		v := make([]float32, 256*256)
		for i := 0; i < 256; i++ {
			for j := 0; j < 256; j++ {
				v[i*256+j] = fn(i, j)
			}
		}
		fields[name] = v
	}
	mk("box", func(i, j int) float32 {
		d := math.Max(math.Abs(float64(4*j+2)-300), math.Abs(float64(4*i+2)-200))
		return float32(1.5 * (60.3 - d))
	})
	mk("soft disc", func(i, j int) float32 {
		d := math.Hypot(float64(j-40), float64(i-90))
		return float32(0.25 * (30 - d))
	})
	rng := rand.New(rand.NewSource(7))
	mk("noise", func(i, j int) float32 { return float32(rng.Float64()*6 - 3) })
	mk("all above", func(i, j int) float32 { return 5 })
	mk("all below", func(i, j int) float32 { return -5 })
	mk("exact thresholds", func(i, j int) float32 { return float32((i/3+j/5)%3 - 1) })
	mk("huge", func(i, j int) float32 {
		if (i-60)*(i-60)+(j-128)*(j-128) < 900 {
			return 5000
		}
		return -4000
	})
	mk("spike", func(i, j int) float32 {
		if i == 100 && j == 17 {
			return 30
		}
		return -2
	})
	return fields
}

// TestFrameMatchesNaive checks the block-wise upscaling (stats and painting)
// against SAM's postprocess_masks computed literally, pixel for pixel.
func TestFrameMatchesNaive(t *testing.T) {
	sizes := [][2]int{{37, 23}, {300, 200}, {1024, 768}, {517, 389}, {5, 300}, {1, 1}}
	if !testing.Short() {
		sizes = append(sizes, [2]int{2040, 1356})
	}
	fields := testFields()
	const thr, off = float32(0), float32(1)
	for _, sz := range sizes {
		w, h := sz[0], sz[1]
		f := newFrame(w, h)
		sc := f.newScratch()
		naive := newNaiveUpscaler(w, h)
		for name, low := range fields {
			full := naive.logits(low)
			var want maskStats
			mask := make([]bool, w*h)
			for i, v := range full {
				if v > thr+off {
					want.hi++
				}
				if v > thr-off {
					want.lo++
				}
				if v > thr {
					want.area++
					mask[i] = true
				}
			}
			want.box = maskBox(mask, w, h)
			l := fullGrid(low)
			got := f.stats(&l, thr, off, sc)
			if got.hi != want.hi || got.lo != want.lo || got.area != want.area || got.box != want.box {
				t.Errorf("%dx%d %s: stats hi %d lo %d area %d box %v; want %d %d %d %v",
					w, h, name, got.hi, got.lo, got.area, got.box, want.hi, want.lo, want.area, want.box)
			}
			if s := stabilityScore(full, thr, off); s != stabilityRatio(got.hi, got.lo) {
				t.Errorf("%dx%d %s: stability %v, want %v", w, h, name, stabilityRatio(got.hi, got.lo), s)
			}
			// Paint from the kept rectangle only, in two row bands, over a prefilled map.
			kept := f.keepGrid(&l, got.keep)
			dst := make([]uint16, w*h)
			// Painting goes last mask first: pixels already labelled stay.
			preset := w*h/3 + w/2
			dst[preset] = 3
			done := f.doneMarks()
			f.paint(&kept, got.keep, thr, 2, dst, 0, h/2, done, sc)
			f.paint(&kept, got.keep, thr, 2, dst, h/2, h, done, sc)
			if dst[preset] != 3 {
				t.Errorf("%dx%d %s: paint overwrote a labelled pixel", w, h, name)
			}
			dst[preset] = map[bool]uint16{true: 2, false: 0}[mask[preset]]
			bad := 0
			for i, on := range mask {
				want := uint16(0)
				if on {
					want = 2
				}
				if dst[i] != want {
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%dx%d %s: %d painted pixels differ from the naive mask", w, h, name, bad)
			}
		}
	}
}
