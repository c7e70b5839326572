package worker

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/samdiffsr/samdiffsr/dataset"
)

func TestRunLogTruncatesOnResume(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenRunLog(dir, -1)
	if err != nil {
		t.Fatal(err)
	}
	for s := 10; s <= 50; s += 10 {
		if err := l.Append(MetricsRecord{Step: s, Stage: "diffusion", Loss: ptr(1 / float64(s))}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	// A torn final line (killed mid-write) is ignored.
	f, _ := os.OpenFile(filepath.Join(dir, MetricsFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"step":60,"sta`)
	f.Close()
	recs, err := ReadMetrics(filepath.Join(dir, MetricsFile))
	if err != nil || len(recs) != 5 {
		t.Fatalf("read %d records, %v", len(recs), err)
	}
	l, err = OpenRunLog(dir, 30)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Records()) != 3 {
		t.Fatalf("kept %d records, want 3 (steps <= 30)", len(l.Records()))
	}
	l.Append(MetricsRecord{Step: 40, Stage: "diffusion", Loss: ptr(0.5)})
	l.Close()
	recs, _ = ReadMetrics(filepath.Join(dir, MetricsFile))
	if len(recs) != 4 || recs[3].Step != 40 || *recs[3].Loss != 0.5 {
		t.Fatalf("after resume: %+v", recs)
	}
	// A fresh open starts empty.
	l, _ = OpenRunLog(dir, -1)
	l.Close()
	recs, _ = ReadMetrics(filepath.Join(dir, MetricsFile))
	if len(recs) != 0 {
		t.Fatalf("fresh log has %d records", len(recs))
	}
	os.WriteFile(filepath.Join(dir, MetricsFile), []byte("garbage\n{\"step\":1}\n"), 0o644)
	if _, err := ReadMetrics(filepath.Join(dir, MetricsFile)); err == nil {
		t.Fatal("garbage in the middle accepted")
	}
}

func TestPlotAndGrid(t *testing.T) {
	dir := t.TempDir()
	recs := []MetricsRecord{{Step: 1, Loss: ptr(1)}, {Step: 2, Loss: ptr(0.5)}, {Step: 2, ValPSNRY: ptr(25)}}
	p := filepath.Join(dir, LossPlot)
	if err := PlotLoss(p, "diffusion", recs); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("loss.png: %v", err)
	}
	f.Close()
	g := filepath.Join(dir, "val.png")
	a, b := dataset.NewRGB(8, 6), dataset.NewRGB(8, 6)
	b.Pix[0] = 7
	if err := SaveGrid(g, [][]*dataset.RGB{{a, b, a}, {a, a, b}}); err != nil {
		t.Fatal(err)
	}
	img, err := dataset.LoadRGB(g)
	if err != nil {
		t.Fatal(err)
	}
	if img.W != 3*8+2*4 || img.H != 2*6+4 {
		t.Fatalf("grid %dx%d", img.W, img.H)
	}
	if img.Pix[(0*img.W+12)*3] != 7 || img.Pix[(0*img.W+8)*3] != 255 {
		t.Fatal("grid cells misplaced")
	}
}
