package maskgen

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testMap() *LabelMap {
	m := NewLabelMap(37, 23)
	for i := range m.Labels {
		m.Labels[i] = uint16((i*7919)%1000 + 300) // ids above 255 exercise both bytes
	}
	m.Labels[0] = 0
	m.Regions = 1299
	return m
}

func TestLabelMapPNGRoundTrip(t *testing.T) {
	m := testMap()
	data, err := EncodeLabelMapPNG(m)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := EncodeLabelMapPNG(m)
	if !bytes.Equal(data, again) {
		t.Error("encoding the same map twice gave different bytes")
	}
	// A standard 16-bit grayscale PNG.
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	g, ok := img.(*image.Gray16)
	if !ok {
		t.Fatalf("PNG decodes as %T, want *image.Gray16", img)
	}
	if got := g.Gray16At(5, 2).Y; got != m.At(5, 2) {
		t.Errorf("pixel (5,2) = %d, want %d", got, m.At(5, 2))
	}
	back, err := DecodeLabelMapPNG(data)
	if err != nil {
		t.Fatal(err)
	}
	if back.Width != m.Width || back.Height != m.Height || !equalLabels(back.Labels, m.Labels) {
		t.Fatal("decoded label map differs")
	}
	if back.Regions != 1299 {
		t.Errorf("Regions = %d, want the largest label 1299", back.Regions)
	}
	// 8-bit grayscale is accepted.
	g8 := image.NewGray(image.Rect(0, 0, 3, 2))
	g8.Pix[4] = 9
	var b8 bytes.Buffer
	png.Encode(&b8, g8)
	m8, err := DecodeLabelMapPNG(b8.Bytes())
	if err != nil || m8.At(1, 1) != 9 || m8.Regions != 9 {
		t.Errorf("8-bit gray: %v, %+v", err, m8)
	}
	// Colour PNGs are not label maps.
	var bc bytes.Buffer
	png.Encode(&bc, image.NewRGBA(image.Rect(0, 0, 2, 2)))
	if _, err := DecodeLabelMapPNG(bc.Bytes()); err == nil {
		t.Error("an RGBA PNG was accepted as a label map")
	}
	if _, err := DecodeLabelMapPNG(data[:len(data)/2]); err == nil {
		t.Error("a truncated PNG was accepted")
	}
}

func equalLabels(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestWriteReadLabelMap(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "DIV2K_train", "0001.png")
	m := testMap()
	sc := &Sidecar{Segmenter: "builtin", Params: map[string]any{"k": 800.0, "min_size": 1500}, Source: "DIV2K_train/0001", SourceSHA256: "abc"}
	if err := WriteLabelMap(path, m, sc); err != nil {
		t.Fatal(err)
	}
	if SidecarPath(path) != filepath.Join(dir, "DIV2K_train", "0001.json") {
		t.Fatalf("SidecarPath = %s", SidecarPath(path))
	}
	if !LabelMapExists(path) {
		t.Error("LabelMapExists = false after WriteLabelMap")
	}
	got, gsc, err := ReadLabelMap(path)
	if err != nil {
		t.Fatal(err)
	}
	if !equalLabels(got.Labels, m.Labels) || got.Regions != m.Regions {
		t.Error("read label map differs from the one written")
	}
	if gsc.Segmenter != "builtin" || gsc.SourceSHA256 != "abc" || gsc.Regions != 1299 || gsc.Width != 37 || gsc.Height != 23 ||
		gsc.Format != SidecarFormat || gsc.Params["k"] != 800.0 || gsc.LabelsSHA256 == "" {
		t.Errorf("sidecar read back as %+v", gsc)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 2 {
		t.Errorf("folder holds %d entries, want 2 (png + json)", len(ents))
	}

	// Errors name the file.
	t.Run("missing sidecar", func(t *testing.T) {
		p := filepath.Join(dir, "lonely.png")
		data, _ := EncodeLabelMapPNG(m)
		os.WriteFile(p, data, 0o644)
		_, _, err := ReadLabelMap(p)
		if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "lonely.json") {
			t.Errorf("err = %v, want a not-exist error naming lonely.json", err)
		}
	})
	t.Run("missing png", func(t *testing.T) {
		_, _, err := ReadLabelMap(filepath.Join(dir, "nothing.png"))
		if err == nil || !strings.Contains(err.Error(), "nothing.png") {
			t.Errorf("err = %v, want an error naming nothing.png", err)
		}
	})
	t.Run("mismatched pair", func(t *testing.T) {
		p := filepath.Join(dir, "mixed.png")
		WriteLabelMap(p, m, sc)
		other := NewLabelMap(37, 23)
		data, _ := EncodeLabelMapPNG(other)
		os.WriteFile(p, data, 0o644)
		_, _, err := ReadLabelMap(p)
		if err == nil || !strings.Contains(err.Error(), "mixed.png") || !strings.Contains(err.Error(), "checksum") {
			t.Errorf("err = %v, want a checksum error naming mixed.png", err)
		}
	})
	t.Run("corrupt png", func(t *testing.T) {
		p := filepath.Join(dir, "bad.png")
		WriteLabelMap(p, m, sc)
		js, _ := os.ReadFile(SidecarPath(p))
		s, _ := UnmarshalSidecar(js)
		s.LabelsSHA256 = ""
		js, _ = MarshalSidecar(s)
		os.WriteFile(SidecarPath(p), js, 0o644)
		os.WriteFile(p, []byte("\x89PNG\r\n\x1a\ngarbage"), 0o644)
		_, _, err := ReadLabelMap(p)
		if err == nil || !strings.Contains(err.Error(), "bad.png") {
			t.Errorf("err = %v, want an error naming bad.png", err)
		}
	})
	t.Run("bad sidecar", func(t *testing.T) {
		p := filepath.Join(dir, "badjs.png")
		WriteLabelMap(p, m, sc)
		os.WriteFile(SidecarPath(p), []byte("{"), 0o644)
		_, _, err := ReadLabelMap(p)
		if err == nil || !strings.Contains(err.Error(), "badjs.json") {
			t.Errorf("err = %v, want an error naming badjs.json", err)
		}
	})
	t.Run("invalid map", func(t *testing.T) {
		bad := NewLabelMap(2, 2)
		bad.Labels[0] = 5
		if err := WriteLabelMap(filepath.Join(dir, "inv.png"), bad, nil); err == nil || !strings.Contains(err.Error(), "inv.png") {
			t.Errorf("err = %v, want an error naming inv.png", err)
		}
	})
}
