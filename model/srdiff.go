package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/samdiffsr/samdiffsr/configs"
)

// Batch is a training batch, every tensor flat float32 NCHW in [-1,1]:
// HR and Up are N×3×H×W (Up is the bicubic-upsampled LR, the residual base), LR is
// N×3×(H/4)×(W/4), E is N×1×H×W (the structural map; may be nil when the
// modulation is "none"). H and W must be multiples of 8 (of 2^(levels-1) and 4).
type Batch struct {
	N, H, W       int
	HR, Up, LR, E []float32
}

// Tensor is a named float32 tensor, the unit of checkpoints (weights and Adam state).
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// SRDiff is the whole model: the RRDB LR encoder, the conditional U-Net and the
// diffusion. It owns reusable buffers, so one SRDiff must not be used from two
// goroutines at once; the calls themselves use all cores.
type SRDiff struct {
	be    Backend
	ws    *workspace
	rrdb  *rrdbNet
	unet  *unet
	sched *Schedule
	mod   Modulation
	scale int

	params []*Param

	cond, x0, xt, target, dpred, noise []float32
	// sampleLoss holds the per-sample losses of the last DiffusionLoss.
	sampleLoss []float32
}

// New builds the model described by cfg.Model and cfg.Diffusion, with parameters
// initialised as PyTorch does by default (kaiming_uniform(a=√5) weights, uniform
// ±1/√fan_in biases) from seed: the RRDB from stream 1, the U-Net from stream 2 of a
// PCG seeded with seed.
func New(cfg configs.Config, seed int64) (*SRDiff, error) {
	switch cfg.Model.Backend {
	case "", "auto", "cpu":
	case "cuda":
		return nil, errors.New("model: model.backend cuda is not available in this build; use cpu or auto")
	default:
		return nil, fmt.Errorf("model: model.backend %q: want auto, cpu or cuda", cfg.Model.Backend)
	}
	scale := cfg.Data.Scale
	if scale == 0 {
		scale = 4
	}
	if scale != 4 {
		return nil, fmt.Errorf("model: data.scale %d: only 4 is supported", scale)
	}
	mod, err := ParseModulation(cfg.Diffusion.Modulation)
	if err != nil {
		return nil, err
	}
	if bs := cfg.Diffusion.BetaSchedule; bs != "" && bs != "cosine" {
		return nil, fmt.Errorf("model: diffusion.beta_schedule %q: only cosine is supported", bs)
	}
	T, s := cfg.Diffusion.Timesteps, cfg.Diffusion.BetaS
	if T == 0 {
		T = 100
	}
	if s == 0 {
		s = 0.008
	}
	sched, err := NewCosineSchedule(T, s)
	if err != nil {
		return nil, err
	}
	be := NewCPU()
	ws := &workspace{}
	m := &SRDiff{be: be, ws: ws, sched: sched, mod: mod, scale: scale}
	rc := cfg.Model.RRDB
	rps := &paramSet{rng: rand.New(rand.NewPCG(uint64(seed), 1))}
	if m.rrdb, err = newRRDBNet(rps, be, ws, rc.NF, rc.NB, rc.GC); err != nil {
		return nil, err
	}
	ups := &paramSet{rng: rand.New(rand.NewPCG(uint64(seed), 2))}
	if m.unet, err = newUNet(ups, be, ws, cfg.Model.UNet.Dim, cfg.Model.UNet.DimMults, m.rrdb.condChannels(), scale); err != nil {
		return nil, err
	}
	m.params = append(append([]*Param(nil), m.rrdb.params...), m.unet.params...)
	return m, nil
}

// Backend returns the compute backend.
func (m *SRDiff) Backend() Backend { return m.be }

// Schedule returns the diffusion schedule.
func (m *SRDiff) Schedule() *Schedule { return m.sched }

// Modulation returns the configured modulation.
func (m *SRDiff) Modulation() Modulation { return m.mod }

// Params returns every parameter, RRDB first then U-Net, in the reference's
// state-dict order. The pointers are live: Data and Grad may be read and written.
func (m *SRDiff) Params() []*Param { return m.params }

// UNetParams returns the U-Net parameters ("denoise_fn.*"), the ones DiffusionLoss trains.
func (m *SRDiff) UNetParams() []*Param { return m.unet.params }

// RRDBParams returns the RRDB parameters ("rrdb.*"), the ones RRDBLoss trains.
func (m *SRDiff) RRDBParams() []*Param { return m.rrdb.params }

// UNetGrads returns the gradients of all UNetParams as one contiguous slice (each
// Param.Grad is a window of it, in UNetParams order), so a collective can
// all-reduce the whole gradient in one call. UNetValues is the same for the values.
func (m *SRDiff) UNetGrads() []float32 { return m.unet.grad }

// UNetValues returns the values of all UNetParams as one contiguous slice.
func (m *SRDiff) UNetValues() []float32 { return m.unet.data }

// RRDBGrads returns the gradients of all RRDBParams as one contiguous slice.
func (m *SRDiff) RRDBGrads() []float32 { return m.rrdb.grad }

// RRDBValues returns the values of all RRDBParams as one contiguous slice.
func (m *SRDiff) RRDBValues() []float32 { return m.rrdb.data }

// ConvFLOPs returns the convolution FLOPs executed so far (forward and backward,
// 2 per multiply-add), for throughput figures.
func (m *SRDiff) ConvFLOPs() int64 {
	var s int64
	for _, f := range m.rrdb.flops {
		s += *f
	}
	for _, f := range m.unet.flops {
		s += *f
	}
	return s
}

// Multiple is what the HR height and width must be divisible by.
func (m *SRDiff) Multiple() int {
	k := m.unet.multiple()
	if k < m.scale {
		k = m.scale
	}
	return k
}

// CheckSize says what is wrong with a batch of n images of h x w HR pixels for
// this model (nil when nothing): sizes must be multiples of Multiple and at least
// MinSide. Other backends call it before running the same networks.
func (m *SRDiff) CheckSize(n, h, w int) error {
	if n < 1 {
		return fmt.Errorf("model: batch size %d must be positive", n)
	}
	k := m.Multiple()
	if h%k != 0 || w%k != 0 {
		return fmt.Errorf("model: image size %dx%d must be a positive multiple of %d", h, w, k)
	}
	if min := m.MinSide(); h < min || w < min {
		return fmt.Errorf("model: image size %dx%d is too small: each side must be at least %d (the U-Net's innermost level, 1/%d of it, must be 2x2 or more for its reflection padding)", h, w, min, m.unet.multiple())
	}
	return nil
}

// MinSide is the smallest HR height and width the model takes: twice what the
// U-Net halves a side to at its innermost level (reflection padding needs 2 pixels).
func (m *SRDiff) MinSide() int { return max(2*m.unet.multiple(), m.Multiple()) }

func checkLen(name string, s []float32, want int) error {
	if len(s) != want {
		return fmt.Errorf("model: %s has %d values, want %d", name, len(s), want)
	}
	return nil
}

func (b *Batch) check(m *SRDiff, needE bool) error {
	if b == nil {
		return errors.New("model: nil batch")
	}
	if err := m.CheckSize(b.N, b.H, b.W); err != nil {
		return err
	}
	n, hw := b.N, b.H*b.W
	lhw := hw / (m.scale * m.scale)
	if err := checkLen("batch HR", b.HR, n*3*hw); err != nil {
		return err
	}
	if err := checkLen("batch LR", b.LR, n*3*lhw); err != nil {
		return err
	}
	if b.Up != nil || needE {
		if err := checkLen("batch Up", b.Up, n*3*hw); err != nil {
			return err
		}
	}
	if needE {
		if err := checkLen("batch E", b.E, n*hw); err != nil {
			return err
		}
	}
	return nil
}

// features runs the frozen RRDB on lr (N×3×h×w) and returns the conditioning maps.
func (m *SRDiff) features(lr []float32, n, h, w int, train bool) act {
	la := newAct(lr, n, 3, h, w)
	cc := m.rrdb.condChannels()
	cond := newAct(grow(&m.cond, n*cc*h*w), n, cc, h, w)
	m.rrdb.forward(la, cond, train)
	return cond
}

func zeroGrads(ps []*Param) {
	for _, p := range ps {
		clear(p.Grad)
	}
}

// DiffusionLoss computes the training loss of METHOD §4 for batch b with steps t
// (one per sample, 0..T-1) and standard normal noise ε (N×3×H×W), and overwrites the
// U-Net gradients (UNetParams) with its gradient; the RRDB is frozen and its
// features are computed without gradients. The loss is the mean over all elements
// of |n - ε_θ(x_t, LR, t)| with the modulated target n. A non-finite loss is
// returned together with an error.
func (m *SRDiff) DiffusionLoss(b *Batch, t []int, noise []float32) (float32, error) {
	needE := m.mod != ModNone
	if err := b.check(m, needE); err != nil {
		return 0, err
	}
	if b.Up == nil {
		return 0, errors.New("model: batch Up is required for the diffusion loss")
	}
	n, H, W := b.N, b.H, b.W
	if len(t) != n {
		return 0, fmt.Errorf("model: %d timesteps for a batch of %d", len(t), n)
	}
	for _, tt := range t {
		if tt < 0 || tt >= m.sched.T {
			return 0, fmt.Errorf("model: timestep %d outside 0..%d", tt, m.sched.T-1)
		}
	}
	hw := H * W
	if err := checkLen("noise", noise, n*3*hw); err != nil {
		return 0, err
	}
	cond := m.features(b.LR, n, H/m.scale, W/m.scale, false)
	x0 := grow(&m.x0, n*3*hw)
	Img2Res(x0, b.HR, b.Up)
	xt := grow(&m.xt, n*3*hw)
	target := grow(&m.target, n*3*hw)
	for s := 0; s < n; s++ {
		sl := func(a []float32) []float32 { return a[s*3*hw : (s+1)*3*hw] }
		var e []float32
		if needE {
			e = b.E[s*hw : (s+1)*hw]
		}
		m.sched.QSample(m.mod, t[s], sl(x0), sl(noise), e, hw, sl(xt), sl(target))
	}
	clear(m.unet.grad)
	pred := m.unet.forward(newAct(xt, n, 3, H, W), t, cond, false)
	dpred := grow(&m.dpred, len(pred.data))
	loss := L1(pred.data, target, dpred)
	m.sampleLoss = SampleL1(pred.data, target, n, grow(&m.sampleLoss, n))
	m.unet.backward(newAct(dpred, n, 3, H, W))
	if math.IsNaN(float64(loss)) || math.IsInf(float64(loss), 0) {
		return loss, fmt.Errorf("model: diffusion loss is %v", loss)
	}
	return loss, nil
}

// L1 returns mean|p - q| and writes its gradient with respect to p into d
// (sign(p - q)/len, 0 where equal, as PyTorch's abs). A NaN in p or q makes the
// loss NaN, so a diverged network is never scored as exact. It is the diffusion
// and RRDB pretraining loss; other backends check theirs against it.
func L1(p, q, d []float32) float32 {
	var s float64
	inv := 1 / float32(len(p))
	for i := range p {
		diff := p[i] - q[i]
		switch {
		case diff > 0:
			s += float64(diff)
			d[i] = inv
		case diff < 0:
			s -= float64(diff)
			d[i] = -inv
		case diff == 0:
			d[i] = 0
		default: // NaN: poison the loss so the caller stops, never count it as no error
			s += float64(diff)
			d[i] = diff
		}
	}
	return float32(s / float64(len(p)))
}

// SampleL1 writes into out (n values) the mean |p - q| of each of the n equal
// consecutive parts of p and q (one per sample) and returns out. The mean of out is
// L1's loss up to float rounding.
func SampleL1(p, q []float32, n int, out []float32) []float32 {
	size := len(p) / n
	for s := range n {
		var sum float64
		for i := s * size; i < (s+1)*size; i++ {
			sum += math.Abs(float64(p[i] - q[i]))
		}
		out[s] = float32(sum / float64(size))
	}
	return out
}

// SampleLosses returns the per-sample losses (mean over each sample's elements) of
// the last DiffusionLoss, in batch order; their mean is its loss. The slice is
// reused by the next call.
func (m *SRDiff) SampleLosses() []float32 { return m.sampleLoss }

// RRDBLoss computes the RRDB pretraining loss mean|RRDB(LR) - HR| (b.Up and b.E are
// not used) and overwrites the RRDB gradients (RRDBParams) with its gradient.
func (m *SRDiff) RRDBLoss(b *Batch) (float32, error) {
	if err := b.check(m, false); err != nil {
		return 0, err
	}
	n, H, W := b.N, b.H, b.W
	clear(m.rrdb.grad)
	m.features(b.LR, n, H/m.scale, W/m.scale, true)
	out := m.rrdb.head()
	dout := grow(&m.dpred, len(out.data))
	loss := L1(out.data, b.HR, dout)
	m.rrdb.backward(newAct(dout, n, 3, H, W))
	if math.IsNaN(float64(loss)) || math.IsInf(float64(loss), 0) {
		return loss, fmt.Errorf("model: rrdb loss is %v", loss)
	}
	return loss, nil
}

// RRDBForward runs the RRDB alone on lr (N×3×h×w, LR size h×w, in [-1,1]) and
// returns its x4 output N×3×4h×4w in [-1,1] (a new slice).
func (m *SRDiff) RRDBForward(lr []float32, n, h, w int) ([]float32, error) {
	if n < 1 || h < 1 || w < 1 {
		return nil, fmt.Errorf("model: bad LR size %dx%dx%d", n, h, w)
	}
	if err := checkLen("LR", lr, n*3*h*w); err != nil {
		return nil, err
	}
	m.features(lr, n, h, w, false)
	return append([]float32(nil), m.rrdb.head().data...), nil
}

// Sample runs the DDPM ancestral sampler (METHOD §4): SampleWith(Sampler{}, …).
func (m *SRDiff) Sample(ctx context.Context, lr, up []float32, n, h, w int, rng *rand.Rand, onStep func(t int)) ([]float32, error) {
	return m.SampleWith(ctx, Sampler{}, lr, up, n, h, w, rng, onStep)
}

// SampleWith runs sampler s: x_T ~ N(0, I) from rng, then the U-Net at each of s's
// timesteps (T-1 first, 0 last) with the RRDB features computed once, noise drawn
// from rng after each prediction when the step needs it. lr is N×3×(h/4)×(w/4) and
// up N×3×h×w (h, w are the HR size); the result, a new slice, is the SR image
// clamp(clamp(x0,-1,1)/2 + up, -1, 1), N×3×h×w. onStep, when not nil, is called
// after each step with its t. The mask is never used (s.Sound says whether that is
// right for the model's modulation; SampleWith does not refuse). ctx cancels
// between steps.
func (m *SRDiff) SampleWith(ctx context.Context, s Sampler, lr, up []float32, n, h, w int, rng *rand.Rand, onStep func(t int)) ([]float32, error) {
	if err := m.CheckSize(n, h, w); err != nil {
		return nil, err
	}
	hw := h * w
	if err := checkLen("LR", lr, n*3*hw/(m.scale*m.scale)); err != nil {
		return nil, err
	}
	if err := checkLen("up", up, n*3*hw); err != nil {
		return nil, err
	}
	if rng == nil {
		return nil, errors.New("model: Sample needs a random source")
	}
	cond := m.features(lr, n, h/m.scale, w/m.scale, false)
	k := 0
	predict := func(x []float32, ts []int) ([]float32, error) {
		pred := m.unet.forward(newAct(x, n, 3, h, w), ts, cond, k > 0)
		k++
		return pred.data, nil
	}
	x, err := RunSampler(ctx, m.sched, s, n, n*3*hw, rng, grow(&m.noise, n*3*hw), predict, onStep)
	if err != nil {
		return nil, err
	}
	Res2Img(x, x, up)
	for i, v := range x {
		x[i] = min(max(v, -1), 1)
	}
	return x, nil
}

// PredictNoise runs the U-Net once: n̂ = ε_θ(x_t, LR, t) for x_t (N×3×h×w) and lr
// (N×3×(h/4)×(w/4)), one step per sample; the result is a new slice. With
// Schedule.X0 it gives the denoiser's x̂0 at a chosen t (validation).
func (m *SRDiff) PredictNoise(lr, xt []float32, n, h, w int, t []int) ([]float32, error) {
	if err := m.CheckSize(n, h, w); err != nil {
		return nil, err
	}
	if err := checkLen("LR", lr, n*3*h*w/(m.scale*m.scale)); err != nil {
		return nil, err
	}
	if err := checkLen("x_t", xt, n*3*h*w); err != nil {
		return nil, err
	}
	if len(t) != n {
		return nil, fmt.Errorf("model: %d timesteps for a batch of %d", len(t), n)
	}
	for _, tt := range t {
		if tt < 0 || tt >= m.sched.T {
			return nil, fmt.Errorf("model: timestep %d outside 0..%d", tt, m.sched.T-1)
		}
	}
	cond := m.features(lr, n, h/m.scale, w/m.scale, false)
	pred := m.unet.forward(newAct(append([]float32(nil), xt...), n, 3, h, w), t, cond, false)
	return append([]float32(nil), pred.data...), nil
}

// LoadWeights copies tensors into the parameters of the same name. Every tensor
// must name a parameter and match its shape; unless allowMissing, every parameter
// must be given (allowMissing lets an RRDB-only checkpoint be loaded).
func (m *SRDiff) LoadWeights(ts []Tensor, allowMissing bool) error {
	byName := make(map[string]*Param, len(m.params))
	for _, p := range m.params {
		byName[p.Name] = p
	}
	seen := make(map[string]bool, len(ts))
	for _, t := range ts {
		p, ok := byName[t.Name]
		if !ok {
			return fmt.Errorf("model: checkpoint tensor %q is not a parameter of this model (check model sizes in the config)", t.Name)
		}
		if !sameShape(p.Shape, t.Shape) || len(t.Data) != len(p.Data) {
			return fmt.Errorf("model: checkpoint tensor %q has shape %v, the model wants %v (check model sizes in the config)", t.Name, t.Shape, p.Shape)
		}
		copy(p.Data, t.Data)
		seen[t.Name] = true
	}
	if !allowMissing {
		for _, p := range m.params {
			if !seen[p.Name] {
				return fmt.Errorf("model: checkpoint lacks parameter %q", p.Name)
			}
		}
	}
	return nil
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ModuleParams is one line of a parameter summary.
type ModuleParams struct {
	// Module is a dotted prefix such as "denoise_fn.downs" or "rrdb".
	Module string
	// Params counts the parameters (weights and biases) under it.
	Params int
}

// Summary counts parameters per module: each top-level network ("rrdb",
// "denoise_fn") followed by its direct children, in state-dict order.
func (m *SRDiff) Summary() []ModuleParams {
	var out []ModuleParams
	for _, net := range [][]*Param{m.rrdb.params, m.unet.params} {
		top := ModuleParams{}
		var kids []ModuleParams
		for _, p := range net {
			parts := splitName(p.Name)
			top.Module = parts[0]
			top.Params += p.Size()
			child := parts[0] + "." + parts[1]
			if len(kids) == 0 || kids[len(kids)-1].Module != child {
				kids = append(kids, ModuleParams{Module: child})
			}
			kids[len(kids)-1].Params += p.Size()
		}
		out = append(out, top)
		out = append(out, kids...)
	}
	return out
}

func splitName(s string) [2]string {
	var r [2]string
	k := 0
	start := 0
	for i := 0; i < len(s) && k < 2; i++ {
		if s[i] == '.' {
			r[k] = s[start:i]
			k++
			start = i + 1
		}
	}
	return r
}
