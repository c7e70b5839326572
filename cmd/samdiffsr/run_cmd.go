package main

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/coordinator"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/progress"
	"github.com/samdiffsr/samdiffsr/worker"
)

// runOptions are `samdiffsr run`'s inputs beyond the config.
type runOptions struct {
	// Data is the dataset folder (default data.root, or data.synthetic.dir).
	Data string
	// State holds the raft and JetStream data (default <train.out>/cluster).
	State string
	// Workers overrides cluster.worker.count when > 0.
	Workers int
	// MasksOut, when set, receives the label maps (`masks pull`) at the end.
	MasksOut string
	// Out is the run folder of the training phase (default train.out).
	Out string
	// MasksOnly stops after the mask phase.
	MasksOnly bool
}

func newRunCmd(a *app) *cobra.Command {
	var ro runOptions
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the whole job in one process: embedded NATS, a coordinator, local mask workers and training ranks",
		Long: `run starts everything in one process — an embedded NATS server and a single-voter
raft coordinator, both keeping their state under --state (default <train.out>/cluster;
cluster.nats.store_dir and cluster.coordinator.data_dir are for the coordinator
command), and --workers local workers (cluster.worker.count) — and runs the job through
the same code as a multi-node cluster:

  1. masks: the mask farm segments every training image (with a progress bar); images
     that cannot be segmented are reported, they do not stop the farm, and the exit
     status is then 1;
  2. RRDB pretraining, then 3. diffusion training, with --workers ranks that sum their
     gradients over the TCP ring all-reduce on loopback; rank 0 writes the run folder
     (--out: rrdb/ and diffusion/, each with metrics.jsonl, loss.png, validation grids
     and checkpoints) exactly as samdiffsr train does.

Stopping it (Ctrl-C) and running it again resumes: masks already done are not redone,
and training continues from the latest checkpoint of each stage.`,
		Example: `  samdiffsr run --config configs/quickstart.yaml --workers 2
  samdiffsr run --config configs/quickstart.yaml --data demo/data --out demo/run --workers 2
  samdiffsr run --config configs/quickstart.yaml --masks-only --masks-out demo/masks`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("workers") && ro.Workers < 1 {
				return &exitError{code: 2, msg: fmt.Sprintf("run: --workers %d: must be at least 1 (default cluster.worker.count)", ro.Workers)}
			}
			lc, err := startLocalCluster(cmd.Context(), a, cfg, &ro)
			if err != nil {
				return err
			}
			defer lc.Close()
			st, err := runMaskPhase(cmd.Context(), a, cfg, ro, lc)
			if err != nil {
				return err
			}
			if cmd.Context().Err() != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "stopped: %d/%d masks done; run again to resume\n", st.Masks.Done, st.Masks.Total)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "masks: %d done, %d failed of %d\n", st.Masks.Done, st.Masks.Failed, st.Masks.Total)
			for _, f := range st.Failures {
				fmt.Fprintf(cmd.OutOrStdout(), "  failed %s after %d attempts: %s\n", f.ID, f.Attempts, f.Reason)
			}
			if ro.MasksOnly {
				return maskFailures(st.Masks.Failed, st.Masks.Total)
			}
			if err := runTrainPhase(cmd.Context(), a, cfg, ro, lc); err != nil {
				return err
			}
			if cmd.Context().Err() != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "stopped; run again to resume from the latest checkpoints in %s\n", ro.Out)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "trained: %s and %s (%d ranks)\n", worker.StageDir(ro.Out, worker.StageRRDB), worker.StageDir(ro.Out, worker.StageDiffusion), ro.Workers)
			return maskFailures(st.Masks.Failed, st.Masks.Total)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&ro.Data, "data", "", "dataset folder (default data.root, else data.synthetic.dir)")
	fl.StringVar(&ro.State, "state", "", "folder for raft and JetStream state (default <train.out>/cluster)")
	fl.IntVar(&ro.Workers, "workers", 0, "local workers (default cluster.worker.count)")
	fl.StringVar(&ro.MasksOut, "masks-out", "", "write the label maps here when the farm is done (default masks.dir when set)")
	fl.StringVar(&ro.Out, "out", "", "run folder of the training phase (default train.out)")
	fl.BoolVar(&ro.MasksOnly, "masks-only", false, "stop after the mask phase")
	return cmd
}

// maskFailures is run's exit status for the mask phase: 1 when images failed (as for
// `samdiffsr masks`), naming how many were left out; nil otherwise.
func maskFailures(failed, total int) error {
	if failed == 0 {
		return nil
	}
	return &exitError{code: 1, msg: fmt.Sprintf("run: %d of %d images failed in the mask phase (listed above) and were left out; fix or remove them and run again (done work is kept)", failed, total)}
}

// localCluster is run's embedded cluster: NATS server, client and the coordinator.
type localCluster struct {
	srv    *server.Server
	nc     *nats.Conn
	node   *coordinator.Node
	layout *dataset.Layout
}

// Close stops the coordinator, the client and the server.
func (lc *localCluster) Close() {
	lc.node.Close()
	lc.nc.Close()
	lc.srv.Shutdown()
}

// startLocalCluster settles ro's defaults and starts the embedded server and a
// single-voter coordinator.
func startLocalCluster(ctx context.Context, a *app, cfg configs.Config, ro *runOptions) (*localCluster, error) {
	if ro.Data == "" {
		ro.Data = cfg.Data.Root
		if ro.Data == "" && cfg.Data.Synthetic.N > 0 {
			ro.Data = cfg.Data.Synthetic.Dir
		}
	}
	if ro.Data == "" {
		return nil, &exitError{code: 2, msg: "run: no dataset: set data.root (or --data DIR)"}
	}
	if ro.Out == "" {
		ro.Out = cfg.Train.Out
	}
	if ro.State == "" {
		ro.State = filepath.Join(cfg.Train.Out, "cluster")
	}
	if ro.Workers <= 0 {
		ro.Workers = max(cfg.Cluster.Worker.Count, 1)
	}
	if ro.MasksOut == "" {
		ro.MasksOut = cfg.Masks.Dir
	}
	if cfg.Cluster.Train.MinWorkers < ro.Workers {
		cfg.Cluster.Train.MinWorkers = ro.Workers // the first generation holds every local rank
	}
	layout, err := dataset.Discover(ro.Data)
	if err != nil {
		return nil, err
	}
	if len(layout.Images) == 0 {
		return nil, fmt.Errorf("run: no images under %s", ro.Data)
	}
	srv, err := natsutil.StartEmbedded(ctx, natsutil.EmbeddedOptions{NATS: cfg.Cluster.NATS, StoreDir: filepath.Join(ro.State, "nats")})
	if err != nil {
		return nil, err
	}
	nc, err := natsutil.Connect(ctx, cfg.Cluster.NATS, srv, "run coordinator")
	if err != nil {
		srv.Shutdown()
		return nil, err
	}
	reg := prometheus.NewRegistry()
	co := coordinatorOptions(cfg, nc, a.log, reg)
	co.DataDir, co.Bootstrap, co.Join = filepath.Join(ro.State, "raft"), true, nil
	co.ElectionTimeout = 100 * time.Millisecond // one voter, no network: elect at once
	co.RaftLogLevel = "error"
	node, err := coordinator.Start(ctx, co)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return nil, err
	}
	lc := &localCluster{srv: srv, nc: nc, node: node, layout: layout}
	if err := serveMetrics(ctx, cfg.Cluster.MetricsAddr, reg, a.log); err != nil {
		lc.Close()
		return nil, err
	}
	return lc, nil
}

// runMaskPhase runs the mask farm in-process until every image is done or failed (or
// ctx ends) and returns the final status.
func runMaskPhase(ctx context.Context, a *app, cfg configs.Config, ro runOptions, lc *localCluster) (natsutil.Status, error) {
	var st natsutil.Status
	srv, nc, node, layout := lc.srv, lc.nc, lc.node, lc.layout

	entries, err := worker.Manifest(ctx, layout.Images, runtime.NumCPU())
	if err != nil {
		return st, err
	}
	job := cfg.Cluster.NATS.Job
	sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = worker.SubmitMasks(sctx, nc, job, cfg.Hash(), entries)
	scancel()
	if err != nil {
		return st, err
	}

	var exp *worker.ExportFollower
	if ro.MasksOut != "" {
		x, err := worker.NewMaskExporter(ctx, nc, job, ro.MasksOut)
		if err != nil {
			return st, err
		}
		exp = worker.StartExportFollower(ctx, x, func() []natsutil.LedgerEntry { return doneEntries(node) }, 250*time.Millisecond)
	}

	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	// Two tasks per worker: one segments while the other waits on NATS and raft (lease,
	// upload, commit), so coordination hides behind computation. The CPUs are shared
	// between all slots, as `samdiffsr masks` shares them between its workers.
	const slots = 2
	newProc, err := farmProcesses(cfg, ro.Workers*slots)
	if err != nil {
		return st, err
	}
	var wg sync.WaitGroup
	werrs := make(chan error, ro.Workers)
	for i := range ro.Workers {
		wc, err := natsutil.Connect(ctx, cfg.Cluster.NATS, srv, fmt.Sprintf("run worker %d", i+1))
		if err != nil {
			return st, err
		}
		defer wc.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := worker.RunMaskFarm(wctx, worker.FarmOptions{Conn: wc, Job: job, ID: fmt.Sprintf("local-%d", i+1), Slots: slots,
				Roles: []string{"mask"}, AckWait: cfg.Cluster.Worker.AckWait, Heartbeat: cfg.Cluster.Worker.Heartbeat, Log: a.log,
				NewProcess: newProc})
			if err != nil {
				werrs <- err
				stopWorkers()
			}
		}()
	}

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var total, final, failed int
	counts := func() {
		node.View(func(s *coordinator.State) {
			total = len(s.Tasks)
			failed = s.Counts[coordinator.TaskFailed]
			final = s.Counts[coordinator.TaskDone] + failed
		})
	}
	// Images finished by an earlier run count from the start, not in this run's rate.
	counts()
	bar := progress.New(progress.Options{Label: "masks", Unit: "images", Total: int64(total), Out: a.stderr, Log: a.log})
	bar.Set(int64(final))
	for total == 0 || final < total {
		select {
		case <-ctx.Done():
			stopWorkers()
			wg.Wait()
			bar.Done()
			return node.Status(), nil
		case err := <-werrs:
			stopWorkers()
			wg.Wait()
			return node.Status(), fmt.Errorf("run: worker: %w", err)
		case <-tick.C:
		}
		counts()
		bar.Set(int64(final))
		if failed > 0 {
			bar.SetExtra(fmt.Sprintf("(%d failed)", failed))
		}
	}
	st = node.Status()
	bar.Done()
	stopWorkers()
	wg.Wait()
	if exp != nil {
		written, kept, err := exp.Finish(ctx)
		if err != nil {
			return st, fmt.Errorf("run: export label maps to %s: %w", ro.MasksOut, err)
		}
		a.log.Info("label maps exported", "out", ro.MasksOut, "written", written, "kept", kept)
	}
	return st, nil
}

// doneEntries lists the done tasks of the node's ledger.
func doneEntries(node *coordinator.Node) []natsutil.LedgerEntry {
	var out []natsutil.LedgerEntry
	node.View(func(s *coordinator.State) {
		for id, t := range s.Tasks {
			if t.State == coordinator.TaskDone {
				out = append(out, natsutil.LedgerEntry{ID: id, State: string(t.State), Key: t.ResultKey, Digest: t.Digest})
			}
		}
	})
	return out
}

// runTrainPhase trains every stage with ro.Workers local ranks, each with its own
// NATS connection and a collective endpoint on loopback TCP, through the
// coordinator's generations, as separate worker processes would.
func runTrainPhase(ctx context.Context, a *app, cfg configs.Config, ro runOptions, lc *localCluster) error {
	cfg.Data.Root = ro.Data
	if ro.MasksOut != "" {
		cfg.Masks.Dir = ro.MasksOut
	}
	var wg sync.WaitGroup
	errs := make([]error, ro.Workers)
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := range ro.Workers {
		wc, err := natsutil.Connect(ctx, cfg.Cluster.NATS, lc.srv, fmt.Sprintf("run rank %d", i+1))
		if err != nil {
			return err
		}
		defer wc.Close()
		id := fmt.Sprintf("local-train-%d", i+1)
		publish, err := worker.RegistryPublish(wc, cfg.Cluster.NATS.Job, id, cfg.Train)
		if err != nil {
			return err
		}
		o := worker.ClusterTrainOptions{Config: cfg, Conn: wc, Job: cfg.Cluster.NATS.Job, ID: id,
			Run: ro.Out, Log: a.log.With("rank_worker", i+1), Publish: publish,
			EnsureMasks: func(ctx context.Context, images []dataset.Image, dir string) error {
				return worker.EnsureBuiltinMasks(ctx, images, dir, cfg.Masks, a.log)
			}}
		if i == 0 {
			o.Progress = a.stderr
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = worker.RunTrainer(tctx, o); errs[i] != nil && tctx.Err() == nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("run: training rank %d: %w", i+1, err)
		}
	}
	return nil
}
