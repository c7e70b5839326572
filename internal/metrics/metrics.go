// Package metrics computes the image-quality metrics of SAM-DiffSR's published tables
// (METHOD §5, reference-code-notes §7): PSNR and SSIM on the BT.601 luma (Y) channel,
// the way pyiqa's `psnr` (test_y_channel, color_space ycbcr) and `ssim` metrics compute
// them.
//
//   - Y = (16 + 65.481·R + 128.553·G + 24.966·B) / 255 with R, G, B in [0, 1] (8-bit
//     values / 255).
//   - PSNR: Y not rounded, data range 1, MSE over the (cropped) Y plane,
//     10·log10(1 / (MSE + 1e-10)). The 1e-10 is pyiqa's eps: identical images give 100 dB
//     instead of +Inf.
//   - SSIM: Y scaled to [0, 255] and rounded to integers, an 11x11 Gaussian window with
//     σ = 1.5 (normalised to sum 1), 'valid' filtering (no padding), C1 = (0.01·255)²,
//     C2 = (0.03·255)², float64 throughout, and the mean of the SSIM map. As pyiqa does,
//     the contrast-structure term cs = (2σxy + C2)/(σx² + σy² + C2) is clamped at 0
//     (ReLU) before it multiplies the luminance term, so a window with negatively
//     correlated content contributes 0 rather than a negative value. skimage's SSIM does
//     not clamp; the difference only shows on strongly anti-correlated images.
//
// A crop border b removes b pixels from every side of both images before either metric
// (the paper's tables use 0; most SR papers use the scale, 4).
package metrics

import (
	"fmt"
	"image"
	"image/color"
	"math"
)

// PSNREps is added to the MSE before the logarithm (pyiqa's eps).
const PSNREps = 1e-10

// SSIM constants (METHOD §5).
const (
	SSIMWindow = 11
	SSIMSigma  = 1.5
	SSIMC1     = (0.01 * 255) * (0.01 * 255)
	SSIMC2     = (0.03 * 255) * (0.03 * 255)
)

// Plane is a single-channel float64 image, row-major.
type Plane struct {
	W, H int
	Pix  []float64
}

// At returns the value at (x, y).
func (p Plane) At(x, y int) float64 { return p.Pix[y*p.W+x] }

// YOf returns the BT.601 luma of img in [0, 1] (not rounded): (16 + 65.481R + 128.553G +
// 24.966B)/255 with R, G, B the 8-bit channel values divided by 255. Colours are taken
// as 8-bit (16-bit images are reduced to their high byte by image/color).
func YOf(img image.Image) Plane {
	b := img.Bounds()
	p := Plane{W: b.Dx(), H: b.Dy(), Pix: make([]float64, b.Dx()*b.Dy())}
	if n, ok := img.(*image.NRGBA); ok && opaque(n) {
		for y := 0; y < p.H; y++ {
			row := n.Pix[y*n.Stride:]
			for x := 0; x < p.W; x++ {
				p.Pix[y*p.W+x] = YFromRGB8(row[4*x], row[4*x+1], row[4*x+2])
			}
		}
		return p
	}
	for y := 0; y < p.H; y++ {
		for x := 0; x < p.W; x++ {
			c := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
			p.Pix[y*p.W+x] = YFromRGB8(c.R, c.G, c.B)
		}
	}
	return p
}

func opaque(n *image.NRGBA) bool {
	b := n.Bounds()
	for y := 0; y < b.Dy(); y++ {
		row := n.Pix[y*n.Stride:]
		for x := 0; x < b.Dx(); x++ {
			if row[4*x+3] != 255 {
				return false
			}
		}
	}
	return true
}

// YOfRGB8 is YOf for interleaved 8-bit RGB samples (w·h·3 bytes, row-major).
func YOfRGB8(w, h int, pix []uint8) (Plane, error) {
	if w <= 0 || h <= 0 || len(pix) != w*h*3 {
		return Plane{}, fmt.Errorf("metrics: %d bytes is not a %dx%d RGB image", len(pix), w, h)
	}
	p := Plane{W: w, H: h, Pix: make([]float64, w*h)}
	for i := range p.Pix {
		p.Pix[i] = YFromRGB8(pix[3*i], pix[3*i+1], pix[3*i+2])
	}
	return p, nil
}

// YFromRGB8 is the BT.601 luma of one 8-bit RGB pixel, in [0, 1], unrounded.
func YFromRGB8(r, g, b uint8) float64 {
	R, G, B := float64(r)/255, float64(g)/255, float64(b)/255
	return (16 + 65.481*R + 128.553*G + 24.966*B) / 255
}

// Crop returns the plane without border pixels on each side.
func (p Plane) Crop(border int) (Plane, error) {
	if border < 0 {
		return Plane{}, fmt.Errorf("metrics: negative crop border %d", border)
	}
	if border == 0 {
		return p, nil
	}
	w, h := p.W-2*border, p.H-2*border
	if w <= 0 || h <= 0 {
		return Plane{}, fmt.Errorf("metrics: crop border %d leaves nothing of a %dx%d image", border, p.W, p.H)
	}
	out := Plane{W: w, H: h, Pix: make([]float64, w*h)}
	for y := 0; y < h; y++ {
		copy(out.Pix[y*w:(y+1)*w], p.Pix[(y+border)*p.W+border:(y+border)*p.W+border+w])
	}
	return out, nil
}

// PSNRY is the PSNR in dB between the Y channels of two same-size images, after
// removing border pixels from each side (METHOD §5).
func PSNRY(sr, hr image.Image, border int) (float64, error) {
	a, b, err := yPair(sr, hr, border)
	if err != nil {
		return 0, err
	}
	return PSNRPlanes(a, b)
}

// PSNRPlanes is the PSNR (data range 1) between two same-size planes.
func PSNRPlanes(a, b Plane) (float64, error) {
	if a.W != b.W || a.H != b.H {
		return 0, fmt.Errorf("metrics: size mismatch %dx%d vs %dx%d", a.W, a.H, b.W, b.H)
	}
	if len(a.Pix) == 0 {
		return 0, fmt.Errorf("metrics: empty image")
	}
	var s float64
	for i := range a.Pix {
		d := a.Pix[i] - b.Pix[i]
		s += d * d
	}
	mse := s / float64(len(a.Pix))
	return 10 * math.Log10(1/(mse+PSNREps)), nil
}

// SSIMY is the SSIM between the Y channels of two same-size images (Y scaled to 255 and
// rounded), after removing border pixels from each side (METHOD §5). Both images must
// be at least 11x11 after the crop.
func SSIMY(sr, hr image.Image, border int) (float64, error) {
	a, b, err := yPair(sr, hr, border)
	if err != nil {
		return 0, err
	}
	return SSIMPlanes(Round255(a), Round255(b))
}

// Round255 returns round(255·p) per pixel, ties to even as torch.round does. (pyiqa
// computes Y in float32, this package in float64; the two can only round differently
// when 255·Y lies within about 1e-5 of a half-integer.)
func Round255(p Plane) Plane {
	out := Plane{W: p.W, H: p.H, Pix: make([]float64, len(p.Pix))}
	for i, v := range p.Pix {
		out.Pix[i] = math.RoundToEven(v * 255)
	}
	return out
}

// GaussianWindow1D returns the normalised 1-D Gaussian of size n and standard deviation
// sigma; the 2-D SSIM window is its outer product with itself (which equals the
// normalised 2-D Gaussian exactly).
func GaussianWindow1D(n int, sigma float64) []float64 {
	w := make([]float64, n)
	c := float64(n-1) / 2
	var s float64
	for i := range w {
		d := float64(i) - c
		w[i] = math.Exp(-d * d / (2 * sigma * sigma))
		s += w[i]
	}
	for i := range w {
		w[i] /= s
	}
	return w
}

// SSIMPlanes is the mean SSIM map of two planes already on the [0, 255] scale, with
// the 11x11/σ1.5 Gaussian window and valid filtering.
func SSIMPlanes(a, b Plane) (float64, error) {
	if a.W != b.W || a.H != b.H {
		return 0, fmt.Errorf("metrics: size mismatch %dx%d vs %dx%d", a.W, a.H, b.W, b.H)
	}
	if a.W < SSIMWindow || a.H < SSIMWindow {
		return 0, fmt.Errorf("metrics: SSIM needs at least %dx%d pixels, got %dx%d", SSIMWindow, SSIMWindow, a.W, a.H)
	}
	win := GaussianWindow1D(SSIMWindow, SSIMSigma)
	n := len(a.Pix)
	aa := make([]float64, n)
	bb := make([]float64, n)
	ab := make([]float64, n)
	for i := range a.Pix {
		aa[i] = a.Pix[i] * a.Pix[i]
		bb[i] = b.Pix[i] * b.Pix[i]
		ab[i] = a.Pix[i] * b.Pix[i]
	}
	mu1 := filterValid(a.Pix, a.W, a.H, win)
	mu2 := filterValid(b.Pix, a.W, a.H, win)
	s11 := filterValid(aa, a.W, a.H, win)
	s22 := filterValid(bb, a.W, a.H, win)
	s12 := filterValid(ab, a.W, a.H, win)
	var sum float64
	for i := range mu1 {
		m1, m2 := mu1[i], mu2[i]
		v1 := s11[i] - m1*m1
		v2 := s22[i] - m2*m2
		c12 := s12[i] - m1*m2
		cs := (2*c12 + SSIMC2) / (v1 + v2 + SSIMC2)
		if cs < 0 {
			cs = 0
		}
		sum += (2*m1*m2 + SSIMC1) / (m1*m1 + m2*m2 + SSIMC1) * cs
	}
	return sum / float64(len(mu1)), nil
}

// filterValid correlates src (w x h) with the separable window win⊗win, keeping only
// positions where the window fits: (w-k+1) x (h-k+1) outputs.
func filterValid(src []float64, w, h int, win []float64) []float64 {
	k := len(win)
	ow, oh := w-k+1, h-k+1
	tmp := make([]float64, ow*h)
	for y := 0; y < h; y++ {
		row := src[y*w : (y+1)*w]
		for x := 0; x < ow; x++ {
			var s float64
			for i, c := range win {
				s += c * row[x+i]
			}
			tmp[y*ow+x] = s
		}
	}
	out := make([]float64, ow*oh)
	for y := 0; y < oh; y++ {
		for x := 0; x < ow; x++ {
			var s float64
			for i, c := range win {
				s += c * tmp[(y+i)*ow+x]
			}
			out[y*ow+x] = s
		}
	}
	return out
}

func yPair(sr, hr image.Image, border int) (Plane, Plane, error) {
	if sr.Bounds().Dx() != hr.Bounds().Dx() || sr.Bounds().Dy() != hr.Bounds().Dy() {
		return Plane{}, Plane{}, fmt.Errorf("metrics: SR is %dx%d but HR is %dx%d; crop HR to the SR size (a multiple of 8) first",
			sr.Bounds().Dx(), sr.Bounds().Dy(), hr.Bounds().Dx(), hr.Bounds().Dy())
	}
	a, err := YOf(sr).Crop(border)
	if err != nil {
		return Plane{}, Plane{}, err
	}
	b, err := YOf(hr).Crop(border)
	if err != nil {
		return Plane{}, Plane{}, err
	}
	return a, b, nil
}

// RGB8 computes PSNR and SSIM (see PSNRY, SSIMY) between two interleaved 8-bit RGB
// images of size w x h in one pass over their luma.
func RGB8(w, h int, sr, hr []uint8, border int) (psnr, ssim float64, err error) {
	a, err := YOfRGB8(w, h, sr)
	if err != nil {
		return 0, 0, err
	}
	b, err := YOfRGB8(w, h, hr)
	if err != nil {
		return 0, 0, err
	}
	if a, err = a.Crop(border); err != nil {
		return 0, 0, err
	}
	if b, err = b.Crop(border); err != nil {
		return 0, 0, err
	}
	if psnr, err = PSNRPlanes(a, b); err != nil {
		return 0, 0, err
	}
	ssim, err = SSIMPlanes(Round255(a), Round255(b))
	return psnr, ssim, err
}

// Mean accumulates per-image metric values and reports their mean (the published
// tables average per-image PSNR and SSIM).
type Mean struct {
	n         int
	psnr, ssm float64
}

// Add records one image's PSNR and SSIM.
func (m *Mean) Add(psnr, ssim float64) {
	m.n++
	m.psnr += psnr
	m.ssm += ssim
}

// N is the number of images recorded.
func (m *Mean) N() int { return m.n }

// PSNR is the mean PSNR (0 when empty).
func (m *Mean) PSNR() float64 {
	if m.n == 0 {
		return 0
	}
	return m.psnr / float64(m.n)
}

// SSIM is the mean SSIM (0 when empty).
func (m *Mean) SSIM() float64 {
	if m.n == 0 {
		return 0
	}
	return m.ssm / float64(m.n)
}
