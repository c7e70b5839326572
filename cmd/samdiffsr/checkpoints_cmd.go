package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/worker"
)

// stageFolders returns the stage folders (rrdb, diffusion) of a run directory made by
// `samdiffsr train`, or dir itself when it has none.
func stageFolders(dir string) []string {
	var out []string
	for _, st := range []string{worker.StageRRDB, worker.StageDiffusion} {
		if fi, err := os.Stat(filepath.Join(dir, st)); err == nil && fi.IsDir() {
			out = append(out, filepath.Join(dir, st))
		}
	}
	if len(out) == 0 {
		return []string{dir}
	}
	return out
}

// newCheckpointsCmd is `samdiffsr checkpoints`: list, verify and inspect the
// safetensors checkpoints a training run wrote.
func newCheckpointsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "checkpoints",
		Short: "List, verify and inspect checkpoints (safetensors + SHA-256 manifest)",
		Example: `  samdiffsr checkpoints list demo/run/diffusion
  samdiffsr checkpoints verify demo/run/diffusion/checkpoints/step_000000400
  samdiffsr checkpoints show demo/run/diffusion --json`,
	}
	var (
		listNATS  clusterFlags
		listJSON  bool
		listStage string
	)
	list := &cobra.Command{
		Use:   "list (RUN_OR_CHECKPOINTS_DIR | --nats URL [--job J] [--json])",
		Short: "List a run's checkpoints by step (verified), or the registry's committed ones with --nats",
		Example: `  samdiffsr checkpoints list demo/run
  samdiffsr checkpoints list demo/run/diffusion/checkpoints
  samdiffsr checkpoints list --nats nats://10.0.0.1:4222 --job df2k --json`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return registryList(cmd.Context(), a, &listNATS, listStage, listJSON, cmd.OutOrStdout())
			}
			if listNATS.url != "" {
				return &exitError{code: 2, msg: "checkpoints list: give a run folder or --nats URL, not both"}
			}
			var es []checkpoints.Entry
			for _, d := range stageFolders(args[0]) {
				des, err := checkpoints.List(d)
				if err != nil {
					return err
				}
				es = append(es, des...)
			}
			if len(es) == 0 {
				return fmt.Errorf("checkpoints: no step_* folders under %s (pass a run directory, a stage folder or a checkpoints folder)", args[0])
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%-10s %-9s %12s  %s\n", "STEP", "STATUS", "BYTES", "FOLDER")
			bad := 0
			for _, e := range es {
				status, size := "ok", int64(0)
				if e.Err != nil {
					status = "DAMAGED"
					bad++
				} else if man, err := checkpoints.Verify(e.Dir); err == nil {
					for _, f := range man.Files {
						size += f.Size
					}
				}
				fmt.Fprintf(out, "%-10d %-9s %12d  %s\n", e.Step, status, size, e.Dir)
				if e.Err != nil {
					fmt.Fprintf(out, "           %v\n", e.Err)
				}
			}
			if bad > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("checkpoints: %d of %d checkpoints are incomplete or damaged", bad, len(es))}
			}
			return nil
		},
	}
	verify := &cobra.Command{
		Use:   "verify CHECKPOINT...",
		Short: "Check checkpoints against their manifests (sizes and SHA-256); exit 1 if any is damaged",
		Example: `  samdiffsr checkpoints verify demo/run/diffusion/checkpoints/step_000000400
  samdiffsr checkpoints verify demo/run   # its latest complete checkpoint, as sr reads it`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var bad []string
			for _, p := range args {
				// The same resolution as sr and eval: a run folder means its newest checkpoint.
				dir, err := worker.ResolveCheckpoint(p, a.log)
				if err == nil {
					if fi, serr := os.Stat(dir); serr == nil && !fi.IsDir() {
						dir = filepath.Dir(dir)
					}
					_, err = checkpoints.Verify(dir)
				}
				if err != nil {
					bad = append(bad, err.Error())
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ok %s\n", dir)
			}
			if len(bad) > 0 {
				return &exitError{code: 1, msg: strings.Join(bad, "\n")}
			}
			return nil
		},
	}
	listNATS.add(list)
	list.Flags().BoolVar(&listJSON, "json", false, "with --nats: print the records and aliases as JSON")
	list.Flags().StringVar(&listStage, "stage", "", "with --nats: only this stage (rrdb or diffusion)")
	var asJSON bool
	show := &cobra.Command{
		Use:   "show CHECKPOINT",
		Short: "Print a checkpoint's metadata: step, stage, config hash, modulation, metrics, tensors",
		Example: `  samdiffsr checkpoints show demo/run
  samdiffsr checkpoints show demo/run/diffusion/checkpoints/step_000000400/model.safetensors --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := worker.ResolveCheckpoint(args[0], a.log)
			if err != nil {
				return err
			}
			c, err := checkpoints.Load(src)
			if err != nil {
				return err
			}
			info := checkpointInfo{
				Dir: c.Dir, Step: c.Meta.Step, Stage: c.Meta.Stage, ConfigHash: c.Meta.ConfigHash,
				Modulation: c.Meta.Modulation, Metrics: c.Meta.Metrics, Tensors: len(c.Model),
				Parameters: checkpoints.ParamCount(c.Model), Optimizer: c.Optimizer != nil,
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			fmt.Fprintf(out, "checkpoint  %s\nstep        %d\nstage       %s\nmodulation  %s\nconfig      %s\ntensors     %d (%d parameters)\noptimizer   %v\n",
				info.Dir, info.Step, info.Stage, info.Modulation, info.ConfigHash, info.Tensors, info.Parameters, info.Optimizer)
			keys := make([]string, 0, len(info.Metrics))
			for k := range info.Metrics {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(out, "metric      %s = %.4f\n", k, info.Metrics[k])
			}
			return nil
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.AddCommand(list, verify, show, newCheckpointsPullCmd(a), newCheckpointsWatchCmd(a), newCheckpointsTagCmd(a))
	cmd.AddCommand(newCheckpointsImportCmd(a))
	return cmd
}

// checkpointInfo is what `checkpoints show` prints.
type checkpointInfo struct {
	Dir        string             `json:"dir"`
	Step       int64              `json:"step"`
	Stage      string             `json:"stage"`
	ConfigHash string             `json:"config_hash"`
	Modulation string             `json:"modulation"`
	Metrics    map[string]float64 `json:"metrics,omitempty"`
	Tensors    int                `json:"tensors"`
	Parameters int                `json:"parameters"`
	Optimizer  bool               `json:"optimizer"`
}
