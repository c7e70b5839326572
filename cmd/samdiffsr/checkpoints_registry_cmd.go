package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/objstore"
	"github.com/samdiffsr/samdiffsr/worker"
)

// registryFlags are the flags of the registry subcommands: the cluster's NATS
// options and the local cache of pulled files.
type registryFlags struct {
	nf    clusterFlags
	cache string
}

func (f *registryFlags) add(cmd *cobra.Command) {
	f.nf.add(cmd)
	cmd.Flags().StringVar(&f.cache, "cache", "", "cache of pulled files (default: $XDG_CACHE_HOME/samdiffsr/checkpoints)")
}

func (f *registryFlags) cacheDir() (string, error) {
	if f.cache != "" {
		return f.cache, nil
	}
	return checkpoints.DefaultCacheDir()
}

// openRegistry connects to the cluster the flags and config name and returns a
// client of the job's registry; close closes the connection.
func openRegistry(ctx context.Context, a *app, nf *clusterFlags, name string) (reg *checkpoints.Registry, cfg configs.Config, close func(), err error) {
	cfg, err = a.loadConfig()
	if err != nil {
		return nil, cfg, nil, err
	}
	nf.apply(&cfg.Cluster.NATS)
	nc, err := connectCluster(ctx, cfg.Cluster.NATS, name)
	if err != nil {
		return nil, cfg, nil, err
	}
	reg, err = checkpoints.NewRegistry(nc, cfg.Cluster.NATS.Job)
	if err != nil {
		nc.Close()
		return nil, cfg, nil, err
	}
	return reg, cfg, nc.Close, nil
}

// selectorFlags pick one registry record.
type selectorFlags struct {
	latest, best bool
	step         int64
	alias, id    string
	stage        string
}

func (s *selectorFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&s.latest, "latest", false, "the newest checkpoint (of the last stage, or of --stage)")
	fl.BoolVar(&s.best, "best", false, "the checkpoint with the highest validation PSNR-Y")
	fl.Int64Var(&s.step, "step", -1, "the checkpoint of this step")
	fl.StringVar(&s.alias, "alias", "", "the checkpoint a tag names (samdiffsr checkpoints tag)")
	fl.StringVar(&s.id, "id", "", "a record ID as `checkpoints list` shows it (diffusion/step_000000400)")
	fl.StringVar(&s.stage, "stage", "", "narrow --latest, --best and --step to one stage (rrdb or diffusion)")
}

func (s *selectorFlags) selector() (checkpoints.Selector, error) {
	n := 0
	for _, set := range []bool{s.latest, s.best, s.step >= 0, s.alias != "", s.id != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return checkpoints.Selector{}, &exitError{code: 2, msg: "checkpoints: choose exactly one of --latest, --best, --step N, --alias A, --id ID"}
	}
	if s.stage != "" && s.stage != "rrdb" && s.stage != "diffusion" {
		return checkpoints.Selector{}, &exitError{code: 2, msg: fmt.Sprintf("checkpoints: --stage %q: use rrdb or diffusion", s.stage)}
	}
	sel := checkpoints.Selector{ID: s.id, Alias: s.alias, Stage: s.stage}
	switch {
	case s.latest:
		sel.Alias = "latest"
	case s.best:
		sel.Alias = "best"
	case s.step >= 0:
		sel.Step, sel.HasStep = s.step, true
	}
	return sel, nil
}

// registryList is `checkpoints list` against the registry (--nats).
func registryList(ctx context.Context, a *app, nf *clusterFlags, stage string, asJSON bool, out io.Writer) error {
	if cfg, err := a.loadConfig(); err == nil && nf.url == "" && cfg.Cluster.NATS.URL == "" {
		return &exitError{code: 2, msg: "checkpoints list: give a run folder (checkpoints list demo/run/diffusion), or --nats URL to list the job's registry"}
	}
	reg, _, closeNC, err := openRegistry(ctx, a, nf, "samdiffsr checkpoints list")
	if err != nil {
		return err
	}
	defer closeNC()
	l, err := reg.List(ctx, 0, stage)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(l)
	}
	if len(l.Checkpoints) == 0 {
		fmt.Fprintf(out, "job %s: no committed checkpoints yet\n", reg.Job())
		return nil
	}
	printRegistry(out, l)
	return nil
}

// printRegistry renders a registry listing for people.
func printRegistry(out io.Writer, l natsutil.CheckpointList) {
	byID := map[string][]string{}
	for alias, id := range l.Aliases {
		byID[id] = append(byID[id], alias)
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tID\tSTEP\tPSNR-Y\tSSIM-Y\tBYTES\tCREATED\tALIASES")
	for _, c := range l.Checkpoints {
		var size int64
		for _, f := range c.Files {
			size += f.Size
		}
		als := byID[c.ID]
		sort.Strings(als)
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%d\t%s\t%s\n", c.Seq, c.ID, c.Step, metric(c, "val_psnr_y", "%.3f"), metric(c, "val_ssim_y", "%.4f"),
			size, c.Created.Local().Format(time.DateTime), strings.Join(als, ","))
	}
	tw.Flush()
}

func metric(c natsutil.CheckpointInfo, key, format string) string {
	if v, ok := c.Metrics[key]; ok {
		return fmt.Sprintf(format, v)
	}
	return "-"
}

func newCheckpointsPullCmd(a *app) *cobra.Command {
	var (
		rf  registryFlags
		sf  selectorFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "pull --nats URL (--latest | --best | --step N | --alias A | --id ID) --out DIR",
		Short: "Download a committed checkpoint from the registry, verifying every SHA-256",
		Long: `pull resolves one committed checkpoint of the job's registry and writes its files
(model.safetensors, optimizer.safetensors, manifest.json) to the folder --out. Every
file is checked against the SHA-256 the coordinator committed; files go through a
local cache first, so a second pull of the same checkpoint transfers nothing. The
folder is assembled beside --out and swapped in whole: on any error --out is left
as it was. The result loads with ` + "`samdiffsr sr --checkpoint DIR`" + `.`,
		Example: `  samdiffsr checkpoints pull --nats nats://10.0.0.1:4222 --best --out weights/best
  samdiffsr checkpoints pull --nats nats://10.0.0.1:4222 --job df2k --step 400000 --out weights/400k
  samdiffsr checkpoints pull --nats nats://10.0.0.1:4222 --latest --stage rrdb --out weights/rrdb`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sel, err := sf.selector()
			if err != nil {
				return err
			}
			if out == "" {
				return &exitError{code: 2, msg: "checkpoints pull: --out DIR is required (the folder the checkpoint's files are written to)"}
			}
			cache, err := rf.cacheDir()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			reg, _, closeNC, err := openRegistry(ctx, a, &rf.nf, "samdiffsr checkpoints pull")
			if err != nil {
				return err
			}
			defer closeNC()
			info, err := reg.Resolve(ctx, sel)
			if err != nil {
				return err
			}
			t0 := time.Now()
			res, err := reg.Pull(ctx, info, out, cache)
			if err != nil {
				return err
			}
			printPull(cmd.OutOrStdout(), info, res, time.Since(t0))
			return nil
		},
	}
	rf.add(cmd)
	sf.add(cmd)
	cmd.Flags().StringVar(&out, "out", "", "folder to write the checkpoint to")
	return cmd
}

func printPull(w io.Writer, info natsutil.CheckpointInfo, res checkpoints.PullResult, d time.Duration) {
	if res.Unchanged {
		fmt.Fprintf(w, "%s (seq %d, step %d) already at %s; nothing transferred\n", info.ID, info.Seq, info.Step, res.Dir)
		return
	}
	fmt.Fprintf(w, "%s (seq %d, step %d) → %s: %d files fetched (%d bytes), %d from the cache, in %s\n",
		info.ID, info.Seq, info.Step, res.Dir, res.Fetched, res.FetchedBytes, res.Reused, d.Round(time.Millisecond))
}

func newCheckpointsWatchCmd(a *app) *cobra.Command {
	var (
		rf       registryFlags
		pull     bool
		out      string
		state    string
		interval time.Duration
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "watch --nats URL [--pull --out DIR]",
		Short: "Print each newly committed checkpoint once, in order (and pull it with --pull)",
		Long: `watch prints every checkpoint the registry commits, once and in commit order, until
interrupted. It remembers the last one it handled in a state file (--state; by default
DIR/.samdiffsr-watch.json with --pull, else one per job in the cache folder), so after
a disconnect or a restart it resumes where it was: nothing is missed or repeated.
Checkpoints retention pruned before watch saw them are reported as skipped. With
--pull each one is written to DIR/STAGE/checkpoints/step_N (verified, atomic), so
` + "`samdiffsr sr --checkpoint DIR/diffusion`" + ` always uses the newest. A pull that fails
is retried (5 tries); one whose bytes do not match the registry's SHA-256 stops the
watch with an error naming the file.`,
		Example: `  samdiffsr checkpoints watch --nats nats://10.0.0.1:4222
  samdiffsr checkpoints watch --nats nats://10.0.0.1:4222 --pull --out weights/
  samdiffsr checkpoints watch --nats nats://10.0.0.1:4222 --json | jq .step`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pull && out == "" {
				return &exitError{code: 2, msg: "checkpoints watch: --pull needs --out DIR"}
			}
			cache, err := rf.cacheDir()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			reg, _, closeNC, err := openRegistry(ctx, a, &rf.nf, "samdiffsr checkpoints watch")
			if err != nil {
				return err
			}
			defer closeNC()
			if state == "" {
				state = filepath.Join(cache, "watch-"+reg.Job()+".json")
				if pull {
					state = filepath.Join(out, ".samdiffsr-watch.json")
				}
			}
			pos, err := readWatchState(state)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if pos.Seq > 0 {
				a.log.Info("watch resumes", "after_seq", pos.Seq, "state", state)
			}
			err = reg.Watch(ctx, pos.Seq, interval, func(c natsutil.CheckpointInfo) error {
				if pull {
					dir := filepath.Join(out, c.Stage, checkpoints.SubDir, filepath.Base(c.ID))
					res, err := pullRetrying(ctx, reg, c, dir, cache, interval, a.log)
					if err != nil {
						return err
					}
					a.log.Info("pulled", "id", c.ID, "dir", dir, "fetched", res.Fetched, "bytes", res.FetchedBytes, "cached", res.Reused)
				}
				if asJSON {
					if err := json.NewEncoder(w).Encode(c); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(w, "seq %d  %s  step %d  PSNR-Y %s  %s\n", c.Seq, c.ID, c.Step, metric(c, "val_psnr_y", "%.3f"), c.Created.Local().Format(time.DateTime))
				}
				return writeWatchState(state, watchState{Job: reg.Job(), Seq: c.Seq})
			}, func(from, to uint64) {
				a.log.Warn("checkpoints pruned by retention before they could be watched", "seq_from", from, "seq_to", to)
			})
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	rf.add(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&pull, "pull", false, "also pull each checkpoint into --out")
	fl.StringVar(&out, "out", "", "with --pull: folder to pull into (DIR/STAGE/checkpoints/step_N)")
	fl.StringVar(&state, "state", "", "file that remembers the last handled checkpoint")
	fl.DurationVar(&interval, "interval", 2*time.Second, "poll interval besides the coordinator's commit notices")
	fl.BoolVar(&asJSON, "json", false, "print one JSON record per line")
	return cmd
}

// watchState is what `checkpoints watch` remembers between runs.
type watchState struct {
	Job string `json:"job"`
	Seq uint64 `json:"seq"`
}

func readWatchState(path string) (watchState, error) {
	var s watchState
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("checkpoints watch: state file: %w", err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("checkpoints watch: state file %s is damaged (%v); delete it to watch from the start", path, err)
	}
	return s, nil
}

func writeWatchState(path string, s watchState) error {
	data, _ := json.Marshal(s)
	return fsutil.WriteFileAtomic(path, data, 0o644)
}

func newCheckpointsTagCmd(a *app) *cobra.Command {
	var (
		nf     clusterFlags
		remove bool
	)
	cmd := &cobra.Command{
		Use:   "tag ALIAS [ID]",
		Short: "Name a committed checkpoint (e.g. champion); a tagged checkpoint is never pruned",
		Example: `  samdiffsr checkpoints tag --nats nats://10.0.0.1:4222 champion diffusion/step_000400000
  samdiffsr checkpoints tag --nats nats://10.0.0.1:4222 champion --remove`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if remove != (len(args) == 1) {
				return &exitError{code: 2, msg: "checkpoints tag: give ALIAS and a record ID (from `checkpoints list`), or ALIAS with --remove"}
			}
			ctx := cmd.Context()
			reg, _, closeNC, err := openRegistry(ctx, a, &nf, "samdiffsr checkpoints tag")
			if err != nil {
				return err
			}
			defer closeNC()
			id := ""
			if len(args) == 2 {
				id = args[1]
			}
			if err := reg.Tag(ctx, args[0], id, remove); err != nil {
				return err
			}
			if remove {
				fmt.Fprintf(cmd.OutOrStdout(), "alias %s removed\n", args[0])
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "alias %s → %s\n", args[0], id)
			}
			return nil
		},
	}
	nf.add(cmd)
	cmd.Flags().BoolVar(&remove, "remove", false, "remove the alias")
	return cmd
}

// resolveCheckpointRef turns a registry reference (nats://HOST:PORT/JOB@SELECTOR)
// into a local checkpoint folder, pulled through the cache into
// CACHE/pulled/JOB/STAGE/checkpoints/step_N; any other string is returned as it
// is. The NATS credentials come from the configuration (cluster.nats.*).
func resolveCheckpointRef(ctx context.Context, cfg configs.Config, ref string, log *slog.Logger) (string, error) {
	r, err := checkpoints.ParseRef(ref)
	if errors.Is(err, checkpoints.ErrNotRegistryRef) {
		return ref, nil
	}
	if err != nil {
		return "", &exitError{code: 2, msg: err.Error()}
	}
	cache, err := checkpoints.DefaultCacheDir()
	if err != nil {
		return "", err
	}
	c := cfg.Cluster.NATS
	c.URL, c.Job = r.URL, r.Job
	nc, err := natsutil.Connect(ctx, c, nil, "samdiffsr checkpoint pull")
	if err != nil {
		return "", fmt.Errorf("checkpoint %s: %w", ref, err)
	}
	defer nc.Close()
	return pullRef(ctx, nc, r, cache, log)
}

func pullRef(ctx context.Context, nc *nats.Conn, r checkpoints.Ref, cache string, log *slog.Logger) (string, error) {
	reg, err := checkpoints.NewRegistry(nc, r.Job)
	if err != nil {
		return "", err
	}
	info, err := reg.Resolve(ctx, r.Sel)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "pulled", r.Job, info.Stage, checkpoints.SubDir, filepath.Base(info.ID))
	res, err := reg.Pull(ctx, info, dir, cache)
	if err != nil {
		return "", err
	}
	log.Info("checkpoint from the registry", "ref", r.Sel.String(), "id", info.ID, "seq", info.Seq, "dir", dir,
		"fetched_files", res.Fetched, "fetched_bytes", res.FetchedBytes, "cached_files", res.Reused)
	return dir, nil
}

// printRegistryStatus renders the registry part of `samdiffsr status`.
func printRegistryStatus(w io.Writer, r natsutil.RegistryStatus) {
	line := func(what string, c *natsutil.CheckpointInfo) string {
		if c == nil {
			return what + " -"
		}
		return fmt.Sprintf("%s %s (seq %d, PSNR-Y %s)", what, c.ID, c.Seq, metric(*c, "val_psnr_y", "%.3f"))
	}
	fmt.Fprintf(w, "ckpts   %d committed · %s · %s\n", r.Count, line("latest", r.Latest), line("best", r.Best))
}

// trainPublisher is the registry publisher of a one-process `samdiffsr train`: when
// cluster.nats.url is set, every checkpoint is uploaded to the job's registry in
// the background. An unreachable server is reported and training goes on without
// publishing. close ends the connection.
func trainPublisher(ctx context.Context, cfg configs.Config, log *slog.Logger) (publish worker.PublishFunc, close func()) {
	c := cfg.Cluster.NATS
	if c.URL == "" {
		return nil, func() {}
	}
	nc, err := natsutil.Connect(ctx, c, nil, "samdiffsr train")
	if err != nil {
		log.Warn("checkpoints will not be published to the registry (cluster.nats.url unreachable); training goes on", "url", c.URL, "err", err)
		return nil, func() {}
	}
	host, _ := os.Hostname()
	publish, err = worker.RegistryPublish(nc, c.Job, "train@"+host, cfg.Train)
	if err != nil {
		nc.Close()
		log.Warn("checkpoints will not be published to the registry; training goes on", "err", err)
		return nil, func() {}
	}
	log.Info("publishing checkpoints to the registry", "url", c.URL, "job", c.Job)
	return publish, nc.Close
}

// watchPullAttempts bounds the tries of one pull in `checkpoints watch`.
const watchPullAttempts = 5

// pullRetrying pulls c into dir, retrying a failure that may pass (the server
// restarting, a dropped connection) with growing pauses; a digest mismatch is
// final at once, and so is the last failure: watch stops there, and resumes from
// that record when started again.
func pullRetrying(ctx context.Context, reg *checkpoints.Registry, c natsutil.CheckpointInfo, dir, cache string, wait time.Duration, log *slog.Logger) (checkpoints.PullResult, error) {
	for attempt := 1; ; attempt++ {
		res, err := reg.Pull(ctx, c, dir, cache)
		var de *objstore.DigestError
		if err == nil || errors.As(err, &de) || attempt == watchPullAttempts || ctx.Err() != nil {
			return res, err
		}
		log.Warn("pull failed; retrying", "id", c.ID, "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
}
