package dataset

import (
	"encoding/binary"
	"math"
	"reflect"
	"testing"
)

func TestTileGrid(t *testing.T) {
	tests := []struct {
		w, h       int
		wantXs     []int // distinct X origins
		wantWs     []int // widths of the tiles in the first row
		wantTotal  int
		size, thr  int
		wantHeight int // height of the last tile
	}{
		// 1000: x = 0, 320, 640 (< 840), 960 is not < 840; 500: y = 0, 320 (< 340), edge tile 180 high.
		{w: 1000, h: 500, size: 320, thr: 160, wantXs: []int{0, 320, 640}, wantWs: []int{320, 320, 320}, wantTotal: 6, wantHeight: 180},
		// 2040: x = 0, 320, ..., 1600 (1920 is not < 1880): 120 px on the right are never used.
		{w: 2040, h: 320, size: 320, thr: 160, wantXs: []int{0, 320, 640, 960, 1280, 1600}, wantWs: []int{320, 320, 320, 320, 320, 320}, wantTotal: 6, wantHeight: 320},
		// 481: x = 0, 320 (< 321), edge tile 161 wide; 161: y = 0 only, 161 high.
		{w: 481, h: 161, size: 320, thr: 160, wantXs: []int{0, 320}, wantWs: []int{320, 161}, wantTotal: 2, wantHeight: 161},
		{w: 160, h: 400, size: 320, thr: 160, wantTotal: 0},
	}
	for _, tc := range tests {
		got := TileGrid(3, tc.w, tc.h, tc.size, tc.thr)
		if len(got) != tc.wantTotal {
			t.Fatalf("%dx%d: %d tiles, want %d: %v", tc.w, tc.h, len(got), tc.wantTotal, got)
		}
		if tc.wantTotal == 0 {
			continue
		}
		var xs, ws []int
		for _, tl := range got {
			if tl.Y == 0 {
				xs = append(xs, tl.X)
				ws = append(ws, tl.W)
			}
			if tl.Image != 3 {
				t.Errorf("tile image %d, want 3", tl.Image)
			}
		}
		if !reflect.DeepEqual(xs, tc.wantXs) || !reflect.DeepEqual(ws, tc.wantWs) {
			t.Errorf("%dx%d: xs %v widths %v, want %v %v", tc.w, tc.h, xs, ws, tc.wantXs, tc.wantWs)
		}
		if last := got[len(got)-1]; last.H != tc.wantHeight {
			t.Errorf("%dx%d: last tile height %d, want %d", tc.w, tc.h, last.H, tc.wantHeight)
		}
	}
}

func TestPermuteIsBijective(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 7, 64, 100, 1000, 4097} {
		seen := make([]bool, n)
		for i := uint64(0); i < n; i++ {
			p := permute(i, n, 12345)
			if p >= n || seen[p] {
				t.Fatalf("n=%d: permute(%d) = %d repeats or is out of range", n, i, p)
			}
			seen[p] = true
		}
	}
	// Different keys give different orders.
	if permute(0, 1000, 1) == permute(0, 1000, 2) && permute(1, 1000, 1) == permute(1, 1000, 2) {
		t.Errorf("keys 1 and 2 give the same permutation prefix")
	}
}

func testTiles() []Tile {
	var tiles []Tile
	tiles = append(tiles, TileGrid(0, 1000, 700, 320, 160)...)
	tiles = append(tiles, TileGrid(1, 500, 333, 320, 160)...)
	return tiles
}

func TestGlobalBatchDeterministicAndValid(t *testing.T) {
	s, err := NewSampler(testTiles(), 160)
	if err != nil {
		t.Fatal(err)
	}
	a := s.GlobalBatch(42, 17, 16)
	b := s.GlobalBatch(42, 17, 16)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same (seed, step) gave different batches")
	}
	if reflect.DeepEqual(a, s.GlobalBatch(42, 18, 16)) || reflect.DeepEqual(a, s.GlobalBatch(43, 17, 16)) {
		t.Fatal("different step or seed gave the same batch")
	}
	for step := int64(0); step < 50; step++ {
		for _, r := range s.GlobalBatch(7, step, 16) {
			tl := s.tiles[r.Tile]
			if r.X%4 != 0 || r.Y%4 != 0 || r.X < 0 || r.Y < 0 ||
				r.X+160 > tl.W-tl.W%8 || r.Y+160 > tl.H-tl.H%8 {
				t.Fatalf("patch %+v does not fit tile %+v", r, tl)
			}
		}
	}
}

// TestEpochVisitsEveryTileOnce: within one epoch each tile is used exactly once.
func TestEpochVisitsEveryTileOnce(t *testing.T) {
	tiles := testTiles()
	s, _ := NewSampler(tiles, 160)
	n := len(tiles)
	count := make([]int, n)
	const bs = 1
	for step := int64(0); step < int64(n); step++ {
		count[s.GlobalBatch(3, step, bs)[0].Tile]++
	}
	for i, c := range count {
		if c != 1 {
			t.Fatalf("tile %d used %d times in epoch 0: %v", i, c, count)
		}
	}
}

// TestRankSliceWorldIndependence: the union of the ranks' shares of step s is the
// global batch of step s, whatever the world size.
func TestRankSliceWorldIndependence(t *testing.T) {
	s, _ := NewSampler(testTiles(), 160)
	for _, bs := range []int{16, 7} {
		for step := int64(0); step < 5; step++ {
			global := s.GlobalBatch(11, step, bs)
			for _, world := range []int{1, 2, 3, 4, 8} {
				var union []PatchRef
				for rank := 0; rank < world; rank++ {
					share := RankSlice(s.GlobalBatch(11, step, bs), rank, world)
					if d := len(share) - bs/world; d < 0 || d > 1 {
						t.Errorf("bs %d world %d rank %d: share %d", bs, world, rank, len(share))
					}
					union = append(union, share...)
				}
				if !reflect.DeepEqual(union, global) {
					t.Fatalf("bs %d step %d world %d: union of shares differs from the global batch", bs, step, world)
				}
			}
		}
	}
}

func TestNewSamplerRejectsSmallTiles(t *testing.T) {
	if _, err := NewSampler([]Tile{{W: 167, H: 200}}, 160); err != nil {
		t.Errorf("tile 167 wide (160 after the crop to 8) rejected: %v", err)
	}
	if _, err := NewSampler([]Tile{{W: 200, H: 159}}, 160); err == nil {
		t.Error("tile 159 high accepted for 160 patches")
	}
	if _, err := NewSampler(nil, 160); err == nil {
		t.Error("empty tile list accepted")
	}
}

func TestFillSample(t *testing.T) {
	const tw, th, p = 48, 40, 16
	hr := randomRGB(5, tw, th)
	lr, err := Downscale4(hr)
	if err != nil {
		t.Fatal(err)
	}
	e := make([]byte, tw*th*4)
	for i := 0; i < tw*th; i++ {
		v := float32(0.25)
		if i%tw >= 24 { // right half holds a second region
			v = -0.5
		}
		binary.LittleEndian.PutUint32(e[4*i:], math.Float32bits(v))
	}
	tv := &TileView{Tile: Tile{W: tw, H: th}, HR: hr.Pix, LR: lr.Pix, E: e}
	up, _ := NewResizer(p/4, p/4, 4)
	b := NewBatch(3, p)
	sc := newSampleScratch(p)
	refs := []PatchRef{{X: 4, Y: 8}, {X: 0, Y: 0}, {X: 28, Y: 24}}
	for n, r := range refs {
		if err := fillSample(b, n, tv, r, up, sc, true); err != nil {
			t.Fatal(err)
		}
	}
	n, r := 0, refs[0]
	plane := p * p
	for c := 0; c < 3; c++ {
		for y := 0; y < p; y++ {
			for x := 0; x < p; x++ {
				v := hr.Pix[((r.Y+y)*tw+r.X+x)*3+c]
				if got, want := b.HR[(n*3+c)*plane+y*p+x], float32(v)/127.5-1; math.Abs(float64(got-want)) > 1e-6 {
					t.Fatalf("HR(%d,%d,%d) = %v, want %v", c, y, x, got, want)
				}
			}
		}
	}
	// LR and Up: Up must equal the float imresize of the LR crop / 256, times 2 minus 1.
	lp := p / 4
	crop := make([]float64, lp*lp*3)
	for y := 0; y < lp; y++ {
		for x := 0; x < lp; x++ {
			for c := 0; c < 3; c++ {
				v := lr.Pix[((r.Y/4+y)*(tw/4)+r.X/4+x)*3+c]
				crop[(y*lp+x)*3+c] = float64(v) / 256
				if got, want := b.LR[(n*3+c)*lp*lp+y*lp+x], float32(v)/127.5-1; math.Abs(float64(got-want)) > 1e-6 {
					t.Fatalf("LR(%d,%d,%d) = %v, want %v", c, y, x, got, want)
				}
			}
		}
	}
	want := make([]float64, p*p*3)
	up.ResizeFloat(crop, 3, want, nil)
	for i := 0; i < plane; i++ {
		for c := 0; c < 3; c++ {
			if got := b.Up[(n*3+c)*plane+i]; got != float32(2*want[i*3+c]-1) {
				t.Fatalf("Up[%d,%d] = %v, want %v", c, i, got, 2*want[i*3+c]-1)
			}
		}
	}
	// E: sample 0 (x 4..19) lies in region one only -> reduced to zeros; sample 1
	// (x 0..15) too; sample 2 (x 28..43) lies in region two only -> zeros. Check a mixed one.
	for n := 0; n < 3; n++ {
		for _, v := range b.E[n*plane : (n+1)*plane] {
			if v != 0 {
				t.Fatalf("sample %d: single-region patch has E %v, want 0", n, v)
			}
		}
	}
	if err := fillSample(b, 0, tv, PatchRef{X: 16, Y: 0}, up, sc, true); err != nil {
		t.Fatal(err)
	}
	if b.E[0] != 0.25 || b.E[p-1] != -0.5 || b.E[7] != 0.25 || b.E[8] != -0.5 {
		t.Errorf("mixed patch E row 0 = %v", b.E[:p])
	}
	if err := fillSample(b, 0, tv, PatchRef{X: 2, Y: 0}, up, sc, true); err == nil {
		t.Error("unaligned patch accepted")
	}
}
