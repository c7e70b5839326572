// Package imagefile decodes PNG and JPEG files safely: the header is read first and an
// image whose claimed size is empty or larger than a pixel limit is refused before any
// pixel memory is allocated (a 1 MB PNG can claim 20000x20000 pixels, which image/png
// would try to allocate). Every image samdiffsr reads goes through Decode or Config.
package imagefile

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
)

// DefaultMaxPixels is the pixel limit used when none is given: Pillow's
// decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS, 89,478,485 pixels, about
// 9459x9459). Decoding an image that size takes about 0.6 GB.
const DefaultMaxPixels int64 = 89_478_485

// PNG and JPEG name the formats Decode accepts.
const (
	PNG  = "png"
	JPEG = "jpeg"
)

// TooLargeError is returned for an image whose header claims more than the limit.
type TooLargeError struct {
	Name          string
	Width, Height int
	Max           int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: the header claims %dx%d = %d pixels, more than the limit of %d (a damaged file or a decompression bomb; if the image is genuine, raise data.max_pixels)",
		e.Name, e.Width, e.Height, int64(e.Width)*int64(e.Height), e.Max)
}

// Sniff names the format of a file from its first bytes (PNG or JPEG), or "".
func Sniff(head []byte) string {
	switch {
	case len(head) >= 8 && string(head[:8]) == "\x89PNG\r\n\x1a\n":
		return PNG
	case len(head) >= 3 && head[0] == 0xff && head[1] == 0xd8 && head[2] == 0xff:
		return JPEG
	}
	return ""
}

// Config reads only the header of a PNG or JPEG stream and checks the size it claims
// against maxPixels (<= 0: DefaultMaxPixels). name is used in errors.
func Config(r io.Reader, name string, maxPixels int64) (image.Config, string, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 1<<12)
	}
	return config(br, name, maxPixels)
}

func config(br *bufio.Reader, name string, maxPixels int64) (image.Config, string, error) {
	head, _ := br.Peek(8)
	format := Sniff(head)
	var (
		cfg image.Config
		err error
	)
	switch format {
	case PNG:
		cfg, err = png.DecodeConfig(br)
	case JPEG:
		cfg, err = jpeg.DecodeConfig(br)
	default:
		if len(head) == 0 {
			return cfg, "", fmt.Errorf("%s is empty (0 bytes), not a PNG or JPEG image; replace or remove it", name)
		}
		return cfg, "", fmt.Errorf("%s is not a PNG or JPEG file (bad signature); replace or remove it", name)
	}
	if err != nil {
		return cfg, format, fmt.Errorf("%s: read %s header: %w (the file is corrupt or truncated; replace or remove it)", name, format, err)
	}
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return cfg, format, fmt.Errorf("%s: the header claims an empty %dx%d image; replace or remove it", name, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return cfg, format, &TooLargeError{Name: name, Width: cfg.Width, Height: cfg.Height, Max: maxPixels}
	}
	return cfg, format, nil
}

// Decode decodes a PNG or JPEG stream after Config's checks pass, so a file claiming
// a huge size is refused before its pixels are allocated. It returns the image and
// its format. name is used in errors.
func Decode(r io.Reader, name string, maxPixels int64) (image.Image, string, error) {
	var head bytes.Buffer
	br := bufio.NewReaderSize(io.TeeReader(r, &head), 1<<12)
	if _, format, err := config(br, name, maxPixels); err != nil {
		return nil, format, err
	}
	// Replay what the header read consumed (including bufio's read-ahead), then the rest.
	rest := bufio.NewReaderSize(io.MultiReader(&head, r), 1<<16)
	var (
		img    image.Image
		err    error
		format = Sniff(head.Bytes())
	)
	if format == PNG {
		img, err = png.Decode(rest)
	} else {
		img, err = jpeg.Decode(rest)
	}
	if err != nil {
		return nil, format, fmt.Errorf("%s: decode %s: %w (the file is corrupt or truncated; replace or remove it)", name, format, err)
	}
	return img, format, nil
}
