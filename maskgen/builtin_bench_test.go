package maskgen

import (
	"context"
	"image"
	"image/png"
	"os"
	"testing"
)

// photoPath is a DIV2K-sized photograph shipped beside the repository (see ../shared/data/README.md).
const photoPath = "../../shared/data/photos/seeding_2040.png"

func loadPhoto(tb testing.TB) image.Image {
	tb.Helper()
	f, err := os.Open(photoPath)
	if err != nil {
		tb.Skipf("benchmark photo not available (%v); it lives in ../shared/data beside the repository", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		tb.Fatalf("decode %s: %v", photoPath, err)
	}
	return img
}

// BenchmarkBuiltinSegment2040 segments the 2040x1144 photo with the default
// parameters, end to end from the decoded image to the label map (decode excluded).
func BenchmarkBuiltinSegment2040(b *testing.B) {
	img := loadPhoto(b)
	seg, err := NewBuiltin(defaultBuiltinOptions())
	if err != nil {
		b.Fatal(err)
	}
	var m *LabelMap
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if m, err = seg.Segment(context.Background(), img); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(m.Regions), "regions")
}

// BenchmarkDecodePNG2040 decodes the photo (what Segment's caller pays first).
func BenchmarkDecodePNG2040(b *testing.B) {
	loadPhoto(b)
	for i := 0; i < b.N; i++ {
		f, _ := os.Open(photoPath)
		if _, err := png.Decode(f); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
