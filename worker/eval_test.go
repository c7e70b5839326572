package worker

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/dataset"
)

func flatRGB(w, h int, v uint8) *dataset.RGB {
	img := dataset.NewRGB(w, h)
	for i := range img.Pix {
		img.Pix[i] = v
	}
	return img
}

func mustSave(t *testing.T, path string, img *dataset.RGB) {
	t.Helper()
	if err := dataset.SavePNG(path, img); err != nil {
		t.Fatal(err)
	}
}

func TestEvaluateBicubicPlainFolder(t *testing.T) {
	dir := t.TempDir()
	// 70x50 is cropped to 64x48 (multiples of 8). A flat image survives down- and
	// up-scaling unchanged: PSNR 100 dB (pyiqa's eps), SSIM 1.
	mustSave(t, filepath.Join(dir, "a.png"), flatRGB(70, 50, 120))
	mustSave(t, filepath.Join(dir, "b.png"), flatRGB(64, 64, 30))
	layout, err := dataset.Discover(dir)
	if err != nil {
		t.Fatal(err)
	}
	save := filepath.Join(t.TempDir(), "sr")
	res, err := Evaluate(context.Background(), layout.Images, Bicubic{}, EvalOptions{SaveDir: save})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 2 || res.Images[0].ID != "a" || res.Images[0].Width != 64 || res.Images[0].Height != 48 {
		t.Fatalf("results %+v", res.Images)
	}
	if math.Abs(res.PSNRY-100) > 1e-9 || math.Abs(res.SSIMY-1) > 1e-12 {
		t.Fatalf("flat images: PSNR %v SSIM %v, want 100 and 1", res.PSNRY, res.SSIMY)
	}
	sr, err := dataset.LoadRGB(filepath.Join(save, "a.png"))
	if err != nil {
		t.Fatal(err)
	}
	if sr.W != 64 || sr.H != 48 || sr.Pix[0] != 120 {
		t.Fatalf("saved SR %dx%d first value %d", sr.W, sr.H, sr.Pix[0])
	}
	var buf bytes.Buffer
	if err := res.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || lines[0] != "id,width,height,psnr_y,ssim_y" || !strings.HasPrefix(lines[1], "a,64,48,100.0000,1.000000") {
		t.Fatalf("CSV:\n%s", buf.String())
	}
}

func TestEvaluateUsesLRFolder(t *testing.T) {
	root := t.TempDir()
	hrDir := filepath.Join(root, "DIV2K_valid_HR")
	lrDir := filepath.Join(root, "DIV2K_valid_LR_bicubic", "X4")
	// HR flat 100, official LR flat 110: if the LR file is used, SR is flat 110 and
	// every Y differs by 219·10/255 on the 0-255 scale.
	mustSave(t, filepath.Join(hrDir, "0801.png"), flatRGB(68, 52, 100))
	mustSave(t, filepath.Join(lrDir, "0801x4.png"), flatRGB(17, 13, 110))
	layout, err := dataset.Discover(root)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Evaluate(context.Background(), layout.Valid(), Bicubic{}, EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dy := 219.0 * 10 / 255 / 255
	want := 10 * math.Log10(1/(dy*dy+1e-10))
	if math.Abs(res.PSNRY-want) > 1e-9 || res.Images[0].Width != 64 || res.Images[0].Height != 48 {
		t.Fatalf("PSNR %v (want %v), size %dx%d", res.PSNRY, want, res.Images[0].Width, res.Images[0].Height)
	}

	// An LR of the wrong size is a failure naming both files.
	failure := func() error {
		t.Helper()
		res, err := Evaluate(context.Background(), layout.Valid(), Bicubic{}, EvalOptions{Log: discardLog()})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Failed) != 1 || len(res.Images) != 0 {
			t.Fatalf("images %+v, failed %+v", res.Images, res.Failed)
		}
		return res.Failed[0].Err
	}
	mustSave(t, filepath.Join(lrDir, "0801x4.png"), flatRGB(16, 13, 110))
	if err := failure(); !strings.Contains(err.Error(), "0801x4.png") || !strings.Contains(err.Error(), "0801.png") {
		t.Fatalf("size mismatch error: %v", err)
	}
	os.Remove(filepath.Join(lrDir, "0801x4.png"))
	if err := failure(); !strings.Contains(err.Error(), "0801x4.png") {
		t.Fatalf("missing LR error: %v", err)
	}
}

func TestEvaluateCancelled(t *testing.T) {
	dir := t.TempDir()
	mustSave(t, filepath.Join(dir, "a.png"), flatRGB(16, 16, 1))
	layout, _ := dataset.Discover(dir)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Evaluate(ctx, layout.Images, Bicubic{}, EvalOptions{}); err == nil {
		t.Fatal("cancelled evaluation succeeded")
	}
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestEvaluateDoesEveryGoodImage: unreadable, truncated and too-small images are
// listed in Failed with errors naming them; every other image is measured (and saved).
func TestEvaluateDoesEveryGoodImage(t *testing.T) {
	dir := t.TempDir()
	mustSave(t, filepath.Join(dir, "a.png"), flatRGB(32, 32, 100))
	mustSave(t, filepath.Join(dir, "c.png"), flatRGB(12, 12, 100)) // 8x8 once cropped: too small
	mustSave(t, filepath.Join(dir, "e.png"), flatRGB(40, 24, 50))
	for name, data := range map[string]string{"b.png": "not a png", "d.png": "\x89PNG\r\n\x1a\n\x00\x00"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	layout, err := dataset.Discover(dir)
	if err != nil {
		t.Fatal(err)
	}
	save := t.TempDir()
	res, err := Evaluate(context.Background(), layout.Images, Bicubic{}, EvalOptions{SaveDir: save, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 2 || res.Images[0].ID != "a" || res.Images[1].ID != "e" {
		t.Fatalf("measured %+v", res.Images)
	}
	if len(res.Failed) != 3 {
		t.Fatalf("failed %+v", res.Failed)
	}
	for i, id := range []string{"b", "c", "d"} {
		f := res.Failed[i]
		if f.ID != id || !strings.Contains(f.Err.Error(), filepath.Join(dir, id+".png")) {
			t.Errorf("failure %d: %s %v", i, f.ID, f.Err)
		}
	}
	if _, err := os.Stat(filepath.Join(save, "e.png")); err != nil {
		t.Errorf("the image after the failures was not saved: %v", err)
	}
	if !strings.Contains(res.Summary(), "3 more failed") {
		t.Errorf("summary %q does not mention the failures", res.Summary())
	}
}
