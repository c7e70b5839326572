package maskgen

import (
	"math"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestRoPEMapClosedForm(t *testing.T) {
	// Literal values: w=4 has f_0 = 1, f_1 = 10000^(-1/2) = 0.01.
	lit := []struct {
		h, w, r, c int
		want       float64
	}{
		{3, 4, 0, 0, 1},
		{3, 4, 0, 3, 1},
		{3, 4, 1, 0, math.Cos(1) - math.Sin(1)}, // -0.30116868
		{3, 4, 1, 1, math.Cos(1) + math.Sin(1)}, // 1.38177329
		{3, 4, 2, 2, 0.97980134},                // cos(0.02) - sin(0.02)
		{3, 4, 2, 3, 1.01979867},                // cos(0.02) + sin(0.02)
		{3, 5, 2, 4, 1},                         // odd width: last column not rotated
		{3, 5, 1, 4, 1},
		{3, 5, 2, 0, math.Cos(2) - math.Sin(2)},
		{3, 5, 2, 3, math.Cos(2*math.Pow(10000, -0.4)) + math.Sin(2*math.Pow(10000, -0.4))},
	}
	for _, tc := range lit {
		R := RoPEMap(tc.h, tc.w)
		if got := float64(R[tc.r*tc.w+tc.c]); !near(got, tc.want, 1e-6) {
			t.Errorf("RoPEMap(%d,%d)[%d,%d] = %.8f, want %.8f", tc.h, tc.w, tc.r, tc.c, got, tc.want)
		}
	}
	// Every entry against the closed form, for small even and odd widths.
	for _, w := range []int{1, 2, 3, 6, 7, 16} {
		h := 9
		R := RoPEMap(h, w)
		if len(R) != h*w {
			t.Fatalf("RoPEMap(%d,%d) has %d values", h, w, len(R))
		}
		for r := 0; r < h; r++ {
			for c := 0; c < w; c++ {
				var want float64
				if w%2 == 1 && c == w-1 {
					want = 1
				} else {
					f := math.Pow(10000, -2*float64(c/2)/float64(w))
					if c%2 == 0 {
						want = math.Cos(float64(r)*f) - math.Sin(float64(r)*f)
					} else {
						want = math.Cos(float64(r)*f) + math.Sin(float64(r)*f)
					}
				}
				if got := R[r*w+c]; got != float32(want) {
					t.Errorf("w=%d R[%d,%d] = %v, want %v", w, r, c, got, float32(want))
				}
				if got := RoPEValue(r, c, w); got != want {
					t.Errorf("w=%d RoPEValue(%d,%d) = %v, want %v", w, r, c, got, want)
				}
			}
		}
	}
}

// lm builds a label map from rows of labels.
func lm(rows ...[]uint16) *LabelMap {
	m := NewLabelMap(len(rows[0]), len(rows))
	for y, r := range rows {
		for x, l := range r {
			m.Labels[y*m.Width+x] = l
			if int(l) > m.Regions {
				m.Regions = int(l)
			}
		}
	}
	return m
}

func TestEncoderValuesModes(t *testing.T) {
	c1, s1 := math.Cos(1), math.Sin(1)
	small := lm([]uint16{1, 1}, []uint16{2, 0}) // R = [1 1; cos1-sin1 cos1+sin1]
	// A 5x7 map (odd width) with a region absent from the map (3) and uncovered pixels.
	big := lm(
		[]uint16{1, 1, 1, 2, 2, 2, 0},
		[]uint16{1, 1, 1, 2, 2, 2, 0},
		[]uint16{1, 4, 4, 2, 2, 2, 0},
		[]uint16{1, 4, 4, 0, 0, 0, 0},
		[]uint16{1, 1, 1, 1, 1, 1, 1},
	)
	big.Regions = 4
	brute := func(m *LabelMap, mean string) []float64 {
		R := RoPEMap(m.Height, m.Width)
		sum := make([]float64, m.Regions+1)
		n := make([]float64, m.Regions+1)
		for i, l := range m.Labels {
			sum[l] += float64(R[i])
			n[l]++
		}
		out := make([]float64, m.Regions+1)
		for l := 1; l <= m.Regions; l++ {
			if n[l] == 0 {
				continue
			}
			if mean == MeanRegion {
				out[l] = sum[l] / n[l]
			} else {
				out[l] = sum[l] / float64(len(m.Labels))
			}
		}
		return out
	}
	tests := []struct {
		name string
		m    *LabelMap
		mean string
		want []float64
	}{
		{"small region mean", small, MeanRegion, []float64{0, 1, c1 - s1}},
		{"small image sum", small, MeanImage, []float64{0, 0.5, (c1 - s1) / 4}},
		{"default mean is region", small, "", []float64{0, 1, c1 - s1}},
		{"5x7 region mean", big, MeanRegion, brute(big, MeanRegion)},
		{"5x7 image sum", big, MeanImage, brute(big, MeanImage)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEncoder(tc.m, SPEOptions{Mean: tc.mean})
			if err != nil {
				t.Fatal(err)
			}
			for l, want := range tc.want {
				if got := e.Value(uint16(l)); !near(float64(got), want, 1e-6) {
					t.Errorf("region %d value %v, want %v", l, got, want)
				}
			}
			full := make([]float32, len(tc.m.Labels))
			if err := e.Full(full); err != nil {
				t.Fatal(err)
			}
			for i, l := range tc.m.Labels {
				if full[i] != e.Value(l) {
					t.Fatalf("Full[%d] = %v, want region %d's value %v", i, full[i], l, e.Value(l))
				}
				if l == 0 && full[i] != 0 {
					t.Fatalf("pixel %d in no region has E %v, want 0", i, full[i])
				}
			}
		})
	}
	// region mean and image sum differ by the factor count/(H·W).
	er, _ := NewEncoder(big, SPEOptions{Mean: MeanRegion})
	ei, _ := NewEncoder(big, SPEOptions{Mean: MeanImage})
	if !near(float64(ei.Value(2)), float64(er.Value(2))*9/35, 1e-6) {
		t.Errorf("image sum %v != region mean %v * 9/35", ei.Value(2), er.Value(2))
	}
	if e := big.Labels; e[0] != 1 {
		t.Fatal("test map changed")
	}
	if v := er.Value(3); v != 0 {
		t.Errorf("empty region 3 has value %v, want 0", v)
	}
	if v := er.Value(999); v != 0 {
		t.Errorf("unknown region has value %v, want 0", v)
	}
}

func TestEncoderOptionErrors(t *testing.T) {
	m := lm([]uint16{1, 1}, []uint16{1, 1})
	for _, opt := range []SPEOptions{{Mean: "median"}, {Crop: "nearest"}, {Scale: -1}} {
		if _, err := NewEncoder(m, opt); err == nil {
			t.Errorf("NewEncoder(%+v) accepted", opt)
		}
	}
	bad := lm([]uint16{1, 3})
	bad.Regions = 1
	if _, err := NewEncoder(bad, SPEOptions{}); err == nil {
		t.Error("NewEncoder accepted a label above Regions")
	}
	e, _ := NewEncoder(m, SPEOptions{})
	dst := make([]float32, 4)
	if err := e.Patch(1, 0, 2, 2, dst); err == nil {
		t.Error("Patch outside the map accepted")
	}
	if err := e.Patch(0, 0, 2, 2, dst[:3]); err == nil {
		t.Error("Patch with a short dst accepted")
	}
	er, _ := NewEncoder(m, SPEOptions{Crop: CropReference})
	if err := er.Patch(0, 0, 2, 2, dst); err == nil {
		t.Error("reference crop accepted a window that is not a multiple of 4")
	}
}

// blocks16 is a 16x16 map with a different region for each 4x4 block (16 regions).
func blocks16() *LabelMap {
	m := NewLabelMap(16, 16)
	for y := 0; y < 16; y++ {
		for x := 0; x < 16; x++ {
			m.Labels[y*16+x] = uint16((y/4)*4 + x/4 + 1)
		}
	}
	m.Regions = 16
	return m
}

func TestReduceSingleRegion(t *testing.T) {
	// 16x16 map of 2x2 blocks, one region each (64 regions), one uncovered pixel.
	m := NewLabelMap(16, 16)
	for y := 0; y < 16; y++ {
		for x := 0; x < 16; x++ {
			m.Labels[y*16+x] = uint16((y/2)*8 + x/2 + 1)
		}
	}
	m.Regions = 64
	m.Labels[15*16+15] = 0
	tests := []struct {
		name       string
		crop       string
		reduce     bool
		x, y, w, h int
		wantZero   bool
	}{
		{"aligned inside one region, reduce on", CropAligned, true, 2, 2, 2, 2, true},
		{"aligned inside one region, reduce off", CropAligned, false, 2, 2, 2, 2, false},
		{"aligned across regions, reduce on", CropAligned, true, 1, 2, 2, 2, false},
		{"aligned region + uncovered pixel", CropAligned, true, 14, 14, 2, 2, false},
		// Reference: patch (4,4,4,4) reads LR window row 1, col 1 only = region 1.
		{"reference one LR label, reduce on", CropReference, true, 4, 4, 4, 4, true},
		{"reference one LR label, reduce off", CropReference, false, 4, 4, 4, 4, false},
		// Patch (0,0,8,8) reads LR window rows 0-1, cols 0-1 = regions 1 (all four pixels).
		{"reference 8x8 from one region", CropReference, true, 0, 0, 8, 8, true},
		// Patch (0,0,16,8) reads LR rows 0-1 cols 0-3 = regions 1 and 2.
		{"reference two LR labels", CropReference, true, 0, 0, 16, 8, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEncoder(m, SPEOptions{Crop: tc.crop, ReduceSingleRegion: tc.reduce})
			if err != nil {
				t.Fatal(err)
			}
			dst := make([]float32, tc.w*tc.h)
			for i := range dst {
				dst[i] = 42
			}
			if err := e.Patch(tc.x, tc.y, tc.w, tc.h, dst); err != nil {
				t.Fatal(err)
			}
			allZero := true
			for _, v := range dst {
				if v != 0 {
					allZero = false
				}
				if v == 42 {
					t.Fatal("Patch left dst values unwritten")
				}
			}
			if allZero != tc.wantZero {
				t.Errorf("all zero = %v, want %v (E = %v)", allZero, tc.wantZero, dst)
			}
		})
	}
}

func TestPatchAligned(t *testing.T) {
	m := blocks16()
	e, err := NewEncoder(m, SPEOptions{Mean: MeanRegion, Crop: CropAligned})
	if err != nil {
		t.Fatal(err)
	}
	full := make([]float32, 256)
	e.Full(full)
	for _, p := range [][4]int{{0, 0, 16, 16}, {3, 5, 7, 2}, {15, 15, 1, 1}, {8, 0, 8, 16}} {
		x, y, w, h := p[0], p[1], p[2], p[3]
		dst := make([]float32, w*h)
		if err := e.Patch(x, y, w, h, dst); err != nil {
			t.Fatal(err)
		}
		for r := 0; r < h; r++ {
			for c := 0; c < w; c++ {
				if got, want := dst[r*w+c], full[(y+r)*16+x+c]; got != want {
					t.Fatalf("patch %v [%d,%d] = %v, want full E %v", p, r, c, got, want)
				}
			}
		}
	}
}

func TestPatchReference(t *testing.T) {
	// A 16x32 map (rows x cols) whose region id encodes (row, col) of 1-pixel regions
	// in the top-left, so the LR window's position is visible in the values.
	m := NewLabelMap(32, 16)
	for y := 0; y < 16; y++ {
		for x := 0; x < 32; x++ {
			m.Labels[y*32+x] = uint16(y*32 + x + 1)
		}
	}
	m.Regions = 16 * 32
	e, err := NewEncoder(m, SPEOptions{Mean: MeanRegion, Crop: CropReference})
	if err != nil {
		t.Fatal(err)
	}
	v := func(r, c int) float64 { return float64(e.Value(m.At(c, r))) } // full-res E at row r, col c
	// Patch at x=8 (column), y=4 (row), 8x8: LR window rows 1..2, cols 2..3.
	x, y, w, h := 8, 4, 8, 8
	dst := make([]float32, w*h)
	if err := e.Patch(x, y, w, h, dst); err != nil {
		t.Fatal(err)
	}
	// cv2.resize INTER_LINEAR x4 of 2 samples, half-pixel centres: weight of the second sample.
	wt := []float64{0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1}
	for r := 0; r < h; r++ {
		for c := 0; c < w; c++ {
			a, b := v(1, 2), v(1, 3)
			cc, d := v(2, 2), v(2, 3)
			top := a*(1-wt[c]) + b*wt[c]
			bot := cc*(1-wt[c]) + d*wt[c]
			want := top*(1-wt[r]) + bot*wt[r]
			if got := float64(dst[r*w+c]); !near(got, want, 1e-6) {
				t.Fatalf("reference E[%d,%d] = %v, want %v", r, c, got, want)
			}
		}
	}
	// A patch inside a tile: the tile's window is upsampled, then the patch is cut.
	tile := make([]float32, 16*16)
	if err := e.Patch(16, 0, 16, 16, tile); err != nil {
		t.Fatal(err)
	}
	sub := make([]float32, 8*8)
	if err := e.PatchInWindow(16, 0, 16, 16, 20, 4, 8, 8, sub); err != nil {
		t.Fatal(err)
	}
	for r := 0; r < 8; r++ {
		for c := 0; c < 8; c++ {
			if sub[r*8+c] != tile[(4+r)*16+4+c] {
				t.Fatalf("PatchInWindow[%d,%d] = %v, tile has %v", r, c, sub[r*8+c], tile[(4+r)*16+4+c])
			}
		}
	}
	// Aligned and reference differ on this map (the reference window is misplaced).
	ea, _ := NewEncoder(m, SPEOptions{Mean: MeanRegion, Crop: CropAligned})
	al := make([]float32, w*h)
	ea.Patch(x, y, w, h, al)
	if al[0] == dst[0] {
		t.Errorf("aligned and reference crops agree at (0,0): %v", al[0])
	}
	if err := e.PatchInWindow(16, 0, 16, 16, 8, 4, 8, 8, sub); err == nil {
		t.Error("PatchInWindow accepted a patch outside its window")
	}
}

func TestEncoderDeterministic(t *testing.T) {
	m := blocks16()
	for _, crop := range []string{CropAligned, CropReference} {
		var prev []float32
		for i := 0; i < 3; i++ {
			e, err := NewEncoder(m, SPEOptions{Mean: MeanImage, Crop: crop})
			if err != nil {
				t.Fatal(err)
			}
			dst := make([]float32, 8*8)
			e.Patch(4, 4, 8, 8, dst)
			if prev != nil {
				for j := range dst {
					if dst[j] != prev[j] {
						t.Fatalf("%s: run %d differs at %d: %v vs %v", crop, i, j, dst[j], prev[j])
					}
				}
			}
			prev = dst
		}
	}
}
