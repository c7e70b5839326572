package samonnx

import (
	"sort"
	"sync"
)

// pointGrid is SAM's build_point_grid(n): n x n points in [0,1]², row-major (y
// outer, x inner), coordinates np.linspace(1/(2n), 1−1/(2n), n) = (i+0.5)/n.
func pointGrid(n int) [][2]float64 {
	off := 1 / (2 * float64(n))
	side := make([]float64, n)
	// np.linspace: start + i·step with step = (stop−start)/(n−1), last = stop.
	start, stop := off, 1-off
	if n == 1 {
		side[0] = start
	} else {
		step := (stop - start) / float64(n-1)
		for i := range side {
			side[i] = float64(i)*step + start
		}
		side[n-1] = stop
	}
	pts := make([][2]float64, 0, n*n)
	for _, y := range side {
		for _, x := range side {
			pts = append(pts, [2]float64{x, y})
		}
	}
	return pts
}

// promptCoords returns the grid points of an image of w x h in the encoder's
// 1024 frame, as SamAutomaticMaskGenerator does: grid · (w, h), then
// ResizeLongestSide.apply_coords (· new/old per axis, float64), as float32.
func promptCoords(n, w, h int) [][2]float32 {
	nw, nh := resizedSize(w, h)
	sx, sy := float64(nw)/float64(w), float64(nh)/float64(h)
	grid := pointGrid(n)
	out := make([][2]float32, len(grid))
	for i, p := range grid {
		out[i] = [2]float32{float32(p[0] * float64(w) * sx), float32(p[1] * float64(h) * sy)}
	}
	return out
}

// stabilityScore is SAM's calculate_stability_score on full-resolution logits: the
// IoU of the masks thresholded at t+off and t−off (pixels above t+off over pixels
// above t−off), in float32. An empty union gives 0 (SAM gets NaN, which fails the
// filter the same way).
func stabilityScore(logits []float32, t, off float32) float32 {
	var hi, lo int
	for _, v := range logits {
		if v > t+off {
			hi++
		}
		if v > t-off {
			lo++
		}
	}
	return stabilityRatio(hi, lo)
}

func stabilityRatio(hi, lo int) float32 {
	if lo == 0 {
		return 0
	}
	return float32(hi) / float32(lo)
}

// maskBox is batched_mask_to_box for one w x h boolean mask: the inclusive bounding
// box (x0, y0, x1, y1) of its set pixels, all zero when it is empty.
func maskBox(mask []bool, w, h int) [4]int {
	x0, y0, x1, y1 := w, h, -1, -1
	for y := 0; y < h; y++ {
		for x, on := range mask[y*w : (y+1)*w] {
			if on {
				x0, y0 = min(x0, x), min(y0, y)
				x1, y1 = max(x1, x), max(y1, y)
			}
		}
	}
	if x1 < 0 {
		return [4]int{}
	}
	return [4]int{x0, y0, x1, y1}
}

// nms is torchvision's nms (as batched_nms with a single category calls it) on
// boxes (x0, y0, x1, y1) as float32: boxes in order of descending score (a stable
// sort, so ties keep input order), a box is dropped when its IoU with a kept one
// exceeds thresh. Areas are (x1−x0)·(y1−y0), as torchvision computes them on the
// inclusive boxes SAM produces. It returns the kept indices in that order.
func nms(boxes [][4]int, scores []float32, thresh float64) []int {
	order := make([]int, len(boxes))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] > scores[order[b]] })
	area := make([]float32, len(boxes))
	for i, b := range boxes {
		area[i] = float32(b[2]-b[0]) * float32(b[3]-b[1])
	}
	suppressed := make([]bool, len(boxes))
	var keep []int
	for oi, i := range order {
		if suppressed[i] {
			continue
		}
		keep = append(keep, i)
		bi := boxes[i]
		for _, j := range order[oi+1:] {
			if suppressed[j] {
				continue
			}
			bj := boxes[j]
			w := max(float32(0), float32(min(bi[2], bj[2])-max(bi[0], bj[0])))
			h := max(float32(0), float32(min(bi[3], bj[3])-max(bi[1], bj[1])))
			inter := w * h
			ovr := inter / (area[i] + area[j] - inter)
			if float64(ovr) > thresh {
				suppressed[j] = true
			}
		}
	}
	return keep
}

// genParams are the generator's thresholds (SamAutomaticMaskGenerator's).
type genParams struct {
	maskThreshold, predIoU, stability, stabilityOffset float32
	predIoUOn, stabilityOn                             bool // SAM skips a filter whose threshold is 0
	nms                                                float64
}

// candidate is one mask that passed the IoU and stability filters.
type candidate struct {
	order int // position in SAM's concatenation order (point-major, then mask)
	iou   float32
	stab  float32
	box   [4]int
	low   lowGrid // the low-res logits painting needs
	rg    region  // the cells that can be above the threshold
}

// filterMask applies the predicted-IoU and stability filters to one mask's 256x256
// low-res logits; it returns false when the mask is dropped. The logits painting
// needs are copied when the mask is kept.
func (g *genParams) filterMask(f *frame, sc *scratch, order int, iou float32, low []float32) (candidate, bool) {
	if g.predIoUOn && !(iou > g.predIoU) {
		return candidate{}, false
	}
	l := fullGrid(low)
	st := f.stats(&l, g.maskThreshold, g.stabilityOffset, sc)
	stab := stabilityRatio(st.hi, st.lo)
	if g.stabilityOn && !(stab >= g.stability) {
		return candidate{}, false
	}
	return candidate{order: order, iou: iou, stab: stab, box: st.box, low: f.keepGrid(&l, st.keep), rg: st.keep}, true
}

// selectMasks runs box NMS over the candidates (given in SAM's order) and returns
// the survivors in descending predicted IoU: the order SAM's generator emits them
// and the order they are painted in.
func (g *genParams) selectMasks(cands []candidate) []candidate {
	sort.Slice(cands, func(a, b int) bool { return cands[a].order < cands[b].order })
	boxes := make([][4]int, len(cands))
	scores := make([]float32, len(cands))
	for i, c := range cands {
		boxes[i], scores[i] = c.box, c.iou
	}
	keep := nms(boxes, scores, g.nms)
	out := make([]candidate, len(keep))
	for i, k := range keep {
		out[i] = cands[k]
	}
	return out
}

// paintMasks paints the masks into a w x h label map in order, mask i getting label
// i+1 (later masks overwrite earlier ones), splitting rows across workers. It paints
// from the last mask to the first, each pixel taking the first label it gets.
func (g *genParams) paintMasks(f *frame, masks []candidate, workers int, scr []*scratch, times *phaseTimes) []uint16 {
	labels := make([]uint16, f.w*f.h)
	workers = max(1, min(workers, len(scr), f.h))
	var wg sync.WaitGroup
	for t := 0; t < workers; t++ {
		y0, y1 := f.h*t/workers, f.h*(t+1)/workers
		wg.Add(1)
		go func(sc *scratch) {
			defer wg.Done()
			defer times.pin()()
			t0 := times.start()
			defer func() { times.since(phasePaint, t0) }()
			done := f.doneMarks()
			for i := len(masks) - 1; i >= 0; i-- {
				m := &masks[i]
				f.paint(&m.low, m.rg, g.maskThreshold, uint16(i+1), labels, y0, y1, done, sc)
			}
		}(scr[t])
	}
	wg.Wait()
	return labels
}
