package main

import (
	"context"
	"errors"
	"fmt"
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
		checkpoint, in, out    string
		tile, overlap, profile int
		seed                   int64
	)
	cmd := &cobra.Command{
		Use:   "sr",
		Short: "Super-resolve LR images x4 with a trained checkpoint (any size, bounded memory)",
		Long: `sr super-resolves x4 with the diffusion sampler (100 U-Net steps per tile, the RRDB run
once per tile), or with the RRDB head alone when the checkpoint is from the rrdb stage.
Images of any size are cut into overlapping LR tiles (--tile, --overlap) whose outputs
are blended, so memory depends on the tile size, not the image size.
--in and --out are both files or both folders (every PNG/JPEG of the folder).
--profile-steps K stops after K denoising steps of the first tile and prints the time
per step and the peak memory, writing nothing.`,
		Example: `  samdiffsr sr --checkpoint demo/run --in lr.png --out sr.png
  samdiffsr sr --checkpoint runs/x4/diffusion/checkpoints/step_000400000 --in lr/ --out sr/ --tile 96
  samdiffsr sr --checkpoint ckpt/ --in big_lr.png --out /dev/null --profile-steps 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if checkpoint == "" || in == "" || (out == "" && profile == 0) {
				return &exitError{code: 2, msg: "sr: --checkpoint, --in and --out are required"}
			}
			pairs, err := srPairs(in, out)
			if err != nil {
				return err
			}
			var (
				bar       *progress.Bar
				stepTimes []time.Duration
				last      time.Time
				cancel    context.CancelFunc
				s         *worker.SR
			)
			ctx := cmd.Context()
			if profile > 0 {
				ctx, cancel = context.WithCancel(ctx)
				defer cancel()
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			// model.backend is the machine's choice (config/env), not the checkpoint's.
			opt := worker.SROptions{Tile: tile, Seed: seed, Log: a.log, Backend: cfg.Model.Backend}
			if cmd.Flags().Changed("overlap") {
				opt.Overlap = &overlap
			}
			opt.OnStep = func() {
				now := time.Now()
				stepTimes = append(stepTimes, now.Sub(last))
				last = now
				if bar != nil {
					bar.Add(1)
				}
				if profile > 0 && len(stepTimes) >= profile {
					cancel()
				}
			}
			opt.OnTile = func(done, total int) {
				if bar != nil && s != nil && s.RRDBOnly() {
					bar.Add(1)
				}
			}
			s, err = worker.LoadSR(checkpoint, opt)
			if err != nil {
				return err
			}
			defer s.Close()
			a.log.Info("compute backend", "blas", model.BLASName())
			if adv := model.BLASAdvice(); adv != "" {
				a.log.Warn(adv)
			}
			w := cmd.OutOrStdout()
			for _, p := range pairs {
				lr, err := dataset.LoadRGB(p[0])
				if err != nil {
					return err
				}
				to := s.TileOptions()
				tiles := worker.TileCount(lr.W, lr.H, to)
				units := int64(tiles * max(s.Steps, 1))
				unit := "steps"
				if s.RRDBOnly() {
					unit = "tiles"
				}
				bar = progress.New(progress.Options{Label: "sr " + filepath.Base(p[0]), Unit: unit, Total: units, Out: a.stderr, Log: a.log})
				start := time.Now()
				last = start
				sr, err := s.Upscale(ctx, lr)
				bar.Done()
				if profile > 0 && errors.Is(err, context.Canceled) && cmd.Context().Err() == nil {
					return printProfile(w, lr, tiles, to.Tile, stepTimes)
				}
				if err != nil {
					return err
				}
				if err := dataset.SavePNG(p[1], sr); err != nil {
					return err
				}
				fmt.Fprintf(w, "%s (%dx%d) -> %s (%dx%d): %d tiles, %.1f s\n", p[0], lr.W, lr.H, p[1], sr.W, sr.H, tiles, time.Since(start).Seconds())
			}
			if rss := peakRSS(); rss != "" {
				fmt.Fprintf(w, "peak RSS %s\n", rss)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&checkpoint, "checkpoint", "", "checkpoint folder, run directory (latest checkpoint) or model.safetensors")
	f.StringVar(&in, "in", "", "LR image or folder of LR images")
	f.StringVar(&out, "out", "", "SR image (with a file --in) or folder (with a folder --in)")
	f.IntVar(&tile, "tile", 64, "LR tile side in pixels; memory grows with it")
	f.IntVar(&overlap, "overlap", 8, "minimum LR overlap between neighbouring tiles (default max(tile/8, 4))")
	f.Int64Var(&seed, "seed", 0, "sampling seed")
	f.IntVar(&profile, "profile-steps", 0, "stop after this many denoising steps and print seconds per step and peak RSS")
	return cmd
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
		return [][2]string{{in, out}}, nil
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
