package maskgen

import (
	"fmt"
	"math"
)

// SPE modes (configs.Masks.SPEMean and configs.Masks.MaskCrop values).
const (
	// MeanRegion gives each region the mean of R over its pixels (paper, default).
	MeanRegion = "region"
	// MeanImage gives each region the sum of R over its pixels divided by H·W (reference code).
	MeanImage = "image"
	// CropAligned cuts E at the HR patch's own coordinates (paper, default).
	CropAligned = "aligned"
	// CropReference cuts E at LR coordinates and upsamples it bilinearly x4 (reference code bug).
	CropReference = "reference"
)

// RoPETheta is the rotary-embedding base (rotary-embedding-torch default).
const RoPETheta = 10000.0

// SPEOptions select how the embedded mask E is computed (METHOD §2).
type SPEOptions struct {
	// Mean is MeanRegion ("region", the default when empty) or MeanImage ("image").
	Mean string
	// Crop is CropAligned ("aligned", the default when empty) or CropReference ("reference").
	Crop string
	// ReduceSingleRegion zeroes E for a patch whose pixels all carry the same label.
	ReduceSingleRegion bool
	// Scale is the super-resolution factor used by CropReference (0 means 4).
	Scale int
}

// checked returns o with defaults filled in, or an error naming the bad option.
func (o SPEOptions) checked() (SPEOptions, error) {
	if o.Mean == "" {
		o.Mean = MeanRegion
	}
	if o.Crop == "" {
		o.Crop = CropAligned
	}
	if o.Scale == 0 {
		o.Scale = 4
	}
	switch o.Mean {
	case MeanRegion, MeanImage:
	default:
		return o, fmt.Errorf("maskgen: SPE mean %q unknown; use %q or %q (masks.spe_mean)", o.Mean, MeanRegion, MeanImage)
	}
	switch o.Crop {
	case CropAligned, CropReference:
	default:
		return o, fmt.Errorf("maskgen: mask crop %q unknown; use %q or %q (masks.mask_crop)", o.Crop, CropAligned, CropReference)
	}
	if o.Scale < 1 {
		return o, fmt.Errorf("maskgen: SPE scale %d must be >= 1", o.Scale)
	}
	return o, nil
}

// RoPEValue returns R[r,c] of the RoPE map of an image w columns wide, in float64:
// with f_k = 10000^(-2k/w), R[r,2k] = cos(r·f_k) - sin(r·f_k) and
// R[r,2k+1] = cos(r·f_k) + sin(r·f_k); for odd w the last column is 1.
func RoPEValue(r, c, w int) float64 {
	if w%2 == 1 && c == w-1 {
		return 1
	}
	k := c / 2
	f := math.Pow(RoPETheta, -2*float64(k)/float64(w))
	s, co := math.Sincos(float64(r) * f)
	if c%2 == 0 {
		return co - s
	}
	return co + s
}

// ropeFreqs returns f_k = theta^(-2k/w) for k = 0..w/2-1.
func ropeFreqs(w int) []float64 {
	f := make([]float64, w/2)
	for k := range f {
		f[k] = math.Pow(RoPETheta, -2*float64(k)/float64(w))
	}
	return f
}

// ropeRow writes row r of the RoPE map (len(dst) = w) computed in float64 and stored as float32.
func ropeRow(r int, freqs []float64, dst []float32) {
	fr := float64(r)
	for k, f := range freqs {
		s, c := math.Sincos(fr * f)
		dst[2*k] = float32(c - s)
		dst[2*k+1] = float32(c + s)
	}
	if len(dst)%2 == 1 {
		dst[len(dst)-1] = 1
	}
}

// RoPEMap returns the h x w RoPE map R, row-major (R[r*w+c]): rotary position embedding
// applied to an all-ones h x w tensor, rows as positions and the w columns as the
// embedding dimension, theta 10000, interleaved pairs (METHOD §2). Values are computed
// in float64 and stored as float32.
func RoPEMap(h, w int) []float32 {
	out := make([]float32, h*w)
	freqs := ropeFreqs(w)
	for r := 0; r < h; r++ {
		ropeRow(r, freqs, out[r*w:(r+1)*w])
	}
	return out
}

// Encoder computes the embedded mask E of one image from its label map. It precomputes
// one value per region once (O(H·W)); patches are then cut in O(patch size). An Encoder
// is read-only after NewEncoder and safe for concurrent use.
type Encoder struct {
	m      *LabelMap
	opt    SPEOptions
	values []float32 // values[l] = E of region l; values[0] = 0
}

// NewEncoder validates opt and computes every region's value v_i from m:
// the mean of R over the region (MeanRegion) or the sum of R over the region divided
// by H·W (MeanImage). Pixels in no region (label 0) get 0.
func NewEncoder(m *LabelMap, opt SPEOptions) (*Encoder, error) {
	if m == nil {
		return nil, fmt.Errorf("maskgen: NewEncoder: nil label map")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	opt, err := opt.checked()
	if err != nil {
		return nil, err
	}
	w, h := m.Width, m.Height
	sums := make([]float64, m.Regions+1)
	counts := make([]int64, m.Regions+1)
	freqs := ropeFreqs(w)
	row := make([]float32, w)
	for r := 0; r < h; r++ {
		ropeRow(r, freqs, row)
		labels := m.Labels[r*w : (r+1)*w]
		for c, l := range labels {
			sums[l] += float64(row[c])
			counts[l]++
		}
	}
	values := make([]float32, m.Regions+1)
	for l := 1; l <= m.Regions; l++ {
		switch {
		case counts[l] == 0:
			values[l] = 0
		case opt.Mean == MeanRegion:
			values[l] = float32(sums[l] / float64(counts[l]))
		default:
			values[l] = float32(sums[l] / float64(w*h))
		}
	}
	return &Encoder{m: m, opt: opt, values: values}, nil
}

// Options returns the options in effect (defaults filled in).
func (e *Encoder) Options() SPEOptions { return e.opt }

// Value returns E for pixels of the given region (0 for region 0 or an unknown id).
func (e *Encoder) Value(region uint16) float32 {
	if int(region) >= len(e.values) {
		return 0
	}
	return e.values[region]
}

// Values returns a copy of the per-region values, indexed by region id (index 0 is 0).
func (e *Encoder) Values() []float32 { return append([]float32(nil), e.values...) }

// Full writes the full-resolution E (len Width*Height, row-major) into dst.
func (e *Encoder) Full(dst []float32) error {
	if len(dst) < len(e.m.Labels) {
		return fmt.Errorf("maskgen: Full: dst has %d values, need %d", len(dst), len(e.m.Labels))
	}
	for i, l := range e.m.Labels {
		dst[i] = e.values[l]
	}
	return nil
}

// Patch writes E for the HR patch with top-left (x, y) (x = column, y = row) and size
// w x h into dst[:w*h], row-major, one channel.
//
// CropAligned: the full-resolution E at the patch's own pixels.
//
// CropReference: the reference code's window (notes §4, issue #13): rows y/s..y/s+h/s
// and columns x/s..x/s+w/s (s = Scale) of the full-resolution E — the reference slices
// sam_mask[x//4:(x+320)//4, y//4:(y+320)//4] with x the row offset, so LR coordinates
// are used on the HR-resolution mask along both axes, without swapping them — then
// upsampled to w x h as cv2.resize(INTER_LINEAR) does (half-pixel centres, edge clamp).
// w and h must be multiples of Scale. The reference applies this to a whole 320x320
// tile and then crops the 160 patch from it; use PatchInWindow to reproduce that exactly.
//
// Reduce rule (ReduceSingleRegion): when every pixel that E is taken from carries the
// same label, E is all zeros. The reference tests for a single unique E value; labels
// are tested here instead, which is the same except when two different regions happen
// to have bit-identical values. With CropReference the labels tested are those of the
// LR window the values come from.
func (e *Encoder) Patch(x, y, w, h int, dst []float32) error {
	return e.PatchInWindow(x, y, w, h, x, y, w, h, dst)
}

// PatchInWindow is Patch for a patch cut out of a larger window (a tile), as the
// reference pipeline does: the tile with top-left (wx, wy) and size ww x wh is what the
// reference windows and upsamples (CropReference), and the patch (x, y, w, h), in image
// coordinates, must lie inside it. With CropAligned the window is ignored except for the
// bounds check. The reduce rule looks at the patch (aligned) or at the part of the LR
// window its values are interpolated from (reference).
func (e *Encoder) PatchInWindow(wx, wy, ww, wh, x, y, w, h int, dst []float32) error {
	W, H := e.m.Width, e.m.Height
	if w <= 0 || h <= 0 || x < 0 || y < 0 || x+w > W || y+h > H {
		return fmt.Errorf("maskgen: patch %dx%d at (%d,%d) outside the %dx%d label map", w, h, x, y, W, H)
	}
	if len(dst) < w*h {
		return fmt.Errorf("maskgen: patch %dx%d needs %d values, dst has %d", w, h, w*h, len(dst))
	}
	dst = dst[:w*h]
	if e.opt.Crop == CropAligned {
		alignedPatch(e.m.Labels, W, x, y, w, h, e.values, e.opt.ReduceSingleRegion, dst)
		return nil
	}
	s := e.opt.Scale
	if ww <= 0 || wh <= 0 || wx < 0 || wy < 0 || wx+ww > W || wy+wh > H {
		return fmt.Errorf("maskgen: window %dx%d at (%d,%d) outside the %dx%d label map", ww, wh, wx, wy, W, H)
	}
	if x < wx || y < wy || x+w > wx+ww || y+h > wy+wh {
		return fmt.Errorf("maskgen: patch %dx%d at (%d,%d) not inside window %dx%d at (%d,%d)", w, h, x, y, ww, wh, wx, wy)
	}
	if ww%s != 0 || wh%s != 0 {
		return fmt.Errorf("maskgen: reference mask crop needs a window size that is a multiple of %d, got %dx%d", s, ww, wh)
	}
	// LR window in the full-resolution map: rows wy/s.., columns wx/s.., size (wh/s, ww/s).
	referencePatch(e.m.Labels, W, wx/s, wy/s, ww/s, wh/s, x-wx, y-wy, w, h, s, e.values, e.opt.ReduceSingleRegion, dst)
	return nil
}

// alignedPatch writes E of the w x h patch at (x, y) of labels (row stride
// stride): each pixel's region value, or zeros by the reduce rule.
func alignedPatch(labels []uint16, stride, x, y, w, h int, values []float32, reduce bool, dst []float32) {
	if reduce && singleLabel(labels, stride, x, y, w, h) {
		clear(dst)
		return
	}
	for r := 0; r < h; r++ {
		row := labels[(y+r)*stride+x : (y+r)*stride+x+w]
		out := dst[r*w : (r+1)*w]
		for c, l := range row {
			out[c] = values[l]
		}
	}
}

// referencePatch writes E of the w x h patch at (ox0, oy0) of a window upsampled
// by s from the lw x lh LR window at (lx, ly) of labels (row stride stride), as
// cv2.resize(INTER_LINEAR) does, or zeros by the reduce rule (on the LR labels the
// patch's values are interpolated from).
func referencePatch(labels []uint16, stride, lx, ly, lw, lh, ox0, oy0, w, h, s int, values []float32, reduce bool, dst []float32) {
	// Output pixel (ox, oy) of the upsampled window (window coordinates) reads
	// source (ox+0.5)/s-0.5, clamped as OpenCV does.
	xs := make([]interp, w)
	for c := range xs {
		xs[c] = linearCoord(ox0+c, s, lw)
	}
	ys := make([]interp, h)
	for r := range ys {
		ys[r] = linearCoord(oy0+r, s, lh)
	}
	if reduce {
		c0, c1 := xs[0].i0, xs[w-1].i1
		r0, r1 := ys[0].i0, ys[h-1].i1
		if singleLabel(labels, stride, lx+c0, ly+r0, c1-c0+1, r1-r0+1) {
			clear(dst)
			return
		}
	}
	// Horizontal pass on the needed source rows, then vertical, in float32 like OpenCV.
	r0, r1 := ys[0].i0, ys[h-1].i1
	rows := make([]float32, (r1-r0+1)*w)
	for sr := r0; sr <= r1; sr++ {
		row := labels[(ly+sr)*stride+lx : (ly+sr)*stride+lx+lw]
		out := rows[(sr-r0)*w : (sr-r0+1)*w]
		for c, t := range xs {
			v0, v1 := values[row[t.i0]], values[row[t.i1]]
			out[c] = v0*t.w0 + v1*t.w1
		}
	}
	for r, t := range ys {
		a := rows[(t.i0-r0)*w : (t.i0-r0+1)*w]
		b := rows[(t.i1-r0)*w : (t.i1-r0+1)*w]
		out := dst[r*w : (r+1)*w]
		for c := range out {
			out[c] = a[c]*t.w0 + b[c]*t.w1
		}
	}
}

// interp is one output coordinate of a linear resize: source indices and weights.
type interp struct {
	i0, i1 int
	w0, w1 float32
}

// linearCoord maps output index o of an upscale by s of n source samples the way
// cv2.resize(INTER_LINEAR) does: src = (o+0.5)/s - 0.5, floor, clamp to [0, n-1].
func linearCoord(o, s, n int) interp {
	src := (float64(o)+0.5)/float64(s) - 0.5
	i := int(math.Floor(src))
	f := src - float64(i)
	if i < 0 {
		i, f = 0, 0
	}
	if i >= n-1 {
		i, f = n-1, 0
	}
	j := i + 1
	if j > n-1 {
		j = n - 1
	}
	return interp{i0: i, i1: j, w0: float32(1 - f), w1: float32(f)}
}

// singleLabel reports whether every pixel of the rectangle of labels (row stride
// stride) carries the same label.
func singleLabel(labels []uint16, stride, x, y, w, h int) bool {
	first := labels[y*stride+x]
	for r := y; r < y+h; r++ {
		for _, l := range labels[r*stride+x : r*stride+x+w] {
			if l != first {
				return false
			}
		}
	}
	return true
}
