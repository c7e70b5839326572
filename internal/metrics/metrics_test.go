package metrics

import (
	"image"
	"image/color"
	"math"
	"testing"
)

// patternA and patternB are the 12x12 planes also used by the Python cross-check whose
// result is pinned in TestSSIMPlanesPinned.
func patternA(w int) Plane {
	p := Plane{W: w, H: w, Pix: make([]float64, w*w)}
	for i := 0; i < w; i++ {
		for j := 0; j < w; j++ {
			p.Pix[i*w+j] = float64((i*37 + j*91 + (i*j)%7*13) % 256)
		}
	}
	return p
}

func patternB(w int) Plane {
	a := patternA(w)
	p := Plane{W: w, H: w, Pix: make([]float64, w*w)}
	for i := 0; i < w; i++ {
		for j := 0; j < w; j++ {
			v := a.Pix[i*w+j] + float64(((i*5+j*3)%11-5)*8)
			p.Pix[i*w+j] = math.Max(0, math.Min(255, v))
		}
	}
	return p
}

// directSSIM evaluates SSIM by its definition: for every valid window position, the
// 2-D Gaussian-weighted moments computed in one double loop (no separable filtering),
// the ReLU'd contrast-structure term, the mean of the map.
func directSSIM(a, b Plane) float64 {
	var g [11][11]float64
	var s float64
	for i := 0; i < 11; i++ {
		for j := 0; j < 11; j++ {
			di, dj := float64(i-5), float64(j-5)
			g[i][j] = math.Exp(-(di*di + dj*dj) / (2 * 1.5 * 1.5))
			s += g[i][j]
		}
	}
	c1 := math.Pow(0.01*255, 2)
	c2 := math.Pow(0.03*255, 2)
	var tot float64
	n := 0
	for oy := 0; oy+11 <= a.H; oy++ {
		for ox := 0; ox+11 <= a.W; ox++ {
			var m1, m2, s11, s22, s12 float64
			for i := 0; i < 11; i++ {
				for j := 0; j < 11; j++ {
					w := g[i][j] / s
					x, y := a.At(ox+j, oy+i), b.At(ox+j, oy+i)
					m1 += w * x
					m2 += w * y
					s11 += w * x * x
					s22 += w * y * y
					s12 += w * x * y
				}
			}
			cs := math.Max(0, (2*(s12-m1*m2)+c2)/((s11-m1*m1)+(s22-m2*m2)+c2))
			tot += (2*m1*m2 + c1) / (m1*m1 + m2*m2 + c1) * cs
			n++
		}
	}
	return tot / float64(n)
}

func constPlane(w, h int, v float64) Plane {
	p := Plane{W: w, H: h, Pix: make([]float64, w*h)}
	for i := range p.Pix {
		p.Pix[i] = v
	}
	return p
}

func TestYFromRGB8(t *testing.T) {
	tests := []struct {
		r, g, b uint8
		want    float64
	}{
		{0, 0, 0, 16.0 / 255},
		{255, 255, 255, 235.0 / 255},                // 16 + 65.481 + 128.553 + 24.966 = 235
		{255, 0, 0, 81.481 / 255},                   // 16 + 65.481
		{0, 255, 0, 144.553 / 255},                  // 16 + 128.553
		{0, 0, 255, 40.966 / 255},                   // 16 + 24.966
		{51, 102, 153, 95.497 / 255},                // 16 + 0.2·65.481 + 0.4·128.553 + 0.6·24.966 = 95.497
		{128, 128, 128, (16 + 219*128.0/255) / 255}, // the three weights sum to 219
	}
	for _, tc := range tests {
		if got := YFromRGB8(tc.r, tc.g, tc.b); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Y(%d,%d,%d) = %.10f, want %.10f", tc.r, tc.g, tc.b, got, tc.want)
		}
	}
}

func grayImage(w, h int, v uint8) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetNRGBA(x, y, color.NRGBA{v, v, v, 255})
		}
	}
	return img
}

func TestPSNRY(t *testing.T) {
	base := grayImage(4, 4, 128)
	oneG := grayImage(4, 4, 128)
	oneG.SetNRGBA(2, 1, color.NRGBA{128, 129, 128, 255})
	allR := grayImage(4, 4, 128)
	for y := 0; y < 4; y++ {
		for x := 0; x < 4; x++ {
			allR.SetNRGBA(x, y, color.NRGBA{138, 128, 128, 255})
		}
	}
	// One pixel's G up by 1: ΔY = 128.553/255/255, MSE = ΔY²/16.
	dG := 128.553 / 255 / 255
	// Every pixel's R up by 10: ΔY = 10·65.481/255/255, MSE = ΔY².
	dR := 10 * 65.481 / 255 / 255
	tests := []struct {
		name string
		a, b image.Image
		want float64
	}{
		{"identical gives 100 dB through the eps", base, base, 100},
		{"one pixel, G+1", base, oneG, 66.11938521358559}, // Python: 10·log10(1/(ΔY²/16 + 1e-10))
		{"one pixel, G+1, formula", base, oneG, 10 * math.Log10(1/(dG*dG/16+1e-10))},
		{"all R+10", base, allR, 10 * math.Log10(1/(dR*dR+1e-10))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PSNRY(tc.a, tc.b, 0)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("PSNR = %.12f, want %.12f", got, tc.want)
			}
		})
	}
}

func TestPSNRCropBorder(t *testing.T) {
	// Differences only in the outer ring vanish with a border of 1.
	a := grayImage(6, 6, 100)
	b := grayImage(6, 6, 100)
	b.SetNRGBA(0, 0, color.NRGBA{0, 0, 0, 255})
	b.SetNRGBA(5, 3, color.NRGBA{255, 0, 0, 255})
	b.SetNRGBA(2, 2, color.NRGBA{100, 110, 100, 255})
	got, err := PSNRY(a, b, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := 10 * 128.553 / 255 / 255
	want := 10 * math.Log10(1/(d*d/16+1e-10))
	if math.Abs(got-want) > 1e-9 {
		t.Fatalf("PSNR crop 1 = %.12f, want %.12f", got, want)
	}
	if _, err := PSNRY(a, b, 3); err == nil {
		t.Fatal("crop 3 of a 6x6 image: want an error")
	}
	if _, err := PSNRY(a, grayImage(5, 6, 1), 0); err == nil {
		t.Fatal("size mismatch: want an error")
	}
}

func TestSSIMPlanes(t *testing.T) {
	anti := patternA(11)
	for i := range anti.Pix {
		anti.Pix[i] = 255 - anti.Pix[i]
	}
	c1 := math.Pow(0.01*255, 2)
	tests := []struct {
		name string
		a, b Plane
		want float64
	}{
		{"identical", patternA(12), patternA(12), 1},
		// Flat planes: all variances 0, cs = C2/C2 = 1, only luminance remains.
		{"flat 100 vs 110", constPlane(11, 11, 100), constPlane(11, 11, 110), (2*100*110 + c1) / (100*100 + 110*110 + c1)},
		{"flat 0 vs 255 (13x12)", constPlane(13, 12, 0), constPlane(13, 12, 255), c1 / (255*255 + c1)},
		// Negatively correlated window: cs < 0, clamped to 0 (pyiqa's ReLU).
		{"anti-correlated is clamped to 0", patternA(11), anti, 0},
		{"11x11 direct", patternA(11), patternB(11), directSSIM(patternA(11), patternB(11))},
		{"12x12 direct", patternA(12), patternB(12), directSSIM(patternA(12), patternB(12))},
		{"20x17 direct", patternA(20), patternB(20), directSSIM(patternA(20), patternB(20))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SSIMPlanes(tc.a, tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-tc.want) > 1e-12 {
				t.Fatalf("SSIM = %.15f, want %.15f", got, tc.want)
			}
		})
	}
}

// TestSSIMPlanesPinned pins the 12x12 case against a value computed independently in
// Python (the same direct double loop, float64).
func TestSSIMPlanesPinned(t *testing.T) {
	got, err := SSIMPlanes(patternA(12), patternB(12))
	if err != nil {
		t.Fatal(err)
	}
	const want = 0.9536736906709813
	if math.Abs(got-want) > 1e-12 {
		t.Fatalf("SSIM = %.16f, want %.16f", got, want)
	}
	if _, err := SSIMPlanes(constPlane(10, 11, 0), constPlane(10, 11, 0)); err == nil {
		t.Fatal("10x11 is smaller than the window: want an error")
	}
}

func TestSSIMYRoundsAndCrops(t *testing.T) {
	// 19x19 RGB images; with border 4 the metric sees the central 11x11.
	mk := func(seed int) *image.NRGBA {
		img := image.NewNRGBA(image.Rect(0, 0, 19, 19))
		for y := 0; y < 19; y++ {
			for x := 0; x < 19; x++ {
				img.SetNRGBA(x, y, color.NRGBA{uint8((x*31 + y*17 + seed) % 256), uint8((x*7 + y*53 + 2*seed) % 256), uint8((x*x + y*3 + seed) % 256), 255})
			}
		}
		return img
	}
	a, b := mk(0), mk(9)
	// Independent reference: Y per pixel by the BT.601 formula, ×255, rounded, cropped.
	plane := func(img *image.NRGBA) Plane {
		p := Plane{W: 11, H: 11, Pix: make([]float64, 121)}
		for y := 0; y < 11; y++ {
			for x := 0; x < 11; x++ {
				c := img.NRGBAAt(x+4, y+4)
				p.Pix[y*11+x] = math.Round(16 + 65.481*float64(c.R)/255 + 128.553*float64(c.G)/255 + 24.966*float64(c.B)/255)
			}
		}
		return p
	}
	want := directSSIM(plane(a), plane(b))
	got, err := SSIMY(a, b, 4)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got-want) > 1e-12 {
		t.Fatalf("SSIMY = %.15f, want %.15f", got, want)
	}
	if want > 0.999 || want < 0.01 {
		t.Fatalf("test images give SSIM %.4f; choose images with a discriminating value", want)
	}
}

func TestMean(t *testing.T) {
	var m Mean
	if m.PSNR() != 0 || m.SSIM() != 0 || m.N() != 0 {
		t.Fatal("empty mean must be 0")
	}
	m.Add(30, 0.8)
	m.Add(20, 0.6)
	if m.N() != 2 || m.PSNR() != 25 || math.Abs(m.SSIM()-0.7) > 1e-15 {
		t.Fatalf("mean = %d %v %v", m.N(), m.PSNR(), m.SSIM())
	}
}

// TestRGB8MatchesImagePath checks the interleaved-bytes entry point and the NRGBA fast
// path against the generic image.Image path (an RGBA image goes through At()).
func TestRGB8MatchesImagePath(t *testing.T) {
	const w, h = 23, 17
	a := make([]uint8, w*h*3)
	b := make([]uint8, w*h*3)
	ra := image.NewRGBA(image.Rect(0, 0, w, h))
	rb := image.NewRGBA(image.Rect(0, 0, w, h))
	na := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < w*h; i++ {
		for c := 0; c < 3; c++ {
			a[3*i+c] = uint8((i*7 + c*50) % 256)
			b[3*i+c] = uint8((i*7 + c*50 + (i*13)%29) % 256)
		}
		x, y := i%w, i/w
		ra.SetRGBA(x, y, color.RGBA{a[3*i], a[3*i+1], a[3*i+2], 255})
		rb.SetRGBA(x, y, color.RGBA{b[3*i], b[3*i+1], b[3*i+2], 255})
		na.SetNRGBA(x, y, color.NRGBA{a[3*i], a[3*i+1], a[3*i+2], 255})
	}
	p, s, err := RGB8(w, h, a, b, 2)
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := PSNRY(ra, rb, 2)
	s2, _ := SSIMY(ra, rb, 2)
	p3, _ := PSNRY(na, rb, 2)
	if p != p2 || s != s2 || p != p3 {
		t.Fatalf("RGB8 %v/%v, image path %v/%v, NRGBA %v", p, s, p2, s2, p3)
	}
	if _, _, err := RGB8(w, h, a[:10], b, 0); err == nil {
		t.Fatal("short buffer accepted")
	}
}
