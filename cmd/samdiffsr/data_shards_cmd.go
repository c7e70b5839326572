package main

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/progress"
	"github.com/samdiffsr/samdiffsr/worker"
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

func newDataPushCmd(a *app) *cobra.Command {
	var nf clusterFlags
	var dir string
	var po worker.PushOptions
	cmd := &cobra.Command{
		Use:   "push --packed DIR --nats URL [--job J] [--replace]",
		Short: "Upload a packed dataset to the job and register its manifest with the coordinator",
		Long: `push uploads the shards of a packed dataset (` + "`samdiffsr data pack --out`" + `) to the job's
data bucket, skipping every shard already stored with the same SHA-256, then its
manifest, and only then registers the manifest with the job's coordinator through
raft. Train workers with data.packed: nats take the manifest's digest from the
coordinator and verify the manifest and every shard against it. A job trains on one
dataset: registering another needs --replace. With --verify it reads back the
shards the store already holds and sends again any that fail their digest (what a
worker reports as damaged in the store).`,
		Example: `  samdiffsr data push --packed /data/DF2K-packed --nats nats://10.0.0.1:4222 --job df2k`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return &exitError{code: 2, msg: "data push: --packed DIR is required"}
			}
			nc, cfg, err := dataConn(cmd, a, &nf, "samdiffsr data push")
			if err != nil {
				return err
			}
			defer nc.Close()
			start := time.Now()
			m, st, err := worker.PushPacked(cmd.Context(), nc, cfg.Cluster.NATS.Job, dir, po)
			if err != nil {
				return err
			}
			el := time.Since(start).Seconds()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "pushed %s to job %s: %d shards sent (%.1f MB, %.1f MB/s), %d already there",
				dir, cfg.Cluster.NATS.Job, st.Sent, float64(st.Bytes)/1e6, float64(st.Bytes)/1e6/max(el, 1e-9), st.Skipped)
			if po.Verify {
				fmt.Fprintf(out, " (read back and verified), %d damaged in the store and sent again", st.Repaired)
			}
			fmt.Fprintln(out)
			if st.Outcome == "duplicate" {
				fmt.Fprintf(out, "manifest %s was already the job's dataset (registration %d)\n", m.Digest(), st.Seq)
			} else {
				fmt.Fprintf(out, "manifest %s registered with the coordinator (registration %d)\n", m.Digest(), st.Seq)
			}
			return nil
		},
	}
	nf.add(cmd)
	cmd.Flags().StringVar(&dir, "packed", "", "packed dataset folder (manifest.json + shards/)")
	cmd.Flags().BoolVar(&po.Replace, "replace", false, "replace the dataset the job has registered")
	cmd.Flags().BoolVar(&po.Verify, "verify", false, "read back the shards already in the store and send again the ones that fail their digest")
	return cmd
}

func newDataPullCmd(a *app) *cobra.Command {
	var nf clusterFlags
	var dir string
	cmd := &cobra.Command{
		Use:     "pull --nats URL [--job J] --out DIR",
		Short:   "Download the job's registered packed dataset to a folder (every shard verified)",
		Example: `  samdiffsr data pull --nats nats://10.0.0.1:4222 --job df2k --out /data/DF2K-packed`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return &exitError{code: 2, msg: "data pull: --out DIR is required"}
			}
			nc, cfg, err := dataConn(cmd, a, &nf, "samdiffsr data pull")
			if err != nil {
				return err
			}
			defer nc.Close()
			m, n, err := worker.PullPacked(cmd.Context(), nc, cfg.Cluster.NATS.Job, dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pulled job %s's dataset to %s: %d shards, %.1f MB fetched; manifest %s\n",
				cfg.Cluster.NATS.Job, dir, len(m.Shards), float64(n)/1e6, m.Digest())
			return nil
		},
	}
	nf.add(cmd)
	cmd.Flags().StringVar(&dir, "out", "", "folder to write the packed dataset to")
	return cmd
}

// dataConn connects to the cluster the flags and config name.
func dataConn(cmd *cobra.Command, a *app, nf *clusterFlags, name string) (*nats.Conn, configs.Config, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, cfg, err
	}
	nf.apply(&cfg.Cluster.NATS)
	nc, err := connectCluster(cmd.Context(), cfg.Cluster.NATS, name)
	if err != nil {
		return nil, cfg, err
	}
	return nc, cfg, nil
}
