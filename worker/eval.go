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
	// MaxPixels refuses image files claiming more pixels (data.max_pixels; <= 0: default).
	MaxPixels int64
	// OnImage, when set, is called before each image (per-image progress).
	OnImage func(im dataset.Image)
}

// EvalImage is the result for one image.
type EvalImage struct {
	ID            string
	Width, Height int // of the (cropped) HR
	PSNRY, SSIMY  float64
}

// EvalFailure is an image the evaluation could not do, and why.
type EvalFailure struct {
	ID, Path string
	Err      error
}

// EvalResult is the result of an evaluation: per image, the means over the images
// done, and the images that failed.
type EvalResult struct {
	Images       []EvalImage
	PSNRY, SSIMY float64
	Failed       []EvalFailure
}

// Evaluate super-resolves every image's LR with up and measures PSNR-Y and SSIM-Y
// against the HR (METHOD §5). The pair is loaded as dataset.LoadEvalPair does (HR
// cropped to a multiple of 8; the official LR or the MATLAB-compatible bicubic one).
// Images are processed in order; one that cannot be read or super-resolved is
// recorded in Failed (with an error naming the file) and the others are still done.
// Only a cancelled ctx stops it early.
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
		if opt.OnImage != nil {
			opt.OnImage(im)
		}
		ei, sr, err := evalOne(ctx, im, up, opt)
		if err == nil && opt.SaveDir != "" {
			err = dataset.SavePNG(filepath.Join(opt.SaveDir, filepath.FromSlash(im.ID)+".png"), sr)
		}
		bar.Add(1)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return nil, ctxErr
			}
			log.Error("image failed; going on with the next", "image", im.HRPath, "err", err)
			res.Failed = append(res.Failed, EvalFailure{ID: im.ID, Path: im.HRPath, Err: err})
			continue
		}
		res.Images = append(res.Images, ei)
		mean.Add(ei.PSNRY, ei.SSIMY)
		bar.SetExtra(fmt.Sprintf("psnr_y %.3f ssim_y %.4f", mean.PSNR(), mean.SSIM()))
	}
	res.PSNRY, res.SSIMY = mean.PSNR(), mean.SSIM()
	return res, nil
}

// evalOne measures one image and returns its SR.
func evalOne(ctx context.Context, im dataset.Image, up Upscaler, opt EvalOptions) (EvalImage, *dataset.RGB, error) {
	p, err := dataset.LoadEvalPairMax(im, 0, opt.MaxPixels)
	if err != nil {
		return EvalImage{}, nil, err
	}
	sr, err := up.Upscale(ctx, p.LR)
	if err != nil {
		return EvalImage{}, nil, fmt.Errorf("worker: super-resolve %s: %w", im.HRPath, err)
	}
	if sr.W != p.HR.W || sr.H != p.HR.H {
		return EvalImage{}, nil, fmt.Errorf("worker: SR of %s is %dx%d, HR is %dx%d", im.HRPath, sr.W, sr.H, p.HR.W, p.HR.H)
	}
	ps, ss, err := metrics.RGB8(p.HR.W, p.HR.H, sr.Pix, p.HR.Pix, opt.CropBorder)
	if err != nil {
		return EvalImage{}, nil, fmt.Errorf("worker: metrics of %s: %w", im.HRPath, err)
	}
	return EvalImage{ID: im.ID, Width: p.HR.W, Height: p.HR.H, PSNRY: ps, SSIMY: ss}, sr, nil
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
	if len(r.Failed) > 0 {
		fmt.Fprintf(&b, " (%d more failed and are left out)", len(r.Failed))
	}
	return b.String()
}
