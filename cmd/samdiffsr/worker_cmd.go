package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/worker"
)

func newWorkerCmd(a *app) *cobra.Command {
	var (
		nf          clusterFlags
		id, metrics string
		roles       []string
		slots       int
		out, addr   string
		stages      []string
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker: mask tasks from the job's work queue, and/or a training rank",
		Long: `worker serves the roles it is given (--roles mask,train).

mask: takes mask tasks from the job's JetStream work queue, segments each image with
masks.segmenter, puts the label map in the job's Object Store bucket under the image's
SHA-256 and reports to the coordinator, which commits each task once. Images are read
from the paths in the manifest, so workers need the dataset at the same path.

train: becomes a rank of the training generations the coordinator forms. The collective
listens on cluster.train.ring_addr (--ring-addr; 127.0.0.1:0 by default — set a private
address for multi-node); gradients go rank to rank over TCP, NATS carries control only.
Each rank reads data.root; rank 0 writes the run folder (--out, default train.out).
A rank that dies ends its generation; the others continue from the step they reached.`,
		Example: `  samdiffsr worker --nats nats://127.0.0.1:4222 --roles mask
  samdiffsr worker --nats nats://10.0.0.5:4222 --roles mask --slots 4 --config cluster.yaml
  samdiffsr worker --nats nats://10.0.0.5:4222 --roles train --ring-addr 10.0.0.7:7600 --config cluster.yaml --out runs/x4`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			nf.apply(&cfg.Cluster.NATS)
			if cmd.Flags().Changed("roles") {
				cfg.Cluster.Worker.Roles = roles
			}
			if cmd.Flags().Changed("metrics-addr") {
				cfg.Cluster.MetricsAddr = metrics
			}
			mask, train := slices.Contains(cfg.Cluster.Worker.Roles, "mask"), slices.Contains(cfg.Cluster.Worker.Roles, "train")
			if !mask && !train {
				return &exitError{code: 2, msg: fmt.Sprintf("worker: roles %v: give --roles mask, train or mask,train", cfg.Cluster.Worker.Roles)}
			}
			for _, s := range stages {
				if s != worker.StageRRDB && s != worker.StageDiffusion {
					return &exitError{code: 2, msg: fmt.Sprintf("worker: --stages %q: use rrdb, diffusion or rrdb,diffusion", s)}
				}
			}
			if id == "" {
				id = workerID()
			}
			var newProc func() (worker.FarmProcess, error)
			if mask { // the segmenter is checked before anything connects
				if newProc, err = farmProcesses(cfg, slots); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			nc, err := connectCluster(ctx, cfg.Cluster.NATS, "worker "+id)
			if err != nil {
				return err
			}
			defer nc.Close()
			reg := prometheus.NewRegistry()
			if err := serveMetrics(ctx, cfg.Cluster.MetricsAddr, reg, a.log); err != nil {
				return err
			}
			var (
				wg   sync.WaitGroup
				errs [2]error
			)
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			if mask {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[0] = worker.RunMaskFarm(rctx, worker.FarmOptions{Conn: nc, Job: cfg.Cluster.NATS.Job, ID: id, Roles: cfg.Cluster.Worker.Roles,
						Slots: slots, AckWait: cfg.Cluster.Worker.AckWait, Heartbeat: cfg.Cluster.Worker.Heartbeat, Log: a.log, Metrics: reg,
						NewProcess: newProc})
					if errs[0] != nil {
						cancel()
					}
				}()
			}
			if train {
				if out == "" {
					out = cfg.Train.Out
				}
				publish, err := worker.RegistryPublish(nc, cfg.Cluster.NATS.Job, id, cfg.Train)
				if err != nil {
					return err
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[1] = worker.RunTrainer(rctx, worker.ClusterTrainOptions{Config: cfg, Conn: nc, Job: cfg.Cluster.NATS.Job, ID: id,
						Run: out, Stages: stages, Addr: addr, Log: a.log, Metrics: reg, Progress: a.stderr, Publish: publish,
						EnsureMasks: func(ctx context.Context, images []dataset.Image, dir string) error {
							return worker.EnsureBuiltinMasks(ctx, images, dir, cfg.Masks, a.log)
						}})
					if !mask || errs[1] != nil {
						cancel() // a train-only worker is done when training is
					}
				}()
			}
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return errors.Join(errs[0], errs[1])
		},
	}
	nf.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&id, "id", "", "worker id in the coordinator's registry (default HOST-PID)")
	fl.StringSliceVar(&roles, "roles", nil, "roles to serve: mask, train (cluster.worker.roles)")
	fl.StringVar(&out, "out", "", "train role: the run folder rank 0 writes (default train.out)")
	fl.StringVar(&addr, "ring-addr", "", "train role: where the collective listens, HOST:PORT (cluster.train.ring_addr)")
	fl.StringSliceVar(&stages, "stages", nil, "train role: stages to train, in order (default rrdb,diffusion)")
	fl.IntVar(&slots, "slots", 1, "mask tasks run at once")
	fl.StringVar(&metrics, "metrics-addr", "", "serve Prometheus /metrics on HOST:PORT (cluster.metrics_addr)")
	return cmd
}
