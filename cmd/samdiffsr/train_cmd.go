package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/model"
	"github.com/samdiffsr/samdiffsr/worker"
)

func newTrainCmd(a *app) *cobra.Command {
	var (
		stage, out, rrdb string
		steps, stopAt    int
		resume           bool
	)
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train on this machine: RRDB pretraining, then the structure-modulated diffusion",
		Long: `train runs one training stage in this process (METHOD §5): "rrdb" pretrains the RRDB
encoder (L1 to HR), "diffusion" trains the U-Net with the configured modulation on top
of the frozen RRDB of the rrdb stage; "all" (the default) runs both in turn, skipping
a stage whose run folder already holds its last step. With data.synthetic.n > 0 and
no data.root yet, the synthetic images are written first.

The run directory (--out, default train.out) holds one folder per stage with:
  config.yaml      the effective configuration
  metrics.jsonl    step, loss, lr, steps/s; validation PSNR-Y/SSIM-Y (and bicubic's)
  loss.png         the loss curve, redrawn as training goes
  val_STEP.png     validation grids: LR-bicubic | SR | HR
  checkpoints/     step_NNNNNNNNN/ (model.safetensors, optimizer.safetensors, manifest.json)

Ctrl-C writes a final checkpoint; --resume continues from the latest complete one,
bit for bit. A NaN or infinite loss stops the run naming the step. Label maps missing
from masks.dir are made first with the built-in segmenter.`,
		Example: `  samdiffsr train --config configs/quickstart.yaml
  samdiffsr train --config configs/quickstart.yaml --stage rrdb --steps 500 --out runs/q1
  samdiffsr train --config configs/sam_diffsr_x4.yaml --stage diffusion --resume`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if stage != "" {
				cfg.Train.Stage = stage
			}
			if out != "" {
				cfg.Train.Out = out
			}
			stages := []string{cfg.Train.Stage}
			if cfg.Train.Stage == "all" {
				stages = []string{worker.StageRRDB, worker.StageDiffusion}
			}
			overrides := []flagKey{{"stage", "train.stage"}, {"out", "train.out"}}
			if cmd.Flags().Changed("steps") {
				if len(stages) > 1 {
					return &exitError{code: 2, msg: "train: --steps applies to one stage; add --stage rrdb or --stage diffusion"}
				}
				if stages[0] == worker.StageRRDB {
					cfg.Train.RRDBSteps = steps
					overrides = append(overrides, flagKey{"steps", "train.rrdb_steps"})
				} else {
					cfg.Train.Steps = steps
					overrides = append(overrides, flagKey{"steps", "train.steps"})
				}
			}
			if err := validateOverrides(cmd, cfg, overrides...); err != nil {
				return err
			}
			if stopAt < 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("train: --stop-at %d: must be 0 (run to the end) or a step number", stopAt)}
			}
			wrote, err := dataset.EnsureSynthetic(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if wrote {
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %d synthetic training images (data.synthetic) to %s\n", cfg.Data.Synthetic.N, cfg.Data.Root)
			}
			a.log.Info("compute backend", "blas", model.BLASName())
			if adv := model.BLASAdvice(); adv != "" {
				a.log.Warn(adv)
			}
			if resume && len(stages) > 1 {
				any := false
				for _, st := range stages {
					if _, err := checkpoints.Latest(worker.StageDir(cfg.Train.Out, st)); err == nil {
						any = true
					}
				}
				if !any {
					return fmt.Errorf("train: --resume: no complete checkpoint under %s/{rrdb,diffusion}; train without --resume to start", cfg.Train.Out)
				}
			}
			publish, closePublish := trainPublisher(cmd.Context(), cfg, a.log)
			defer closePublish()
			for _, st := range stages {
				target := stageSteps(cfg, st)
				resumeStage := resume
				if len(stages) > 1 {
					// Both stages: skip a finished one, resume a started one when asked.
					if done := latestStep(worker.StageDir(cfg.Train.Out, st)); done >= int64(target) {
						fmt.Fprintf(cmd.OutOrStdout(), "%s stage: already trained (%d of %d steps in %s); skipped\n", st, done, target, worker.StageDir(cfg.Train.Out, st))
						continue
					}
					_, err := checkpoints.Latest(worker.StageDir(cfg.Train.Out, st))
					resumeStage = resume && err == nil
				}
				res, err := worker.Train(cmd.Context(), worker.TrainOptions{
					Config: cfg, Stage: st, Run: cfg.Train.Out, RRDB: rrdb, Resume: resumeStage, StopAt: stopAt,
					Log: a.log, Progress: a.stderr, Publish: publish,
					EnsureMasks: func(ctx context.Context, images []dataset.Image, dir string) error {
						return worker.EnsureBuiltinMasks(ctx, images, dir, cfg.Masks, a.log)
					},
				})
				if err != nil {
					if errors.Is(err, context.Canceled) && res != nil {
						fmt.Fprintf(cmd.OutOrStdout(), "interrupted at step %d; resume with --resume (checkpoint %s)\n", res.Step, res.Checkpoint)
					}
					return err
				}
				printTrainResult(cmd.OutOrStdout(), st, res, target)
				if res.Step < target {
					fmt.Fprintf(cmd.OutOrStdout(), "stopped early at step %d of %d (--stop-at); continue with the same command and --resume\n", res.Step, target)
					return nil
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&stage, "stage", "", "rrdb, diffusion or all: both in turn, skipping a finished one (default: train.stage, all)")
	f.IntVar(&steps, "steps", 0, "total steps of the stage, with --stage rrdb or diffusion (overrides train.rrdb_steps / train.steps)")
	f.StringVar(&out, "out", "", "run directory (default: train.out)")
	f.BoolVar(&resume, "resume", false, "continue from the latest complete checkpoint of the stage (an error if there is none)")
	f.StringVar(&rrdb, "rrdb", "", "RRDB checkpoint for the diffusion stage (default: the latest of RUN/rrdb)")
	f.IntVar(&stopAt, "stop-at", 0, "stop (with a checkpoint) at this step, keeping the schedule of the full run; continue later with --resume")
	return cmd
}

// stageSteps is the configured length of a stage.
func stageSteps(cfg configs.Config, stage string) int {
	if stage == worker.StageRRDB {
		return cfg.Train.RRDBSteps
	}
	return cfg.Train.Steps
}

// latestStep is the step of the newest complete checkpoint of a stage folder (0: none).
func latestStep(dir string) int64 {
	es, err := checkpoints.List(dir)
	if err != nil {
		return 0
	}
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].Err == nil {
			return es[i].Step
		}
	}
	return 0
}

// printTrainResult prints where a finished stage put its outputs.
func printTrainResult(w io.Writer, stage string, res *worker.TrainResult, target int) {
	fmt.Fprintf(w, "%s stage: %d of %d steps; run folder %s\n", stage, res.Step, target, res.Dir)
	if res.Checkpoint != "" {
		fmt.Fprintf(w, "  checkpoint  %s\n", res.Checkpoint)
	}
	fmt.Fprintf(w, "  metrics     %s\n  loss plot   %s\n", filepath.Join(res.Dir, worker.MetricsFile), filepath.Join(res.Dir, worker.LossPlot))
	if v := res.Val; v != nil {
		fmt.Fprintf(w, "  validation  step %d on %d images: PSNR-Y %.3f dB, SSIM-Y %.4f (bicubic %.3f dB, %.4f); grid %s\n",
			v.Step, v.Images, v.PSNRY, v.SSIMY, v.BicubicPSNRY, v.BicubicSSIMY, filepath.Join(res.Dir, fmt.Sprintf("val_%06d.png", v.Step)))
	}
	if n := len(res.LeftOut); n > 0 {
		fmt.Fprintf(w, "  left out    %d training images (fix or remove them and train again to include them):\n", n)
		const show = 10
		for i, p := range res.LeftOut {
			if i == show {
				fmt.Fprintf(w, "              ... and %d more (all named in the log)\n", n-show)
				break
			}
			fmt.Fprintf(w, "              %s\n", p)
		}
	}
}
