package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/worker"
)

// newMasksPullCmd is `samdiffsr masks pull`: the farm's label maps to a folder.
func newMasksPullCmd(a *app) *cobra.Command {
	var (
		nf  clusterFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "pull",
		Short: "Export the mask farm's label maps to a folder (the layout `samdiffsr masks` writes)",
		Long: `pull reads the ledger of the job's coordinator and writes the label map of every done
image to --out as <ID>.png (16-bit label map) and <ID>.json (sidecar), checking each
against the digest the coordinator committed. Files already there with the right
digest are kept, so pulling again only fetches what is new.`,
		Example: `  samdiffsr masks pull --nats nats://127.0.0.1:4222 --out data/masks`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			nf.apply(&cfg.Cluster.NATS)
			if out == "" {
				out = cfg.Masks.Dir
			}
			if out == "" {
				return &exitError{code: 2, msg: "masks pull: --out DIR is required (or set masks.dir)"}
			}
			nc, err := connectCluster(cmd.Context(), cfg.Cluster.NATS, "samdiffsr masks pull")
			if err != nil {
				return err
			}
			defer nc.Close()
			written, kept, err := worker.PullMasks(cmd.Context(), nc, cfg.Cluster.NATS.Job, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pulled %d label maps to %s (%d already there)\n", written, out, kept)
			return nil
		},
	}
	nf.add(cmd)
	cmd.Flags().StringVar(&out, "out", "", "output folder (default masks.dir)")
	return cmd
}

// newCoordinatorSubmitCmd is `samdiffsr coordinator submit`: hand a dataset's images to
// the coordinator as mask tasks.
func newCoordinatorSubmitCmd(a *app) *cobra.Command {
	var (
		nf   clusterFlags
		data string
	)
	cmd := &cobra.Command{
		Use:   "submit",
		Short: "Submit the job: the config hash and one mask task per image of --data",
		Long: `submit discovers the images of --data (a DIV2K/Flickr2K layout or a plain folder),
hashes each (SHA-256) and sends the manifest to the coordinator's leader, which queues a
mask task for every image it has not seen. Submitting again is safe: known images are
kept as they are. Workers read the images at the paths submitted.`,
		Example: `  samdiffsr coordinator submit --nats nats://127.0.0.1:4222 --data /shared/DF2K --config configs/sam_diffsr_x4.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			nf.apply(&cfg.Cluster.NATS)
			if data == "" {
				data = cfg.Data.Root
			}
			if data == "" {
				return &exitError{code: 2, msg: "coordinator submit: --data DIR is required (or set data.root)"}
			}
			layout, err := dataset.Discover(data)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			entries, err := worker.Manifest(ctx, layout.Images, runtime.NumCPU())
			if err != nil {
				return err
			}
			nc, err := connectCluster(ctx, cfg.Cluster.NATS, "samdiffsr coordinator submit")
			if err != nil {
				return err
			}
			defer nc.Close()
			added, err := worker.SubmitMasks(ctx, nc, cfg.Cluster.NATS.Job, cfg.Hash(), entries)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "submitted %d images (%d new) to job %s\n", len(entries), added, cfg.Cluster.NATS.Job)
			return nil
		},
	}
	nf.add(cmd)
	cmd.Flags().StringVar(&data, "data", "", "dataset folder (default data.root)")
	return cmd
}
