package imagefile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"runtime"
	"strings"
	"testing"
)

// pngChunk appends one PNG chunk with its CRC.
func pngChunk(b *bytes.Buffer, typ string, data []byte) {
	binary.Write(b, binary.BigEndian, uint32(len(data)))
	b.WriteString(typ)
	b.Write(data)
	c := crc32.NewIEEE()
	c.Write([]byte(typ))
	c.Write(data)
	binary.Write(b, binary.BigEndian, c.Sum32())
}

// bombPNG is a valid PNG signature and header claiming w x h RGB pixels, followed by
// a tiny IDAT: what a decompression bomb or a damaged header looks like.
func bombPNG(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2
	pngChunk(&b, "IHDR", ihdr)
	pngChunk(&b, "IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	pngChunk(&b, "IEND", nil)
	return b.Bytes()
}

func smallImage(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	return img
}

func encPNG(t testing.TB, w, h int) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, smallImage(w, h)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encJPEG(t testing.TB, w, h int) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, smallImage(w, h), nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// bombJPEG rewrites the SOF0 frame size of a valid JPEG to w x h.
func bombJPEG(t testing.TB, w, h uint16) []byte {
	data := encJPEG(t, 16, 16)
	i := bytes.Index(data, []byte{0xff, 0xc0})
	if i < 0 {
		t.Fatal("no SOF0 marker")
	}
	out := append([]byte(nil), data...)
	binary.BigEndian.PutUint16(out[i+5:], h)
	binary.BigEndian.PutUint16(out[i+7:], w)
	return out
}

// hostileInputs are malformed image files every decoder must refuse with an error
// naming the file, without panicking or allocating the claimed size.
func hostileInputs(t testing.TB) map[string][]byte {
	good, goodJ := encPNG(t, 20, 12), encJPEG(t, 20, 12)
	return map[string][]byte{
		"zero-length":          nil,
		"one byte":             {0x89},
		"text file":            []byte("hello, this is not an image\n"),
		"gif":                  []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
		"png signature only":   []byte("\x89PNG\r\n\x1a\n"),
		"png truncated header": good[:20],
		"png truncated data":   good[:len(good)/2],
		"png 30000x30000":      bombPNG(30000, 30000),
		"png 2^31-1 square":    bombPNG(1<<31-1, 1<<31-1),
		"png 10000x9000":       bombPNG(10000, 9000),
		"png 0x100":            bombPNG(0, 100),
		"jpeg soi only":        {0xff, 0xd8, 0xff},
		"jpeg truncated":       goodJ[:len(goodJ)-30],
		"jpeg 65535x65535":     bombJPEG(t, 65535, 65535),
		"jpeg 0x0":             bombJPEG(t, 0, 0),
	}
}

// TestDecodeHostileInputs: every malformed file is an error naming the file, and none
// allocates more than a few MB whatever size its header claims.
func TestDecodeHostileInputs(t *testing.T) {
	for name, data := range hostileInputs(t) {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := Decode(bytes.NewReader(data), "photos/"+name+".png", 0)
			_, _, cerr := Config(bytes.NewReader(data), "photos/"+name+".png", 0)
			runtime.ReadMemStats(&after)
			// A file cut after its header has a readable header; only decoding fails.
			headerOK := name == "png truncated data" || name == "jpeg truncated"
			if err == nil || (cerr == nil) != headerOK {
				t.Fatalf("decode %v, config %v", err, cerr)
			}
			for _, e := range []error{err, cerr} {
				if e != nil && !strings.Contains(e.Error(), "photos/"+name+".png") {
					t.Errorf("error does not name the file: %v", e)
				}
			}
			if a := after.TotalAlloc - before.TotalAlloc; a > 16<<20 {
				t.Errorf("allocated %d MB for a %d-byte file", a>>20, len(data))
			}
		})
	}
}

// TestDecodeLimit: the pixel limit is the caller's; a file just over it is a
// TooLargeError naming the size, one at it decodes.
func TestDecodeLimit(t *testing.T) {
	data := encPNG(t, 20, 12)
	img, format, err := Decode(bytes.NewReader(data), "a.png", 240)
	if err != nil || format != PNG || img.Bounds().Dx() != 20 || img.Bounds().Dy() != 12 {
		t.Fatalf("at the limit: %v %q", err, format)
	}
	_, _, err = Decode(bytes.NewReader(data), "a.png", 239)
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Width != 20 || tl.Height != 12 || !strings.Contains(err.Error(), "data.max_pixels") {
		t.Fatalf("over the limit: %v", err)
	}
	// The JPEG path replays the header bytes: the decoded pixels match image/jpeg's.
	jd := encJPEG(t, 33, 17)
	got, format, err := Decode(bytes.NewReader(jd), "b.jpg", 0)
	if err != nil || format != JPEG {
		t.Fatal(err, format)
	}
	want, _ := jpeg.Decode(bytes.NewReader(jd))
	if got.Bounds() != want.Bounds() || got.At(31, 15) != want.At(31, 15) {
		t.Fatalf("jpeg decode differs")
	}
	if c, ok := got.At(0, 0).(color.YCbCr); !ok || c != want.At(0, 0) {
		t.Fatalf("jpeg pixel (0,0) %v, want %v", got.At(0, 0), want.At(0, 0))
	}
}

// FuzzDecode: no input panics Decode, and whatever it accepts is within the limit.
func FuzzDecode(f *testing.F) {
	for _, data := range hostileInputs(f) {
		f.Add(data)
	}
	f.Add(encPNG(f, 5, 3))
	f.Add(encJPEG(f, 9, 4))
	f.Fuzz(func(t *testing.T, data []byte) {
		img, _, err := Decode(bytes.NewReader(data), "fuzz.png", 1<<16)
		if err == nil && img.Bounds().Dx()*img.Bounds().Dy() > 1<<16 {
			t.Fatalf("decoded %v over the limit", img.Bounds())
		}
		if err != nil && !strings.Contains(err.Error(), "fuzz.png") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
