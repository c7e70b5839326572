package dataset

import (
	"bufio"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/internal/imagefile"
)

// RGB is an 8-bit RGB image: Pix holds W*H*3 bytes, RGB interleaved, row-major.
type RGB struct {
	W, H int
	Pix  []uint8
}

// NewRGB allocates a black w x h image.
func NewRGB(w, h int) *RGB { return &RGB{W: w, H: h, Pix: make([]uint8, w*h*3)} }

// Crop returns a copy of the w x h rectangle whose top-left corner is (x, y).
// The rectangle must lie inside the image.
func (m *RGB) Crop(x, y, w, h int) *RGB {
	out := NewRGB(w, h)
	for r := 0; r < h; r++ {
		copy(out.Pix[r*w*3:(r+1)*w*3], m.Pix[((y+r)*m.W+x)*3:((y+r)*m.W+x+w)*3])
	}
	return out
}

// CropMultiple crops the image to the largest multiple of k in each dimension,
// keeping the top-left corner (as the reference does: h - h%k). It returns m itself
// when nothing is cut.
func (m *RGB) CropMultiple(k int) *RGB {
	w, h := m.W-m.W%k, m.H-m.H%k
	if w == m.W && h == m.H {
		return m
	}
	return m.Crop(0, 0, w, h)
}

// Image returns the picture as an opaque *image.NRGBA (for encoders).
func (m *RGB) Image() *image.NRGBA {
	out := image.NewNRGBA(image.Rect(0, 0, m.W, m.H))
	for i, j := 0, 0; i < len(m.Pix); i, j = i+3, j+4 {
		out.Pix[j], out.Pix[j+1], out.Pix[j+2], out.Pix[j+3] = m.Pix[i], m.Pix[i+1], m.Pix[i+2], 255
	}
	return out
}

// FromImage converts any image.Image to RGB. Alpha is dropped (colour values taken
// un-premultiplied, as PIL's convert("RGB") does); 16-bit samples keep their high byte.
func FromImage(src image.Image) *RGB {
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	out := NewRGB(w, h)
	switch s := src.(type) {
	case *image.RGBA:
		for y := 0; y < h; y++ {
			row := s.Pix[(y)*s.Stride : (y)*s.Stride+w*4]
			dst := out.Pix[y*w*3 : (y+1)*w*3]
			for i, j := 0, 0; j < len(dst); i, j = i+4, j+3 {
				dst[j], dst[j+1], dst[j+2] = row[i], row[i+1], row[i+2]
			}
		}
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			row := s.Pix[(y)*s.Stride : (y)*s.Stride+w*4]
			dst := out.Pix[y*w*3 : (y+1)*w*3]
			for i, j := 0, 0; j < len(dst); i, j = i+4, j+3 {
				dst[j], dst[j+1], dst[j+2] = row[i], row[i+1], row[i+2]
			}
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := s.Pix[y*s.Stride : y*s.Stride+w]
			dst := out.Pix[y*w*3 : (y+1)*w*3]
			for i, v := range row {
				dst[3*i], dst[3*i+1], dst[3*i+2] = v, v, v
			}
		}
	case *image.YCbCr:
		for y := 0; y < h; y++ {
			dst := out.Pix[y*w*3 : (y+1)*w*3]
			for x := 0; x < w; x++ {
				yi := s.YOffset(b.Min.X+x, b.Min.Y+y)
				ci := s.COffset(b.Min.X+x, b.Min.Y+y)
				r, g, bb := color.YCbCrToRGB(s.Y[yi], s.Cb[ci], s.Cr[ci])
				dst[3*x], dst[3*x+1], dst[3*x+2] = r, g, bb
			}
		}
	default:
		for y := 0; y < h; y++ {
			dst := out.Pix[y*w*3 : (y+1)*w*3]
			for x := 0; x < w; x++ {
				c := color.NRGBA64Model.Convert(src.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
				dst[3*x], dst[3*x+1], dst[3*x+2] = uint8(c.R>>8), uint8(c.G>>8), uint8(c.B>>8)
			}
		}
	}
	return out
}

// MinLRSide is the smallest LR image side any command accepts; HR images must be at
// least MinHRSide = 4·MinLRSide. Smaller images are refused by name (CheckLRSize,
// CheckHRSize) before they reach a model, whose convolutions need a few pixels.
const MinLRSide = 4

// MinHRSide is the smallest HR image side any command accepts (see MinLRSide).
const MinHRSide = 4 * MinLRSide

// CheckLRSize returns an error naming the file when a w x h LR image is smaller than
// MinLRSide on a side.
func CheckLRSize(name string, w, h int) error {
	if w < MinLRSide || h < MinLRSide {
		return fmt.Errorf("dataset: LR image %s is %dx%d; LR images must be at least %dx%d (HR %dx%d): use a larger image or remove it",
			name, w, h, MinLRSide, MinLRSide, MinHRSide, MinHRSide)
	}
	return nil
}

// CheckHRSize returns an error naming the file when a w x h HR image is smaller than
// MinHRSide on a side.
func CheckHRSize(name string, w, h int) error {
	if w < MinHRSide || h < MinHRSide {
		return fmt.Errorf("dataset: HR image %s is %dx%d; HR images must be at least %dx%d (LR %dx%d): use a larger image or remove it",
			name, w, h, MinHRSide, MinHRSide, MinLRSide, MinLRSide)
	}
	return nil
}

// DecodeRGB decodes a PNG or JPEG stream with the default pixel limit
// (imagefile.DefaultMaxPixels); name is used in errors only.
func DecodeRGB(r io.Reader, name string) (*RGB, error) {
	return DecodeRGBMax(r, name, 0)
}

// DecodeRGBMax decodes a PNG or JPEG stream, refusing from its header alone an image
// of more than maxPixels pixels (data.max_pixels; <= 0: imagefile.DefaultMaxPixels).
func DecodeRGBMax(r io.Reader, name string, maxPixels int64) (*RGB, error) {
	img, _, err := imagefile.Decode(r, name, maxPixels)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	return FromImage(img), nil
}

// LoadRGB reads a PNG or JPEG file as RGB with the default pixel limit.
func LoadRGB(path string) (*RGB, error) { return LoadRGBMax(path, 0) }

// LoadRGBMax reads a PNG or JPEG file as RGB, refusing from its header alone an image
// of more than maxPixels pixels (<= 0: imagefile.DefaultMaxPixels).
func LoadRGBMax(path string, maxPixels int64) (*RGB, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: open image: %w", err)
	}
	defer f.Close()
	return DecodeRGBMax(f, path, maxPixels)
}

// ImageSize reads only the header of a PNG or JPEG file and returns its size (the
// default pixel limit applies).
func ImageSize(path string) (w, h int, err error) { return ImageSizeMax(path, 0) }

// ImageSizeMax is ImageSize with a pixel limit (<= 0: imagefile.DefaultMaxPixels).
func ImageSizeMax(path string, maxPixels int64) (w, h int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("dataset: open image: %w", err)
	}
	defer f.Close()
	cfg, _, err := imagefile.Config(f, path, maxPixels)
	if err != nil {
		return 0, 0, fmt.Errorf("dataset: %w", err)
	}
	return cfg.Width, cfg.Height, nil
}

// EncodePNG writes img as an 8-bit RGB PNG (fast compression).
func EncodePNG(w io.Writer, img *RGB) error {
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	return enc.Encode(w, img.Image())
}

// SavePNG writes img to path as an 8-bit RGB PNG, atomically (a temporary file renamed
// into place), creating the folder if needed.
func SavePNG(path string, img *RGB) error {
	if err := fsutil.WriteAtomic(path, 0o644, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<16)
		if err := EncodePNG(bw, img); err != nil {
			return err
		}
		return bw.Flush()
	}); err != nil {
		return fmt.Errorf("dataset: save PNG: %w", err)
	}
	return nil
}
