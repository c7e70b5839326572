package dataset

import (
	"fmt"
	"math"
	"runtime"
	"sync"
)

// This file is a MATLAB-compatible bicubic imresize (METHOD §1), written to reproduce
// the reference's utils_sr/matlab_resize.py (itself a port of MATLAB's imresize):
//
//   - cubic kernel with a = -0.5, kernel width 4;
//   - when downscaling (scale < 1) the kernel is widened to 4/scale and scaled:
//     h(x) = scale·cubic(scale·x) (antialiasing); at scale 1/4 that is width 16 and
//     P = ceil(16)+2 = 18 taps;
//   - output pixel x (1-based) reads input coordinate u = x/scale + 0.5·(1 - 1/scale),
//     taps left-1 .. left+P-2 (0-based) with left = floor(u - width/2);
//   - weights normalised per output pixel (numpy's pairwise sum, reproduced here);
//   - indices outside the image mirrored symmetrically (-1 → 0, -2 → 1, n → n-1);
//   - tap positions whose weight is zero for every output are dropped;
//   - rows (dim 0) first, then columns (dim 1), accumulating in float64 in tap order
//     without fused multiply-add (as numpy does);
//   - uint8 input is clipped to [0,255] and rounded (half to even, numpy's around) to
//     uint8 after each 1-D pass; float input is never rounded.

// cubic is the bicubic kernel with a = -0.5, evaluated as the reference does.
func cubic(x float64) float64 {
	ax := math.Abs(x)
	ax2 := ax * ax
	ax3 := ax2 * ax
	switch {
	case ax <= 1:
		return float64(float64(1.5*ax3)-float64(2.5*ax2)) + 1
	case ax <= 2:
		return float64(float64(float64(-0.5*ax3)+float64(2.5*ax2))-float64(4*ax)) + 2
	}
	return 0
}

// numpySum adds a as numpy.sum does for a contiguous float64 array of fewer than 128
// elements (pairwise_sum: 8 partial sums when n >= 8, then the rest in order).
func numpySum(a []float64) float64 {
	n := len(a)
	if n < 8 {
		s := 0.0
		for _, v := range a {
			s += v
		}
		return s
	}
	var r [8]float64
	copy(r[:], a[:8])
	i := 8
	for ; i < n-n%8; i += 8 {
		for j := 0; j < 8; j++ {
			r[j] += a[i+j]
		}
	}
	s := ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
	for ; i < n; i++ {
		s += a[i]
	}
	return s
}

// resizeTable holds the taps of a 1-D resize: output i reads input idx[i*taps+k]
// with weight w[i*taps+k].
type resizeTable struct {
	inLen, outLen, taps int
	idx                 []int32
	w                   []float64
}

// newResizeTable computes the contributions of a 1-D resize of inLen samples to
// outLen samples at the given scale (the reference's contributions()).
func newResizeTable(inLen, outLen int, scale float64) *resizeTable {
	const kernelWidth = 4.0
	width := kernelWidth
	h := cubic
	if scale < 1 {
		width = kernelWidth / scale
		h = func(x float64) float64 { return scale * cubic(scale*x) }
	}
	p := int(math.Ceil(width)) + 2
	w := make([]float64, outLen*p)
	idx := make([]int, outLen*p)
	for i := 0; i < outLen; i++ {
		x := float64(i + 1)
		u := x/scale + 0.5*(1-1/scale)
		left := math.Floor(u - width/2)
		row := w[i*p : (i+1)*p]
		for k := 0; k < p; k++ {
			ind := int(left) + k - 1
			idx[i*p+k] = ind
			row[k] = h((u - float64(ind)) - 1)
		}
		s := numpySum(row)
		for k := range row {
			row[k] /= s
		}
	}
	// Drop tap positions that are zero for every output.
	keep := make([]int, 0, p)
	for k := 0; k < p; k++ {
		for i := 0; i < outLen; i++ {
			if w[i*p+k] != 0 {
				keep = append(keep, k)
				break
			}
		}
	}
	t := &resizeTable{inLen: inLen, outLen: outLen, taps: len(keep),
		idx: make([]int32, outLen*len(keep)), w: make([]float64, outLen*len(keep))}
	period := 2 * inLen
	for i := 0; i < outLen; i++ {
		for j, k := range keep {
			m := idx[i*p+k] % period
			if m < 0 {
				m += period
			}
			if m >= inLen {
				m = period - 1 - m
			}
			t.idx[i*t.taps+j] = int32(m)
			t.w[i*t.taps+j] = w[i*p+k]
		}
	}
	return t
}

// ResizedLen is the output length of a resize of n samples at scale: ceil(scale·n),
// as the reference's deriveSizeFromScale.
func ResizedLen(n int, scale float64) int { return int(math.Ceil(scale * float64(n))) }

// Resizer resizes images of one input size to one output size with the
// MATLAB-compatible bicubic. Its weight and index tables are computed once by
// NewResizer; a Resizer is safe for concurrent use.
type Resizer struct {
	inW, inH, outW, outH int
	rows, cols           *resizeTable
	// Workers is the number of goroutines used for large images (default GOMAXPROCS);
	// images under 64k output samples are resized on the calling goroutine.
	Workers int
}

// NewResizer prepares a resize of inW x inH images by scale (e.g. 0.25 or 4); the
// output size is ceil(scale·in) in each dimension.
func NewResizer(inW, inH int, scale float64) (*Resizer, error) {
	if inW <= 0 || inH <= 0 || !(scale > 0) || math.IsInf(scale, 0) {
		return nil, fmt.Errorf("dataset: cannot resize a %dx%d image by %v", inW, inH, scale)
	}
	outW, outH := ResizedLen(inW, scale), ResizedLen(inH, scale)
	if outW <= 0 || outH <= 0 {
		return nil, fmt.Errorf("dataset: resizing a %dx%d image by %v gives an empty image", inW, inH, scale)
	}
	return &Resizer{inW: inW, inH: inH, outW: outW, outH: outH,
		rows: newResizeTable(inH, outH, scale), cols: newResizeTable(inW, outW, scale),
		Workers: runtime.GOMAXPROCS(0)}, nil
}

// OutSize returns the output width and height.
func (r *Resizer) OutSize() (w, h int) { return r.outW, r.outH }

// parallel runs fn over [0,n) in contiguous chunks on up to workers goroutines.
func parallel(n, workers int, fn func(lo, hi int)) {
	if workers <= 1 || n < 2 {
		fn(0, n)
		return
	}
	workers = min(workers, n)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		lo, hi := n*i/workers, n*(i+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

func (r *Resizer) workersFor(samples int) int {
	if samples < 1<<16 {
		return 1
	}
	return max(1, r.Workers)
}

// roundUint8 clips v to [0,255] and rounds half to even (numpy.around).
func roundUint8(v float64) uint8 {
	if v <= 0 {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(math.RoundToEven(v))
}

// Resize resizes an RGB image of the Resizer's input size (uint8 path: clipped and
// rounded after each 1-D pass).
func (r *Resizer) Resize(src *RGB) (*RGB, error) {
	if src.W != r.inW || src.H != r.inH {
		return nil, fmt.Errorf("dataset: resizer made for %dx%d images got %dx%d", r.inW, r.inH, src.W, src.H)
	}
	dst := NewRGB(r.outW, r.outH)
	r.resizeUint8(src.Pix, dst.Pix, 3)
	return dst, nil
}

// resizeUint8 resizes interleaved src (inH x inW x c) into dst (outH x outW x c).
func (r *Resizer) resizeUint8(src, dst []uint8, c int) {
	rowLen := r.inW * c
	mid := make([]uint8, r.outH*rowLen)
	// Pass 1: rows (dim 0).
	rt := r.rows
	parallel(r.outH, r.workersFor(r.outH*rowLen), func(lo, hi int) {
		acc := make([]float64, rowLen)
		for oy := lo; oy < hi; oy++ {
			clear(acc)
			for k := 0; k < rt.taps; k++ {
				wt := rt.w[oy*rt.taps+k]
				in := src[int(rt.idx[oy*rt.taps+k])*rowLen:][:rowLen]
				for x, v := range in {
					acc[x] += float64(wt * float64(v))
				}
			}
			out := mid[oy*rowLen:][:rowLen]
			for x, v := range acc {
				out[x] = roundUint8(v)
			}
		}
	})
	// Pass 2: columns (dim 1).
	ct := r.cols
	outRow := r.outW * c
	parallel(r.outH, r.workersFor(r.outH*outRow), func(lo, hi int) {
		for oy := lo; oy < hi; oy++ {
			in := mid[oy*rowLen:][:rowLen]
			out := dst[oy*outRow:][:outRow]
			for ox := 0; ox < r.outW; ox++ {
				ws := ct.w[ox*ct.taps:][:ct.taps]
				is := ct.idx[ox*ct.taps:][:ct.taps]
				if c == 3 {
					var a0, a1, a2 float64
					for k, wt := range ws {
						px := in[int(is[k])*3:][:3]
						a0 += float64(wt * float64(px[0]))
						a1 += float64(wt * float64(px[1]))
						a2 += float64(wt * float64(px[2]))
					}
					o := out[ox*3:][:3]
					o[0], o[1], o[2] = roundUint8(a0), roundUint8(a1), roundUint8(a2)
					continue
				}
				for ch := 0; ch < c; ch++ {
					acc := 0.0
					for k, wt := range ws {
						acc += float64(wt * float64(in[int(is[k])*c+ch]))
					}
					out[ox*c+ch] = roundUint8(acc)
				}
			}
		}
	})
}

// ResizeFloat resizes interleaved float64 samples (inH x inW x c) into dst
// (outH x outW x c), without rounding (the reference's float path, used for
// up = imresize(LR/256, 4)). dst must have outW·outH·c elements; scratch, if it has
// at least outH·inW·c elements, is used for the intermediate image.
func (r *Resizer) ResizeFloat(src []float64, c int, dst, scratch []float64) error {
	if len(src) != r.inW*r.inH*c || len(dst) != r.outW*r.outH*c {
		return fmt.Errorf("dataset: ResizeFloat: got %d samples in, %d out for %dx%dx%d -> %dx%dx%d",
			len(src), len(dst), r.inW, r.inH, c, r.outW, r.outH, c)
	}
	rowLen := r.inW * c
	if len(scratch) < r.outH*rowLen {
		scratch = make([]float64, r.outH*rowLen)
	}
	mid := scratch[:r.outH*rowLen]
	r.rowPassFloat(src, c, mid)
	ct := r.cols
	outRow := r.outW * c
	parallel(r.outH, r.workersFor(r.outH*outRow), func(lo, hi int) {
		for oy := lo; oy < hi; oy++ {
			in := mid[oy*rowLen:][:rowLen]
			out := dst[oy*outRow:][:outRow]
			for ox := 0; ox < r.outW; ox++ {
				ws := ct.w[ox*ct.taps:][:ct.taps]
				is := ct.idx[ox*ct.taps:][:ct.taps]
				if c == 3 && ct.taps == 4 {
					p0, p1, p2, p3 := in[int(is[0])*3:][:3], in[int(is[1])*3:][:3], in[int(is[2])*3:][:3], in[int(is[3])*3:][:3]
					o := out[ox*3:][:3]
					for ch := 0; ch < 3; ch++ {
						o[ch] = float64(float64(float64(ws[0]*p0[ch])+float64(ws[1]*p1[ch]))+float64(ws[2]*p2[ch])) + float64(ws[3]*p3[ch])
					}
					continue
				}
				if c == 3 {
					// Same tap order per channel as the general loop, three at a time.
					var a0, a1, a2 float64
					for k, wt := range ws {
						px := in[int(is[k])*3:][:3]
						a0 += float64(wt * px[0])
						a1 += float64(wt * px[1])
						a2 += float64(wt * px[2])
					}
					o := out[ox*3:][:3]
					o[0], o[1], o[2] = a0, a1, a2
					continue
				}
				for ch := 0; ch < c; ch++ {
					acc := 0.0
					for k, wt := range ws {
						acc += float64(wt * in[int(is[k])*c+ch])
					}
					out[ox*c+ch] = acc
				}
			}
		}
	})
	return nil
}

// Imresize resizes img by scale with the MATLAB-compatible bicubic (uint8 path).
// For repeated resizes of one size, keep a Resizer instead.
func Imresize(img *RGB, scale float64) (*RGB, error) {
	r, err := NewResizer(img.W, img.H, scale)
	if err != nil {
		return nil, err
	}
	return r.Resize(img)
}

// Downscale4 makes the x4 LR of an HR image as the reference does: HR cropped to a
// multiple of 4, then imresize(HR, 1/4).
func Downscale4(hr *RGB) (*RGB, error) {
	hr = hr.CropMultiple(4)
	if hr.W == 0 || hr.H == 0 {
		return nil, fmt.Errorf("dataset: image of %dx%d is too small to downscale x4", hr.W, hr.H)
	}
	return Imresize(hr, 0.25)
}

// rowPassFloat is the first (dim 0) pass of the float path into mid (outH x inW x c).
func (r *Resizer) rowPassFloat(src []float64, c int, mid []float64) {
	rowLen := r.inW * c
	rt := r.rows
	parallel(r.outH, r.workersFor(r.outH*rowLen), func(lo, hi int) {
		for oy := lo; oy < hi; oy++ {
			acc := mid[oy*rowLen:][:rowLen]
			if rt.taps == 4 {
				// Unrolled, same order: ((w0·a + w1·b) + w2·c) + w3·d.
				ws := rt.w[oy*4:][:4]
				is := rt.idx[oy*4:][:4]
				a := src[int(is[0])*rowLen:][:rowLen]
				b := src[int(is[1])*rowLen:][:rowLen]
				c2 := src[int(is[2])*rowLen:][:rowLen]
				d := src[int(is[3])*rowLen:][:rowLen]
				for x := range acc {
					acc[x] = float64(float64(float64(ws[0]*a[x])+float64(ws[1]*b[x]))+float64(ws[2]*c2[x])) + float64(ws[3]*d[x])
				}
				continue
			}
			clear(acc)
			for k := 0; k < rt.taps; k++ {
				wt := rt.w[oy*rt.taps+k]
				in := src[int(rt.idx[oy*rt.taps+k])*rowLen:][:rowLen]
				for x, v := range in {
					acc[x] += float64(wt * v)
				}
			}
		}
	})
}

// resizeUpPlanes is ResizeFloat for 3 interleaved channels on the calling goroutine,
// writing float32(2·v - 1) into three planes (the Up tensor) instead of interleaved
// float64s; the values are those of ResizeFloat.
func (r *Resizer) resizeUpPlanes(src, mid []float64, planes [3][]float32) {
	rowLen := r.inW * 3
	mid = mid[:r.outH*rowLen]
	r.rowPassFloat(src, 3, mid)
	ct := r.cols
	r0, r1, r2 := planes[0][:r.outW*r.outH], planes[1][:r.outW*r.outH], planes[2][:r.outW*r.outH]
	for oy := 0; oy < r.outH; oy++ {
		in := mid[oy*rowLen:][:rowLen]
		base := oy * r.outW
		for ox := 0; ox < r.outW; ox++ {
			ws := ct.w[ox*ct.taps:][:ct.taps]
			is := ct.idx[ox*ct.taps:][:ct.taps]
			var a0, a1, a2 float64
			if ct.taps == 4 {
				p0, p1, p2, p3 := in[int(is[0])*3:][:3], in[int(is[1])*3:][:3], in[int(is[2])*3:][:3], in[int(is[3])*3:][:3]
				a0 = float64(float64(float64(ws[0]*p0[0])+float64(ws[1]*p1[0]))+float64(ws[2]*p2[0])) + float64(ws[3]*p3[0])
				a1 = float64(float64(float64(ws[0]*p0[1])+float64(ws[1]*p1[1]))+float64(ws[2]*p2[1])) + float64(ws[3]*p3[1])
				a2 = float64(float64(float64(ws[0]*p0[2])+float64(ws[1]*p1[2]))+float64(ws[2]*p2[2])) + float64(ws[3]*p3[2])
			} else {
				for k, wt := range ws {
					px := in[int(is[k])*3:][:3]
					a0 += float64(wt * px[0])
					a1 += float64(wt * px[1])
					a2 += float64(wt * px[2])
				}
			}
			r0[base+ox] = float32(2*a0 - 1)
			r1[base+ox] = float32(2*a1 - 1)
			r2[base+ox] = float32(2*a2 - 1)
		}
	}
}
