//go:build cuda

package cuda

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/samdiffsr/samdiffsr/model"
)

// Sampling on the GPU: DDPM entirely on the device; other samplers (DDIM) step
// on the host with the device U-Net's noise predictions.

// Sample is SampleWith the DDPM sampler.
func (tr *Trainer) Sample(ctx context.Context, lr, up []float32, n, h, w int, rng *rand.Rand, onStep func(t int)) ([]float32, error) {
	return tr.SampleWith(ctx, model.Sampler{}, lr, up, n, h, w, rng, onStep)
}

// SampleWith is model.SRDiff.SampleWith on the GPU with the device U-Net's
// current values: the same random stream (x_T, then z per step, drawn on the host
// in the same order), the RRDB features once and T U-Net forwards with the
// conditioning reused. DDPM keeps x on the device and steps there; DDIM's few
// steps download each prediction and step on the host (model.RunSampler). The
// result, a new slice, is clamp(clamp(x0,-1,1)/2 + up, -1, 1).
func (tr *Trainer) SampleWith(ctx context.Context, s model.Sampler, lr, up []float32, n, h, w int, rng *rand.Rand, onStep func(t int)) ([]float32, error) {
	hw := h * w
	if len(up) != n*3*hw {
		return nil, fmt.Errorf("cuda: sample of %d %dx%d: sizes do not match", n, h, w)
	}
	if rng == nil {
		return nil, errors.New("cuda: Sample needs a random source")
	}
	cond, err := tr.lrFeatures(lr, n, h, w)
	if err != nil {
		return nil, err
	}
	var out []float32
	if s.DDIM {
		out, err = tr.sampleHost(ctx, s, cond, n, h, w, rng, onStep)
	} else {
		out, err = tr.sampleDDPM(ctx, cond, n, h, w, rng, onStep)
	}
	if err != nil {
		return nil, err
	}
	model.Res2Img(out, out, up)
	for i, v := range out {
		out[i] = min(max(v, -1), 1)
	}
	return out, nil
}

// lrFeatures checks lr against the HR size h×w and runs the RRDB on it.
func (tr *Trainer) lrFeatures(lr []float32, n, h, w int) (dact, error) {
	d, rn := tr.d, tr.rn
	lh, lw := h/tr.scale, w/tr.scale
	if len(lr) != n*3*lh*lw || h%tr.scale != 0 || w%tr.scale != 0 {
		return dact{}, fmt.Errorf("cuda: LR of %d %dx%d: sizes do not match", n, h, w)
	}
	l01 := make([]float32, len(lr))
	for i, v := range lr {
		l01[i] = (v + 1) / 2
	}
	dlr := rn.grow(&tr.bufs.lr, len(l01))
	rn.ck(d.Upload(dlr, l01))
	cc := tr.rrdb.condChannels()
	cond := newDact(rn.grow(&tr.bufs.cond, n*cc*lh*lw), n, cc, lh, lw)
	tr.rrdb.forward(newDact(dlr, n, 3, lh, lw), cond, false)
	return cond, rn.err
}

// sampleDDPM is the ancestral sampler with x and the step on the device.
func (tr *Trainer) sampleDDPM(ctx context.Context, cond dact, n, h, w int, rng *rand.Rand, onStep func(t int)) ([]float32, error) {
	d, un, rn := tr.d, tr.un, tr.rn
	hw := h * w
	x := make([]float32, n*3*hw)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	dx := un.grow(&tr.bufs.xt, len(x))
	un.ck(d.Upload(dx, x))
	z := x // reused for the noise of each step (x is on the device now)
	dz := un.grow(&tr.bufs.target, len(z))
	sc := tr.m.Schedule()
	ts := make([]int, n)
	for t := sc.T - 1; t >= 0; t-- {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("cuda: sampling stopped at step %d: %w", t, err)
		}
		for i := range ts {
			ts[i] = t
		}
		pred := tr.unet.forward(newDact(dx, n, 3, h, w), ts, cond, t < sc.T-1)
		if t > 0 {
			for i := range z {
				z[i] = float32(rng.NormFloat64())
			}
			un.ck(d.Upload(dz, z))
		}
		un.ck(d.PStep(sc, t, dx, pred.b, dz, len(z)))
		if err := errors.Join(un.err, rn.err); err != nil {
			return nil, err
		}
		if onStep != nil {
			onStep(t)
		}
	}
	out := make([]float32, n*3*hw)
	if err := d.Download(out, dx); err != nil {
		return nil, err
	}
	return out, nil
}

// sampleHost runs model.RunSampler with the device U-Net as the predictor.
func (tr *Trainer) sampleHost(ctx context.Context, s model.Sampler, cond dact, n, h, w int, rng *rand.Rand, onStep func(t int)) ([]float32, error) {
	size := n * 3 * h * w
	k := 0
	pred := make([]float32, size)
	predict := func(x []float32, ts []int) ([]float32, error) {
		err := tr.predictDevice(x, cond, n, h, w, ts, k > 0, pred)
		k++
		return pred, err
	}
	return model.RunSampler(ctx, tr.m.Schedule(), s, n, size, rng, make([]float32, size), predict, onStep)
}

// predictDevice uploads x, runs the U-Net on it with the RRDB features cond (their
// projection reused when reuseCond) and downloads the prediction into out.
func (tr *Trainer) predictDevice(x []float32, cond dact, n, h, w int, ts []int, reuseCond bool, out []float32) error {
	d, un, rn := tr.d, tr.un, tr.rn
	dx := un.grow(&tr.bufs.xt, len(x))
	un.ck(d.Upload(dx, x))
	p := tr.unet.forward(newDact(dx, n, 3, h, w), ts, cond, reuseCond)
	if err := errors.Join(un.err, rn.err); err != nil {
		return err
	}
	return d.Download(out, p.b)
}

// PredictNoise is model.SRDiff.PredictNoise on the GPU.
func (tr *Trainer) PredictNoise(lr, xt []float32, n, h, w int, t []int) ([]float32, error) {
	if len(xt) != n*3*h*w || len(t) != n {
		return nil, fmt.Errorf("cuda: x_t of %d %dx%d: sizes do not match", n, h, w)
	}
	for _, tt := range t {
		if tt < 0 || tt >= tr.m.Schedule().T {
			return nil, fmt.Errorf("cuda: timestep %d outside 0..%d", tt, tr.m.Schedule().T-1)
		}
	}
	cond, err := tr.lrFeatures(lr, n, h, w)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(xt))
	return out, tr.predictDevice(xt, cond, n, h, w, t, false, out)
}
