package worker

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/metrics"
	"github.com/samdiffsr/samdiffsr/internal/progress"
)

// Upscaler makes the x4 super-resolution of an LR image.
type Upscaler interface {
	// Upscale returns an image 4x the size of lr.
	Upscale(ctx context.Context, lr *dataset.RGB) (*dataset.RGB, error)
}

// Bicubic is the bicubic baseline: MATLAB-compatible imresize x4 of the LR (uint8 path,
// rounded per pass).
type Bicubic struct{}

// Upscale implements Upscaler.
func (Bicubic) Upscale(_ context.Context, lr *dataset.RGB) (*dataset.RGB, error) {
	return dataset.Imresize(lr, 4)
}

// EvalOptions configure Evaluate.
type EvalOptions struct {
	// CropBorder pixels are removed from every side before the metrics (paper: 0).
	CropBorder int
	// SaveDir, when set, receives each SR image as <ID>.png.
	SaveDir string
	// Log receives progress lines (default slog.Default()).
	Log *slog.Logger
	// Progress is where a terminal progress bar is drawn (nil: log lines only).
	Progress io.Writer
}

// EvalImage is the result for one image.
type EvalImage struct {
	ID            string
	Width, Height int // of the (cropped) HR
	PSNRY, SSIMY  float64
}

// EvalResult is the result of an evaluation: per image and the means.
type EvalResult struct {
	Images       []EvalImage
	PSNRY, SSIMY float64
}

// EvalPair loads an evaluation pair the way the paper's tables were made: the HR cropped
// to a multiple of 8 (top-left kept); the LR taken from the dataset's LR file when there
// is one (which must be the x4 of the uncropped HR, and is cropped to match) or else
// made from the cropped HR with the MATLAB-compatible imresize(HR, 1/4).
func EvalPair(im dataset.Image) (hr, lr *dataset.RGB, err error) {
	full, err := dataset.LoadRGB(im.HRPath)
	if err != nil {
		return nil, nil, err
	}
	hr = full.CropMultiple(8)
	if hr.W == 0 || hr.H == 0 {
		return nil, nil, fmt.Errorf("worker: %s is %dx%d, smaller than 8x8; remove it from the evaluation folder", im.HRPath, full.W, full.H)
	}
	if im.LRPath == "" {
		lr, err = dataset.Imresize(hr, 0.25)
		if err != nil {
			return nil, nil, fmt.Errorf("worker: downscale %s: %w", im.HRPath, err)
		}
		return hr, lr, nil
	}
	lrFull, err := dataset.LoadRGB(im.LRPath)
	if err != nil {
		return nil, nil, err
	}
	if lrFull.W != full.W/4 || lrFull.H != full.H/4 {
		return nil, nil, fmt.Errorf("worker: LR %s is %dx%d but HR %s is %dx%d (expected an LR of %dx%d); fix or remove the pair",
			im.LRPath, lrFull.W, lrFull.H, im.HRPath, full.W, full.H, full.W/4, full.H/4)
	}
	return hr, lrFull.Crop(0, 0, hr.W/4, hr.H/4), nil
}

// Evaluate super-resolves every image's LR with up and measures PSNR-Y and SSIM-Y
// against the HR (METHOD §5). Images are processed in order; the first failure stops
// the evaluation with an error naming the file.
func Evaluate(ctx context.Context, images []dataset.Image, up Upscaler, opt EvalOptions) (*EvalResult, error) {
	if len(images) == 0 {
		return nil, fmt.Errorf("worker: no images to evaluate")
	}
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	bar := progress.New(progress.Options{Label: "eval", Unit: "images", Total: int64(len(images)), Out: opt.Progress, Log: log})
	defer bar.Done()
	res := &EvalResult{}
	var mean metrics.Mean
	for _, im := range images {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hr, lr, err := EvalPair(im)
		if err != nil {
			return nil, err
		}
		sr, err := up.Upscale(ctx, lr)
		if err != nil {
			return nil, fmt.Errorf("worker: super-resolve %s: %w", im.HRPath, err)
		}
		if sr.W != hr.W || sr.H != hr.H {
			return nil, fmt.Errorf("worker: SR of %s is %dx%d, HR is %dx%d", im.HRPath, sr.W, sr.H, hr.W, hr.H)
		}
		p, s, err := metrics.RGB8(hr.W, hr.H, sr.Pix, hr.Pix, opt.CropBorder)
		if err != nil {
			return nil, fmt.Errorf("worker: metrics of %s: %w", im.HRPath, err)
		}
		if opt.SaveDir != "" {
			out := filepath.Join(opt.SaveDir, filepath.FromSlash(im.ID)+".png")
			if err := dataset.SavePNG(out, sr); err != nil {
				return nil, err
			}
		}
		res.Images = append(res.Images, EvalImage{ID: im.ID, Width: hr.W, Height: hr.H, PSNRY: p, SSIMY: s})
		mean.Add(p, s)
		bar.SetExtra(fmt.Sprintf("psnr_y %.3f ssim_y %.4f", mean.PSNR(), mean.SSIM()))
		bar.Add(1)
	}
	res.PSNRY, res.SSIMY = mean.PSNR(), mean.SSIM()
	return res, nil
}

// WriteCSV writes one line per image (id,width,height,psnr_y,ssim_y) after a header.
func (r *EvalResult) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"id", "width", "height", "psnr_y", "ssim_y"})
	for _, im := range r.Images {
		cw.Write([]string{im.ID, strconv.Itoa(im.Width), strconv.Itoa(im.Height),
			strconv.FormatFloat(im.PSNRY, 'f', 4, 64), strconv.FormatFloat(im.SSIMY, 'f', 6, 64)})
	}
	cw.Flush()
	return cw.Error()
}

// Summary is a one-line human summary.
func (r *EvalResult) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d images: PSNR-Y %.4f dB, SSIM-Y %.6f", len(r.Images), r.PSNRY, r.SSIMY)
	return b.String()
}
