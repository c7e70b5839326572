package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/model"
)

// recorder is what the writer rank (rank 0) does around the steps: the stage folder
// (config.yaml, metrics.jsonl, loss.png), validation every train.val_every steps
// with its val_STEP.png grid, and checkpoints every train.ckpt_every steps and at
// the end. Other ranks have none.
type recorder struct {
	cfg   configs.Config
	stage string
	dir   string
	net   Net
	log   *slog.Logger
	rlog  *RunLog
	vs    *valSet
	// rrdbSource and world go into checkpoint metadata.
	rrdbSource string
	world      int
	// pub, when set, uploads every checkpoint written to the registry (and prunes).
	pub *publisher
	// sampler is what validation samples with (sr.*).
	sampler model.Sampler

	winLoss  float64
	winSteps int
	// bands and winBands: the diffusion loss by timestep band over the window.
	bands    [][2]int
	winBands bandTotals
	winStart time.Time
	lastPlot time.Time
	// lastVal is the latest validation; checkpoint is the latest checkpoint written.
	lastVal    *ValResult
	checkpoint string
}

// openRecorder prepares dir for a stage starting at start (resumed: the run log
// keeps its lines up to start; otherwise it starts empty).
func openRecorder(cfg configs.Config, stage, dir string, sp startPoint, net Net, log *slog.Logger) (*recorder, error) {
	r := &recorder{cfg: cfg, stage: stage, dir: dir, net: net, log: log, rrdbSource: sp.rrdbSource, world: 1,
		winStart: time.Now(), lastPlot: time.Now()}
	sampler, err := samplerFor(cfg, net.Model())
	if err != nil {
		return nil, err
	}
	r.sampler = sampler
	if cfg.Train.ValEvery > 0 {
		vs, err := loadValSet(cfg, net.Model().Multiple(), log)
		if err != nil {
			return nil, err
		}
		r.vs = vs
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("worker: create run folder %s: %w", dir, err)
	}
	y, err := cfg.YAML()
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, ConfigFile), y, 0o644); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	keep := -1
	if sp.resumed || sp.step > 0 {
		keep = sp.step
	}
	if r.rlog, err = OpenRunLog(dir, keep); err != nil {
		return nil, err
	}
	return r, nil
}

// Close closes the run log.
func (r *recorder) Close() error { return r.rlog.Close() }

// stepDone records step done (1-based) of a run that ends at end, with the global
// batch's loss and its totals by timestep band (the trainer's stepBands): the
// metrics line every train.log_every steps, validation every train.val_every, a
// checkpoint every train.ckpt_every and at end.
func (r *recorder) stepDone(ctx context.Context, done, end int, loss, lr float64, bands bandTotals) error {
	cfg := r.cfg
	r.winLoss += loss
	r.winSteps++
	if r.stage == StageDiffusion {
		if r.bands == nil {
			r.bands = lossBands(r.net.Model().Schedule().T)
			r.winBands = newBandTotals(len(r.bands))
		}
		r.winBands.add(bands)
	}
	if done%max(cfg.Train.LogEvery, 1) == 0 || done == end {
		if err := r.metricsLine(done, lr); err != nil {
			return err
		}
	}
	if r.vs != nil && validationStep(cfg, r.stage, done) {
		if err := r.validate(ctx, done); err != nil {
			return err
		}
	}
	if (cfg.Train.CkptEvery > 0 && done%cfg.Train.CkptEvery == 0) || done == end {
		return r.save(done)
	}
	return nil
}

// validationStep says whether the writer validates after step done of stage.
func validationStep(cfg configs.Config, stage string, done int) bool {
	steps := cfg.Train.Steps
	if stage == StageRRDB {
		steps = cfg.Train.RRDBSteps
	}
	return cfg.Train.ValEvery > 0 && (done%cfg.Train.ValEvery == 0 || done == steps)
}

func (r *recorder) metricsLine(done int, lr float64) error {
	el := time.Since(r.winStart).Seconds()
	rec := MetricsRecord{Step: done, Stage: r.stage, Loss: ptr(r.winLoss / float64(r.winSteps)), LR: ptr(lr),
		Steps: r.winSteps, LossByT: bandLosses(r.bands, r.winBands), Time: time.Now().UTC().Format(time.RFC3339)}
	r.winBands.reset()
	if el > 0 {
		rec.StepsPerS = ptr(float64(r.winSteps) / el)
	}
	if err := r.rlog.Append(rec); err != nil {
		return err
	}
	r.winLoss, r.winSteps, r.winStart = 0, 0, time.Now()
	if time.Since(r.lastPlot) > 30*time.Second {
		if err := PlotLoss(filepath.Join(r.dir, LossPlot), r.stage+" loss", r.rlog.Records()); err != nil {
			r.log.Warn("plot", "err", err)
		}
		r.lastPlot = time.Now()
	}
	return nil
}

func (r *recorder) validate(ctx context.Context, done int) error {
	r.log.Info("validating (the progress bar waits until it is done)", "step", done, "images", len(r.vs.lr), "stage", r.stage)
	v, err := validate(ctx, r.net, r.stage == StageRRDB, r.sampler, r.vs, r.cfg.Seed, done, r.dir)
	if err != nil {
		return err
	}
	r.lastVal = v
	r.log.Info("validation", "step", done, "psnr_y", fmt.Sprintf("%.3f", v.PSNRY), "ssim_y", fmt.Sprintf("%.4f", v.SSIMY),
		"bicubic_psnr_y", fmt.Sprintf("%.3f", v.BicubicPSNRY), "x0_psnr_y_by_t", x0String(v.X0))
	return r.rlog.Append(MetricsRecord{Step: done, Stage: r.stage, ValPSNRY: ptr(v.PSNRY), ValSSIMY: ptr(v.SSIMY),
		ValBicubicPSNRY: ptr(v.BicubicPSNRY), ValBicubicSSIMY: ptr(v.BicubicSSIMY), ValImages: v.Images,
		ValX0: v.X0, Time: time.Now().UTC().Format(time.RFC3339)})
}

// save writes the checkpoint of step (values, Adam state, metadata), prunes old
// ones and redraws loss.png.
func (r *recorder) save(step int) error {
	cfg := r.cfg
	rrdbStage := r.stage == StageRRDB
	meta := checkpoints.Meta{Step: int64(step), Stage: r.stage, ConfigHash: cfg.Hash(),
		Modulation: cfg.Diffusion.Modulation, Extra: map[string]string{"world": strconv.Itoa(r.world)}}
	if y, err := cfg.YAML(); err == nil {
		meta.Config = string(y)
	}
	if r.rrdbSource != "" {
		meta.Extra["rrdb_checkpoint"] = r.rrdbSource
	}
	if v := r.lastVal; v != nil {
		meta.Metrics = map[string]float64{"val_psnr_y": v.PSNRY, "val_ssim_y": v.SSIMY,
			"val_bicubic_psnr_y": v.BicubicPSNRY, "val_bicubic_ssim_y": v.BicubicSSIMY}
	}
	if err := r.net.PullValues(); err != nil {
		return err
	}
	m := r.net.Model()
	weights := m.Params()
	if rrdbStage {
		weights = m.RRDBParams()
	}
	astep, ats, err := r.net.AdamState(rrdbStage)
	if err != nil {
		return err
	}
	adam := model.NewAdam() // the hyper-parameters every Net's Adam uses
	ck := checkpoints.Checkpoint{Meta: meta, Model: paramTensors(weights), Optimizer: fromModelTensors(ats),
		OptimizerMeta: map[string]string{"adam_step": strconv.FormatInt(astep, 10), "optimizer": "adam",
			"beta1": fmt.Sprint(adam.Beta1), "beta2": fmt.Sprint(adam.Beta2), "eps": fmt.Sprint(adam.Eps)}}
	path := filepath.Join(r.dir, checkpoints.SubDir, checkpoints.DirName(int64(step)))
	if err := checkpoints.Save(path, ck); err != nil {
		return err
	}
	r.checkpoint = path
	r.log.Info("checkpoint written", "dir", path, "step", step)
	if r.pub != nil {
		r.pub.enqueue(path)
	} else if err := checkpoints.Prune(r.dir, cfg.Train.KeepCheckpoints); err != nil {
		r.log.Warn("prune checkpoints", "err", err)
	}
	return PlotLoss(filepath.Join(r.dir, LossPlot), r.stage+" loss", r.rlog.Records())
}
