package maskgen

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
	"runtime"
	"sync"

	"github.com/samdiffsr/samdiffsr/configs"
)

// BuiltinName is the Name of the built-in graph segmenter.
const BuiltinName = "builtin"

// BuiltinOptions parameterise the built-in segmenter (configs.Builtin plus Threads).
type BuiltinOptions struct {
	// Sigma is the standard deviation of the Gaussian smoothing applied first (0: none).
	Sigma float64
	// K sets the scale of the merge threshold k/|C|: larger K, larger regions.
	K float64
	// MinSize is the smallest region in pixels; smaller components are merged into a
	// neighbour along the weakest edge.
	MinSize int
	// Threads is how many goroutines the parallel phases use (0: GOMAXPROCS). It does
	// not change the output. Farms that segment several images at once set it to 1.
	Threads int
}

// BuiltinSegmenter is the built-in segmenter: Felzenszwalb-Huttenlocher graph-based
// segmentation ("Efficient Graph-Based Image Segmentation", IJCV 2004) on an
// 8-neighbour grid graph whose edge weights are the Euclidean RGB distances between
// Gaussian-smoothed pixels (0..255 scale).
//
// It covers the image: every pixel gets a region id in 1..K, numbered in the order of
// each region's first pixel in raster order. The output depends only on the image and
// Sigma, K and MinSize (not on Threads). Edge weights are quantised to 1/128 and
// sorted with a stable counting sort, so ties are broken by pixel order.
//
// A BuiltinSegmenter keeps its scratch buffers between calls (no allocation per image
// of the same size); use it from one goroutine at a time.
type BuiltinSegmenter struct {
	opt BuiltinOptions

	rgb, tmp []float32 // interleaved RGB, 3 per pixel
	wts      []float32 // 4 per pixel: weight of each edge, -1 where it leaves the image
	edges    []fhEdge  // valid edges sorted by weight
	hist     [][]int   // per-thread bucket counts, then next slots
	rest     []fhEdge  // edges rejected by the merge test, in order
	nodes    []ufNode  // union-find forest, one node per pixel
	label    []uint16  // region id per root
}

const (
	keyShift  = 15                           // weightKey drops this many low bits of a float32
	numKeys   = (0x43DD0000 >> keyShift) + 1 // float32 bits of 442 > max RGB distance 441.68
	maxPixels = math.MaxUint32/numDirs - 1   // edge ids are pixel*numDirs+direction in a uint32
)

// NewBuiltin returns a built-in segmenter after checking opt.
func NewBuiltin(opt BuiltinOptions) (*BuiltinSegmenter, error) {
	if opt.Sigma < 0 || opt.Sigma > 10 || math.IsNaN(opt.Sigma) {
		return nil, fmt.Errorf("maskgen: builtin sigma %v must be in [0, 10] (masks.builtin.sigma)", opt.Sigma)
	}
	if !(opt.K > 0) || math.IsInf(opt.K, 0) {
		return nil, fmt.Errorf("maskgen: builtin k %v must be > 0 (masks.builtin.k)", opt.K)
	}
	if opt.MinSize < 0 {
		return nil, fmt.Errorf("maskgen: builtin min_size %d must be >= 0 (masks.builtin.min_size)", opt.MinSize)
	}
	if opt.Threads < 0 {
		return nil, fmt.Errorf("maskgen: builtin threads %d must be >= 0", opt.Threads)
	}
	return &BuiltinSegmenter{opt: opt}, nil
}

// NewBuiltinFromConfig returns a built-in segmenter with the config's parameters,
// using threads goroutines (0: GOMAXPROCS).
func NewBuiltinFromConfig(c configs.Builtin, threads int) (*BuiltinSegmenter, error) {
	return NewBuiltin(BuiltinOptions{Sigma: c.Sigma, K: c.K, MinSize: c.MinSize, Threads: threads})
}

// Name returns "builtin".
func (s *BuiltinSegmenter) Name() string { return BuiltinName }

// Params returns sigma, k and min_size (the parameters that determine the output).
func (s *BuiltinSegmenter) Params() map[string]any {
	return map[string]any{"sigma": s.opt.Sigma, "k": s.opt.K, "min_size": s.opt.MinSize}
}

// Options returns the segmenter's options.
func (s *BuiltinSegmenter) Options() BuiltinOptions { return s.opt }

func (s *BuiltinSegmenter) threads() int {
	if s.opt.Threads > 0 {
		return s.opt.Threads
	}
	return runtime.GOMAXPROCS(0)
}

// grow returns buf resized to n, reallocating only when its capacity is too small.
func grow[T any](buf []T, n int) []T {
	if cap(buf) < n {
		buf = make([]T, n)
		adviseHugePages(buf)
		return buf
	}
	return buf[:n]
}

// Segment segments img. It fails for an empty image, an image over 2^30 pixels, or
// more than 65535 regions (raise k or min_size).
func (s *BuiltinSegmenter) Segment(ctx context.Context, img image.Image) (*LabelMap, error) {
	if img == nil {
		return nil, errors.New("maskgen: builtin: nil image")
	}
	b := img.Bounds()
	W, H := b.Dx(), b.Dy()
	if W <= 0 || H <= 0 {
		return nil, fmt.Errorf("maskgen: builtin: empty image (%dx%d)", W, H)
	}
	if W*H > maxPixels {
		return nil, fmt.Errorf("maskgen: builtin: image %dx%d has more than %d pixels", W, H, maxPixels)
	}
	n := W * H
	threads := min(s.threads(), H)
	s.rgb = grow(s.rgb, 3*n)
	toRGB(img, s.rgb, threads)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.opt.Sigma > 0 {
		s.tmp = grow(s.tmp, 3*n)
		smooth(s.rgb, s.tmp, W, H, s.opt.Sigma, threads)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.sortEdges(W, H, threads)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.merge(W, H)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m := NewLabelMap(W, H)
	k, err := s.relabel(m.Labels)
	if err != nil {
		return nil, err
	}
	m.Regions = k
	return m, nil
}

// parallelRows runs fn over [0, h) split into threads contiguous row ranges
// (fn(t, r0, r1) with t the range's index), and waits.
func parallelRows(threads, h int, fn func(t, r0, r1 int)) {
	if threads <= 1 {
		fn(0, 0, h)
		return
	}
	var wg sync.WaitGroup
	for t := 0; t < threads; t++ {
		r0, r1 := h*t/threads, h*(t+1)/threads
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(t, r0, r1)
		}()
	}
	wg.Wait()
}

// toRGB converts img to interleaved float32 RGB in 0..255.
func toRGB(img image.Image, dst []float32, threads int) {
	b := img.Bounds()
	W, H := b.Dx(), b.Dy()
	switch im := img.(type) {
	case *image.RGBA:
		parallelRows(threads, H, func(_, r0, r1 int) {
			for y := r0; y < r1; y++ {
				src := im.Pix[y*im.Stride : y*im.Stride+4*W]
				out := dst[3*y*W : 3*(y+1)*W]
				for x := 0; x < W; x++ {
					out[3*x], out[3*x+1], out[3*x+2] = float32(src[4*x]), float32(src[4*x+1]), float32(src[4*x+2])
				}
			}
		})
	case *image.NRGBA:
		parallelRows(threads, H, func(_, r0, r1 int) {
			for y := r0; y < r1; y++ {
				src := im.Pix[y*im.Stride : y*im.Stride+4*W]
				out := dst[3*y*W : 3*(y+1)*W]
				for x := 0; x < W; x++ {
					out[3*x], out[3*x+1], out[3*x+2] = float32(src[4*x]), float32(src[4*x+1]), float32(src[4*x+2])
				}
			}
		})
	case *image.Gray:
		parallelRows(threads, H, func(_, r0, r1 int) {
			for y := r0; y < r1; y++ {
				src := im.Pix[y*im.Stride : y*im.Stride+W]
				out := dst[3*y*W : 3*(y+1)*W]
				for x := 0; x < W; x++ {
					v := float32(src[x])
					out[3*x], out[3*x+1], out[3*x+2] = v, v, v
				}
			}
		})
	case *image.YCbCr:
		parallelRows(threads, H, func(_, r0, r1 int) {
			for y := r0; y < r1; y++ {
				out := dst[3*y*W : 3*(y+1)*W]
				for x := 0; x < W; x++ {
					yi, ci := im.YOffset(b.Min.X+x, b.Min.Y+y), im.COffset(b.Min.X+x, b.Min.Y+y)
					r, g, bl := color.YCbCrToRGB(im.Y[yi], im.Cb[ci], im.Cr[ci])
					out[3*x], out[3*x+1], out[3*x+2] = float32(r), float32(g), float32(bl)
				}
			}
		})
	default:
		// Generic path (16-bit, paletted, CMYK...): 16-bit colour scaled to 0..255.
		parallelRows(threads, H, func(_, r0, r1 int) {
			for y := r0; y < r1; y++ {
				out := dst[3*y*W : 3*(y+1)*W]
				for x := 0; x < W; x++ {
					r, g, bl, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
					out[3*x], out[3*x+1], out[3*x+2] = float32(r)/257, float32(g)/257, float32(bl)/257
				}
			}
		})
	}
}

// gaussKernel returns the one-sided normalised Gaussian kernel of Felzenszwalb's code:
// length ceil(4·sigma)+1, k[0] + 2·Σk[1:] = 1.
func gaussKernel(sigma float64) []float32 {
	n := int(math.Ceil(4*sigma)) + 1
	k := make([]float64, n)
	sum := 0.0
	for i := range k {
		k[i] = math.Exp(-0.5 * (float64(i) / sigma) * (float64(i) / sigma))
		if i == 0 {
			sum += k[i]
		} else {
			sum += 2 * k[i]
		}
	}
	out := make([]float32, n)
	for i := range k {
		out[i] = float32(k[i] / sum)
	}
	return out
}

// smooth applies a separable Gaussian (rows, then columns; borders clamped) to the
// interleaved RGB image rgb in place, using tmp as scratch.
func smooth(rgb, tmp []float32, W, H int, sigma float64, threads int) {
	k := gaussKernel(sigma)
	L := len(k) - 1
	// Horizontal: rgb -> tmp.
	parallelRows(threads, H, func(_, r0, r1 int) {
		for y := r0; y < r1; y++ {
			in := rgb[3*y*W : 3*(y+1)*W]
			out := tmp[3*y*W : 3*(y+1)*W]
			for x := 0; x < W; x++ {
				r, g, b := k[0]*in[3*x], k[0]*in[3*x+1], k[0]*in[3*x+2]
				if x >= L && x < W-L {
					for i := 1; i <= L; i++ {
						a, c := 3*(x-i), 3*(x+i)
						r += k[i] * (in[a] + in[c])
						g += k[i] * (in[a+1] + in[c+1])
						b += k[i] * (in[a+2] + in[c+2])
					}
				} else {
					for i := 1; i <= L; i++ {
						a, c := 3*max(x-i, 0), 3*min(x+i, W-1)
						r += k[i] * (in[a] + in[c])
						g += k[i] * (in[a+1] + in[c+1])
						b += k[i] * (in[a+2] + in[c+2])
					}
				}
				out[3*x], out[3*x+1], out[3*x+2] = r, g, b
			}
		}
	})
	// Vertical: tmp -> rgb, whole rows at a time.
	n := 3 * W
	parallelRows(threads, H, func(_, r0, r1 int) {
		for y := r0; y < r1; y++ {
			out := rgb[y*n : (y+1)*n]
			in := tmp[y*n : (y+1)*n]
			k0 := k[0]
			for j := range out {
				out[j] = k0 * in[j]
			}
			for i := 1; i <= L; i++ {
				a := tmp[max(y-i, 0)*n : max(y-i, 0)*n+n]
				c := tmp[min(y+i, H-1)*n : min(y+i, H-1)*n+n]
				ki := k[i]
				a, c = a[:len(out)], c[:len(out)]
				for j := range out {
					out[j] += ki * (a[j] + c[j])
				}
			}
		}
	})
}

// Edge directions from pixel (x, y): right, down, down-right, up-right.
const numDirs = 4

// fhEdge is one graph edge: id = pixel*numDirs + direction, w its RGB distance.
type fhEdge struct {
	id uint32
	w  float32
}

// edgeWeight returns the RGB distance between the pixels at offsets p and q of the
// interleaved image.
func edgeWeight(rgb []float32, p, q int) float32 {
	dr := rgb[p] - rgb[q]
	dg := rgb[p+1] - rgb[q+1]
	db := rgb[p+2] - rgb[q+2]
	return float32(math.Sqrt(float64(dr*dr + dg*dg + db*db)))
}

// weightKey quantises a weight >= 0 for the bucket sort: its float32 bit pattern
// (monotone in w for w >= 0) rounded to keyShift fewer bits, i.e. buckets 0.4% wide
// relative to w, so small and large weights are ordered equally well.
func weightKey(w float32) uint32 {
	return (math.Float32bits(w) + 1<<(keyShift-1)) >> keyShift
}

// sortEdges computes every edge's weight and sorts the valid edges by weight into
// s.edges with a stable counting sort on weightKey (ties in pixel, then direction
// order; the exact weights travel with the edges).
func (s *BuiltinSegmenter) sortEdges(W, H, threads int) {
	n := W * H
	s.wts = grow(s.wts, numDirs*n)
	if len(s.hist) < threads {
		s.hist = make([][]int, threads)
	}
	for t := 0; t < threads; t++ {
		s.hist[t] = grow(s.hist[t], numKeys)
		clear(s.hist[t])
	}
	rgb, wts := s.rgb, s.wts
	parallelRows(threads, H, func(t, r0, r1 int) {
		hist := s.hist[t][:numKeys]
		for y := r0; y < r1; y++ {
			row := wts[numDirs*y*W : numDirs*(y+1)*W]
			for x := 0; x < W; x++ {
				p := 3 * (y*W + x)
				wr, wd, wdr, wur := float32(-1), float32(-1), float32(-1), float32(-1)
				if x+1 < W {
					wr = edgeWeight(rgb, p, p+3)
					hist[weightKey(wr)]++
					if y+1 < H {
						wdr = edgeWeight(rgb, p, p+3*W+3)
						hist[weightKey(wdr)]++
					}
					if y > 0 {
						wur = edgeWeight(rgb, p, p-3*W+3)
						hist[weightKey(wur)]++
					}
				}
				if y+1 < H {
					wd = edgeWeight(rgb, p, p+3*W)
					hist[weightKey(wd)]++
				}
				e := row[numDirs*x : numDirs*x+numDirs]
				e[0], e[1], e[2], e[3] = wr, wd, wdr, wur
			}
		}
	})
	// Each thread's first slot per bucket: thread t's edges of a bucket follow those
	// of threads < t, which hold earlier pixels.
	total := 0
	for key := 0; key < numKeys; key++ {
		for t := 0; t < threads; t++ {
			c := s.hist[t][key]
			s.hist[t][key] = total
			total += c
		}
	}
	s.edges = grow(s.edges, total)
	edges := s.edges
	parallelRows(threads, H, func(t, r0, r1 int) {
		next := s.hist[t][:numKeys]
		for p := r0 * W; p < r1*W; p++ {
			e := wts[numDirs*p : numDirs*p+numDirs]
			for d, w := range e {
				if w >= 0 {
					k := weightKey(w)
					edges[next[k]] = fhEdge{id: uint32(numDirs*p + d), w: w}
					next[k]++
				}
			}
		}
	})
}

// ufNode is a union-find node: parent is a pixel index, or -size at a root; thresh,
// valid at roots of two or more pixels, is Int(C) + k/|C| (a singleton's is k). Both
// share a cache line, so the threshold test costs no extra memory access.
type ufNode struct {
	parent int32
	thresh float32
}

// merge runs the Felzenszwalb-Huttenlocher merging over the sorted edges, then merges
// components smaller than MinSize along the weakest edges, in weight order.
func (s *BuiltinSegmenter) merge(W, H int) {
	n := W * H
	off := [numDirs]int32{1, int32(W), int32(W) + 1, 1 - int32(W)}
	s.nodes = grow(s.nodes, n)
	nodes := s.nodes
	k := float32(s.opt.K)
	for i := range nodes {
		nodes[i] = ufNode{parent: -1, thresh: k}
	}
	find := func(x int32) int32 {
		for {
			p := nodes[x].parent
			if p < 0 {
				return x
			}
			gp := nodes[p].parent
			if gp < 0 {
				return p
			}
			nodes[x].parent = gp // path halving
			x = gp
		}
	}
	// Edges rejected by the threshold test are the only ones the small-component pass
	// can use (the others join pixels already in one component); keep them in order.
	rest := s.rest[:0]
	for _, e := range s.edges {
		p := int32(e.id / numDirs)
		a, b := find(p), find(p+off[e.id%numDirs])
		if a == b {
			continue
		}
		na, nb := &nodes[a], &nodes[b]
		if e.w > na.thresh || e.w > nb.thresh {
			rest = append(rest, e)
			continue
		}
		if na.parent > nb.parent { // na is the smaller component
			a, na, nb = b, nb, na
		}
		sa, sb := float32(-na.parent), float32(-nb.parent)
		// Int(C) of the union: the largest of both parts' Int and w. Edges within one
		// weight bucket are not in exact weight order, so w need not be the largest.
		internal := max(na.thresh-k/sa, nb.thresh-k/sb, e.w)
		na.parent += nb.parent
		nb.parent = a
		na.thresh = internal + k/(sa+sb)
	}
	s.rest = rest
	minSize := int32(min(s.opt.MinSize, math.MaxInt32))
	if minSize <= 1 {
		return
	}
	small := 0
	for i := range nodes {
		if p := nodes[i].parent; p < 0 && -p < minSize {
			small++
		}
	}
	for _, e := range rest {
		if small == 0 {
			break
		}
		p := int32(e.id / numDirs)
		a, b := find(p), find(p+off[e.id%numDirs])
		if a == b {
			continue
		}
		na, nb := &nodes[a], &nodes[b]
		sa, sb := -na.parent, -nb.parent
		if sa >= minSize && sb >= minSize {
			continue
		}
		if sa < minSize {
			small--
		}
		if sb < minSize {
			small--
		}
		if sa < sb {
			a, na, nb = b, nb, na
		}
		na.parent = -(sa + sb)
		nb.parent = a
		if sa+sb < minSize {
			small++
		}
	}
}

// relabel writes each pixel's region id into labels: components numbered 1..K in the
// order of their first pixel in raster order. It returns K.
func (s *BuiltinSegmenter) relabel(labels []uint16) (int, error) {
	nodes := s.nodes
	s.label = grow(s.label, len(nodes))
	lab := s.label
	clear(lab)
	next := 0
	for p := range nodes {
		r := int32(p)
		for nodes[r].parent >= 0 {
			r = nodes[r].parent
		}
		if r != int32(p) {
			nodes[p].parent = r
		}
		if lab[r] == 0 {
			if next == math.MaxUint16 {
				return 0, fmt.Errorf("maskgen: builtin: more than %d regions; raise masks.builtin.k or masks.builtin.min_size", math.MaxUint16)
			}
			next++
			lab[r] = uint16(next)
		}
		labels[p] = lab[r]
	}
	return next, nil
}

// defaultBuiltinOptions returns the configured default parameters (configs.Default).
func defaultBuiltinOptions() BuiltinOptions {
	c := configs.Default().Masks.Builtin
	return BuiltinOptions{Sigma: c.Sigma, K: c.K, MinSize: c.MinSize}
}
