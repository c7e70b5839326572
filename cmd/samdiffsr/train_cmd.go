package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/checkpoints"
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
of the frozen RRDB of the rrdb stage; "all" runs both in turn.

The run directory (--out, default train.out) holds one folder per stage with:
  config.yaml      the effective configuration
  metrics.jsonl    step, loss, lr, steps/s; validation PSNR-Y/SSIM-Y (and bicubic's)
  loss.png         the loss curve, redrawn as training goes
  val_STEP.png     validation grids: LR-bicubic | SR | HR
  checkpoints/     step_NNNNNNNNN/ (model.safetensors, optimizer.safetensors, manifest.json)

Ctrl-C writes a final checkpoint; --resume continues from the latest complete one,
bit for bit. A NaN or infinite loss stops the run naming the step. Label maps missing
from masks.dir are made first with the built-in segmenter.`,
		Example: `  samdiffsr train --config configs/quickstart.yaml --stage rrdb
  samdiffsr train --config configs/quickstart.yaml --stage diffusion
  samdiffsr train --config configs/quickstart.yaml --stage all --out runs/q1
  samdiffsr train --config configs/sam_diffsr_x4.yaml --resume`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if stage == "" {
				stage = cfg.Train.Stage
			}
			var stages []string
			switch stage {
			case worker.StageRRDB, worker.StageDiffusion:
				stages = []string{stage}
			case "all":
				stages = []string{worker.StageRRDB, worker.StageDiffusion}
			default:
				return &exitError{code: 2, msg: fmt.Sprintf("train: --stage %q: use rrdb, diffusion or all", stage)}
			}
			if out != "" {
				cfg.Train.Out = out
			}
			if cfg.Train.Out == "" {
				return &exitError{code: 2, msg: "train: no run directory: pass --out DIR or set train.out"}
			}
			if steps > 0 {
				if len(stages) > 1 {
					return &exitError{code: 2, msg: "train: --steps applies to one stage; give --stage rrdb or diffusion"}
				}
				if stages[0] == worker.StageRRDB {
					cfg.Train.RRDBSteps = steps
				} else {
					cfg.Train.Steps = steps
				}
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
			for _, st := range stages {
				resumeStage := resume
				if resume && len(stages) > 1 {
					// With --stage all, resume the stages that have started.
					_, err := checkpoints.Latest(worker.StageDir(cfg.Train.Out, st))
					resumeStage = err == nil
				}
				res, err := worker.Train(cmd.Context(), worker.TrainOptions{
					Config: cfg, Stage: st, Run: cfg.Train.Out, RRDB: rrdb, Resume: resumeStage, StopAt: stopAt,
					Log: a.log, Progress: a.stderr,
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
				fmt.Fprintf(cmd.OutOrStdout(), "%s stage: %d steps; run folder %s\n", st, res.Step, res.Dir)
				if res.Checkpoint != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "  checkpoint  %s\n", res.Checkpoint)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "  metrics     %s\n  loss plot   %s\n", filepath.Join(res.Dir, worker.MetricsFile), filepath.Join(res.Dir, worker.LossPlot))
				if v := res.Val; v != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "  validation  step %d on %d images: PSNR-Y %.3f dB, SSIM-Y %.4f (bicubic %.3f dB, %.4f); grid %s\n",
						v.Step, v.Images, v.PSNRY, v.SSIMY, v.BicubicPSNRY, v.BicubicSSIMY, filepath.Join(res.Dir, fmt.Sprintf("val_%06d.png", v.Step)))
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&stage, "stage", "", "rrdb, diffusion or all (default: train.stage)")
	f.IntVar(&steps, "steps", 0, "total steps of the stage (overrides train.steps / train.rrdb_steps)")
	f.StringVar(&out, "out", "", "run directory (default: train.out)")
	f.BoolVar(&resume, "resume", false, "continue from the latest complete checkpoint of the stage (an error if there is none)")
	f.StringVar(&rrdb, "rrdb", "", "RRDB checkpoint for the diffusion stage (default: the latest of RUN/rrdb)")
	f.IntVar(&stopAt, "stop-at", 0, "stop (with a checkpoint) after this many steps, keeping the schedule of the full run")
	return cmd
}
