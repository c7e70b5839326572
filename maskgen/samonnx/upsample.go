package samonnx

import (
	"math"
	"sort"
)

// SAM's fixed sizes.
const (
	inputSize = 1024 // encoder input side (ResizeLongestSide target, padded square)
	lowSize   = 256  // low_res_masks side
	embSize   = 64   // image embedding side
)

// resizedSize is SAM's ResizeLongestSide.get_preprocess_shape: the size of the image
// once its longest side is scaled to 1024 (float64, rounded half up).
func resizedSize(w, h int) (nw, nh int) {
	scale := float64(inputSize) / float64(max(w, h))
	return int(float64(w)*scale + 0.5), int(float64(h)*scale + 0.5)
}

// taps1D holds, per output index, the two input taps and weights of PyTorch's
// bilinear interpolation with align_corners=False (upsample_bilinear2d on CPU,
// float32 arithmetic: src = scale·(d+0.5)−0.5 clamped at 0, scale = in/out).
type taps1D struct {
	i0, i1 []int32
	w0, w1 []float32
}

func linearTaps(in, out int) taps1D {
	t := taps1D{i0: make([]int32, out), i1: make([]int32, out), w0: make([]float32, out), w1: make([]float32, out)}
	scale := float32(in) / float32(out)
	for d := 0; d < out; d++ {
		src := float32(scale*float32(float32(d)+0.5)) - 0.5
		if src < 0 {
			src = 0
		}
		i0 := min(int(math.Floor(float64(src))), in-1)
		l1 := min(max(src-float32(i0), 0), 1)
		i1 := i0
		if i0 < in-1 {
			i1 = i0 + 1
		}
		t.i0[d], t.i1[d] = int32(i0), int32(i1)
		t.w0[d], t.w1[d] = 1-l1, l1
	}
	return t
}

// span is a run of consecutive output indices [start, end) whose values depend on
// the same window lo..hi (inclusive) of low-resolution indices.
type span struct{ start, end, lo, hi int }

// axis maps one image axis of n output pixels to the low-resolution axis, through
// the resized frame of m pixels (m ≤ 1024), as SAM's postprocess_masks does:
// bilinear 256→1024, crop to m, bilinear m→n.
type axis struct {
	b     taps1D // output → resized frame
	spans []span
}

// frame is the upscaling geometry of one image size: the exact two-stage bilinear
// resize of SAM's postprocess_masks (SamPredictor.predict_torch and the ONNX
// export's mask_postprocessing), evaluated lazily. Only pixels whose value is not
// decided by the range of the low-resolution logits they depend on are computed.
type frame struct {
	w, h   int
	nw, nh int    // resized (pre-padding) size
	a      taps1D // 1024 → 256, stage A, same for both axes
	x, y   axis
}

func newFrame(w, h int) *frame {
	f := &frame{w: w, h: h}
	f.nw, f.nh = resizedSize(w, h)
	f.a = linearTaps(lowSize, inputSize)
	f.x = f.newAxis(f.nw, w)
	f.y = f.newAxis(f.nh, h)
	return f
}

func (f *frame) newAxis(m, n int) axis {
	ax := axis{b: linearTaps(m, n)}
	for o := 0; o < n; o++ {
		lo, hi := int(f.a.i0[ax.b.i0[o]]), int(f.a.i1[ax.b.i1[o]])
		if k := len(ax.spans) - 1; k >= 0 && ax.spans[k].lo == lo && ax.spans[k].hi == hi {
			ax.spans[k].end = o + 1
			continue
		}
		ax.spans = append(ax.spans, span{start: o, end: o + 1, lo: lo, hi: hi})
	}
	return ax
}

// lowGrid is a rectangle of low-resolution logits: rows r0.. and columns
// c0..c0+cols−1 of the 256x256 grid, row-major in v.
type lowGrid struct {
	v            []float32
	r0, c0, cols int
}

func fullGrid(v []float32) lowGrid { return lowGrid{v: v, cols: lowSize} }

func (g *lowGrid) at(r, c int) float32 { return g.v[(r-g.r0)*g.cols+c-g.c0] }

// rows returns the number of rows g holds.
func (g *lowGrid) rows() int { return len(g.v) / g.cols }

// stageA is the value of the 1024x1024 upsampled logits at (row j, column i).
func (f *frame) stageA(l *lowGrid, j, i int) float32 {
	a := &f.a
	r0, r1 := (int(a.i0[j])-l.r0)*l.cols, (int(a.i1[j])-l.r0)*l.cols
	c0, c1 := int(a.i0[i])-l.c0, int(a.i1[i])-l.c0
	t0 := float32(l.v[r0+c0]*a.w0[i]) + float32(l.v[r0+c1]*a.w1[i])
	t1 := float32(l.v[r1+c0]*a.w0[i]) + float32(l.v[r1+c1]*a.w1[i])
	return float32(t0*a.w0[j]) + float32(t1*a.w1[j])
}

// value is the upscaled logit of output pixel (x, y): the composition of the two
// bilinear stages in PyTorch's float32 order (width taps inside, height outside).
func (f *frame) value(l *lowGrid, x, y int) float32 {
	bx, by := &f.x.b, &f.y.b
	j0, j1 := int(by.i0[y]), int(by.i1[y])
	i0, i1 := int(bx.i0[x]), int(bx.i1[x])
	t0 := float32(f.stageA(l, j0, i0)*bx.w0[x]) + float32(f.stageA(l, j0, i1)*bx.w1[x])
	t1 := float32(f.stageA(l, j1, i0)*bx.w0[x]) + float32(f.stageA(l, j1, i1)*bx.w1[x])
	return float32(t0*by.w0[y]) + float32(t1*by.w1[y])
}

// margin bounds the float32 rounding of the two bilinear stages relative to the
// magnitude of the values combined, so that "every tap is above τ+margin" proves
// every computed pixel is above τ.
func margin(mn, mx float32) float32 {
	return 4e-6 * (1 + max(-mn, mx))
}

// scratch is per-goroutine working memory for the block scans.
type scratch struct {
	hmin, hmax []float32 // per low-res row, per x span
	vals       []float32 // one x span's values
	// arow caches stage-A rows (1024 frame) of the mask being scanned: row j is
	// valid over columns [ac0, ac1] when stamp[j] == gen.
	arow     []float32
	stamp    []uint32
	gen      uint32
	ac0, ac1 int
}

func (f *frame) newScratch() *scratch {
	n := lowSize * len(f.x.spans)
	widest := 0
	for _, s := range f.x.spans {
		widest = max(widest, s.end-s.start)
	}
	return &scratch{hmin: make([]float32, n), hmax: make([]float32, n), vals: make([]float32, widest)}
}

// startRows invalidates the stage-A row cache and sets the columns it computes:
// those the x spans [xa, xb) read.
func (f *frame) startRows(sc *scratch, xa, xb int) {
	if sc.arow == nil {
		sc.arow = make([]float32, inputSize*inputSize)
		sc.stamp = make([]uint32, inputSize)
	}
	sc.gen++
	if sc.gen == 0 { // wrapped: clear stamps
		clear(sc.stamp)
		sc.gen = 1
	}
	sc.ac0 = int(f.x.b.i0[f.x.spans[xa].start])
	sc.ac1 = int(f.x.b.i1[f.x.spans[xb-1].end-1])
}

// aRow returns stage-A row j (the 1024x1024 upsampled logits), indexed by
// 1024-frame column, computed over the cache's column range on first use.
func (f *frame) aRow(l *lowGrid, j int, sc *scratch) []float32 {
	row := sc.arow[j*inputSize : (j+1)*inputSize]
	if sc.stamp[j] == sc.gen {
		return row
	}
	sc.stamp[j] = sc.gen
	a := &f.a
	r0 := l.v[(int(a.i0[j])-l.r0)*l.cols : (int(a.i0[j])-l.r0+1)*l.cols]
	r1 := l.v[(int(a.i1[j])-l.r0)*l.cols : (int(a.i1[j])-l.r0+1)*l.cols]
	wj0, wj1 := a.w0[j], a.w1[j]
	for i := sc.ac0; i <= sc.ac1; i++ {
		c0, c1 := int(a.i0[i])-l.c0, int(a.i1[i])-l.c0
		t0 := float32(r0[c0]*a.w0[i]) + float32(r0[c1]*a.w1[i])
		t1 := float32(r1[c0]*a.w0[i]) + float32(r1[c1]*a.w1[i])
		row[i] = float32(t0*wj0) + float32(t1*wj1)
	}
	return row
}

// rowValues writes the upscaled logits of output row y, columns [x0, x1), into out,
// from the cached stage-A rows (same arithmetic as value).
func (f *frame) rowValues(l *lowGrid, y, x0, x1 int, sc *scratch, out []float32) {
	by, bx := &f.y.b, &f.x.b
	ra, rb := f.aRow(l, int(by.i0[y]), sc), f.aRow(l, int(by.i1[y]), sc)
	wy0, wy1 := by.w0[y], by.w1[y]
	for x := x0; x < x1; x++ {
		i0, i1 := bx.i0[x], bx.i1[x]
		t0 := float32(ra[i0]*bx.w0[x]) + float32(ra[i1]*bx.w1[x])
		t1 := float32(rb[i0]*bx.w0[x]) + float32(rb[i1]*bx.w1[x])
		out[x-x0] = float32(t0*wy0) + float32(t1*wy1)
	}
}

// spanRange returns the spans [a, b) of ax whose windows meet low-res indices lo..hi.
func (ax *axis) spanRange(lo, hi int) (int, int) {
	a := sort.Search(len(ax.spans), func(i int) bool { return ax.spans[i].hi >= lo })
	b := sort.Search(len(ax.spans), func(i int) bool { return ax.spans[i].lo > hi })
	return a, b
}

// region is the part of a mask's low-res grid that can matter for thresholds at
// or above floor: the bounding box of the cells that are not provably below it
// (rows r0..r1, columns c0..c1; empty when r1 < r0) and the spans meeting it.
type region struct {
	r0, r1, c0, c1 int
	ya, yb, xa, xb int // spans [ya, yb) of f.y and [xa, xb) of f.x
}

func (f *frame) activeRegion(l *lowGrid, floor float32) region {
	// One pass with a margin good for logits within ±coarseMax; a second pass with
	// the margin larger logits need.
	const coarseMax = 1000
	rg, lo, hi := f.scanActive(l, floor-margin(-coarseMax, coarseMax))
	if lo < -coarseMax || hi > coarseMax {
		rg, _, _ = f.scanActive(l, floor-margin(lo, hi))
	}
	if rg.r1 >= 0 {
		rg.ya, rg.yb = f.y.spanRange(rg.r0, rg.r1)
		rg.xa, rg.xb = f.x.spanRange(rg.c0, rg.c1)
	}
	return rg
}

// scanActive returns the bounding box of the cells >= cut among those the image
// uses, and the cells' min and max.
func (f *frame) scanActive(l *lowGrid, cut float32) (rg region, lo, hi float32) {
	rlo, rhi := f.y.spans[0].lo, f.y.spans[len(f.y.spans)-1].hi
	clo, chi := f.x.spans[0].lo, f.x.spans[len(f.x.spans)-1].hi
	rg = region{r0: rhi + 1, r1: -1, c0: chi + 1, c1: -1}
	for r := rlo; r <= rhi; r++ {
		row := l.v[(r-l.r0)*l.cols+clo-l.c0 : (r-l.r0)*l.cols+chi-l.c0+1]
		first, last := -1, -1
		for i, v := range row {
			if v >= cut {
				if first < 0 {
					first = i
				}
				last = i
			}
			if v > hi {
				hi = v
			} else if v < lo {
				lo = v
			}
		}
		if first >= 0 {
			rg.r0, rg.r1 = min(rg.r0, r), r
			rg.c0, rg.c1 = min(rg.c0, clo+first), max(rg.c1, clo+last)
		}
	}
	return rg, lo, hi
}

// blockRange fills sc with, for every low-res row of the region's y spans and
// every x span of the region, the min and max of the logits over the span's
// columns.
func (f *frame) blockRange(l *lowGrid, rg region, sc *scratch) {
	nx := len(f.x.spans)
	for r := f.y.spans[rg.ya].lo; r <= f.y.spans[rg.yb-1].hi; r++ {
		row := l.v[(r-l.r0)*l.cols : (r-l.r0+1)*l.cols]
		mn, mx := sc.hmin[r*nx:(r+1)*nx], sc.hmax[r*nx:(r+1)*nx]
		for k := rg.xa; k < rg.xb; k++ {
			s := f.x.spans[k]
			a, b := row[s.lo-l.c0], row[s.lo-l.c0]
			for _, v := range row[s.lo-l.c0+1 : s.hi-l.c0+1] {
				a = min(a, v)
				b = max(b, v)
			}
			mn[k], mx[k] = a, b
		}
	}
}

// blockMinMax is the min and max of the logits a block (y span ys, x span k)
// depends on.
func blockMinMax(sc *scratch, nx int, ys span, k int) (float32, float32) {
	mn, mx := sc.hmin[ys.lo*nx+k], sc.hmax[ys.lo*nx+k]
	for r := ys.lo + 1; r <= ys.hi; r++ {
		mn = min(mn, sc.hmin[r*nx+k])
		mx = max(mx, sc.hmax[r*nx+k])
	}
	return mn, mx
}

// maskStats are the per-mask quantities SAM's generator derives from the
// full-resolution logits.
type maskStats struct {
	hi, lo int // pixels with logit > threshold+offset, > threshold−offset
	area   int // pixels with logit > threshold
	// box is the inclusive bounding box (x0, y0, x1, y1) of the pixels above the
	// threshold, as batched_mask_to_box computes it; all zero when area is 0.
	box [4]int
	// keep is the rectangle of low-res logits that painting the mask needs.
	keep region
}

// stats computes maskStats for low-res logits l at threshold t with stability
// offset off (off >= 0).
func (f *frame) stats(l *lowGrid, t, off float32, sc *scratch) maskStats {
	tHi, tLo := t+off, t-off
	var st maskStats
	rg := f.activeRegion(l, tLo)
	st.keep = rg
	if rg.r1 < 0 {
		return st
	}
	f.blockRange(l, rg, sc)
	f.startRows(sc, rg.xa, rg.xb)
	x0, y0, x1, y1 := f.w, f.h, -1, -1
	nx := len(f.x.spans)
	for _, ys := range f.y.spans[rg.ya:rg.yb] {
		for k := rg.xa; k < rg.xb; k++ {
			xs := f.x.spans[k]
			mn, mx := blockMinMax(sc, nx, ys, k)
			m := margin(mn, mx)
			if mx < tLo-m {
				continue // below every threshold
			}
			if mn > tHi+m {
				n := (ys.end - ys.start) * (xs.end - xs.start)
				st.hi += n
				st.lo += n
				st.area += n
				x0, y0 = min(x0, xs.start), min(y0, ys.start)
				x1, y1 = max(x1, xs.end-1), max(y1, ys.end-1)
				continue
			}
			for y := ys.start; y < ys.end; y++ {
				vals := sc.vals[:xs.end-xs.start]
				f.rowValues(l, y, xs.start, xs.end, sc, vals)
				for i, v := range vals {
					x := xs.start + i
					if v > tLo {
						st.lo++
						if v > t {
							st.area++
							x0, y0 = min(x0, x), min(y0, y)
							x1, y1 = max(x1, x), max(y1, y)
							if v > tHi {
								st.hi++
							}
						}
					}
				}
			}
		}
	}
	if st.area > 0 {
		st.box = [4]int{x0, y0, x1, y1}
	}
	return st
}

// keepGrid copies the low-res logits that blocks meeting region rg depend on.
func (f *frame) keepGrid(l *lowGrid, rg region) lowGrid {
	if rg.r1 < 0 {
		return lowGrid{cols: 1}
	}
	r0, r1 := f.y.spans[rg.ya].lo, f.y.spans[rg.yb-1].hi
	c0, c1 := f.x.spans[rg.xa].lo, f.x.spans[rg.xb-1].hi
	g := lowGrid{v: make([]float32, 0, (r1-r0+1)*(c1-c0+1)), r0: r0, c0: c0, cols: c1 - c0 + 1}
	for r := r0; r <= r1; r++ {
		g.v = append(g.v, l.v[(r-l.r0)*l.cols+c0-l.c0:(r-l.r0)*l.cols+c1-l.c0+1]...)
	}
	return g
}

// paint sets dst (w*h labels) to label wherever the upscaled logits exceed t and
// dst is still 0, for rows [yFrom, yTo): masks are painted from the last to the
// first, so that each pixel ends with the last mask covering it. done marks the
// blocks (y span, x span) already fully painted, which later calls skip. l must hold
// every logit the blocks of rg depend on (keepGrid), and rg must cover every cell
// not provably below t.
func (f *frame) paint(l *lowGrid, rg region, t float32, label uint16, dst []uint16, yFrom, yTo int, done []bool, sc *scratch) {
	if rg.r1 < 0 {
		return
	}
	ya := sort.Search(len(f.y.spans), func(i int) bool { return f.y.spans[i].end > yFrom })
	yb := sort.Search(len(f.y.spans), func(i int) bool { return f.y.spans[i].start >= yTo })
	rg.ya, rg.yb = max(rg.ya, ya), min(rg.yb, yb)
	if rg.ya >= rg.yb {
		return
	}
	f.blockRange(l, rg, sc)
	f.startRows(sc, rg.xa, rg.xb)
	nx := len(f.x.spans)
	for yi := rg.ya; yi < rg.yb; yi++ {
		ys := f.y.spans[yi]
		y0, y1 := max(ys.start, yFrom), min(ys.end, yTo)
		for k := rg.xa; k < rg.xb; k++ {
			if done[yi*nx+k] {
				continue
			}
			xs := f.x.spans[k]
			mn, mx := blockMinMax(sc, nx, ys, k)
			m := margin(mn, mx)
			if mx < t-m {
				continue
			}
			if mn > t+m {
				for y := y0; y < y1; y++ {
					row := dst[y*f.w+xs.start : y*f.w+xs.end]
					for i, v := range row {
						if v == 0 {
							row[i] = label
						}
					}
				}
				if y0 == ys.start && y1 == ys.end { // not cut by the band
					done[yi*nx+k] = true
				}
				continue
			}
			for y := y0; y < y1; y++ {
				vals := sc.vals[:xs.end-xs.start]
				f.rowValues(l, y, xs.start, xs.end, sc, vals)
				row := dst[y*f.w+xs.start : y*f.w+xs.end]
				for i, v := range vals {
					if v > t && row[i] == 0 {
						row[i] = label
					}
				}
			}
		}
	}
}

// doneMarks returns the per-block marks paint needs.
func (f *frame) doneMarks() []bool { return make([]bool, len(f.y.spans)*len(f.x.spans)) }
