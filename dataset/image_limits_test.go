package dataset

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// claimSize rewrites the IHDR of a PNG so that it claims w x h pixels (fixing the
// chunk's CRC): a small file whose header asks for a huge image.
func claimSize(t *testing.T, w, h uint32) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := EncodePNG(&b, Synth(1, 16, 16)); err != nil {
		t.Fatal(err)
	}
	data := b.Bytes()
	// Signature (8), length (4), "IHDR" (4), then width and height.
	binary.BigEndian.PutUint32(data[16:], w)
	binary.BigEndian.PutUint32(data[20:], h)
	binary.BigEndian.PutUint32(data[29:], crc32.ChecksumIEEE(data[12:29]))
	return data
}

// TestImageReadersRefuseHugeHeaders: every way dataset reads an image refuses, from
// the header alone, a file claiming more than the pixel limit, naming the file and
// data.max_pixels, without allocating the claimed 90 million pixels.
func TestImageReadersRefuseHugeHeaders(t *testing.T) {
	dir := t.TempDir()
	bomb := filepath.Join(dir, "bomb.png")
	if err := os.WriteFile(bomb, claimSize(t, 10000, 9000), 0o644); err != nil {
		t.Fatal(err)
	}
	readers := map[string]func() error{
		"LoadRGB":   func() error { _, err := LoadRGB(bomb); return err },
		"ImageSize": func() error { _, _, err := ImageSize(bomb); return err },
		"LoadEvalPair": func() error {
			_, err := LoadEvalPair(Image{ID: "bomb", HRPath: bomb}, 0)
			return err
		},
	}
	for name, read := range readers {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := read()
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), bomb) || !strings.Contains(err.Error(), "data.max_pixels") {
			t.Errorf("%s: %v", name, err)
		}
		if a := after.TotalAlloc - before.TotalAlloc; a > 16<<20 {
			t.Errorf("%s allocated %d MB for a header", name, a>>20)
		}
	}
	// A caller's own limit applies: the same 16x16 picture passes at 256 pixels, not 255.
	ok := filepath.Join(dir, "ok.png")
	if err := SavePNG(ok, Synth(1, 16, 16)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRGBMax(ok, 256); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRGBMax(ok, 255); err == nil {
		t.Fatal("limit 255 accepted a 16x16 image")
	}
}

// TestCheckReportsBombsAndTinyImages: data check, full and headers-only, reports a
// huge-header file and images below the minimum size instead of passing them.
func TestCheckReportsBombsAndTinyImages(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bomb.png"), claimSize(t, 10000, 9000), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string][2]int{"tiny.png": {8, 8}, "thin.png": {40, 12}, "fine.png": {16, 16}} {
		if err := SavePNG(filepath.Join(dir, name), Synth(2, size[0], size[1])); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Discover(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, headers := range []bool{false, true} {
		probs, err := Check(context.Background(), l, CheckOptions{HeadersOnly: headers})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range probs {
			got = append(got, filepath.Base(p.Path))
		}
		if strings.Join(got, ",") != "bomb.png,thin.png,tiny.png" {
			t.Errorf("headers-only %v: problems %v", headers, probs)
		}
	}
}
