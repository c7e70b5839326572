//go:build cuda

package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/model"
	"github.com/samdiffsr/samdiffsr/model/cuda"
)

// CUDABuild reports whether this binary was built with -tags cuda.
const CUDABuild = true

// NewNet builds the model of cfg (parameters initialised from seed) on the backend
// model.backend selects: cpu gives the CPU model; cuda and auto open GPU 0 and
// build a cuda.Trainer over the model, and when that fails auto falls back to the
// CPU (logging why) while cuda is an error.
func NewNet(cfg configs.Config, seed int64, log *slog.Logger) (Net, error) {
	if log == nil {
		log = slog.Default()
	}
	b, err := parseBackend(cfg.Model.Backend)
	if err != nil {
		return nil, err
	}
	m, err := newCPUModel(cfg, seed)
	if err != nil {
		return nil, err
	}
	if b == "cpu" {
		return CPUNet(m), nil
	}
	n, err := newCUDANet(cfg, m)
	if err != nil {
		if b == "cuda" {
			return nil, fmt.Errorf("worker: model.backend is cuda but the GPU could not be used: %w; check the NVIDIA driver and LD_LIBRARY_PATH (libcuda.so.1, libcublas.so.13), or set model.backend to auto or cpu", err)
		}
		log.Info("compute backend: cpu", "reason", "model.backend auto and no usable GPU: "+err.Error())
		return CPUNet(m), nil
	}
	log.Info("compute backend: cuda", "gpu", n.d.Name)
	return n, nil
}

// cudaNet is Net over cuda.Trainer: values, gradients and Adam moments live on
// the device; the host model is synchronised on request.
type cudaNet struct {
	d  *cuda.Device
	tr *cuda.Trainer
	m  *model.SRDiff
}

func newCUDANet(cfg configs.Config, m *model.SRDiff) (*cudaNet, error) {
	d, err := cuda.Open(0)
	if err != nil {
		return nil, err
	}
	tr, err := cuda.NewTrainer(d, cfg, m)
	if err != nil {
		d.Close()
		return nil, err
	}
	return &cudaNet{d: d, tr: tr, m: m}, nil
}

func (c *cudaNet) Backend() string      { return "cuda (" + c.d.Name + ")" }
func (c *cudaNet) Model() *model.SRDiff { return c.m }

func (c *cudaNet) Loss(rrdb bool, b *model.Batch, t []int, noise []float32) (float32, error) {
	if rrdb {
		return c.tr.RRDBLoss(b)
	}
	return c.tr.DiffusionLoss(b, t, noise)
}

func (c *cudaNet) PullGrads(rrdb bool) error {
	if rrdb {
		return c.tr.RRDBGrads(c.m.RRDBGrads())
	}
	return c.tr.Grads(c.m.UNetGrads())
}

func (c *cudaNet) PushGrads(rrdb bool) error {
	if rrdb {
		return c.tr.SetRRDBGrads(c.m.RRDBGrads())
	}
	return c.tr.SetGrads(c.m.UNetGrads())
}

func (c *cudaNet) AdamStep(rrdb bool, lr float64) error {
	if rrdb {
		return c.tr.RRDBAdamStep(lr)
	}
	return c.tr.AdamStep(lr)
}

func (c *cudaNet) AdamState(rrdb bool) (int64, []model.Tensor, error) {
	ps, n := c.m.UNetParams(), len(c.m.UNetValues())
	state := c.tr.AdamState
	if rrdb {
		ps, n, state = c.m.RRDBParams(), len(c.m.RRDBValues()), c.tr.RRDBAdamState
	}
	mm, v := make([]float32, n), make([]float32, n)
	step, err := state(mm, v)
	if err != nil {
		return 0, nil, err
	}
	return step, flatMoments(ps, step, mm, v), nil
}

func (c *cudaNet) LoadAdamState(rrdb bool, step int64, ts []model.Tensor) error {
	ps, load := c.m.UNetParams(), c.tr.LoadAdamState
	if rrdb {
		ps, load = c.m.RRDBParams(), c.tr.LoadRRDBAdamState
	}
	mm, v, err := momentsFlat(ps, step, ts)
	if err != nil {
		return err
	}
	return load(step, mm, v)
}

func (c *cudaNet) PullValues() error {
	return errors.Join(c.tr.Values(c.m.UNetValues()), c.tr.RRDBValues(c.m.RRDBValues()))
}

func (c *cudaNet) PushValues() error {
	return errors.Join(c.tr.SetValues(c.m.UNetValues()), c.tr.SetRRDBValues(c.m.RRDBValues()))
}

func (c *cudaNet) SampleLosses() []float32 { return c.tr.SampleLosses() }

func (c *cudaNet) PredictNoise(lr, xt []float32, n, h, w int, t []int) ([]float32, error) {
	return c.tr.PredictNoise(lr, xt, n, h, w, t)
}

func (c *cudaNet) Sample(ctx context.Context, s model.Sampler, lr, up []float32, n, h, w int, rng *rand.Rand, onStep func(t int)) ([]float32, error) {
	return c.tr.SampleWith(ctx, s, lr, up, n, h, w, rng, onStep)
}

// RRDBForward runs the RRDB's x4 head on the host model with the device's RRDB
// values (RRDB-only SR and the RRDB stage's validation; not a hot path).
func (c *cudaNet) RRDBForward(lr []float32, n, h, w int) ([]float32, error) {
	if err := c.tr.RRDBValues(c.m.RRDBValues()); err != nil {
		return nil, err
	}
	return c.m.RRDBForward(lr, n, h, w)
}

func (c *cudaNet) Close() error { return c.d.Close() }
