package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/progress"
	"github.com/samdiffsr/samdiffsr/worker"
)

func newEvalCmd(a *app) *cobra.Command {
	var (
		checkpoint, baseline, data, save, csvPath string
		cropBorder                                int
		seed                                      int64
		asJSON                                    bool
		tf                                        tileFlags
	)
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Measure PSNR-Y and SSIM-Y of a checkpoint (or the bicubic baseline) on a folder of HR images",
		Long: `eval super-resolves the x4 LR of every HR image in --data and measures PSNR and SSIM
on the BT.601 Y channel as the paper's tables were measured (METHOD §5): HR cropped to a
multiple of 8; LR from the dataset's LR folder when it has one, else made with the
MATLAB-compatible imresize(HR, 1/4); PSNR on unrounded Y (data range 1); SSIM on rounded
Y in [0,255] with an 11x11 Gaussian window (σ 1.5), valid filtering; means over images.
--crop-border 0 is the paper's convention; 4 is the one most SR papers use.

When --data holds a DIV2K layout with a validation set, only the validation images are
used; otherwise every image found. HR images must be at least 16x16 once cropped.
An image that cannot be read or super-resolved is reported by name and left out of
the means; every other image is still done and written to the CSV, and the exit
status is then 1. Diffusion sampling logs its progress per sampler step.`,
		Example: `  samdiffsr eval --baseline bicubic --data demo/data/val --crop-border 4
  samdiffsr eval --checkpoint demo/run --data demo/data/val --json
  samdiffsr eval --checkpoint demo/run/rrdb --data demo/data/val --save demo/eval_rrdb`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (checkpoint == "") == (baseline == "") {
				return &exitError{code: 2, msg: "eval: give exactly one of --checkpoint DIR and --baseline bicubic"}
			}
			if baseline != "" && baseline != "bicubic" {
				return &exitError{code: 2, msg: fmt.Sprintf("eval: --baseline %q is not known; the only baseline is bicubic", baseline)}
			}
			if data == "" {
				return &exitError{code: 2, msg: "eval: --data DIR is required (a folder of HR images or a DIV2K layout)"}
			}
			tile, overlap, err := tf.options(cmd)
			if err != nil {
				return err
			}
			if cropBorder < 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("eval: --crop-border %d must be 0 or more (0: paper tables, 4: most SR papers)", cropBorder)}
			}
			layout, err := dataset.Discover(data)
			if err != nil {
				return err
			}
			for _, p := range layout.Problems {
				a.log.Warn("dataset problem", "problem", p.String())
			}
			images := layout.Valid()
			if len(images) == 0 {
				images = layout.Images
			}
			if len(images) == 0 {
				return fmt.Errorf("eval: no PNG or JPEG images found in %s", data)
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			eo := worker.EvalOptions{CropBorder: cropBorder, SaveDir: save, Log: a.log, Progress: a.stderr, MaxPixels: cfg.Data.MaxPixels}
			var up worker.Upscaler = worker.Bicubic{}
			if checkpoint != "" {
				if checkpoint, err = resolveCheckpointRef(cmd.Context(), cfg, checkpoint, a.log); err != nil {
					return err
				}
				sp := &evalSteps{a: a, maxPixels: cfg.Data.MaxPixels}
				// model.backend is the machine's choice (config/env), not the checkpoint's.
				sampler, err := worker.SamplerFromConfig(cfg, cfg.Diffusion.Timesteps)
				if err != nil {
					return err
				}
				s, err := worker.LoadSR(checkpoint, worker.SROptions{Tile: tile, Overlap: overlap, Seed: seed, Log: a.log,
					Backend: cfg.Model.Backend, OnStep: sp.step, Sampler: sampler})
				if err != nil {
					return err
				}
				defer s.Close()
				defer sp.done()
				sp.s = s
				eo.OnImage = sp.image
				up = s
			}
			res, err := worker.Evaluate(cmd.Context(), images, up, eo)
			if err != nil {
				return err
			}
			if save != "" && csvPath == "" {
				csvPath = filepath.Join(save, "metrics.csv")
			}
			if csvPath != "" {
				f, err := os.Create(csvPath)
				if err != nil {
					return fmt.Errorf("eval: create %s: %w", csvPath, err)
				}
				if err := res.WriteCSV(f); err != nil {
					f.Close()
					return fmt.Errorf("eval: write %s: %w", csvPath, err)
				}
				if err := f.Close(); err != nil {
					return fmt.Errorf("eval: write %s: %w", csvPath, err)
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := json.NewEncoder(out).Encode(struct {
					Images int     `json:"images"`
					PSNRY  float64 `json:"psnr_y"`
					SSIMY  float64 `json:"ssim_y"`
					Failed int     `json:"failed,omitempty"`
				}{len(res.Images), res.PSNRY, res.SSIMY, len(res.Failed)}); err != nil {
					return err
				}
				return evalFailures(res)
			}
			if csvPath == "" {
				if err := res.WriteCSV(out); err != nil {
					return err
				}
			}
			method := "bicubic"
			if checkpoint != "" {
				method = checkpoint
			}
			if _, err := fmt.Fprintf(out, "%s (crop border %d, %s)\n", res.Summary(), cropBorder, method); err != nil {
				return err
			}
			return evalFailures(res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&checkpoint, "checkpoint", "", "checkpoint folder, run directory (latest checkpoint), model.safetensors, or a registry reference nats://HOST:PORT/JOB@best")
	f.StringVar(&baseline, "baseline", "", "evaluate a baseline instead of a checkpoint: bicubic")
	f.StringVar(&data, "data", "", "folder of HR images (plain, or a DIV2K layout with optional LR folders)")
	f.IntVar(&cropBorder, "crop-border", 0, "pixels removed from each side before the metrics (0: paper tables; 4: most SR papers)")
	f.BoolVar(&asJSON, "json", false, `print only {"images": N, "psnr_y": ..., "ssim_y": ...} on stdout`)
	f.StringVar(&save, "save", "", "folder to save SR images (and metrics.csv) into")
	f.StringVar(&csvPath, "csv", "", "write the per-image CSV here (default: stdout, or SAVE/metrics.csv with --save)")
	tf.register(cmd)
	f.Int64Var(&seed, "seed", 0, "sampling seed for --checkpoint")
	return cmd
}

// evalFailures is the command's error when images failed: every one named, exit 1.
func evalFailures(res *worker.EvalResult) error {
	if len(res.Failed) == 0 {
		return nil
	}
	lines := make([]string, len(res.Failed))
	for i, f := range res.Failed {
		lines[i] = "  " + f.Err.Error()
	}
	return &exitError{code: 1, msg: fmt.Sprintf("eval: %d of %d images failed and are left out of the means (the others are in the results):\n%s",
		len(res.Failed), len(res.Failed)+len(res.Images), strings.Join(lines, "\n"))}
}

// evalSteps reports diffusion sampling progress within each image (per sampler step).
type evalSteps struct {
	a         *app
	s         *worker.SR
	bar       *progress.Bar
	maxPixels int64
}

func (e *evalSteps) image(im dataset.Image) {
	e.done()
	if e.s.Steps == 0 {
		return // RRDB only: one pass per tile, the per-image bar is enough
	}
	var total int64
	if w, h, err := dataset.ImageSizeMax(im.HRPath, e.maxPixels); err == nil {
		total = int64(worker.TileCount((w-w%8)/4, (h-h%8)/4, e.s.TileOptions()) * e.s.Steps)
	}
	e.bar = progress.New(progress.Options{Label: "sr " + im.ID, Unit: "steps", Total: total, Out: e.a.stderr, Log: e.a.log})
}

func (e *evalSteps) done() {
	if e.bar != nil {
		e.bar.Done()
		e.bar = nil
	}
}

func (e *evalSteps) step() {
	if e.bar != nil {
		e.bar.Add(1)
	}
}
