package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/samdiffsr/samdiffsr/collective"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/progress"
)

// Training stages. A run directory RUN holds one folder per stage (RUN/rrdb,
// RUN/diffusion), each with config.yaml, metrics.jsonl, loss.png, val_STEP.png and
// checkpoints/.
const (
	StageRRDB      = "rrdb"
	StageDiffusion = "diffusion"
)

// ErrNonFinite is wrapped by Train's error when a loss is NaN or infinite.
var ErrNonFinite = errors.New("non-finite loss")

// TrainOptions configure Train.
type TrainOptions struct {
	// Config is the effective configuration.
	Config configs.Config
	// Stage is StageRRDB or StageDiffusion.
	Stage string
	// Run is the run directory; the stage writes into Run/<Stage>.
	Run string
	// RRDB is the checkpoint the diffusion stage takes its RRDB from (default: the
	// latest checkpoint of Run/rrdb).
	RRDB string
	// Resume continues from the latest complete checkpoint of the stage; it is an
	// error when there is none. Without Resume, a stage folder that already holds
	// checkpoints is an error (nothing is overwritten).
	Resume bool
	// StopAt, when > 0, ends the run after this many steps (writing a checkpoint)
	// although the schedule runs to the stage's total steps.
	StopAt int
	// Collective sums gradients across ranks (nil: Single). Rank and World place this
	// process in the generation (World 0 means 1). Only rank 0 writes files.
	Collective  collective.Collective
	Rank, World int
	// Log receives messages (default slog.Default()); Progress is where the terminal
	// progress bar is drawn (nil: log lines).
	Log      *slog.Logger
	Progress io.Writer
	// OnStep, when set, sees every step's loss once the step is complete (logged,
	// validated and checkpointed as scheduled).
	OnStep func(step int, loss float32)
	// Publish, when set, uploads every checkpoint to the job's registry in the
	// background (checkpoints.Publish); Train waits for pending uploads at the end.
	Publish PublishFunc
	// EnsureMasks, when set, is called before the diffusion stage reads label maps,
	// with the training images and the mask folder; it makes missing masks.
	EnsureMasks func(ctx context.Context, images []dataset.Image, dir string) error
}

// TrainResult summarises a finished (or interrupted) run.
type TrainResult struct {
	// Dir is the stage folder; Checkpoint the last checkpoint written.
	Dir, Checkpoint string
	// Step is the number of steps taken in all.
	Step int
	// Val holds the last validation, if any.
	Val *ValResult
	// LeftOut lists the training images left out of the data (with why).
	LeftOut []dataset.Problem
}

// ValResult is one validation: the model and bicubic on the held-out images.
type ValResult struct {
	Step                       int
	Images                     int
	PSNRY, SSIMY               float64
	BicubicPSNRY, BicubicSSIMY float64
	// X0 is the denoiser's x̂0 quality at a few t (diffusion stage only).
	X0 []X0Quality
}

// stageSpec are the per-stage settings.
type stageSpec struct {
	steps, batch int
	lr           float64
}

func specFor(cfg configs.Config, stage string) (stageSpec, error) {
	switch stage {
	case StageRRDB:
		return stageSpec{cfg.Train.RRDBSteps, cfg.Train.RRDBBatchSize, cfg.Train.RRDBLR}, nil
	case StageDiffusion:
		return stageSpec{cfg.Train.Steps, cfg.Train.BatchSize, cfg.Train.LR}, nil
	}
	return stageSpec{}, fmt.Errorf("worker: unknown stage %q; use rrdb or diffusion", stage)
}

// StageDir is the folder of a stage in a run directory.
func StageDir(run, stage string) string { return filepath.Join(run, stage) }

// Train runs one training stage (RRDB pretraining or modulated diffusion) as METHOD
// §5 describes, in this process:
//
//   - step s trains on the patches dataset.Loader gives for (seed, s), and draws the
//     timestep and noise of global sample k from a generator keyed by (seed, s, k), so
//     the whole run is a pure function of the configuration and the data: a resumed
//     run continues bit for bit, and a distributed run (RunTrainer) computes the same
//     steps whatever its world size;
//   - the trainer (trainer.go) computes, reduces, agrees and applies each step; the
//     gradient scaling is described there;
//   - every train.log_every steps a line goes to metrics.jsonl, every train.val_every
//     a validation (full sampling) and a val_STEP.png grid, every train.ckpt_every a
//     checkpoint (the recorder; rank 0 only);
//   - when ctx ends (Ctrl-C), a final checkpoint is written and ctx's error returned;
//   - a NaN or infinite loss stops the run with an error naming the step (wrapping
//     ErrNonFinite) before the optimizer applies it: nothing of that step is written.
func Train(ctx context.Context, opt TrainOptions) (*TrainResult, error) {
	cfg := opt.Config
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	spec, err := specFor(cfg, opt.Stage)
	if err != nil {
		return nil, err
	}
	if spec.steps <= 0 || spec.batch <= 0 {
		return nil, fmt.Errorf("worker: stage %s needs positive steps and batch size (got %d, %d)", opt.Stage, spec.steps, spec.batch)
	}
	coll := opt.Collective
	if coll == nil {
		coll = collective.Single{}
	}
	world := max(opt.World, 1)
	rank := opt.Rank
	if rank < 0 || rank >= world {
		return nil, fmt.Errorf("worker: rank %d outside world %d", rank, world)
	}
	dir := StageDir(opt.Run, opt.Stage)
	res := &TrainResult{Dir: dir}

	net, err := NewNet(cfg, cfg.Seed, log)
	if err != nil {
		return nil, err
	}
	defer net.Close()
	sp, err := startPolicy(net, startOptions{cfg: cfg, stage: opt.Stage, run: opt.Run, rrdb: opt.RRDB, resume: opt.Resume, log: log})
	if err != nil {
		return nil, err
	}
	end := spec.steps
	if opt.StopAt > 0 && opt.StopAt < end {
		end = opt.StopAt
	}
	res.Step = sp.step
	if sp.step >= end {
		log.Info("nothing to do: the stage is complete", "step", sp.step, "steps", end)
		return res, nil
	}
	tr, err := newTrainer(net, cfg, opt.Stage, sp.step)
	if err != nil {
		return nil, err
	}
	loader, leftOut, err := openLoaderReport(ctx, cfg, opt.Stage, opt.EnsureMasks, spec.batch, log)
	if err != nil {
		return nil, err
	}
	res.LeftOut = leftOut
	defer loader.Close()
	var rec *recorder
	if rank == 0 {
		if rec, err = openRecorder(cfg, opt.Stage, dir, sp, net, log); err != nil {
			return nil, err
		}
		rec.world = world
		defer rec.Close()
		if opt.Publish != nil {
			rec.pub = newPublisher(opt.Publish, cfg.Train.KeepCheckpoints, log, nil)
			defer func() {
				rec.pub.flush(context.WithoutCancel(ctx))
				rec.pub.close()
			}()
		}
	}
	// final writes the checkpoint of the steps applied so far (rank 0).
	final := func() error {
		if rec == nil {
			return nil
		}
		err := rec.save(tr.step)
		res.Checkpoint = rec.checkpoint
		return err
	}
	// The bar counts towards the stage's length, also when --stop-at ends it earlier.
	bar := progress.New(progress.Options{Label: "train " + opt.Stage, Unit: "steps", Total: int64(spec.steps), Out: opt.Progress, Log: log})
	bar.Set(int64(sp.step))
	defer bar.Done()

	for tr.step < end {
		s := tr.step
		if err := ctx.Err(); err != nil {
			return res, interrupted(err, final(), s)
		}
		if err := tr.compute(ctx, loader, dataset.Share{Rank: rank, World: world}); err != nil {
			if ctx.Err() != nil {
				return res, interrupted(ctx.Err(), final(), s)
			}
			return res, err
		}
		if err := tr.reduce(ctx, coll, world); err != nil {
			if ctx.Err() != nil {
				return res, interrupted(ctx.Err(), final(), s)
			}
			return res, err
		}
		ok, loss, err := tr.agree(ctx, coll, world)
		if err != nil {
			return res, err
		}
		if !ok {
			if rec != nil {
				res.Checkpoint = rec.checkpoint
			}
			return res, tr.nonFiniteError(res.Checkpoint)
		}
		lr, err := tr.apply()
		if err != nil {
			return res, err
		}
		done := tr.step
		res.Step = done
		bar.SetExtra(fmt.Sprintf("loss %.4f lr %.2e", loss, lr))
		bar.Add(1)
		if rec != nil {
			if err := rec.stepDone(ctx, done, end, float64(loss), lr, tr.stepBands); err != nil {
				res.Checkpoint, res.Val = rec.checkpoint, rec.lastVal
				if ctx.Err() != nil {
					return res, interrupted(ctx.Err(), final(), done)
				}
				return res, err
			}
			res.Checkpoint, res.Val = rec.checkpoint, rec.lastVal
		}
		if opt.OnStep != nil {
			opt.OnStep(s, loss)
		}
	}
	return res, nil
}

func orNone(s string) string {
	if s == "" {
		return "none in this run"
	}
	return s
}

// interrupted reports a stop by ctx after the final checkpoint was (or failed to be)
// written.
func interrupted(cause, saveErr error, step int) error {
	if saveErr != nil {
		return fmt.Errorf("worker: interrupted at step %d and the final checkpoint failed: %v: %w", step, saveErr, cause)
	}
	return fmt.Errorf("worker: interrupted at step %d (final checkpoint written): %w", step, cause)
}
