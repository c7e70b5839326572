package worker

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/fsutil"
)

// Run-directory file names.
const (
	MetricsFile = "metrics.jsonl"
	LossPlot    = "loss.png"
	ConfigFile  = "config.yaml"
)

// MetricsRecord is one line of metrics.jsonl. Training lines carry loss (the mean
// over the steps since the previous line), lr and steps/s; validation lines carry the
// val_* fields. Step is the number of optimizer steps taken when the line was written.
type MetricsRecord struct {
	Step      int      `json:"step"`
	Stage     string   `json:"stage"`
	Loss      *float64 `json:"loss,omitempty"`
	LR        *float64 `json:"lr,omitempty"`
	StepsPerS *float64 `json:"steps_per_s,omitempty"`
	// Steps is how many steps the loss is averaged over.
	Steps int `json:"steps,omitempty"`
	// LossByT is the diffusion loss of the same steps by timestep band (t 0-9,
	// 10-49, 50-99 for T = 100): Σ N·Loss over the bands / Σ N is Loss.
	LossByT []BandLoss `json:"loss_by_t,omitempty"`
	// Validation: mean PSNR-Y / SSIM-Y of the model and of bicubic on the held-out images.
	ValPSNRY        *float64 `json:"val_psnr_y,omitempty"`
	ValSSIMY        *float64 `json:"val_ssim_y,omitempty"`
	ValBicubicPSNRY *float64 `json:"val_bicubic_psnr_y,omitempty"`
	ValBicubicSSIMY *float64 `json:"val_bicubic_ssim_y,omitempty"`
	ValImages       int      `json:"val_images,omitempty"`
	// ValX0 is the denoiser's one-step x̂0 quality at a few fixed t (X0Quality).
	ValX0 []X0Quality `json:"val_x0_psnr_y,omitempty"`
	Time  string      `json:"time,omitempty"`
}

func ptr(v float64) *float64 { return &v }

// RunLog appends to a run directory's metrics.jsonl and redraws loss.png.
type RunLog struct {
	path    string
	f       *os.File
	records []MetricsRecord
}

// OpenRunLog opens dir/metrics.jsonl for appending. Lines for steps after keepUpTo
// (the step being resumed from) are dropped first, so a resumed run's log reads as
// an uninterrupted one; keepUpTo < 0 keeps nothing (a fresh run).
func OpenRunLog(dir string, keepUpTo int) (*RunLog, error) {
	path := filepath.Join(dir, MetricsFile)
	l := &RunLog{path: path}
	if keepUpTo >= 0 {
		recs, err := ReadMetrics(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		for _, r := range recs {
			if r.Step <= keepUpTo {
				l.records = append(l.records, r)
			}
		}
	}
	var buf bytes.Buffer
	for _, r := range l.records {
		b, _ := json.Marshal(r)
		buf.Write(append(b, '\n'))
	}
	if err := fsutil.WriteFileAtomic(path, buf.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("worker: open %s: %w", path, err)
	}
	l.f = f
	return l, nil
}

// ReadMetrics reads every record of a metrics.jsonl file.
func ReadMetrics(path string) ([]MetricsRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []MetricsRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r MetricsRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			// A torn last line (killed mid-write) is dropped; anything else is an error.
			if _, more := peek(sc); !more {
				break
			}
			return nil, fmt.Errorf("worker: %s line %d: %w", path, line, err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("worker: read %s: %w", path, err)
	}
	return out, nil
}

func peek(sc *bufio.Scanner) ([]byte, bool) {
	if sc.Scan() {
		return sc.Bytes(), true
	}
	return nil, false
}

// Append writes one record (one line, written in a single call).
func (l *RunLog) Append(r MetricsRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("worker: encode metrics: %w", err)
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("worker: write %s: %w", l.path, err)
	}
	l.records = append(l.records, r)
	return nil
}

// Records returns the records written so far (including kept ones).
func (l *RunLog) Records() []MetricsRecord { return l.records }

// Close closes the file.
func (l *RunLog) Close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// PlotLoss draws the training loss (and, for the diffusion stage, the loss of each
// timestep band as its own line) against the step into path, atomically; the last
// validation PSNR-Y goes in the title.
func PlotLoss(path, title string, recs []MetricsRecord) error {
	var loss, val plotter.XYs
	bands := map[string]plotter.XYs{}
	var bandNames []string
	for _, r := range recs {
		if r.Loss != nil {
			loss = append(loss, plotter.XY{X: float64(r.Step), Y: *r.Loss})
		}
		for _, b := range r.LossByT {
			name := fmt.Sprintf("t %d-%d", b.From, b.To)
			if _, ok := bands[name]; !ok {
				bandNames = append(bandNames, name)
			}
			bands[name] = append(bands[name], plotter.XY{X: float64(r.Step), Y: b.Loss})
		}
		if r.ValPSNRY != nil {
			val = append(val, plotter.XY{X: float64(r.Step), Y: *r.ValPSNRY})
		}
	}
	if len(loss) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "training loss (L1)"
	l, err := plotter.NewLine(loss)
	if err != nil {
		return fmt.Errorf("worker: plot %s: %w", path, err)
	}
	l.Width = vg.Points(1.5)
	p.Add(l, plotter.NewGrid())
	if len(bandNames) > 0 {
		p.Legend.Add("all t", l)
		p.Legend.Top = true
	}
	for i, name := range bandNames {
		bl, err := plotter.NewLine(bands[name])
		if err != nil {
			return fmt.Errorf("worker: plot %s: %w", path, err)
		}
		bl.Color = plotutil.Color(i + 1)
		bl.Dashes = plotutil.Dashes(i + 1)
		p.Add(bl)
		p.Legend.Add(name, bl)
	}
	if len(val) > 0 {
		// Validation PSNR-Y as points on a scaled copy of the loss axis is misleading;
		// put it in the title instead (the last value), the full series is in metrics.jsonl.
		p.Title.Text = fmt.Sprintf("%s (last val PSNR-Y %.2f dB at step %d)", title, val[len(val)-1].Y, int(val[len(val)-1].X))
	}
	wt, err := p.WriterTo(8*vg.Inch, 4*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("worker: plot %s: %w", path, err)
	}
	if err := fsutil.WriteAtomic(path, 0o644, func(w io.Writer) error {
		_, err := wt.WriteTo(w)
		return err
	}); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}

// SaveGrid writes rows of same-size images side by side (each row: LR-bicubic | SR |
// HR), separated by 4-pixel white gaps, as one PNG.
func SaveGrid(path string, rows [][]*dataset.RGB) error {
	const gap = 4
	if len(rows) == 0 {
		return nil
	}
	W, H := 0, 0
	for _, row := range rows {
		w, h := 0, 0
		for i, im := range row {
			if i > 0 {
				w += gap
			}
			w += im.W
			h = max(h, im.H)
		}
		W = max(W, w)
		H += h + gap
	}
	H -= gap
	out := dataset.NewRGB(W, H)
	for i := range out.Pix {
		out.Pix[i] = 255
	}
	y := 0
	for _, row := range rows {
		x, rh := 0, 0
		for _, im := range row {
			for r := 0; r < im.H; r++ {
				copy(out.Pix[((y+r)*W+x)*3:((y+r)*W+x+im.W)*3], im.Pix[r*im.W*3:(r+1)*im.W*3])
			}
			x += im.W + gap
			rh = max(rh, im.H)
		}
		y += rh + gap
	}
	return dataset.SavePNG(path, out)
}
