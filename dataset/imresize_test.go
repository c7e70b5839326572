package dataset

import (
	"math"
	"math/rand/v2"
	"testing"
)

// apply1D runs a 1-D table over in (the float path of one pass).
func apply1D(t *resizeTable, in []float64) []float64 {
	out := make([]float64, t.outLen)
	for i := range out {
		for k := 0; k < t.taps; k++ {
			out[i] += float64(t.w[i*t.taps+k] * in[t.idx[i*t.taps+k]])
		}
	}
	return out
}

// directResize1D is an independent implementation of the MATLAB resize of one line:
// for each output it visits every input coordinate j in a wide window, evaluates the
// (widened) cubic kernel at the distance between j's centre and the output's centre
// in input coordinates, folds j into the image with a symmetric mirror and normalises.
func directResize1D(in []float64, scale float64) []float64 {
	n := len(in)
	outLen := int(math.Ceil(scale * float64(n)))
	out := make([]float64, outLen)
	for i := 0; i < outLen; i++ {
		// Centre of output pixel i in 0-based input pixel units.
		centre := (float64(i)+0.5)/scale - 0.5
		total, acc := 0.0, 0.0
		for j := -4 * n; j < 5*n; j++ {
			d := centre - float64(j)
			var wt float64
			if scale < 1 {
				wt = scale * keysCubic(scale*d)
			} else {
				wt = keysCubic(d)
			}
			if wt == 0 {
				continue
			}
			m := j
			for m < 0 || m >= n { // reflect until inside: -1 -> 0, n -> n-1
				if m < 0 {
					m = -m - 1
				} else {
					m = 2*n - 1 - m
				}
			}
			total += wt
			acc += wt * in[m]
		}
		out[i] = acc / total
	}
	return out
}

// keysCubic is Keys' cubic convolution kernel with a = -0.5 written from its textbook
// form ((a+2)|x|³ - (a+3)|x|² + 1 on [0,1], a|x|³ - 5a|x|² + 8a|x| - 4a on (1,2]).
func keysCubic(x float64) float64 {
	const a = -0.5
	x = math.Abs(x)
	switch {
	case x <= 1:
		return (a+2)*x*x*x - (a+3)*x*x + 1
	case x < 2:
		return a*x*x*x - 5*a*x*x + 8*a*x - 4*a
	}
	return 0
}

// TestResizeTableByHand checks weights derived by hand.
//
// Upscale x2 (kernel width 4, P = 6 taps): output x=1 (1-based) has
// u = 1/2 + 0.5·(1-1/2) = 0.75, left = floor(0.75-2) = -2, taps at 0-based
// indices -3..2 with distances u-ind-1 = 2.75, 1.75, 0.75, -0.25, -1.25, -2.25.
// cubic(1.75) = -0.5·1.75³ + 2.5·1.75² - 4·1.75 + 2 = -0.0234375,
// cubic(0.75) = 1.5·0.75³ - 2.5·0.75² + 1 = 0.2265625,
// cubic(0.25) = 0.8671875, cubic(1.25) = -0.0703125, the two outer taps are 0; the
// four sum to 1. Every output has its first and last tap at |d| > 2, so those two
// positions are dropped: 4 taps remain. Indices -2, -1 mirror to 1, 0.
//
// Downscale x1/4 (width 16, P = 18): output x has u = 4x - 1.5, left = 4x - 10,
// taps at 4x-11+k with distances 8.5-k; k = 0 and 17 (|d| = 8.5) are zero for every
// output and dropped, leaving 16 taps with weights 0.25·cubic(0.25·d) for
// d = 7.5 .. -7.5 (they sum to exactly 1): outermost 0.25·cubic(1.875) =
// 0.25·(-0.0068359375) = -0.001708984375, central 0.25·cubic(0.125) =
// 0.25·0.9638671875 = 0.240966796875. Output 1 reads 0-based indices -6..9, which
// mirror to 5,4,3,2,1,0,0,1,...,9.
func TestResizeTableByHand(t *testing.T) {
	up := newResizeTable(4, 8, 2)
	if up.taps != 4 {
		t.Fatalf("x2 taps = %d, want 4", up.taps)
	}
	wantW := []float64{-0.0234375, 0.2265625, 0.8671875, -0.0703125}
	wantI := []int32{1, 0, 0, 1}
	for k := range wantW {
		if math.Abs(up.w[k]-wantW[k]) > 1e-15 || up.idx[k] != wantI[k] {
			t.Errorf("x2 out 0 tap %d = (%d, %v), want (%d, %v)", k, up.idx[k], up.w[k], wantI[k], wantW[k])
		}
	}

	down := newResizeTable(64, 16, 0.25)
	if down.taps != 16 {
		t.Fatalf("x1/4 taps = %d, want 16", down.taps)
	}
	const i = 7 // interior output x = 8: taps at 22..37
	row := down.w[i*16 : (i+1)*16]
	for k, want := range map[int]float64{0: -0.001708984375, 15: -0.001708984375, 7: 0.240966796875, 8: 0.240966796875} {
		if math.Abs(row[k]-want) > 1e-15 {
			t.Errorf("x1/4 interior weight %d = %v, want %v", k, row[k], want)
		}
	}
	if got := down.idx[i*16]; got != 22 {
		t.Errorf("x1/4 interior first index = %d, want 22", got)
	}
	wantFirst := []int32{5, 4, 3, 2, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	for k, want := range wantFirst {
		if down.idx[k] != want {
			t.Fatalf("x1/4 output 0 indices = %v, want %v", down.idx[:16], wantFirst)
		}
	}
	sum := 0.0
	for _, v := range row {
		sum += v
	}
	if math.Abs(sum-1) > 1e-15 {
		t.Errorf("interior weights sum to %v", sum)
	}
}

func TestResize1DMatchesDirectFormula(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		n     int
		scale float64
	}{{64, 0.25}, {40, 4}, {13, 0.25}, {7, 4}, {30, 0.5}, {9, 2}, {21, 1.0 / 3}, {5, 0.25}, {3, 4}} {
		in := make([]float64, tc.n)
		for i := range in {
			in[i] = rng.Float64() * 255
		}
		tab := newResizeTable(tc.n, ResizedLen(tc.n, tc.scale), tc.scale)
		got := apply1D(tab, in)
		want := directResize1D(in, tc.scale)
		if len(got) != len(want) {
			t.Fatalf("n=%d scale=%v: len %d, want %d", tc.n, tc.scale, len(got), len(want))
		}
		for i := range got {
			if math.Abs(got[i]-want[i]) > 1e-9 {
				t.Errorf("n=%d scale=%v: out[%d] = %v, direct formula %v", tc.n, tc.scale, i, got[i], want[i])
			}
		}
	}
}

func randomRGB(seed uint64, w, h int) *RGB {
	rng := rand.New(rand.NewPCG(seed, 99))
	img := NewRGB(w, h)
	for i := range img.Pix {
		img.Pix[i] = uint8(rng.IntN(256))
	}
	return img
}

func TestResizeShapesAndConstant(t *testing.T) {
	for _, tc := range []struct {
		w, h       int
		scale      float64
		outW, outH int
	}{{40, 40, 4, 160, 160}, {2040, 1144, 0.25, 510, 286}, {13, 7, 0.25, 4, 2}, {37, 23, 4, 148, 92}, {160, 160, 0.25, 40, 40}} {
		r, err := NewResizer(tc.w, tc.h, tc.scale)
		if err != nil {
			t.Fatal(err)
		}
		if w, h := r.OutSize(); w != tc.outW || h != tc.outH {
			t.Errorf("%dx%d x%v -> %dx%d, want %dx%d", tc.w, tc.h, tc.scale, w, h, tc.outW, tc.outH)
		}
		src := NewRGB(tc.w, tc.h)
		for i := range src.Pix {
			src.Pix[i] = []uint8{137, 3, 250}[i%3]
		}
		out, err := r.Resize(src)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range out.Pix {
			if want := []uint8{137, 3, 250}[i%3]; v != want {
				t.Fatalf("%dx%d x%v: constant image changed at %d: %d, want %d", tc.w, tc.h, tc.scale, i, v, want)
			}
		}
		fsrc := make([]float64, tc.w*tc.h)
		for i := range fsrc {
			fsrc[i] = 0.3
		}
		fdst := make([]float64, tc.outW*tc.outH)
		if err := r.ResizeFloat(fsrc, 1, fdst, nil); err != nil {
			t.Fatal(err)
		}
		for i, v := range fdst {
			if math.Abs(v-0.3) > 1e-12 {
				t.Fatalf("float constant changed at %d: %v", i, v)
			}
		}
	}
}

// TestResizeMirrorSymmetry: with in = 4·out the sampling grid is symmetric, so
// resizing a horizontally (vertically) flipped image gives the flipped result; this
// fails if the border handling is not a symmetric mirror at both ends.
func TestResizeMirrorSymmetry(t *testing.T) {
	for _, scale := range []float64{0.25, 4} {
		const w, h = 24, 16
		rng := rand.New(rand.NewPCG(7, 7))
		src := make([]float64, w*h)
		for i := range src {
			src[i] = rng.Float64()
		}
		flip := make([]float64, w*h)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				flip[(h-1-y)*w+(w-1-x)] = src[y*w+x]
			}
		}
		r, _ := NewResizer(w, h, scale)
		ow, oh := r.OutSize()
		a, b := make([]float64, ow*oh), make([]float64, ow*oh)
		r.ResizeFloat(src, 1, a, nil)
		r.ResizeFloat(flip, 1, b, nil)
		for y := 0; y < oh; y++ {
			for x := 0; x < ow; x++ {
				if d := a[y*ow+x] - b[(oh-1-y)*ow+(ow-1-x)]; math.Abs(d) > 1e-12 {
					t.Fatalf("scale %v: (%d,%d) differs from its mirror by %v", scale, x, y, d)
				}
			}
		}
	}
}

// TestResizeUint8MatchesFloatRounded: the uint8 path equals the float passes with a
// clip+round after each pass; run serial and parallel.
func TestResizeUint8MatchesFloatRounded(t *testing.T) {
	src := randomRGB(3, 300, 260) // large enough (>64k samples) to run in parallel
	r, _ := NewResizer(src.W, src.H, 0.25)
	for _, workers := range []int{1, 2, 3} {
		r.Workers = workers
		got, _ := r.Resize(src)
		// Reference: 1-D passes per channel with rounding in between.
		for ch := 0; ch < 3; ch++ {
			mid := make([][]float64, r.outH)
			for oy := range mid {
				mid[oy] = make([]float64, src.W)
			}
			for x := 0; x < src.W; x++ {
				col := make([]float64, src.H)
				for y := range col {
					col[y] = float64(src.Pix[(y*src.W+x)*3+ch])
				}
				for oy, v := range apply1D(r.rows, col) {
					mid[oy][x] = float64(roundUint8(v))
				}
			}
			for oy := 0; oy < r.outH; oy++ {
				for ox, v := range apply1D(r.cols, mid[oy]) {
					if g := got.Pix[(oy*r.outW+ox)*3+ch]; g != roundUint8(v) {
						t.Fatalf("workers %d: (%d,%d,%d) = %d, want %d", workers, ox, oy, ch, g, roundUint8(v))
					}
				}
			}
		}
	}
}

// TestResizeFloatMatches1DPasses: the (unrolled, channel-interleaved) float path
// equals plain 1-D passes, rows then columns, bit for bit.
func TestResizeFloatMatches1DPasses(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for _, tc := range []struct {
		w, h, c int
		scale   float64
	}{{10, 8, 3, 4}, {10, 8, 1, 4}, {40, 36, 3, 0.25}, {9, 7, 2, 2}} {
		src := make([]float64, tc.w*tc.h*tc.c)
		for i := range src {
			src[i] = float64(rng.IntN(256)) / 256
		}
		r, _ := NewResizer(tc.w, tc.h, tc.scale)
		ow, oh := r.OutSize()
		got := make([]float64, ow*oh*tc.c)
		if err := r.ResizeFloat(src, tc.c, got, nil); err != nil {
			t.Fatal(err)
		}
		for ch := 0; ch < tc.c; ch++ {
			mid := make([][]float64, oh)
			for oy := range mid {
				mid[oy] = make([]float64, tc.w)
			}
			for x := 0; x < tc.w; x++ {
				col := make([]float64, tc.h)
				for y := range col {
					col[y] = src[(y*tc.w+x)*tc.c+ch]
				}
				for oy, v := range apply1D(r.rows, col) {
					mid[oy][x] = v
				}
			}
			for oy := 0; oy < oh; oy++ {
				for ox, v := range apply1D(r.cols, mid[oy]) {
					if g := got[(oy*ow+ox)*tc.c+ch]; g != v {
						t.Fatalf("%+v: (%d,%d,%d) = %v, 1-D passes give %v", tc, ox, oy, ch, g, v)
					}
				}
			}
		}
	}
}

func TestRoundUint8(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want uint8
	}{{-3, 0}, {0.5, 0}, {1.5, 2}, {2.5, 2}, {2.5000001, 3}, {254.6, 255}, {300, 255}} {
		if got := roundUint8(tc.in); got != tc.want {
			t.Errorf("roundUint8(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func BenchmarkDownscale2040x1144(b *testing.B) {
	src := randomRGB(1, 2040, 1144)
	r, _ := NewResizer(src.W, src.H, 0.25)
	b.SetBytes(int64(len(src.Pix)))
	for b.Loop() {
		r.Resize(src)
	}
}

func BenchmarkDownscale2040x1144WithTables(b *testing.B) {
	src := randomRGB(1, 2040, 1144)
	for b.Loop() {
		Downscale4(src)
	}
}

func BenchmarkUpscale40(b *testing.B) {
	r, _ := NewResizer(40, 40, 4)
	src := make([]float64, 40*40*3)
	dst := make([]float64, 160*160*3)
	scratch := make([]float64, 160*40*3)
	for b.Loop() {
		r.ResizeFloat(src, 3, dst, scratch)
	}
}
