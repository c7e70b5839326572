package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/worker"
)

func newStatusCmd(a *app) *cobra.Command {
	var (
		nf       clusterFlags
		watch    bool
		asJSON   bool
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: leader, voters, workers, mask progress and failures, training",
		Long: `status asks any coordinator voter (a NATS request) for the leader, the voters, the
workers (alive, tasks done, rate), the mask farm's progress (done/total/failed,
images/s, ETA), the images that failed, with why, and training: the current
generation, each rank's progress (steps/s, compute and wait per step, bytes sent),
the slowest rank, the workers waiting for the next generation, and the generations
so far (why each ended, who was lost, how long recovery took).`,
		Example: `  samdiffsr status --nats nats://127.0.0.1:4222
  samdiffsr status --nats nats://127.0.0.1:4222 --watch --interval 2s
  samdiffsr status --nats nats://127.0.0.1:4222 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			nf.apply(&cfg.Cluster.NATS)
			ctx := cmd.Context()
			nc, err := connectCluster(ctx, cfg.Cluster.NATS, "samdiffsr status")
			if err != nil {
				return err
			}
			defer nc.Close()
			out := cmd.OutOrStdout()
			for {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				st, err := worker.FarmStatus(rctx, nc, cfg.Cluster.NATS.Job)
				cancel()
				if err != nil && !watch {
					return fmt.Errorf("status: no coordinator of job %s answered: %w", cfg.Cluster.NATS.Job, err)
				}
				if watch {
					fmt.Fprint(out, "\033[H\033[2J")
				}
				switch {
				case err != nil:
					fmt.Fprintf(out, "%s  no coordinator answered: %v\n", time.Now().Format(time.TimeOnly), err)
				case asJSON:
					enc := json.NewEncoder(out)
					enc.SetIndent("", "  ")
					if err := enc.Encode(st); err != nil {
						return err
					}
				default:
					printStatus(out, st)
				}
				if !watch {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	nf.add(cmd)
	cmd.Flags().BoolVar(&watch, "watch", false, "redraw until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "redraw interval with --watch")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

// printStatus renders a status for people.
func printStatus(w io.Writer, st natsutil.Status) {
	leader := st.Leader
	if leader == "" {
		leader = "(none: election in progress)"
	}
	config := fmt.Sprintf("%.12s", st.Config)
	if st.Config == "" {
		config = "(none yet: no job submitted; samdiffsr coordinator submit)"
	}
	fmt.Fprintf(w, "job %s  config %s  leader %s  term %d  (answered by %s at index %d)\n", st.Job, config, leader, st.Term, st.Node, st.Index)
	var voters []string
	for _, v := range st.Voters {
		voters = append(voters, fmt.Sprintf("%s@%s", v.ID, v.Addr))
	}
	fmt.Fprintf(w, "voters  %s\n", strings.Join(voters, "  "))
	m := st.Masks
	pct := 0.0
	if m.Total > 0 {
		pct = 100 * float64(m.Done+m.Failed) / float64(m.Total)
	}
	fmt.Fprintf(w, "masks   %d/%d done, %d failed (%.1f%% finished), %d running, %d pending, %.2f images/s", m.Done, m.Total, m.Failed, pct, m.Leased, m.Pending, m.Rate)
	if m.ETA != "" {
		fmt.Fprintf(w, ", ETA %s", m.ETA)
	}
	fmt.Fprintf(w, ", %d duplicate reports ignored\n", m.Duplicates)
	if len(st.Workers) > 0 {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "WORKER\tALIVE\tROLES\tDONE\tFAILED\tTASKS/S\tLAST SEEN")
		for _, wk := range st.Workers {
			fmt.Fprintf(tw, "%s\t%v\t%s\t%d\t%d\t%.2f\t%s\n", wk.ID, wk.Alive, strings.Join(wk.Roles, ","), wk.Done, wk.Failed, wk.Rate, wk.LastSeen)
		}
		tw.Flush()
	}
	if len(st.Failures) > 0 {
		fmt.Fprintf(w, "failed images (%d):\n", len(st.Failures))
		for _, f := range st.Failures {
			fmt.Fprintf(w, "  %s (%d attempts): %s\n", f.ID, f.Attempts, f.Reason)
		}
	}
	if st.Train != nil {
		printTrain(w, *st.Train, st.Time)
	}
	if st.Registry != nil {
		printRegistryStatus(w, *st.Registry)
	}
	if d := st.Dataset; d != nil {
		fmt.Fprintf(w, "dataset manifest %.12s: %d images, %d tiles in %d shards (%s), registration %d at %s\n",
			d.SHA256, d.Images, d.Tiles, d.Shards, bytesSize(d.Bytes), d.Seq, d.Registered.Format(time.RFC3339))
	}
}

// stageName names one of natsutil's training stages.
func stageName(s int) string {
	switch s {
	case natsutil.TrainStageRRDB:
		return "rrdb"
	case natsutil.TrainStageDiffusion:
		return "diffusion"
	}
	return fmt.Sprintf("stage %d", s)
}

// printTrain renders the training part of a status.
func printTrain(w io.Writer, t natsutil.TrainStatus, now time.Time) {
	if t.Generation == 0 {
		fmt.Fprintf(w, "train   no generation yet; %d waiting: %s\n", len(t.Waiting), strings.Join(t.Waiting, " "))
		return
	}
	state := "ended"
	if t.Active {
		state = "active"
	}
	fmt.Fprintf(w, "train   generation %d (%s) stage %s step %d · %d ranks", t.Generation, state, stageName(t.Stage), t.Step, len(t.Ranks))
	if s := t.Slowest; s != nil {
		fmt.Fprintf(w, " · slowest: rank %d %s %.1fx slower than the median", s.Rank, s.Worker, s.Factor)
	}
	fmt.Fprintln(w)
	if len(t.Waiting) > 0 {
		fmt.Fprintf(w, "        waiting for the next generation: %s\n", strings.Join(t.Waiting, " "))
	}
	if len(t.Ranks) > 0 {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "RANK\tWORKER\tADDR\tSTEP\tSTEPS/S\tCOMPUTE\tWAIT\tSENT/STEP\tLAST SEEN")
		for _, r := range t.Ranks {
			seen := "-"
			if ts, err := time.Parse(time.RFC3339Nano, r.LastSeen); err == nil && !now.IsZero() {
				seen = fmt.Sprintf("%.1fs ago", max(0, now.Sub(ts).Seconds()))
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%.2f\t%s\t%s\t%s\t%s\n", r.Rank, r.Worker, r.Addr, r.Step, r.StepsPerS,
				seconds(r.ComputeS), seconds(r.WaitS), bytesSize(r.Bytes), seen)
		}
		tw.Flush()
	}
	printPlacement(w, t.Ranks)
	if hist := t.History; len(hist) > 0 {
		const show = 10
		if len(hist) > show {
			fmt.Fprintf(w, "        (%d earlier generations not shown; --json lists them)\n", len(hist)-show)
			hist = hist[len(hist)-show:]
		}
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "GEN\tWORKERS\tSTAGE\tSTEPS\tSTARTED\tRECOVERY\tLOST\tENDED")
		for _, g := range hist {
			rec := "-"
			if g.RecoveryS > 0 {
				rec = fmt.Sprintf("%.1fs", g.RecoveryS)
			}
			lost := "-"
			if len(g.Lost) > 0 {
				lost = strings.Join(g.Lost, ",")
			}
			ended := "running"
			if g.Ended != "" {
				ended = g.Ended + ": " + g.Reason
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d-%d\t%s\t%s\t%s\t%s\n", g.Number, strings.Join(g.Workers, ","), stageName(g.Stage),
				g.StartStep, g.LastStep, g.Started, rec, lost, ended)
		}
		tw.Flush()
	}
}

// printPlacement renders where the ranks' packed-dataset shards stand (nothing
// when no rank trains from a packed dataset).
func printPlacement(w io.Writer, ranks []natsutil.RankStatus) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	header := false
	for _, r := range ranks {
		d := r.Data
		if d == nil {
			continue
		}
		if !header {
			fmt.Fprintln(tw, "RANK\tWORKER\tSHARDS\tHELD\tCACHE HITS\tFETCHED\tFETCHED BYTES\tREFETCHED\tPREFETCHED\tEVICTED")
			header = true
		}
		fmt.Fprintf(tw, "%d\t%s\t%d/%d\t%s\t%d\t%d\t%s\t%d\t%d\t%d\n", r.Rank, r.Worker, d.Shards, d.Total, bytesSize(d.Bytes),
			d.Hits, d.Fetched, bytesSize(d.BytesFetched), d.Refetched, d.Prefetched, d.Evicted)
	}
	tw.Flush()
}

// seconds formats a per-step duration given in seconds.
func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Microsecond * 100).String()
}

// bytesSize formats a byte count.
func bytesSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
