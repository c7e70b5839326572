package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/progress"
)

const shardPackHelp = `With --out, pack writes a packed dataset: the training images found under --root (or
data.root: DIV2K/Flickr2K layouts or a plain folder) cut into data.tile_size tiles, each
tile's HR, its LR (the official x4 LR, or the MATLAB-compatible bicubic) and, with
--masks (default masks.dir), its uint16 label tiles and the image's region values, in
shards of about --shard-mb MiB (raw; predicted and zstd-compressed on disk), each with
an index and checksums, and OUT/manifest.json listing the shards with their sizes and
SHA-256 digests. It resumes: run it again after a kill and it keeps the finished
shards and ends with the same manifest. Bad images are listed and skipped (exit 1).
Push the result to a job with ` + "`samdiffsr data push`" + `.`

// shardPackFlags are data pack's flags for a packed dataset.
type shardPackFlags struct {
	root, out, masks string
	shardMB          int
	noMasks          bool
}

func (f *shardPackFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.root, "root", "", "with --out: the images to pack (default data.root)")
	cmd.Flags().StringVar(&f.out, "out", "", "write a packed dataset (shards + manifest.json) to this folder")
	cmd.Flags().StringVar(&f.masks, "masks", "", "with --out: label maps to pack (default masks.dir; --no-masks for none)")
	cmd.Flags().IntVar(&f.shardMB, "shard-mb", dataset.DefaultShardBytes>>20, "with --out: raw size of a shard in MiB")
}

// runPackShards is `data pack --out`.
func runPackShards(cmd *cobra.Command, a *app, cfg configs.Config, f shardPackFlags) error {
	root := f.root
	if root == "" {
		root = cfg.Data.Root
	}
	if root == "" {
		return &exitError{code: 2, msg: "data pack: give --root DIR (or a --config with data.root)"}
	}
	if f.shardMB <= 0 {
		return &exitError{code: 2, msg: fmt.Sprintf("data pack: --shard-mb %d must be > 0", f.shardMB)}
	}
	masks := f.masks
	if masks == "" && !cmd.Flags().Changed("no-masks") {
		masks = cfg.Masks.Dir
	}
	if nm, _ := cmd.Flags().GetBool("no-masks"); nm {
		masks = ""
	}
	l, err := dataset.Discover(root)
	if err != nil {
		return err
	}
	images := l.Train()
	bar := progress.New(progress.Options{Label: "pack", Unit: "images", Total: int64(len(images)), Out: cmd.ErrOrStderr(), Log: a.log})
	start := time.Now()
	m, st, err := dataset.PackShards(cmd.Context(), images, dataset.PackOptions{Out: f.out, TileSize: cfg.Data.TileSize, TileThreshold: cfg.Data.TileThreshold,
		MasksDir: masks, ShardBytes: int64(f.shardMB) << 20, Log: a.log, OnImage: func(string) { bar.Add(1) }})
	bar.Done()
	if err != nil {
		return err
	}
	el := time.Since(start).Seconds()
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "packed %s: %d images, %d tiles in %d shards (%d written now, %d images decoded in %.1f s: %.2f images/s); labels: %v\n",
		f.out, m.Images, m.Tiles, len(m.Shards), st.Built, st.Decoded, el, float64(st.Decoded)/max(el, 1e-9), m.Labels)
	fmt.Fprintf(out, "size: %.1f MB packed, %.1f MB raw, %.1f MB of source files (packed/source %.2f)\n",
		float64(m.Bytes)/1e6, float64(m.RawBytes)/1e6, float64(m.SourceBytes)/1e6, float64(m.Bytes)/max(float64(m.SourceBytes), 1))
	fmt.Fprintf(out, "manifest %s\n", m.Digest())
	probs := append(append([]dataset.Problem(nil), l.Problems...), m.Skipped...)
	for _, p := range probs {
		fmt.Fprintf(out, "problem: %s\n", p)
	}
	if len(m.Skipped) > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("data pack: %d images skipped", len(m.Skipped))}
	}
	return nil
}
