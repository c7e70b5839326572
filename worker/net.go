package worker

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/model"
)

// Net is what training and sampling need of a model, wherever its arithmetic runs:
// the CPU model (CPUNet) or, in a binary built with -tags cuda, model/cuda's
// Trainer. NewNet picks one from model.backend.
//
// Every Net carries a host model (Model): its parameters give the names, shapes
// and order of checkpoints, and its Param.Data/Param.Grad slabs are where values
// and gradients meet the host. A device Net copies them across only when asked:
// PullValues/PushValues for the values (checkpoints, weights loaded on the host),
// PullGrads/PushGrads for the gradients of the network being trained (the
// finiteness check and the all-reduce). On the CPU these are no-ops.
//
// The rrdb argument selects the network being trained: the RRDB (pretraining)
// or the U-Net (diffusion).
type Net interface {
	// Backend names where the arithmetic runs ("cpu (…)", "cuda (GPU name)").
	Backend() string
	// Model is the host model.
	Model() *model.SRDiff
	// Loss is model.SRDiff's RRDBLoss (rrdb) or DiffusionLoss; it overwrites the
	// trained network's gradients (on the device for a device Net).
	Loss(rrdb bool, b *model.Batch, t []int, noise []float32) (float32, error)
	// PullGrads makes the trained network's gradients visible in the host
	// model's Param.Grad; PushGrads sends them back after they changed there.
	PullGrads(rrdb bool) error
	PushGrads(rrdb bool) error
	// AdamStep applies Adam (model.Adam's update and defaults) at rate lr.
	AdamStep(rrdb bool, lr float64) error
	// AdamState exports the trained network's moments as model.Adam.State does
	// ("<name>.exp_avg", "<name>.exp_avg_sq"; none before the first step);
	// LoadAdamState restores them as model.Adam.Load does.
	AdamState(rrdb bool) (int64, []model.Tensor, error)
	LoadAdamState(rrdb bool, step int64, ts []model.Tensor) error
	// PullValues copies the current values into the host model's parameters;
	// PushValues sends the host model's values to the device (after LoadWeights).
	PullValues() error
	PushValues() error
	// SampleLosses is model.SRDiff.SampleLosses: the per-sample losses of the last
	// diffusion Loss (their mean is its loss).
	SampleLosses() []float32
	// Sample is model.SRDiff.SampleWith; RRDBForward is model.SRDiff.RRDBForward;
	// PredictNoise is model.SRDiff.PredictNoise.
	Sample(ctx context.Context, s model.Sampler, lr, up []float32, n, h, w int, rng *rand.Rand, onStep func(t int)) ([]float32, error)
	PredictNoise(lr, xt []float32, n, h, w int, t []int) ([]float32, error)
	RRDBForward(lr []float32, n, h, w int) ([]float32, error)
	// Close releases the device (nothing on the CPU).
	Close() error
}

// cpuNet is Net over the CPU model: the calls Train made before the seam existed.
type cpuNet struct {
	m          *model.SRDiff
	rrdb, unet *model.Adam
}

// CPUNet wraps a CPU model as a Net (one Adam per network).
func CPUNet(m *model.SRDiff) Net {
	return &cpuNet{m: m, rrdb: model.NewAdam(), unet: model.NewAdam()}
}

func (c *cpuNet) Backend() string      { return "cpu (" + model.BLASName() + ")" }
func (c *cpuNet) Model() *model.SRDiff { return c.m }

func (c *cpuNet) Loss(rrdb bool, b *model.Batch, t []int, noise []float32) (float32, error) {
	if rrdb {
		return c.m.RRDBLoss(b)
	}
	return c.m.DiffusionLoss(b, t, noise)
}

func (c *cpuNet) PullGrads(bool) error { return nil }
func (c *cpuNet) PushGrads(bool) error { return nil }

func (c *cpuNet) adam(rrdb bool) (*model.Adam, []*model.Param) {
	if rrdb {
		return c.rrdb, c.m.RRDBParams()
	}
	return c.unet, c.m.UNetParams()
}

func (c *cpuNet) AdamStep(rrdb bool, lr float64) error {
	a, ps := c.adam(rrdb)
	return a.Step(ps, lr)
}

func (c *cpuNet) AdamState(rrdb bool) (int64, []model.Tensor, error) {
	a, ps := c.adam(rrdb)
	step, ts := a.State(ps)
	return step, ts, nil
}

func (c *cpuNet) LoadAdamState(rrdb bool, step int64, ts []model.Tensor) error {
	a, ps := c.adam(rrdb)
	return a.Load(ps, step, ts)
}

func (c *cpuNet) PullValues() error { return nil }
func (c *cpuNet) PushValues() error { return nil }

func (c *cpuNet) SampleLosses() []float32 { return c.m.SampleLosses() }

func (c *cpuNet) Sample(ctx context.Context, s model.Sampler, lr, up []float32, n, h, w int, rng *rand.Rand, onStep func(t int)) ([]float32, error) {
	return c.m.SampleWith(ctx, s, lr, up, n, h, w, rng, onStep)
}

func (c *cpuNet) PredictNoise(lr, xt []float32, n, h, w int, t []int) ([]float32, error) {
	return c.m.PredictNoise(lr, xt, n, h, w, t)
}

func (c *cpuNet) RRDBForward(lr []float32, n, h, w int) ([]float32, error) {
	return c.m.RRDBForward(lr, n, h, w)
}

func (c *cpuNet) Close() error { return nil }

// newCPUModel builds the host model of cfg. model.New only knows the CPU, so the
// backend is settled here (NewNet) and the model always gets "cpu".
func newCPUModel(cfg configs.Config, seed int64) (*model.SRDiff, error) {
	if _, err := parseBackend(cfg.Model.Backend); err != nil {
		return nil, err
	}
	cfg.Model.Backend = "cpu"
	return model.New(cfg, seed)
}

// parseBackend checks model.backend ("" is auto).
func parseBackend(b string) (string, error) {
	switch b {
	case "", "auto":
		return "auto", nil
	case "cpu", "cuda":
		return b, nil
	}
	return "", fmt.Errorf("worker: model.backend %q: want auto, cpu or cuda", b)
}

// flatMoments splits the flat moments m and v (params order) into model.Adam's
// named tensors; none when step is 0 (model.Adam has no moments before its first
// step).
func flatMoments(ps []*model.Param, step int64, m, v []float32) []model.Tensor {
	if step == 0 {
		return nil
	}
	ts := make([]model.Tensor, 0, 2*len(ps))
	o := 0
	for _, p := range ps {
		n := len(p.Data)
		ts = append(ts,
			model.Tensor{Name: p.Name + ".exp_avg", Shape: append([]int(nil), p.Shape...), Data: append([]float32(nil), m[o:o+n]...)},
			model.Tensor{Name: p.Name + ".exp_avg_sq", Shape: append([]int(nil), p.Shape...), Data: append([]float32(nil), v[o:o+n]...)})
		o += n
	}
	return ts
}

// momentsFlat checks named moments as model.Adam.Load does and returns them flat
// (params order).
func momentsFlat(ps []*model.Param, step int64, ts []model.Tensor) (m, v []float32, err error) {
	a := model.NewAdam()
	if err := a.Load(ps, step, ts); err != nil {
		return nil, nil, err
	}
	_, st := a.State(ps)
	for i := 0; i+1 < len(st); i += 2 {
		m = append(m, st[i].Data...)
		v = append(v, st[i+1].Data...)
	}
	return m, v, nil
}
