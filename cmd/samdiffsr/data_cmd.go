package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/progress"
)

func newDataCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Check, downscale, synthesise and pack training images",
		Example: `  samdiffsr data check --root /data/DF2K
  samdiffsr data synth --out demo/data --n 24 --val 4 --size 128x128
  samdiffsr data pack --config configs/sam_diffsr_x4.yaml`,
	}
	cmd.AddCommand(newDataCheckCmd(a), newDataDownscaleCmd(), newDataSynthCmd(a), newDataPackCmd(a), newDataPushCmd(a), newDataPullCmd(a))
	return cmd
}

func newDataCheckCmd(a *app) *cobra.Command {
	var root string
	var headers bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Find the images under a root and report every problem (exit 1 if any)",
		Long: `check finds DIV2K_train_HR (+ DIV2K_train_LR_bicubic/X4), Flickr2K/Flickr2K_HR or
Flickr2K_HR (+ Flickr2K_LR_bicubic/X4), DIV2K_valid_HR (+ DIV2K_valid_LR_bicubic/X4), or
else a plain folder of PNG/JPEG images, prints how many images each set holds and whether
their LR is present or will be generated, then decodes every image and lists each problem
by file: unreadable or corrupt files, LR images whose size is not the HR size (cropped to
a multiple of 4) divided by 4, missing or orphan pairs. The exit status is 1 when a
problem is found; every image is still checked.`,
		Example: `  samdiffsr data check --root /data/DF2K
  samdiffsr data check --root demo/data/train --headers-only
  samdiffsr data check --config configs/sam_diffsr_x4.yaml   # uses data.root`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if root == "" {
				root = cfg.Data.Root
			}
			if root == "" {
				return &exitError{code: 2, msg: "data check: give --root DIR (or a --config with data.root)"}
			}
			out := cmd.OutOrStdout()
			l, err := dataset.Discover(root)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "root %s\n", l.Root)
			for _, s := range l.Sets {
				lr := "LR generated (no LR folder)"
				if s.LRDir != "" {
					lr = fmt.Sprintf("LR present for %d, generated for %d (%s)", s.WithLR, s.Images-s.WithLR, s.LRDir)
				}
				kind := "train"
				if s.Valid {
					kind = "valid"
				}
				fmt.Fprintf(out, "%-12s %-5s %5d images  %s  %s\n", s.Name, kind, s.Images, s.HRDir, lr)
			}
			bar := progress.New(progress.Options{Label: "check", Unit: "images", Total: int64(len(l.Images)), Out: cmd.ErrOrStderr(), Log: a.log})
			probs, err := dataset.Check(cmd.Context(), l, dataset.CheckOptions{HeadersOnly: headers, MaxPixels: cfg.Data.MaxPixels, OnImage: func(string) { bar.Add(1) }})
			bar.Done()
			if err != nil {
				return err
			}
			probs = append(append([]dataset.Problem(nil), l.Problems...), probs...)
			fmt.Fprintf(out, "%d images, %d train, %d valid; %d problems\n", len(l.Images), len(l.Train()), len(l.Valid()), len(probs))
			for _, p := range probs {
				fmt.Fprintf(out, "problem: %s\n", p)
			}
			if len(probs) > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("data check: %d problems under %s", len(probs), root)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "data folder (DIV2K/Flickr2K layout or plain folder); default data.root of --config")
	cmd.Flags().BoolVar(&headers, "headers-only", false, "read only image headers (fast; misses files truncated after the header)")
	return cmd
}

func newDataDownscaleCmd() *cobra.Command {
	var in, outPath string
	var scale int
	cmd := &cobra.Command{
		Use:   "downscale",
		Short: "Make the LR of an HR image with the MATLAB-compatible bicubic (HR cropped to a multiple of the scale)",
		Example: `  samdiffsr data downscale --in 0801.png --out 0801x4.png
  samdiffsr data downscale --in photo.jpg --out photo_x2.png --scale 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if in == "" || outPath == "" {
				return &exitError{code: 2, msg: "data downscale: --in and --out are required"}
			}
			if scale < 1 {
				return &exitError{code: 2, msg: fmt.Sprintf("data downscale: --scale %d must be >= 1", scale)}
			}
			hr, err := dataset.LoadRGB(in)
			if err != nil {
				return err
			}
			c := hr.CropMultiple(scale)
			if c.W == 0 || c.H == 0 {
				return fmt.Errorf("data downscale: %s is %dx%d, smaller than the scale %d", in, hr.W, hr.H, scale)
			}
			lr, err := dataset.Imresize(c, 1/float64(scale))
			if err != nil {
				return err
			}
			if err := dataset.SavePNG(outPath, lr); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%dx%d) -> %s (%dx%d)\n", in, hr.W, hr.H, outPath, lr.W, lr.H)
			return nil
		},
	}
	cmd.Flags().StringVar(&in, "in", "", "HR image (PNG or JPEG)")
	cmd.Flags().StringVar(&outPath, "out", "", "LR image to write (PNG)")
	cmd.Flags().IntVar(&scale, "scale", 4, "downscaling factor")
	return cmd
}

// parseSize parses "WxH".
func parseSize(s string) (int, int, error) {
	ws, hs, ok := strings.Cut(strings.ToLower(s), "x")
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if !ok || err1 != nil || err2 != nil || w < 8 || h < 8 {
		return 0, 0, fmt.Errorf("--size %q: want WIDTHxHEIGHT, each at least 8, e.g. 512x512", s)
	}
	return w, h, nil
}

func newDataSynthCmd(a *app) *cobra.Command {
	var outDir, size string
	var n, val int
	var seed int64
	var withLR bool
	cmd := &cobra.Command{
		Use:   "synth",
		Short: "Write deterministic synthetic HR images (regions, gradients, edges, textures)",
		Long: `synth writes OUT/train/0001.png … (a plain folder of HR PNGs, usable as data.root) and,
with --val N, OUT/val/0001.png … (usable as data.val_root). The same --seed gives the
same bytes. With --lr, each image's x4 LR is written to <folder>/LR_bicubic/X4/.
Without --out, the config's data.synthetic block says what to write (n, width, height,
dir; data.val_images validation images; the config's seed); flags override it.`,
		Example: `  samdiffsr data synth --config configs/quickstart.yaml
  samdiffsr data synth --out demo/data --n 24 --val 4 --size 128x128
  samdiffsr data synth --out /tmp/synth --n 100 --size 512x512 --seed 7 --lr`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o := dataset.SynthOptions{N: n, Val: val, Seed: seed, WithLR: withLR}
			fl := cmd.Flags()
			if outDir == "" {
				cfg, err := a.loadConfig()
				if err != nil {
					return err
				}
				dir, co, ok := dataset.SynthConfig(cfg)
				if !ok {
					return &exitError{code: 2, msg: "data synth: give --out DIR, or a --config whose data.synthetic.n is above 0 (e.g. configs/quickstart.yaml)"}
				}
				outDir = dir
				o.N, o.Val, o.W, o.H, o.Seed = co.N, co.Val, co.W, co.H, co.Seed
				if fl.Changed("n") {
					o.N = n
				}
				if fl.Changed("val") {
					o.Val = val
				}
				if fl.Changed("seed") {
					o.Seed = seed
				}
			}
			if fl.Changed("size") || o.W == 0 {
				w, h, err := parseSize(size)
				if err != nil {
					return &exitError{code: 2, msg: "data synth: " + err.Error()}
				}
				o.W, o.H = w, h
			}
			if o.N <= 0 || o.Val < 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("data synth: --n %d must be > 0 and --val %d >= 0", o.N, o.Val)}
			}
			tr, vd, err := dataset.WriteSynth(cmd.Context(), outDir, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d training images (%dx%d) to %s\n", o.N, o.W, o.H, tr)
			if vd != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %d validation images to %s\n", o.Val, vd)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&outDir, "out", "", "output folder (train/ and val/ are made inside); default data.synthetic.dir of --config")
	cmd.Flags().IntVar(&n, "n", 8, "number of training images (default with --config: data.synthetic.n)")
	cmd.Flags().IntVar(&val, "val", 0, "number of validation images (default with --config: data.val_images)")
	cmd.Flags().StringVar(&size, "size", "512x512", "image size WIDTHxHEIGHT (default with --config: data.synthetic.width x height)")
	cmd.Flags().Int64Var(&seed, "seed", 1, "random seed, image i uses seed+i (default with --config: seed)")
	cmd.Flags().BoolVar(&withLR, "lr", false, "also write each image's x4 LR (MATLAB-compatible bicubic)")
	return cmd
}

func newDataPackCmd(a *app) *cobra.Command {
	var noMasks bool
	var so shardPackFlags
	cmd := &cobra.Command{
		Use:   "pack",
		Short: "Pack the training images into shards (--out), or decode them into the local tile cache",
		Long: shardPackHelp + `

Without --out, pack decodes every training image under data.root, makes its LR when there is no
official one, cuts it into data.tile_size tiles and writes one checksummed tile file per image
to data.cache_dir (default <data.root>/.samdiffsr-cache). Up-to-date tile files are kept (they
are keyed by the image files' sizes and modification times and the tiling), so running it
again only packs new or changed images; damaged tile files are rebuilt. When masks.dir is set,
each tile's structural mask E is packed too (every image then needs a label map; use
--no-masks to pack images only). Images that cannot be packed are listed and left out;
the exit status is then 1.`,
		Example: `  samdiffsr data pack --root /data/DF2K --out /data/DF2K-packed --masks /data/DF2K-masks
  samdiffsr data pack --config configs/sam_diffsr_x4.yaml
  samdiffsr data pack --config configs/quickstart.yaml --no-masks`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if so.out != "" {
				return runPackShards(cmd, a, cfg, so)
			}
			bar := progress.New(progress.Options{Label: "pack", Unit: "images", Out: cmd.ErrOrStderr(), Log: a.log})
			withMasks := cfg.Masks.Dir != "" && !noMasks
			c, st, probs, err := dataset.BuildCacheConfig(cmd.Context(), cfg, withMasks, dataset.CacheOptions{
				Log:     a.log,
				OnImage: func(string, bool) { bar.Add(1) },
			})
			bar.Done()
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			perImage := ""
			if st.Rebuilt > 0 {
				perImage = fmt.Sprintf(", %.3f s per image", st.DecodeTime.Seconds()/float64(st.Rebuilt))
			}
			fmt.Fprintf(out, "cache %s: %d images, %d tiles, %d packed now%s; masks packed: %v\n",
				c.Dir, st.Images, st.Tiles, st.Rebuilt, perImage, c.HasE)
			for _, p := range probs {
				fmt.Fprintf(out, "problem: %s\n", p)
			}
			if len(probs) > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("data pack: %d images left out", len(probs))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&noMasks, "no-masks", false, "pack images only, even when masks.dir is set")
	so.register(cmd)
	return cmd
}
