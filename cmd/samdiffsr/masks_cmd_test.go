package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/maskgen"
)

// writeTestPNG writes a 40x30 image of two flat colour halves.
func writeTestPNG(t *testing.T, path string, shift int) {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 40, 30))
	for y := 0; y < 30; y++ {
		for x := 0; x < 40; x++ {
			c := color.RGBA{20, 120, 40, 255}
			if x >= 15+shift {
				c = color.RGBA{230, 200, 30, 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMasksCommand(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	out := filepath.Join(dir, "masks")
	os.MkdirAll(data, 0o755)
	writeTestPNG(t, filepath.Join(data, "a.png"), 0)
	writeTestPNG(t, filepath.Join(data, "b.png"), 9)
	os.WriteFile(filepath.Join(data, "c.png"), []byte("not an image"), 0o644)
	cfg := filepath.Join(dir, "masks.yaml")
	os.WriteFile(cfg, []byte("masks: {builtin: {sigma: 0.5, k: 200, min_size: 50}}\n"), 0o644)

	stdout, stderr, code := runCLI(t, "--log-level", "error", "--config", cfg, "masks", "--data", data, "--out", out, "--workers", "2")
	if code != 1 {
		t.Fatalf("exit %d with a corrupt image, want 1; stdout %q stderr %q", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "c.png") || !strings.Contains(stdout, "2 done") {
		t.Errorf("want the bad image named and 2 done; stdout %q stderr %q", stdout, stderr)
	}
	var failures []map[string]string
	js, err := os.ReadFile(filepath.Join(out, "failures.json"))
	if err != nil || json.Unmarshal(js, &failures) != nil || len(failures) != 1 || failures[0]["id"] != "c" {
		t.Errorf("failures.json: %v %s", err, js)
	}
	m, sc, err := maskgen.ReadLabelMap(filepath.Join(out, "a.png"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Regions != 2 || sc.Params["k"] != 200.0 || m.At(0, 0) == m.At(39, 0) {
		t.Errorf("label map of a.png: %d regions, params %v", m.Regions, sc.Params)
	}

	// Without the bad image: everything is up to date, exit 0.
	os.Remove(filepath.Join(data, "c.png"))
	stdout, stderr, code = runCLI(t, "--log-level", "error", "--config", cfg, "masks", "--data", data, "--out", out)
	if code != 0 || !strings.Contains(stdout, "2 skipped") {
		t.Fatalf("exit %d, stdout %q stderr %q; want 0 and 2 skipped", code, stdout, stderr)
	}

	// show: two panels side by side.
	viz := filepath.Join(dir, "viz.png")
	stdout, stderr, code = runCLI(t, "masks", "show", "--image", filepath.Join(data, "b.png"), "--labels", filepath.Join(out, "b.png"), "--out", viz)
	if code != 0 {
		t.Fatalf("show: exit %d, %q %q", code, stdout, stderr)
	}
	f, err := os.Open(viz)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil || img.Bounds().Dx() != 2*40+8 || img.Bounds().Dy() != 30 {
		t.Fatalf("viz: %v %v", err, img.Bounds())
	}
	// The E panel differs between the two regions (left and right halves).
	if img.At(40+8+2, 15) == img.At(40+8+38, 15) {
		t.Error("E heat map has the same colour in both regions")
	}
	// A label map of another size is refused.
	writeBig := filepath.Join(dir, "big.png")
	big := image.NewRGBA(image.Rect(0, 0, 41, 30))
	var buf bytes.Buffer
	png.Encode(&buf, big)
	os.WriteFile(writeBig, buf.Bytes(), 0o644)
	_, stderr, code = runCLI(t, "masks", "show", "--image", writeBig, "--labels", filepath.Join(out, "b.png"), "--out", viz)
	if code != 2 || !strings.Contains(stderr, "41x30") {
		t.Errorf("size mismatch: exit %d, %q", code, stderr)
	}

	// Usage errors.
	if _, _, code := runCLI(t, "masks", "--out", out); code != 2 {
		t.Errorf("missing --data: exit %d, want 2", code)
	}
	if _, stderr, code := runCLI(t, "masks", "--data", data, "--out", out, "--segmenter", "magic"); code != 2 || !strings.Contains(stderr, "magic") {
		t.Errorf("unknown segmenter: exit %d %q", code, stderr)
	}
	for _, args := range [][]string{{"masks", "--help"}, {"masks", "show", "--help"}} {
		stdout, _, code := runCLI(t, args...)
		if code != 0 || !strings.Contains(stdout, "Examples:") || !strings.Contains(stdout, "samdiffsr masks") {
			t.Errorf("%v: exit %d, help without an example: %q", args, code, stdout)
		}
	}
}
