package samonnx

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"image"
	"image/color"
	"os"
	"testing"
)

// synthRGB is the synthetic image of testdata/pil_resize_golden.py.
func synthRGB(w, h int) []uint8 {
	b := make([]uint8, 0, 3*w*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			for c := 0; c < 3; c++ {
				b = append(b, uint8((x*x*3+y*5+c*77+(x*y)%17+(x^y)*c)%256))
			}
		}
	}
	return b
}

// TestResizePILGolden checks the resize against Pillow's own output (SHA-256 of the
// resized bytes, made by testdata/pil_resize_golden.py with Pillow 9.4).
func TestResizePILGolden(t *testing.T) {
	raw, err := os.ReadFile("testdata/pil_resize_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Cases []struct {
			W, H, NW, NH int
			SHA256       string
			First        []int
		}
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	if len(golden.Cases) == 0 {
		t.Fatal("no golden cases")
	}
	for _, c := range golden.Cases {
		got := resizePIL(synthRGB(c.W, c.H), c.W, c.H, c.NW, c.NH)
		if len(got) != 3*c.NW*c.NH {
			t.Fatalf("%dx%d→%dx%d: %d bytes", c.W, c.H, c.NW, c.NH, len(got))
		}
		sum := sha256.Sum256(got)
		if hex.EncodeToString(sum[:]) != c.SHA256 {
			first := make([]int, len(c.First))
			for i := range first {
				first[i] = int(got[i])
			}
			t.Errorf("%dx%d→%dx%d: resize differs from Pillow's (first bytes %v, Pillow %v)", c.W, c.H, c.NW, c.NH, first, c.First)
		}
	}
}

func TestResizedSize(t *testing.T) {
	for _, c := range []struct{ w, h, nw, nh int }{
		{2040, 1356, 1024, 681}, {1356, 2040, 681, 1024}, {1024, 768, 1024, 768},
		{300, 200, 1024, 683}, {517, 389, 1024, 770}, {1, 1, 1024, 1024}, {2000, 1, 1024, 1},
	} {
		nw, nh := resizedSize(c.w, c.h)
		if nw != c.nw || nh != c.nh {
			t.Errorf("resizedSize(%d, %d) = %d, %d; want %d, %d", c.w, c.h, nw, nh, c.nw, c.nh)
		}
	}
}

func TestEncoderInput(t *testing.T) {
	// 2x1 image: pixels (0,128,255) and (255,0,10).
	rgb := []uint8{0, 128, 255, 255, 0, 10}
	dst := make([]float32, 3*inputSize*inputSize)
	for i := range dst {
		dst[i] = 99 // must be cleared
	}
	encoderInput(rgb, 2, 1, dst)
	plane := inputSize * inputSize
	want := map[int]float32{
		0:                   (0 - 123.675) / 58.395,
		1:                   (255 - 123.675) / 58.395,
		plane:               (128 - 116.28) / 57.12,
		plane + 1:           (0 - 116.28) / 57.12,
		2 * plane:           (255 - 103.53) / 57.375,
		2*plane + 1:         (10 - 103.53) / 57.375,
		2:                   0, // padding right
		inputSize:           0, // padding below
		3*plane - 1:         0,
		plane + 5*inputSize: 0,
	}
	for i, w := range want {
		if d := dst[i] - w; d > 1e-6 || d < -1e-6 {
			t.Errorf("dst[%d] = %v, want %v", i, dst[i], w)
		}
	}
}

func TestRGB8(t *testing.T) {
	want := []uint8{10, 20, 30, 200, 100, 0}
	nrgba := image.NewNRGBA(image.Rect(5, 5, 7, 6))
	nrgba.SetNRGBA(5, 5, color.NRGBA{10, 20, 30, 255})
	nrgba.SetNRGBA(6, 5, color.NRGBA{200, 100, 0, 128}) // straight colour, alpha dropped
	rgba := image.NewRGBA(image.Rect(0, 0, 2, 1))
	rgba.SetRGBA(0, 0, color.RGBA{10, 20, 30, 255})
	rgba.SetRGBA(1, 0, color.RGBA{100, 50, 0, 128}) // premultiplied (200,100,0) at alpha 128
	n64 := image.NewNRGBA64(image.Rect(0, 0, 2, 1))
	n64.SetNRGBA64(0, 0, color.NRGBA64{10 << 8, 20 << 8, 30 << 8, 0xffff})
	n64.SetNRGBA64(1, 0, color.NRGBA64{200<<8 | 0xff, 100 << 8, 0, 0xffff})
	for name, img := range map[string]image.Image{"nrgba": nrgba, "rgba": rgba, "nrgba64": n64} {
		got, w, h := rgb8(img)
		if w != 2 || h != 1 {
			t.Fatalf("%s: size %dx%d", name, w, h)
		}
		for i := range want {
			if d := int(got[i]) - int(want[i]); d > 1 || d < -1 {
				t.Errorf("%s: rgb8 = %v, want %v", name, got, want)
				break
			}
		}
	}
	gray := image.NewGray(image.Rect(0, 0, 1, 1))
	gray.SetGray(0, 0, color.Gray{77})
	if got, _, _ := rgb8(gray); got[0] != 77 || got[1] != 77 || got[2] != 77 {
		t.Errorf("gray: %v", got)
	}
}
