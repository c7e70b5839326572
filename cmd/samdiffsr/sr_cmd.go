package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/progress"
	"github.com/samdiffsr/samdiffsr/model"
	"github.com/samdiffsr/samdiffsr/worker"
)

func newSRCmd(a *app) *cobra.Command {
	var (
		checkpoint, in, out string
		profile             int
		seed                int64
		tf                  tileFlags
	)
	cmd := &cobra.Command{
		Use:   "sr",
		Short: "Super-resolve LR images x4 with a trained checkpoint (any size, bounded memory)",
		Long: `sr super-resolves x4 with the diffusion sampler (100 U-Net steps per tile, the RRDB run
once per tile), or with the RRDB head alone when the checkpoint is from the rrdb stage.
Images of any size are cut into overlapping LR tiles (--tile, --overlap) whose outputs
are blended, so memory depends on the tile size, not the image size.
--in and --out are both files or both folders (every PNG/JPEG of the folder); outputs
are PNG. Every image is done even when some fail; the failures are listed at the end
and the exit status is then 1. LR images must be at least 4x4 pixels.
--profile-steps K stops after K denoising steps of the first tile and prints the time
per step and the peak memory, writing nothing.`,
		Example: `  samdiffsr sr --checkpoint demo/run --in lr.png --out sr.png
  samdiffsr sr --checkpoint demo/run/diffusion/checkpoints/step_000000400 --in demo/lr --out demo/sr --tile 96
  samdiffsr sr --checkpoint demo/run --in big_lr.png --out /dev/null --profile-steps 3
  samdiffsr sr --checkpoint nats://10.0.0.1:4222/samdiffsr@best --in lr/ --out sr/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if checkpoint == "" || in == "" || (out == "" && profile == 0) {
				return &exitError{code: 2, msg: "sr: --checkpoint, --in and --out are required"}
			}
			if profile < 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("sr: --profile-steps %d: must be 0 (off) or more", profile)}
			}
			tile, overlap, err := tf.options(cmd)
			if err != nil {
				return err
			}
			pairs, err := srPairs(in, out)
			if err != nil {
				return err
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			// model.backend is the machine's choice (config/env), not the checkpoint's.
			r := &srRun{a: a, profile: profile, maxPixels: cfg.Data.MaxPixels}
			sampler, err := worker.SamplerFromConfig(cfg, cfg.Diffusion.Timesteps)
			if err != nil {
				return err
			}
			opt := worker.SROptions{Tile: tile, Overlap: overlap, Seed: seed, Log: a.log, Backend: cfg.Model.Backend,
				OnStep: r.onStep, OnTile: r.onTile, Sampler: sampler}
			ctx := cmd.Context()
			if profile > 0 {
				ctx, r.cancel = context.WithCancel(ctx)
				defer r.cancel()
			}
			if checkpoint, err = resolveCheckpointRef(ctx, cfg, checkpoint, a.log); err != nil {
				return err
			}
			s, err := worker.LoadSR(checkpoint, opt)
			if err != nil {
				return err
			}
			defer s.Close()
			r.s = s
			a.log.Info("compute backend", "blas", model.BLASName())
			if adv := model.BLASAdvice(); adv != "" {
				a.log.Warn(adv)
			}
			w := cmd.OutOrStdout()
			var failed []string
			for _, p := range pairs {
				done, err := r.one(ctx, w, p)
				if done || errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
					return err
				}
				if err != nil {
					a.log.Error("image failed; going on with the next", "image", p[0], "err", err)
					msg := err.Error()
					if !strings.Contains(msg, p[0]) {
						msg = p[0] + ": " + msg
					}
					failed = append(failed, "  "+msg)
				}
			}
			if rss := peakRSS(); rss != "" {
				fmt.Fprintf(w, "peak RSS %s\n", rss)
			}
			if len(failed) > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("sr: %d of %d images failed (the others were written):\n%s",
					len(failed), len(pairs), strings.Join(failed, "\n"))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&checkpoint, "checkpoint", "", "checkpoint folder, run directory (latest checkpoint), model.safetensors, or a registry reference nats://HOST:PORT/JOB@best (latest, step=N, an alias)")
	f.StringVar(&in, "in", "", "LR image or folder of LR images")
	f.StringVar(&out, "out", "", "SR image, .png (with a file --in), or folder (with a folder --in)")
	tf.register(cmd)
	f.Int64Var(&seed, "seed", 0, "sampling seed")
	f.IntVar(&profile, "profile-steps", 0, "stop after this many denoising steps and print seconds per step and peak RSS")
	return cmd
}

// srRun is the state of one sr command across its images: progress and profiling.
type srRun struct {
	a         *app
	s         *worker.SR
	bar       *progress.Bar
	stepTimes []time.Duration
	last      time.Time
	profile   int
	cancel    context.CancelFunc
	maxPixels int64
}

func (r *srRun) onStep() {
	now := time.Now()
	r.stepTimes = append(r.stepTimes, now.Sub(r.last))
	r.last = now
	if r.bar != nil {
		r.bar.Add(1)
	}
	if r.profile > 0 && len(r.stepTimes) >= r.profile {
		r.cancel()
	}
}

func (r *srRun) onTile(done, total int) {
	if r.bar != nil && r.s != nil && r.s.RRDBOnly() {
		r.bar.Add(1)
	}
}

// one super-resolves the image p[0] into p[1]. stop is true when the command is
// over (profiling finished); err is this image's failure otherwise.
func (r *srRun) one(ctx context.Context, w io.Writer, p [2]string) (stop bool, err error) {
	lr, err := dataset.LoadRGBMax(p[0], r.maxPixels)
	if err != nil {
		return false, err
	}
	if err := dataset.CheckLRSize(p[0], lr.W, lr.H); err != nil {
		return false, err
	}
	to := r.s.TileOptions()
	tiles := worker.TileCount(lr.W, lr.H, to)
	units := int64(tiles * max(r.s.Steps, 1))
	unit := "steps"
	if r.s.RRDBOnly() {
		unit = "tiles"
	}
	r.bar = progress.New(progress.Options{Label: "sr " + filepath.Base(p[0]), Unit: unit, Total: units, Out: r.a.stderr, Log: r.a.log})
	start := time.Now()
	r.last = start
	sr, err := r.s.Upscale(ctx, lr)
	r.bar.Done()
	if r.profile > 0 && errors.Is(err, context.Canceled) {
		return true, printProfile(w, lr, tiles, to.Tile, r.stepTimes)
	}
	if err != nil {
		return false, err
	}
	if err := dataset.SavePNG(p[1], sr); err != nil {
		return false, err
	}
	fmt.Fprintf(w, "%s (%dx%d) -> %s (%dx%d): %d tiles, %.1f s\n", p[0], lr.W, lr.H, p[1], sr.W, sr.H, tiles, time.Since(start).Seconds())
	return false, nil
}

func printProfile(w interface{ Write([]byte) (int, error) }, lr *dataset.RGB, tiles, tile int, ts []time.Duration) error {
	if len(ts) == 0 {
		return fmt.Errorf("sr: profiling stopped before the first step")
	}
	fmt.Fprintf(w, "profile: LR %dx%d, %d tiles of %d LR px; %d denoising steps of the first tile\n", lr.W, lr.H, tiles, tile, len(ts))
	fmt.Fprintf(w, "  first step (with LR prep and the RRDB): %.3f s\n", ts[0].Seconds())
	if len(ts) > 1 {
		var sum time.Duration
		for _, d := range ts[1:] {
			sum += d
		}
		per := sum.Seconds() / float64(len(ts)-1)
		fmt.Fprintf(w, "  later steps: %.3f s/step; estimated full run %d tiles x 100 steps: %.0f s\n", per, tiles, per*100*float64(tiles))
	}
	if rss := peakRSS(); rss != "" {
		fmt.Fprintf(w, "  peak RSS %s\n", rss)
	}
	return nil
}

// peakRSS reads the process's peak resident set size (Linux VmHWM), or "".
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					return fmt.Sprintf("%.1f MiB", kb/1024)
				}
			}
		}
	}
	return ""
}

// srPairs lists (input, output) paths: one file, or every image of a folder.
func srPairs(in, out string) ([][2]string, error) {
	st, err := os.Stat(in)
	if err != nil {
		return nil, fmt.Errorf("sr: --in %s: %w", in, err)
	}
	if !st.IsDir() {
		if ext := strings.ToLower(filepath.Ext(out)); ext != "" && ext != ".png" {
			return nil, &exitError{code: 2, msg: fmt.Sprintf("sr: --out %s: sr writes PNG images; name the output .png", out)}
		}
		return [][2]string{{in, out}}, nil
	}
	if ost, err := os.Stat(out); err == nil && !ost.IsDir() {
		return nil, &exitError{code: 2, msg: fmt.Sprintf("sr: --in %s is a folder, so --out must be a folder, but %s is a file", in, out)}
	}
	ents, err := os.ReadDir(in)
	if err != nil {
		return nil, fmt.Errorf("sr: list %s: %w", in, err)
	}
	var pairs [][2]string
	for _, e := range ents {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".png" && ext != ".jpg" && ext != ".jpeg") {
			continue
		}
		name := strings.TrimSuffix(e.Name(), filepath.Ext(e.Name())) + ".png"
		pairs = append(pairs, [2]string{filepath.Join(in, e.Name()), filepath.Join(out, name)})
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("sr: no PNG or JPEG images in %s", in)
	}
	return pairs, nil
}
