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

// margin is the slack that makes block decisions exact despite float32 rounding.
// Every upscaled logit is a convex combination (two bilinear stages) of the
// low-res logits it depends on, computed with six roundings and weights that sum
// to 1 within 1e-7, so it lies within about 5e-7·|τ| of that range near a
// threshold τ: "every tap <= τ−margin(τ)" proves no pixel of a block is above τ,
// and "every tap >= τ+margin(τ)" that every pixel is. The bound is 8 times the
// worst case; TestFrameMatchesNaive checks the decisions pixel by pixel.
func margin(t float32) float32 {
	return 4e-6 * (1 + max(t, -t))
}

// scratch is per-goroutine working memory for the block scans.
type scratch struct {
	p0, p2 []int32   // prefix counts of columns below / above (columnClasses)
	patch  []float32 // one block's stage-A values
	vals   []float32 // one block's upscaled values
}

func (f *frame) newScratch() *scratch {
	// The largest block, in output pixels and in 1024-frame taps.
	wide, tall, ai, aj := 0, 0, 0, 0
	for _, s := range f.x.spans {
		wide = max(wide, s.end-s.start)
		ai = max(ai, int(f.x.b.i1[s.end-1]-f.x.b.i0[s.start])+1)
	}
	for _, s := range f.y.spans {
		tall = max(tall, s.end-s.start)
		aj = max(aj, int(f.y.b.i1[s.end-1]-f.y.b.i0[s.start])+1)
	}
	return &scratch{p0: make([]int32, lowSize+1), p2: make([]int32, lowSize+1), patch: make([]float32, ai*aj), vals: make([]float32, wide*tall)}
}

// blockValues returns the upscaled logits of rows [y0, y1) (within one y span) and
// the columns of x span xs, row-major: stage A over the block's
// 1024-frame taps, then stage B, in the arithmetic of value.
func (f *frame) blockValues(l *lowGrid, xs span, y0, y1 int, sc *scratch) []float32 {
	a, by, bx := &f.a, &f.y.b, &f.x.b
	j0, j1 := int(by.i0[y0]), int(by.i1[y1-1])
	i0, i1 := int(bx.i0[xs.start]), int(bx.i1[xs.end-1])
	ni := i1 - i0 + 1
	patch := sc.patch[:(j1-j0+1)*ni]
	for j := j0; j <= j1; j++ {
		r0 := l.v[(int(a.i0[j])-l.r0)*l.cols : (int(a.i0[j])-l.r0+1)*l.cols]
		r1 := l.v[(int(a.i1[j])-l.r0)*l.cols : (int(a.i1[j])-l.r0+1)*l.cols]
		wj0, wj1 := a.w0[j], a.w1[j]
		out := patch[(j-j0)*ni : (j-j0+1)*ni]
		for i := i0; i <= i1; i++ {
			c0, c1 := int(a.i0[i])-l.c0, int(a.i1[i])-l.c0
			t0 := float32(r0[c0]*a.w0[i]) + float32(r0[c1]*a.w1[i])
			t1 := float32(r1[c0]*a.w0[i]) + float32(r1[c1]*a.w1[i])
			out[i-i0] = float32(t0*wj0) + float32(t1*wj1)
		}
	}
	nx := xs.end - xs.start
	vals := sc.vals[:(y1-y0)*nx]
	for y := y0; y < y1; y++ {
		ra := patch[(int(by.i0[y])-j0)*ni:]
		rb := patch[(int(by.i1[y])-j0)*ni:]
		wy0, wy1 := by.w0[y], by.w1[y]
		out := vals[(y-y0)*nx : (y-y0+1)*nx]
		for x := xs.start; x < xs.end; x++ {
			c0, c1 := int(bx.i0[x])-i0, int(bx.i1[x])-i0
			t0 := float32(ra[c0]*bx.w0[x]) + float32(ra[c1]*bx.w1[x])
			t1 := float32(rb[c0]*bx.w0[x]) + float32(rb[c1]*bx.w1[x])
			out[x-xs.start] = float32(t0*wy0) + float32(t1*wy1)
		}
	}
	return vals
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
	rlo, rhi := f.y.spans[0].lo, f.y.spans[len(f.y.spans)-1].hi
	clo, chi := f.x.spans[0].lo, f.x.spans[len(f.x.spans)-1].hi
	cut := floor - margin(floor)
	rg := region{r0: rhi + 1, r1: -1, c0: chi + 1, c1: -1}
	for r := rlo; r <= rhi; r++ {
		row := l.v[(r-l.r0)*l.cols+clo-l.c0 : (r-l.r0)*l.cols+chi-l.c0+1]
		first := 0
		for first < len(row) && row[first] < cut {
			first++
		}
		if first == len(row) {
			continue
		}
		last := len(row) - 1
		for row[last] < cut {
			last--
		}
		rg.r0, rg.r1 = min(rg.r0, r), r
		rg.c0, rg.c1 = min(rg.c0, clo+first), max(rg.c1, clo+last)
	}
	if rg.r1 >= 0 {
		rg.ya, rg.yb = f.y.spanRange(rg.r0, rg.r1)
		rg.xa, rg.xb = f.x.spanRange(rg.c0, rg.c1)
	}
	return rg
}

// columnClasses classifies, for the y span ys, the low-res columns [c0, c1] by
// their logits over the span's rows: into sc.p0 and sc.p2 it writes prefix counts
// of the columns whose logits are all <= below, and of those all >= above. A block
// (ys, x span xs) is then wholly below when all its window columns count in p0,
// wholly above when all count in p2 (see classify).
func (f *frame) columnClasses(l *lowGrid, ys span, c0, c1 int, below, above float32, sc *scratch) {
	rows := ys.hi - ys.lo + 1
	base := (ys.lo-l.r0)*l.cols - l.c0
	p0, p2 := sc.p0, sc.p2
	p0[0], p2[0] = 0, 0
	for c := c0; c <= c1; c++ {
		mn, mx := l.v[base+c], l.v[base+c]
		for r := 1; r < rows; r++ {
			v := l.v[base+r*l.cols+c]
			if v < mn {
				mn = v
			} else if v > mx {
				mx = v
			}
		}
		i := c - c0
		p0[i+1], p2[i+1] = p0[i], p2[i]
		if mx <= below {
			p0[i+1]++
		}
		if mn >= above {
			p2[i+1]++
		}
	}
}

// Block classes.
const (
	blockBelow = iota
	blockMixed
	blockAbove
)

// classify returns the class of x span xs given columnClasses over columns from c0.
func classify(sc *scratch, xs span, c0 int) int {
	a, b := xs.lo-c0, xs.hi-c0+1
	switch n := int32(b - a); {
	case sc.p0[b]-sc.p0[a] == n:
		return blockBelow
	case sc.p2[b]-sc.p2[a] == n:
		return blockAbove
	}
	return blockMixed
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
	mHi, mLo := margin(tHi), margin(tLo)
	var st maskStats
	rg := f.activeRegion(l, tLo)
	st.keep = rg
	if rg.r1 < 0 {
		return st
	}
	x0, y0, x1, y1 := f.w, f.h, -1, -1
	c0, c1 := f.x.spans[rg.xa].lo, f.x.spans[rg.xb-1].hi
	for _, ys := range f.y.spans[rg.ya:rg.yb] {
		f.columnClasses(l, ys, c0, c1, tLo-mLo, tHi+mHi, sc)
		for _, xs := range f.x.spans[rg.xa:rg.xb] {
			switch classify(sc, xs, c0) {
			case blockBelow:
				continue // below every threshold
			case blockAbove:
				n := (ys.end - ys.start) * (xs.end - xs.start)
				st.hi += n
				st.lo += n
				st.area += n
				x0, y0 = min(x0, xs.start), min(y0, ys.start)
				x1, y1 = max(x1, xs.end-1), max(y1, ys.end-1)
				continue
			}
			vals := f.blockValues(l, xs, ys.start, ys.end, sc)
			nxs := xs.end - xs.start
			for y := ys.start; y < ys.end; y++ {
				row := vals[(y-ys.start)*nxs : (y-ys.start+1)*nxs]
				first, last := -1, -1
				for i, v := range row {
					if v > tLo {
						st.lo++
						if v > t {
							if first < 0 {
								first = i
							}
							last = i
							st.area++
							if v > tHi {
								st.hi++
							}
						}
					}
				}
				if first >= 0 {
					x0, y0 = min(x0, xs.start+first), min(y0, y)
					x1, y1 = max(x1, xs.start+last), max(y1, y)
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
	m := margin(t)
	nx := len(f.x.spans)
	c0, c1 := f.x.spans[rg.xa].lo, f.x.spans[rg.xb-1].hi
	for yi := rg.ya; yi < rg.yb; yi++ {
		ys := f.y.spans[yi]
		y0, y1 := max(ys.start, yFrom), min(ys.end, yTo)
		f.columnClasses(l, ys, c0, c1, t-m, t+m, sc)
		for k := rg.xa; k < rg.xb; k++ {
			if done[yi*nx+k] {
				continue
			}
			xs := f.x.spans[k]
			switch classify(sc, xs, c0) {
			case blockBelow:
				continue
			case blockAbove:
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
			vals := f.blockValues(l, xs, y0, y1, sc)
			nxs := xs.end - xs.start
			for y := y0; y < y1; y++ {
				row := dst[y*f.w+xs.start : y*f.w+xs.end]
				for i, v := range vals[(y-y0)*nxs : (y-y0+1)*nxs] {
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
