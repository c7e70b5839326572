package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/internal/metrics"
	"github.com/samdiffsr/samdiffsr/internal/progress"
	"github.com/samdiffsr/samdiffsr/model"
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
	Collective  Collective
	Rank, World int
	// Log receives messages (default slog.Default()); Progress is where the terminal
	// progress bar is drawn (nil: log lines).
	Log      *slog.Logger
	Progress io.Writer
	// OnStep, when set, sees every step's loss once the step is complete (logged,
	// validated and checkpointed as scheduled).
	OnStep func(step int, loss float32)
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
}

// ValResult is one validation: the model and bicubic on the held-out images.
type ValResult struct {
	Step                       int
	Images                     int
	PSNRY, SSIMY               float64
	BicubicPSNRY, BicubicSSIMY float64
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
// §5 describes, on this process's share of every global batch:
//
//   - step s trains on the patches dataset.Loader gives for (seed, s), and draws the
//     timestep and noise of global sample k from a generator keyed by (seed, s, k), so
//     the whole run is a pure function of the configuration and the data: a resumed
//     run continues bit for bit, whatever the world size;
//   - gradients are scaled by the local share of the batch, summed with the
//     Collective, and applied with Adam at the scheduled learning rate;
//   - every train.log_every steps a line goes to metrics.jsonl, every train.val_every
//     a validation (full sampling) and a val_STEP.png grid, every train.ckpt_every a
//     checkpoint (rank 0 only);
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
		coll = Single{}
	}
	world := max(opt.World, 1)
	rank := opt.Rank
	if rank < 0 || rank >= world {
		return nil, fmt.Errorf("worker: rank %d outside world %d", rank, world)
	}
	writer := rank == 0
	dir := StageDir(opt.Run, opt.Stage)
	res := &TrainResult{Dir: dir}

	// Start point: fresh or resumed.
	var resume *checkpoints.Checkpoint
	if opt.Resume {
		latest, err := checkpoints.Latest(dir)
		if err != nil {
			return nil, fmt.Errorf("worker: --resume: %w (train without --resume to start the stage)", err)
		}
		if resume, err = checkpoints.Load(latest); err != nil {
			return nil, fmt.Errorf("worker: --resume: %w", err)
		}
		if resume.Meta.Stage != opt.Stage {
			return nil, fmt.Errorf("worker: --resume: %s is a %s checkpoint, not %s", latest, resume.Meta.Stage, opt.Stage)
		}
		if resume.Meta.ConfigHash != cfg.Hash() {
			log.Warn("configuration differs from the checkpoint's; the continuation is not the run it came from",
				"checkpoint", latest, "checkpoint_config_hash", resume.Meta.ConfigHash, "config_hash", cfg.Hash())
		}
	} else if es, err := checkpoints.List(dir); err == nil {
		for _, e := range es {
			if e.Err == nil {
				return nil, fmt.Errorf("worker: %s already holds checkpoints (latest %s); pass --resume to continue it or choose another --out", dir, e.Dir)
			}
		}
	}

	net, err := NewNet(cfg, cfg.Seed, log)
	if err != nil {
		return nil, err
	}
	defer net.Close()
	m := net.Model()
	rrdbStage := opt.Stage == StageRRDB
	trained := m.RRDBParams()
	if !rrdbStage {
		trained = m.UNetParams()
	}
	adam := model.NewAdam() // the hyper-parameters the checkpoints record; net holds the state
	start := 0
	rrdbSource := ""
	if resume != nil {
		if err := m.LoadWeights(toModelTensors(resume.Model), opt.Stage == StageRRDB); err != nil {
			return nil, fmt.Errorf("worker: resume from %s: %w", resume.Dir, err)
		}
		if err := net.PushValues(); err != nil {
			return nil, fmt.Errorf("worker: resume from %s: %w", resume.Dir, err)
		}
		astep, err := strconv.ParseInt(resume.OptimizerMeta["adam_step"], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("worker: resume from %s: optimizer step %q: %w", resume.Dir, resume.OptimizerMeta["adam_step"], err)
		}
		if astep > 0 {
			if err := net.LoadAdamState(rrdbStage, astep, toModelTensorsList(resume.Optimizer)); err != nil {
				return nil, fmt.Errorf("worker: resume from %s: %w", resume.Dir, err)
			}
		}
		start = int(resume.Meta.Step)
		rrdbSource = resume.Meta.Extra["rrdb_checkpoint"]
		log.Info("resuming", "checkpoint", resume.Dir, "step", start)
	} else if opt.Stage == StageDiffusion {
		src := opt.RRDB
		if src == "" {
			src = StageDir(opt.Run, StageRRDB)
		}
		dirRRDB, err := checkpoints.Resolve(src)
		if err != nil {
			return nil, fmt.Errorf("worker: the diffusion stage needs a pretrained RRDB: %w (run `samdiffsr train --stage rrdb` first or pass --rrdb)", err)
		}
		ck, err := checkpoints.Load(dirRRDB)
		if err != nil {
			return nil, err
		}
		rrdbOnly := map[string]checkpoints.Tensor{}
		for _, p := range m.RRDBParams() {
			t, ok := ck.Model[p.Name]
			if !ok {
				return nil, fmt.Errorf("worker: RRDB checkpoint %s lacks %q (model sizes differ from the config?)", ck.Dir, p.Name)
			}
			rrdbOnly[p.Name] = t
		}
		if err := m.LoadWeights(toModelTensors(rrdbOnly), true); err != nil {
			return nil, fmt.Errorf("worker: RRDB from %s: %w", ck.Dir, err)
		}
		if err := net.PushValues(); err != nil {
			return nil, fmt.Errorf("worker: RRDB from %s: %w", ck.Dir, err)
		}
		rrdbSource = ck.Dir
		log.Info("RRDB loaded", "checkpoint", ck.Dir, "step", ck.Meta.Step)
	}
	end := spec.steps
	if opt.StopAt > 0 && opt.StopAt < end {
		end = opt.StopAt
	}
	res.Step = start
	if start >= end {
		log.Info("nothing to do: the stage is complete", "step", start, "steps", end)
		return res, nil
	}

	// Data.
	loader, err := openLoader(ctx, cfg, opt, spec, log)
	if err != nil {
		return nil, err
	}
	defer loader.Close()
	var vs *valSet
	if writer && cfg.Train.ValEvery > 0 {
		if vs, err = loadValSet(cfg, m.Multiple(), log); err != nil {
			return nil, err
		}
	}

	// Run folder.
	var rlog *RunLog
	if writer {
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
		if resume != nil {
			keep = start
		}
		if rlog, err = OpenRunLog(dir, keep); err != nil {
			return nil, err
		}
		defer rlog.Close()
	}

	saveCkpt := func(step int, val *ValResult) error {
		if !writer {
			return nil
		}
		meta := checkpoints.Meta{Step: int64(step), Stage: opt.Stage, ConfigHash: cfg.Hash(),
			Modulation: cfg.Diffusion.Modulation, Extra: map[string]string{"world": strconv.Itoa(world)}}
		if y, err := cfg.YAML(); err == nil {
			meta.Config = string(y)
		}
		if rrdbSource != "" {
			meta.Extra["rrdb_checkpoint"] = rrdbSource
		}
		if val != nil {
			meta.Metrics = map[string]float64{"val_psnr_y": val.PSNRY, "val_ssim_y": val.SSIMY,
				"val_bicubic_psnr_y": val.BicubicPSNRY, "val_bicubic_ssim_y": val.BicubicSSIMY}
		}
		if err := net.PullValues(); err != nil {
			return err
		}
		weights := m.Params()
		if opt.Stage == StageRRDB {
			weights = m.RRDBParams()
		}
		astep, ats, err := net.AdamState(rrdbStage)
		if err != nil {
			return err
		}
		ck := checkpoints.Checkpoint{Meta: meta, Model: paramTensors(weights), Optimizer: fromModelTensors(ats),
			OptimizerMeta: map[string]string{"adam_step": strconv.FormatInt(astep, 10), "optimizer": "adam",
				"beta1": fmt.Sprint(adam.Beta1), "beta2": fmt.Sprint(adam.Beta2), "eps": fmt.Sprint(adam.Eps)}}
		path := filepath.Join(dir, checkpoints.SubDir, checkpoints.DirName(int64(step)))
		if err := checkpoints.Save(path, ck); err != nil {
			return err
		}
		res.Checkpoint = path
		log.Info("checkpoint written", "dir", path, "step", step)
		if err := checkpoints.Prune(dir, cfg.Train.KeepCheckpoints); err != nil {
			log.Warn("prune checkpoints", "err", err)
		}
		return PlotLoss(filepath.Join(dir, LossPlot), opt.Stage+" loss", rlog.Records())
	}

	bar := progress.New(progress.Options{Label: "train " + opt.Stage, Unit: "steps", Total: int64(end), Out: opt.Progress, Log: log})
	bar.Set(int64(start))
	defer bar.Done()

	T := m.Schedule().T
	var (
		winLoss  float64
		winSteps int
		winStart = time.Now()
		lastVal  *ValResult
		grads    []float32
		lastPlot = time.Now()
	)
	for s := start; s < end; s++ {
		if err := ctx.Err(); err != nil {
			return res, interrupted(err, saveCkpt(s, lastVal), s)
		}
		b, err := loader.Batch(ctx, int64(s), rank, world)
		if err != nil {
			if ctx.Err() != nil {
				return res, interrupted(ctx.Err(), saveCkpt(s, lastVal), s)
			}
			return res, fmt.Errorf("worker: batch of step %d: %w", s, err)
		}
		mb := &model.Batch{N: b.N, H: b.H, W: b.W, HR: b.HR, Up: b.Up, LR: b.LR, E: b.E}
		lo, _ := dataset.RankRange(spec.batch, rank, world)
		var loss float32
		if rrdbStage {
			loss, err = net.Loss(true, mb, nil, nil)
		} else {
			ts, noise := stepNoise(cfg.Seed, s, spec.batch, lo, b.N, 3*b.H*b.W, T)
			loss, err = net.Loss(false, mb, ts, noise)
		}
		if err != nil || math.IsNaN(float64(loss)) || math.IsInf(float64(loss), 0) {
			if math.IsNaN(float64(loss)) || math.IsInf(float64(loss), 0) {
				return res, fmt.Errorf("worker: step %d of the %s stage: loss is %v: %w; nothing of this step was applied or saved (last checkpoint: %s); lower train.lr or check the data",
					s, opt.Stage, loss, ErrNonFinite, orNone(res.Checkpoint))
			}
			return res, fmt.Errorf("worker: step %d: %w", s, err)
		}
		loader.Recycle(b)
		if err := net.PullGrads(rrdbStage); err != nil {
			return res, fmt.Errorf("worker: step %d: %w", s, err)
		}
		if name, ok := finiteGrads(trained); !ok {
			return res, fmt.Errorf("worker: step %d of the %s stage: the gradient of %s is not finite (loss %v): %w; nothing of this step was applied or saved (last checkpoint: %s); lower train.lr or check the data and the RRDB",
				s, opt.Stage, name, loss, ErrNonFinite, orNone(res.Checkpoint))
		}
		if world > 1 {
			// Mean over the global batch: each rank's loss is a mean over its share.
			scale := float32(b.N) / float32(spec.batch)
			grads = flattenGrads(trained, grads, scale)
			if err := coll.AllReduce(ctx, grads); err != nil {
				if ctx.Err() != nil {
					return res, interrupted(ctx.Err(), saveCkpt(s, lastVal), s)
				}
				return res, fmt.Errorf("worker: all-reduce of step %d: %w", s, err)
			}
			unflattenGrads(trained, grads)
			if err := net.PushGrads(rrdbStage); err != nil {
				return res, fmt.Errorf("worker: step %d: %w", s, err)
			}
		}
		lr, err := LRSchedule(cfg.Train.LRSchedule, spec.lr, s, spec.steps, cfg.Train.LRStep, cfg.Train.LRGamma)
		if err != nil {
			return res, err
		}
		if err := net.AdamStep(rrdbStage, lr); err != nil {
			return res, err
		}
		done := s + 1
		res.Step = done
		winLoss += float64(loss)
		winSteps++
		bar.SetExtra(fmt.Sprintf("loss %.4f lr %.2e", loss, lr))
		bar.Add(1)
		if writer && (done%max(cfg.Train.LogEvery, 1) == 0 || done == end) {
			el := time.Since(winStart).Seconds()
			rec := MetricsRecord{Step: done, Stage: opt.Stage, Loss: ptr(winLoss / float64(winSteps)), LR: ptr(lr),
				Steps: winSteps, Time: time.Now().UTC().Format(time.RFC3339)}
			if el > 0 {
				rec.StepsPerS = ptr(float64(winSteps) / el)
			}
			if err := rlog.Append(rec); err != nil {
				return res, err
			}
			winLoss, winSteps, winStart = 0, 0, time.Now()
			if time.Since(lastPlot) > 30*time.Second {
				if err := PlotLoss(filepath.Join(dir, LossPlot), opt.Stage+" loss", rlog.Records()); err != nil {
					log.Warn("plot", "err", err)
				}
				lastPlot = time.Now()
			}
		}
		if vs != nil && (done%cfg.Train.ValEvery == 0 || done == spec.steps) {
			v, err := validate(ctx, net, rrdbStage, vs, cfg.Seed, done, dir)
			if err != nil {
				if ctx.Err() != nil {
					return res, interrupted(ctx.Err(), saveCkpt(done, lastVal), done)
				}
				return res, err
			}
			lastVal = v
			res.Val = v
			log.Info("validation", "step", done, "psnr_y", fmt.Sprintf("%.3f", v.PSNRY), "ssim_y", fmt.Sprintf("%.4f", v.SSIMY),
				"bicubic_psnr_y", fmt.Sprintf("%.3f", v.BicubicPSNRY))
			if err := rlog.Append(MetricsRecord{Step: done, Stage: opt.Stage, ValPSNRY: ptr(v.PSNRY), ValSSIMY: ptr(v.SSIMY),
				ValBicubicPSNRY: ptr(v.BicubicPSNRY), ValBicubicSSIMY: ptr(v.BicubicSSIMY), ValImages: v.Images,
				Time: time.Now().UTC().Format(time.RFC3339)}); err != nil {
				return res, err
			}
		}
		if (cfg.Train.CkptEvery > 0 && done%cfg.Train.CkptEvery == 0) || done == end {
			if err := saveCkpt(done, lastVal); err != nil {
				return res, err
			}
		}
		if opt.OnStep != nil {
			opt.OnStep(s, loss)
		}
	}
	return res, nil
}

// finiteGrads reports the first parameter whose gradient holds a NaN or infinity.
func finiteGrads(ps []*model.Param) (string, bool) {
	for _, p := range ps {
		for _, g := range p.Grad {
			if math.IsNaN(float64(g)) || math.IsInf(float64(g), 0) {
				return p.Name, false
			}
		}
	}
	return "", true
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

// stepNoise draws the timesteps and the standard normal noise of the local samples
// lo..lo+n-1 of step s's global batch of size batch. Sample k's values come from a
// PCG keyed by (seed, s·batch + k) on a stream of their own, so they do not depend on
// how the batch is split across ranks.
func stepNoise(seed int64, s, batch, lo, n, size, T int) ([]int, []float32) {
	ts := make([]int, n)
	noise := make([]float32, n*size)
	for i := 0; i < n; i++ {
		k := uint64(s)*uint64(batch) + uint64(lo+i)
		rng := rand.New(rand.NewPCG(uint64(seed)^0x5eed_d1ff_0000_0001, k))
		ts[i] = rng.IntN(T)
		for j := 0; j < size; j++ {
			noise[i*size+j] = float32(rng.NormFloat64())
		}
	}
	return ts, noise
}

func flattenGrads(ps []*model.Param, buf []float32, scale float32) []float32 {
	n := 0
	for _, p := range ps {
		n += len(p.Grad)
	}
	if cap(buf) < n {
		buf = make([]float32, n)
	}
	buf = buf[:n]
	o := 0
	for _, p := range ps {
		for i, g := range p.Grad {
			buf[o+i] = g * scale
		}
		o += len(p.Grad)
	}
	return buf
}

func unflattenGrads(ps []*model.Param, buf []float32) {
	o := 0
	for _, p := range ps {
		copy(p.Grad, buf[o:o+len(p.Grad)])
		o += len(p.Grad)
	}
}

func toModelTensorsList(ts map[string]checkpoints.Tensor) []model.Tensor { return toModelTensors(ts) }

// openLoader discovers the training images, makes sure masks exist (diffusion stage
// with modulation), packs the tile cache and opens a Loader.
func openLoader(ctx context.Context, cfg configs.Config, opt TrainOptions, spec stageSpec, log *slog.Logger) (*dataset.Loader, error) {
	if cfg.Data.Root == "" {
		return nil, fmt.Errorf("worker: data.root is empty; set it to a folder of training images")
	}
	layout, err := dataset.Discover(cfg.Data.Root)
	if err != nil {
		return nil, err
	}
	for _, p := range layout.Problems {
		log.Warn("dataset problem", "problem", p.String())
	}
	images := layout.Train()
	if len(images) == 0 {
		return nil, fmt.Errorf("worker: no training images under %s", cfg.Data.Root)
	}
	po := dataset.PackOptions{Dir: dataset.CacheDir(cfg.Data), TileSize: cfg.Data.TileSize, TileThreshold: cfg.Data.TileThreshold, Log: log}
	if opt.Stage == StageDiffusion && cfg.Diffusion.Modulation != "none" {
		if cfg.Masks.Dir == "" {
			return nil, fmt.Errorf("worker: masks.dir is empty; the %s modulation needs label maps", cfg.Diffusion.Modulation)
		}
		if opt.EnsureMasks != nil {
			if err := opt.EnsureMasks(ctx, images, cfg.Masks.Dir); err != nil {
				return nil, err
			}
		}
		md, err := dataset.NewMaskDir(cfg.Masks.Dir, images, dataset.SPEOptions(cfg.Masks, cfg.Data.Scale), 0)
		if err != nil {
			return nil, err
		}
		po.Masks = md
	}
	cache, stats, problems, err := dataset.Pack(ctx, images, po)
	if err != nil {
		return nil, err
	}
	for _, p := range problems {
		log.Warn("image left out", "problem", p.String())
	}
	log.Info("training data", "images", stats.Images, "tiles", stats.Tiles, "decoded", stats.Rebuilt, "cache", po.Dir)
	l, err := dataset.NewLoader(cache, dataset.LoaderOptions{Seed: cfg.Seed, BatchSize: spec.batch, PatchSize: cfg.Data.PatchSize,
		Reduce: cfg.Masks.ReduceSingleRegion})
	if err != nil {
		cache.Close()
		return nil, err
	}
	return l, nil
}

// valSet holds the held-out images: HR crops, their LR and the bicubic baseline.
type valSet struct {
	ids         []string
	hr, lr, bic []*dataset.RGB
	bicP, bicS  float64
	crop        int
}

// loadValSet reads data.val_root (or the DIV2K validation set under data.root): the
// first data.val_images images, centre-cropped to data.val_size and to a multiple of
// the model's size multiple; LR by the MATLAB-compatible imresize.
func loadValSet(cfg configs.Config, multiple int, log *slog.Logger) (*valSet, error) {
	var images []dataset.Image
	if cfg.Data.ValRoot != "" {
		l, err := dataset.Discover(cfg.Data.ValRoot)
		if err != nil {
			return nil, fmt.Errorf("worker: validation images: %w", err)
		}
		images = l.Images
	} else if l, err := dataset.Discover(cfg.Data.Root); err == nil {
		images = l.Valid()
	}
	if len(images) == 0 {
		log.Warn("no validation images (set data.val_root); validation skipped")
		return nil, nil
	}
	if n := cfg.Data.ValImages; n > 0 && n < len(images) {
		images = images[:n]
	}
	k := max(multiple, 8)
	vs := &valSet{crop: cfg.Eval.CropBorder}
	var bm metrics.Mean
	for _, im := range images {
		full, err := dataset.LoadRGB(im.HRPath)
		if err != nil {
			return nil, err
		}
		w, h := full.W, full.H
		if s := cfg.Data.ValSize; s > 0 {
			w, h = min(w, s), min(h, s)
		}
		w, h = w-w%k, h-h%k
		if w < 16 || h < 16 {
			log.Warn("validation image too small; skipped", "image", im.HRPath)
			continue
		}
		hr := full.Crop((full.W-w)/2, (full.H-h)/2, w, h)
		lr, err := dataset.Imresize(hr, 0.25)
		if err != nil {
			return nil, err
		}
		bic, err := dataset.Imresize(lr, 4)
		if err != nil {
			return nil, err
		}
		p, s, err := metrics.RGB8(w, h, bic.Pix, hr.Pix, vs.crop)
		if err != nil {
			return nil, fmt.Errorf("worker: validation image %s: %w", im.HRPath, err)
		}
		bm.Add(p, s)
		vs.ids = append(vs.ids, im.ID)
		vs.hr, vs.lr, vs.bic = append(vs.hr, hr), append(vs.lr, lr), append(vs.bic, bic)
	}
	if len(vs.ids) == 0 {
		return nil, nil
	}
	vs.bicP, vs.bicS = bm.PSNR(), bm.SSIM()
	return vs, nil
}

// validate super-resolves the validation images (full sampling, or the RRDB head for
// the RRDB stage), measures them and writes val_STEP.png.
func validate(ctx context.Context, net Net, rrdbOnly bool, vs *valSet, seed int64, step int, dir string) (*ValResult, error) {
	sr := NewSRNet(net, rrdbOnly, SROptions{Seed: seed})
	var mean metrics.Mean
	rows := make([][]*dataset.RGB, 0, len(vs.hr))
	for i, lr := range vs.lr {
		out, err := sr.Upscale(ctx, lr)
		if err != nil {
			return nil, fmt.Errorf("worker: validation of %s: %w", vs.ids[i], err)
		}
		hr := vs.hr[i]
		p, s, err := metrics.RGB8(hr.W, hr.H, out.Pix, hr.Pix, vs.crop)
		if err != nil {
			return nil, err
		}
		mean.Add(p, s)
		rows = append(rows, []*dataset.RGB{vs.bic[i], out, hr})
	}
	if err := SaveGrid(filepath.Join(dir, fmt.Sprintf("val_%06d.png", step)), rows); err != nil {
		return nil, err
	}
	return &ValResult{Step: step, Images: mean.N(), PSNRY: mean.PSNR(), SSIMY: mean.SSIM(), BicubicPSNRY: vs.bicP, BicubicSSIMY: vs.bicS}, nil
}
