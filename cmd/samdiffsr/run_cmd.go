package main

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"time"

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
}

func newRunCmd(a *app) *cobra.Command {
	var ro runOptions
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the job in one process: embedded NATS, a single-voter coordinator and local workers",
		Long: `run starts everything in one process — an embedded NATS server (JetStream under
--state), a single-voter raft coordinator and cluster.worker.count local workers — and
runs the mask phase through the same code as a multi-node farm, with a progress bar.
Stopping it (Ctrl-C) and running it again resumes: images already done are not redone.
Images that cannot be segmented are reported at the end; they do not stop the farm.`,
		Example: `  samdiffsr run --config configs/quickstart.yaml
  samdiffsr run --config configs/quickstart.yaml --data demo/data --masks-out demo/masks --workers 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			st, err := runMaskPhase(cmd.Context(), a, cfg, ro)
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
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&ro.Data, "data", "", "dataset folder (default data.root, else data.synthetic.dir)")
	fl.StringVar(&ro.State, "state", "", "folder for raft and JetStream state (default <train.out>/cluster)")
	fl.IntVar(&ro.Workers, "workers", 0, "local workers (default cluster.worker.count)")
	fl.StringVar(&ro.MasksOut, "masks-out", "", "write the label maps here when the farm is done (default masks.dir when set)")
	return cmd
}

// runMaskPhase runs the mask farm in-process until every image is done or failed (or
// ctx ends) and returns the final status.
func runMaskPhase(ctx context.Context, a *app, cfg configs.Config, ro runOptions) (natsutil.Status, error) {
	var st natsutil.Status
	if ro.Data == "" {
		ro.Data = cfg.Data.Root
		if ro.Data == "" && cfg.Data.Synthetic.N > 0 {
			ro.Data = cfg.Data.Synthetic.Dir
		}
	}
	if ro.Data == "" {
		return st, &exitError{code: 2, msg: "run: no dataset: set data.root (or --data DIR)"}
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
	layout, err := dataset.Discover(ro.Data)
	if err != nil {
		return st, err
	}
	if len(layout.Images) == 0 {
		return st, fmt.Errorf("run: no images under %s", ro.Data)
	}

	srv, err := natsutil.StartEmbedded(ctx, natsutil.EmbeddedOptions{NATS: cfg.Cluster.NATS, StoreDir: filepath.Join(ro.State, "nats")})
	if err != nil {
		return st, err
	}
	defer srv.Shutdown()
	nc, err := natsutil.Connect(ctx, cfg.Cluster.NATS, srv, "run coordinator")
	if err != nil {
		return st, err
	}
	defer nc.Close()

	reg := prometheus.NewRegistry()
	co := coordinatorOptions(cfg, nc, a.log, reg)
	co.DataDir, co.Bootstrap, co.Join = filepath.Join(ro.State, "raft"), true, nil
	co.ElectionTimeout = 100 * time.Millisecond // one voter, no network: elect at once
	co.RaftLogLevel = "error"
	node, err := coordinator.Start(ctx, co)
	if err != nil {
		return st, err
	}
	defer node.Close()
	if err := serveMetrics(ctx, cfg.Cluster.MetricsAddr, reg, a.log); err != nil {
		return st, err
	}

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
