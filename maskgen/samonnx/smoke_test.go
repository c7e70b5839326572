//go:build cgo

package samonnx

import (
	"context"
	"image"
	"image/color"
	"testing"
)

func TestSmoke(t *testing.T) {
	s, err := New(standinConfig(t, true))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	img := image.NewNRGBA(image.Rect(0, 0, 300, 200))
	for i := range img.Pix {
		img.Pix[i] = 200
	}
	img.Set(0, 0, color.Black)
	lm, err := s.Segment(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("regions %d", lm.Regions)
}
