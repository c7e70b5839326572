package worker

import (
	"fmt"
	"log/slog"
	"strconv"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
)

// The start policy: where a stage's state comes from before its first step.
//
//   - fresh: the seeded initialisation of NewNet (every rank computes the same one);
//   - resume: the latest complete checkpoint of the stage folder (values, Adam state,
//     step), refused when there is none;
//   - RRDB import (diffusion stage, not resumed): the pretrained RRDB from a checkpoint;
//   - from a generation: a peer's in-memory state, received over the collective
//     (trainState, restore) — the distributed loop's case, decided there.
//
// startPolicy does the first three for one process.

// startPoint is where a stage starts.
type startPoint struct {
	// step is the number of steps already applied; resumed says it came from a
	// checkpoint of the stage (the run log is then kept up to step).
	step    int
	resumed bool
	// rrdbSource is the checkpoint the RRDB came from (recorded in checkpoints).
	rrdbSource string
}

// startOptions are what the start policy needs of TrainOptions.
type startOptions struct {
	cfg    configs.Config
	stage  string
	run    string
	rrdb   string
	resume bool
	// auto resumes when the stage folder holds a checkpoint and starts fresh
	// otherwise (the distributed loop: a restarted job continues).
	auto bool
	log  *slog.Logger
}

// startPolicy loads net's starting state for the stage as o says.
func startPolicy(net Net, o startOptions) (startPoint, error) {
	dir := StageDir(o.run, o.stage)
	resume := o.resume
	if o.auto {
		_, err := checkpoints.Latest(dir)
		resume = err == nil
	}
	if resume {
		return resumeFrom(net, o, dir)
	}
	if es, err := checkpoints.List(dir); err == nil {
		for _, e := range es {
			if e.Err == nil {
				return startPoint{}, fmt.Errorf("worker: %s already holds checkpoints (latest %s); pass --resume to continue it or choose another --out", dir, e.Dir)
			}
		}
	}
	if o.stage != StageDiffusion {
		return startPoint{}, nil
	}
	src, err := importRRDB(net, o)
	return startPoint{rrdbSource: src}, err
}

// resumeFrom loads the latest checkpoint of dir.
func resumeFrom(net Net, o startOptions, dir string) (startPoint, error) {
	latest, err := latestCheckpoint(dir, o.log)
	if err != nil {
		return startPoint{}, fmt.Errorf("worker: --resume: %w (train without --resume to start the stage)", err)
	}
	ck, err := checkpoints.Load(latest)
	if err != nil {
		return startPoint{}, fmt.Errorf("worker: --resume: %w", err)
	}
	if ck.Meta.Stage != o.stage {
		return startPoint{}, fmt.Errorf("worker: --resume: %s is a %s checkpoint, not %s", latest, ck.Meta.Stage, o.stage)
	}
	if ck.Meta.ConfigHash != o.cfg.Hash() {
		o.log.Warn("configuration differs from the checkpoint's; the continuation is not the run it came from",
			"checkpoint", latest, "checkpoint_config_hash", ck.Meta.ConfigHash, "config_hash", o.cfg.Hash())
	}
	rrdbStage := o.stage == StageRRDB
	m := net.Model()
	if err := m.LoadWeights(toModelTensors(ck.Model), rrdbStage); err != nil {
		return startPoint{}, fmt.Errorf("worker: resume from %s: %w", ck.Dir, err)
	}
	if err := net.PushValues(); err != nil {
		return startPoint{}, fmt.Errorf("worker: resume from %s: %w", ck.Dir, err)
	}
	astep, err := strconv.ParseInt(ck.OptimizerMeta["adam_step"], 10, 64)
	if err != nil {
		return startPoint{}, fmt.Errorf("worker: resume from %s: optimizer step %q: %w", ck.Dir, ck.OptimizerMeta["adam_step"], err)
	}
	if astep > 0 {
		if err := net.LoadAdamState(rrdbStage, astep, toModelTensors(ck.Optimizer)); err != nil {
			return startPoint{}, fmt.Errorf("worker: resume from %s: %w", ck.Dir, err)
		}
	}
	o.log.Info("resuming", "checkpoint", ck.Dir, "step", ck.Meta.Step)
	return startPoint{step: int(ck.Meta.Step), resumed: true, rrdbSource: ck.Meta.Extra["rrdb_checkpoint"]}, nil
}

// importRRDB loads the pretrained RRDB the diffusion stage starts from (o.rrdb, or
// the latest checkpoint of the run's rrdb stage) and returns its folder.
func importRRDB(net Net, o startOptions) (string, error) {
	src := o.rrdb
	if src == "" {
		src = StageDir(o.run, StageRRDB)
	}
	dirRRDB, err := ResolveCheckpoint(src, o.log)
	if err != nil {
		return "", fmt.Errorf("worker: the diffusion stage needs a pretrained RRDB: %w (run `samdiffsr train --stage rrdb` first or pass --rrdb)", err)
	}
	ck, err := checkpoints.Load(dirRRDB)
	if err != nil {
		return "", err
	}
	m := net.Model()
	rrdbOnly := map[string]checkpoints.Tensor{}
	for _, p := range m.RRDBParams() {
		t, ok := ck.Model[p.Name]
		if !ok {
			return "", fmt.Errorf("worker: RRDB checkpoint %s lacks %q (model sizes differ from the config?)", ck.Dir, p.Name)
		}
		rrdbOnly[p.Name] = t
	}
	if err := m.LoadWeights(toModelTensors(rrdbOnly), true); err != nil {
		return "", fmt.Errorf("worker: RRDB from %s: %w", ck.Dir, err)
	}
	if err := net.PushValues(); err != nil {
		return "", fmt.Errorf("worker: RRDB from %s: %w", ck.Dir, err)
	}
	o.log.Info("RRDB loaded", "checkpoint", ck.Dir, "step", ck.Meta.Step)
	return ck.Dir, nil
}
