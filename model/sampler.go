package model

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
)

// Sampler chooses how Sample walks from x_T to x_0.
//
// DDPM is METHOD §4's ancestral sampler: all T steps, posterior variance noise.
// DDIM (Song et al. 2021) visits Steps of the T timesteps (evenly spaced, from T-1
// down to 0) and jumps between them through the predicted x̂0:
//
//	x̂0 = clamp((x_t - √(1-ᾱ_t)·n̂)/√ᾱ_t, -1, 1), ε̂ = (x_t - √ᾱ_t·x̂0)/√(1-ᾱ_t),
//	σ = η·√((1-ᾱ_s)/(1-ᾱ_t)·(1-ᾱ_t/ᾱ_s)),
//	x_s = √ᾱ_s·x̂0 + √(1-ᾱ_s-σ²)·ε̂ + σ·z
//
// for the next visited step s (ᾱ_s = 1 after t = 0). With Steps = T and η = 1 it is
// the DDPM step exactly; η = 0 is deterministic. DDIM needs the marginal
// q(x_t|x0) = N(√ᾱ_t·x0, (1-ᾱ_t)·I), which holds for the modulations none and
// reference (whose x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·n) but not for paper, whose x_t carries
// φ_t·E: the network's n̂ = ε + (√(1-ᾱ_t)/√β_t)·E cannot be split into ε and E, so a
// jump from t to s cannot swap φ_t·E for φ_s·E (Sound reports it).
//
// The zero Sampler is DDPM.
type Sampler struct {
	// DDIM selects DDIM; false is DDPM.
	DDIM bool
	// Steps is the number of DDIM steps (1..T; Timesteps takes at most T); DDPM
	// always takes T.
	Steps int
	// Eta scales DDIM's noise (0: deterministic; 1 with Steps = T: DDPM).
	Eta float64
}

// ParseSampler checks the sr.sampler, sr.steps and sr.eta values; more DDIM steps
// than T means all T.
func ParseSampler(kind string, steps int, eta float64, T int) (Sampler, error) {
	switch kind {
	case "", "ddpm":
		return Sampler{}, nil
	case "ddim":
		if steps < 1 {
			return Sampler{}, fmt.Errorf("model: sr.steps %d: want a positive number of steps for the ddim sampler (at most diffusion.timesteps = %d are taken)", steps, T)
		}
		if eta < 0 || eta > 1 || math.IsNaN(eta) {
			return Sampler{}, fmt.Errorf("model: sr.eta %g: want a value in [0, 1] (0: deterministic)", eta)
		}
		return Sampler{DDIM: true, Steps: min(steps, T), Eta: eta}, nil
	}
	return Sampler{}, fmt.Errorf("model: sr.sampler %q: want ddpm or ddim", kind)
}

// String names the sampler as the configuration does.
func (s Sampler) String() string {
	if !s.DDIM {
		return "ddpm"
	}
	return fmt.Sprintf("ddim(steps %d, eta %g)", s.Steps, s.Eta)
}

// Sound reports whether s samples the distribution a model trained with mod
// learned: DDPM always, DDIM not for the paper's modulation (see Sampler).
func (s Sampler) Sound(mod Modulation) error {
	if s.DDIM && mod == ModPaper {
		return fmt.Errorf("model: sr.sampler ddim is unsound for diffusion.modulation paper: its x_t carries φ_t·E, which a DDIM jump cannot move from step t to step s without the mask; use sr.sampler ddpm (or a model trained with modulation reference or none)")
	}
	return nil
}

// Timesteps returns the steps s visits, in order (T-1 first, 0 last).
func (s Sampler) Timesteps(T int) []int {
	n := T
	if s.DDIM {
		n = min(max(s.Steps, 1), T)
	}
	ts := make([]int, n)
	for i := range ts {
		if n == 1 {
			ts[i] = T - 1
			break
		}
		ts[i] = int(math.Round(float64(T-1) * float64(n-1-i) / float64(n-1)))
	}
	return ts
}

// NeedsNoise reports whether the step from t to prev (the next visited step, -1
// after the last) adds noise, i.e. whether the caller must draw z for it.
func (s Sampler) NeedsNoise(t, prev int) bool {
	if !s.DDIM {
		return t > 0
	}
	return s.Eta > 0 && prev >= 0
}

// X0 writes the clamped x̂0 = clamp(√(1/ᾱ_t)·x - √(1/ᾱ_t-1)·n̂, -1, 1) into dst.
func (sc *Schedule) X0(t int, x, predNoise, dst []float32) {
	ac := sc.AlphasCumprod[t]
	sr := float32(math.Sqrt(1 / ac))
	srm1 := float32(math.Sqrt(1/ac - 1))
	for i, xv := range x {
		dst[i] = min(max(sr*xv-srm1*predNoise[i], -1), 1)
	}
}

// DDIMStep moves x (in place) from step t to step prev (-1: the end, x becomes x̂0)
// as Sampler describes, with noise z (read only when NeedsNoise).
func (sc *Schedule) DDIMStep(t, prev int, eta float64, x, predNoise, z []float32) {
	ac := sc.AlphasCumprod[t]
	ap := 1.0
	if prev >= 0 {
		ap = sc.AlphasCumprod[prev]
	}
	sigma := eta * math.Sqrt((1-ap)/(1-ac)*(1-ac/ap))
	sr := float32(math.Sqrt(1 / ac))
	srm1 := float32(math.Sqrt(1/ac - 1))
	sa, s1m := float32(math.Sqrt(ac)), float32(math.Sqrt(1-ac))
	cx0 := float32(math.Sqrt(ap))
	ceps := float32(math.Sqrt(math.Max(1-ap-sigma*sigma, 0)))
	sg := float32(sigma)
	noisy := eta > 0 && prev >= 0
	for i, xv := range x {
		x0 := min(max(sr*xv-srm1*predNoise[i], -1), 1)
		eps := (xv - sa*x0) / s1m
		v := cx0*x0 + ceps*eps
		if noisy {
			v += sg * z[i]
		}
		x[i] = v
	}
}

// Step moves x from visited step t to prev with s's rule (PStep for DDPM).
func (sc *Schedule) Step(s Sampler, t, prev int, x, predNoise, z []float32) {
	if s.DDIM {
		sc.DDIMStep(t, prev, s.Eta, x, predNoise, z)
		return
	}
	sc.PStep(t, x, predNoise, z)
}

// Predictor returns the predicted noise n̂ for x_t (n samples) at steps ts; the
// result may be a buffer the predictor reuses.
type Predictor func(x []float32, ts []int) ([]float32, error)

// RunSampler is the sampling loop of every backend: x_T ~ N(0, I) (size values
// from rng), then for each of s's timesteps the prediction, noise z drawn from rng
// when the step needs it (into z, size values), and the step. It returns x_0 (the
// residual, a new slice). onStep, when not nil, sees each t after its step; ctx
// cancels between steps.
func RunSampler(ctx context.Context, sc *Schedule, s Sampler, n, size int, rng *rand.Rand, z []float32, predict Predictor, onStep func(t int)) ([]float32, error) {
	x := make([]float32, size)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	ts := make([]int, n)
	steps := s.Timesteps(sc.T)
	for k, t := range steps {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("model: sampling stopped at step %d: %w", t, err)
		}
		for i := range ts {
			ts[i] = t
		}
		pred, err := predict(x, ts)
		if err != nil {
			return nil, err
		}
		prev := -1
		if k+1 < len(steps) {
			prev = steps[k+1]
		}
		if s.NeedsNoise(t, prev) {
			for i := range z {
				z[i] = float32(rng.NormFloat64())
			}
		}
		sc.Step(s, t, prev, x, pred, z)
		if onStep != nil {
			onStep(t)
		}
	}
	return x, nil
}
