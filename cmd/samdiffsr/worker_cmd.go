package main

import (
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/worker"
)

func newWorkerCmd(a *app) *cobra.Command {
	var (
		nf          clusterFlags
		id, metrics string
		roles       []string
		slots       int
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker: take mask tasks from the job's NATS work queue until stopped",
		Long: `worker serves the roles it is given. With the mask role it takes mask tasks from the
job's JetStream work queue, segments each image with masks.segmenter, puts the label map
in the job's Object Store bucket under the image's SHA-256 and reports to the
coordinator, which commits each task once. Images are read from the paths in the
manifest, so workers need the dataset at the same path (a shared or copied folder).`,
		Example: `  samdiffsr worker --nats nats://127.0.0.1:4222 --roles mask
  samdiffsr worker --nats nats://10.0.0.5:4222 --roles mask --slots 4 --config cluster.yaml`,
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
			if !slices.Contains(cfg.Cluster.Worker.Roles, "mask") {
				return &exitError{code: 2, msg: fmt.Sprintf("worker: roles %v: only the mask role runs on the cluster so far (--roles mask)", cfg.Cluster.Worker.Roles)}
			}
			if id == "" {
				id = workerID()
			}
			newProc, err := farmProcesses(cfg, slots)
			if err != nil {
				return err
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
			return worker.RunMaskFarm(ctx, worker.FarmOptions{Conn: nc, Job: cfg.Cluster.NATS.Job, ID: id, Roles: cfg.Cluster.Worker.Roles,
				Slots: slots, AckWait: cfg.Cluster.Worker.AckWait, Heartbeat: cfg.Cluster.Worker.Heartbeat, Log: a.log, Metrics: reg,
				NewProcess: newProc})
		},
	}
	nf.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&id, "id", "", "worker id in the coordinator's registry (default HOST-PID)")
	fl.StringSliceVar(&roles, "roles", nil, "roles to serve: mask (cluster.worker.roles)")
	fl.IntVar(&slots, "slots", 1, "mask tasks run at once")
	fl.StringVar(&metrics, "metrics-addr", "", "serve Prometheus /metrics on HOST:PORT (cluster.metrics_addr)")
	return cmd
}
