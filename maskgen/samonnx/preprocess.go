package samonnx

import (
	"image"
	"image/color"
	"math"
)

// SAM's pixel normalisation (Sam.pixel_mean / pixel_std, on 0..255 RGB).
var (
	pixelMean = [3]float32{123.675, 116.28, 103.53}
	pixelStd  = [3]float32{58.395, 57.12, 57.375}
)

// rgb8 returns img's pixels as packed 8-bit RGB (3 bytes per pixel, row-major),
// as OpenCV's imread gives them to SAM's amg.py (after BGR→RGB): straight (not
// alpha-premultiplied) colour, alpha dropped, 16-bit samples shifted down to 8.
// JPEG images decoded by image/jpeg use Go's YCbCr→RGB conversion, which can
// differ from libjpeg's by one level.
func rgb8(img image.Image) (pix []uint8, w, h int) {
	b := img.Bounds()
	w, h = b.Dx(), b.Dy()
	pix = make([]uint8, 3*w*h)
	switch m := img.(type) {
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[(y)*m.Stride : y*m.Stride+4*w]
			out := pix[3*w*y : 3*w*(y+1)]
			for x := 0; x < w; x++ {
				out[3*x], out[3*x+1], out[3*x+2] = row[4*x], row[4*x+1], row[4*x+2]
			}
		}
	case *image.RGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+4*w]
			out := pix[3*w*y : 3*w*(y+1)]
			for x := 0; x < w; x++ {
				r, g, bb, a := row[4*x], row[4*x+1], row[4*x+2], row[4*x+3]
				if a != 255 {
					c := color.NRGBAModel.Convert(color.RGBA{r, g, bb, a}).(color.NRGBA)
					r, g, bb = c.R, c.G, c.B
				}
				out[3*x], out[3*x+1], out[3*x+2] = r, g, bb
			}
		}
	case *image.YCbCr:
		for y := 0; y < h; y++ {
			out := pix[3*w*y : 3*w*(y+1)]
			for x := 0; x < w; x++ {
				yi, ci := m.YOffset(b.Min.X+x, b.Min.Y+y), m.COffset(b.Min.X+x, b.Min.Y+y)
				out[3*x], out[3*x+1], out[3*x+2] = color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
			}
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			out := pix[3*w*y : 3*w*(y+1)]
			for x, v := range row {
				out[3*x], out[3*x+1], out[3*x+2] = v, v, v
			}
		}
	default:
		for y := 0; y < h; y++ {
			out := pix[3*w*y : 3*w*(y+1)]
			for x := 0; x < w; x++ {
				c := color.NRGBA64Model.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
				out[3*x], out[3*x+1], out[3*x+2] = uint8(c.R>>8), uint8(c.G>>8), uint8(c.B>>8)
			}
		}
	}
	return pix, w, h
}

// pilPrecision is Pillow's fixed-point precision for 8-bit resampling.
const pilPrecision = 32 - 8 - 2

// pilCoeffs are Pillow's bilinear resampling coefficients (Resample.c,
// precompute_coeffs + normalize_coeffs_8bpc) for resizing inSize → outSize: for
// each output index its first input index, tap count and ksize fixed-point weights.
// The filter is a triangle widened by the scale when downsampling (antialiasing).
type pilCoeffs struct {
	ksize      int
	xmin, xcnt []int
	k          []int32
}

func newPILCoeffs(inSize, outSize int) pilCoeffs {
	scale := float64(inSize) / float64(outSize)
	filterscale := max(scale, 1.0)
	support := 1.0 * filterscale // bilinear filter support is 1
	c := pilCoeffs{ksize: int(math.Ceil(support))*2 + 1, xmin: make([]int, outSize), xcnt: make([]int, outSize)}
	c.k = make([]int32, outSize*c.ksize)
	pre := make([]float64, c.ksize)
	for xx := 0; xx < outSize; xx++ {
		center := (float64(xx) + 0.5) * scale
		ss := 1.0 / filterscale
		xmin := max(int(center-support+0.5), 0)
		xmax := min(int(center+support+0.5), inSize) - xmin
		ww := 0.0
		for x := 0; x < xmax; x++ {
			t := math.Abs((float64(x+xmin) - center + 0.5) * ss)
			w := 0.0
			if t < 1 {
				w = 1 - t
			}
			pre[x] = w
			ww += w
		}
		for x := 0; x < xmax; x++ {
			v := pre[x]
			if ww != 0 {
				v /= ww
			}
			if v < 0 {
				c.k[xx*c.ksize+x] = int32(-0.5 + v*(1<<pilPrecision))
			} else {
				c.k[xx*c.ksize+x] = int32(0.5 + v*(1<<pilPrecision))
			}
		}
		c.xmin[xx], c.xcnt[xx] = xmin, xmax
	}
	return c
}

func clip8(v int32) uint8 {
	v >>= pilPrecision
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// resizePIL resizes packed RGB8 pixels from w x h to nw x nh the way SAM's
// ResizeLongestSide.apply_image does: torchvision's resize of a PIL image, i.e.
// Pillow's antialiased BILINEAR resample with 8-bit fixed-point arithmetic, a
// horizontal pass rounded to 8 bits followed by a vertical pass.
func resizePIL(src []uint8, w, h, nw, nh int) []uint8 {
	if nw == w && nh == h {
		return src
	}
	tmp, tw := src, w
	rowFirst, rowLast := 0, h
	var cv pilCoeffs
	if nh != h {
		cv = newPILCoeffs(h, nh)
		rowFirst = cv.xmin[0]
		rowLast = cv.xmin[nh-1] + cv.xcnt[nh-1]
	}
	if nw != w {
		ch := newPILCoeffs(w, nw)
		tmp = make([]uint8, 3*nw*h)
		tw = nw
		for y := rowFirst; y < rowLast; y++ {
			in := src[3*w*y : 3*w*(y+1)]
			out := tmp[3*nw*y : 3*nw*(y+1)]
			for xx := 0; xx < nw; xx++ {
				k := ch.k[xx*ch.ksize : xx*ch.ksize+ch.xcnt[xx]]
				s0, s1, s2 := int32(1<<(pilPrecision-1)), int32(1<<(pilPrecision-1)), int32(1<<(pilPrecision-1))
				p := in[3*ch.xmin[xx]:]
				for x, kv := range k {
					s0 += int32(p[3*x]) * kv
					s1 += int32(p[3*x+1]) * kv
					s2 += int32(p[3*x+2]) * kv
				}
				out[3*xx], out[3*xx+1], out[3*xx+2] = clip8(s0), clip8(s1), clip8(s2)
			}
		}
	}
	if nh == h {
		return tmp
	}
	dst := make([]uint8, 3*tw*nh)
	acc := make([]int32, 3*tw)
	for yy := 0; yy < nh; yy++ {
		for i := range acc {
			acc[i] = 1 << (pilPrecision - 1)
		}
		k := cv.k[yy*cv.ksize : yy*cv.ksize+cv.xcnt[yy]]
		for y, kv := range k {
			row := tmp[3*tw*(cv.xmin[yy]+y) : 3*tw*(cv.xmin[yy]+y+1)]
			for i, v := range row {
				acc[i] += int32(v) * kv
			}
		}
		out := dst[3*tw*yy : 3*tw*(yy+1)]
		for i, v := range acc {
			out[i] = clip8(v)
		}
	}
	return dst
}

// encoderInput fills dst (3x1024x1024, CHW) with SAM's preprocessing of the resized
// RGB8 image (nw x nh): (x − pixel_mean) / pixel_std in float32, zero padding right
// and below.
func encoderInput(rgb []uint8, nw, nh int, dst []float32) {
	clear(dst)
	plane := inputSize * inputSize
	for y := 0; y < nh; y++ {
		in := rgb[3*nw*y : 3*nw*(y+1)]
		for c := 0; c < 3; c++ {
			out := dst[c*plane+y*inputSize : c*plane+y*inputSize+nw]
			m, s := pixelMean[c], pixelStd[c]
			for x := range out {
				out[x] = (float32(in[3*x+c]) - m) / s
			}
		}
	}
}
