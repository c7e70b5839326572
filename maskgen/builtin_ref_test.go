package maskgen

import (
	"image"
	"math"
	"sort"
)

// referenceFH is a direct, slow transcription of Felzenszwalb-Huttenlocher's
// segment-graph with exact float32 edge weights and a comparison sort (ties in edge
// index order), sharing only the smoothing with the fast segmenter. Tests compare the
// fast segmenter with it.
func referenceFH(img image.Image, opt BuiltinOptions) *LabelMap {
	b := img.Bounds()
	W, H := b.Dx(), b.Dy()
	rgb := make([]float32, 3*W*H)
	toRGB(img, rgb, 1)
	if opt.Sigma > 0 {
		smooth(rgb, make([]float32, 3*W*H), W, H, opt.Sigma, 1)
	}
	type edge struct {
		a, b int
		w    float32
	}
	var edges []edge
	dist := func(p, q int) float32 {
		dr := rgb[3*p] - rgb[3*q]
		dg := rgb[3*p+1] - rgb[3*q+1]
		db := rgb[3*p+2] - rgb[3*q+2]
		return float32(math.Sqrt(float64(dr*dr + dg*dg + db*db)))
	}
	for y := 0; y < H; y++ {
		for x := 0; x < W; x++ {
			p := y*W + x
			if x+1 < W {
				edges = append(edges, edge{p, p + 1, dist(p, p+1)})
			}
			if y+1 < H {
				edges = append(edges, edge{p, p + W, dist(p, p+W)})
			}
			if x+1 < W && y+1 < H {
				edges = append(edges, edge{p, p + W + 1, dist(p, p+W+1)})
			}
			if x+1 < W && y > 0 {
				edges = append(edges, edge{p, p - W + 1, dist(p, p-W+1)})
			}
		}
	}
	sort.SliceStable(edges, func(i, j int) bool { return edges[i].w < edges[j].w })
	n := W * H
	parent := make([]int, n)
	size := make([]int, n)
	thresh := make([]float64, n)
	for i := range parent {
		parent[i], size[i], thresh[i] = i, 1, opt.K
	}
	var find func(int) int
	find = func(x int) int {
		if parent[x] != x {
			parent[x] = find(parent[x])
		}
		return parent[x]
	}
	join := func(a, b int) int {
		if size[a] < size[b] {
			a, b = b, a
		}
		parent[b] = a
		size[a] += size[b]
		return a
	}
	for _, e := range edges {
		a, b := find(e.a), find(e.b)
		if a != b && float64(e.w) <= thresh[a] && float64(e.w) <= thresh[b] {
			r := join(a, b)
			thresh[r] = float64(e.w) + opt.K/float64(size[r])
		}
	}
	for _, e := range edges {
		a, b := find(e.a), find(e.b)
		if a != b && (size[a] < opt.MinSize || size[b] < opt.MinSize) {
			join(a, b)
		}
	}
	m := NewLabelMap(W, H)
	ids := map[int]uint16{}
	for p := 0; p < n; p++ {
		r := find(p)
		if ids[r] == 0 {
			ids[r] = uint16(len(ids) + 1)
		}
		m.Labels[p] = ids[r]
	}
	m.Regions = len(ids)
	return m
}
