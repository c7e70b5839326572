package model

import (
	"fmt"
	"math"
)

// Modulation names how the structural map E enters the forward process (METHOD §4).
type Modulation int

const (
	// ModPaper is the paper's q(x_t|x_{t-1},E) = N(√α_t·x_{t-1} + √β_t·E, β_t·I):
	// x_t = √ᾱ_t·x0 + φ_t·E + √(1-ᾱ_t)·ε, target ε + (√(1-ᾱ_t)/√β_t)·E.
	ModPaper Modulation = iota
	// ModReference is the released code: target n = ε + c_t·E with c_t = √(1-ᾱ_t)·β_t,
	// x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·n.
	ModReference
	// ModNone is plain SRDiff: E is ignored.
	ModNone
)

// ParseModulation maps the config value ("paper", "reference", "none") to a Modulation.
func ParseModulation(s string) (Modulation, error) {
	switch s {
	case "paper", "":
		return ModPaper, nil
	case "reference":
		return ModReference, nil
	case "none":
		return ModNone, nil
	}
	return 0, fmt.Errorf("model: diffusion.modulation %q: want paper, reference or none", s)
}

// String returns the config spelling.
func (m Modulation) String() string {
	switch m {
	case ModPaper:
		return "paper"
	case ModReference:
		return "reference"
	case ModNone:
		return "none"
	}
	return fmt.Sprintf("Modulation(%d)", int(m))
}

// Schedule holds the diffusion coefficients for t = 0..T-1, computed in float64
// exactly as the reference does with numpy. The float32 copies the reference keeps
// as buffers are obtained with float32(·) at the point of use.
type Schedule struct {
	T int
	// Betas is β_t = clip(1 - ā(t+1)/ā(t), 0, 0.999) of the cosine schedule.
	Betas []float64
	// Alphas is α_t = 1 - β_t.
	Alphas []float64
	// AlphasCumprod is ᾱ_t = Π_{s≤t} α_s; AlphasCumprodPrev is ᾱ_{t-1} (ᾱ_{-1} = 1).
	AlphasCumprod, AlphasCumprodPrev []float64
	// PosteriorVariance is β̃_t = β_t(1-ᾱ_{t-1})/(1-ᾱ_t); PosteriorLogVarClipped its log, floored at 1e-20.
	PosteriorVariance, PosteriorLogVarClipped []float64
	// Coef1 and Coef2 give the posterior mean coef1·x0 + coef2·x_t.
	Coef1, Coef2 []float64
	// Phi is the paper's E coefficient of x_t: φ_t = √α_t·φ_{t-1} + √β_t, φ_{-1} = 0.
	Phi []float64
	// TargetCoefPaper is √(1-ᾱ_t)/√β_t, the E coefficient of the paper's target.
	TargetCoefPaper []float64
	// MaskCoefReference is c_t = √(1-ᾱ_t)·β_t, the E coefficient of the reference's target.
	MaskCoefReference []float64
}

// NewCosineSchedule computes the cosine schedule (Nichol & Dhariwal) with offset s:
// ā(k) = cos(((k/T)+s)/(1+s)·π/2)² / ā(0), k = 0..T.
func NewCosineSchedule(T int, s float64) (*Schedule, error) {
	if T < 1 {
		return nil, fmt.Errorf("model: diffusion.timesteps %d must be positive", T)
	}
	if s <= 0 {
		return nil, fmt.Errorf("model: diffusion.beta_s %g must be positive", s)
	}
	ac := make([]float64, T+1)
	for k := 0; k <= T; k++ {
		// numpy: x = linspace(0, T+1, T+1); x/steps — which is k·(T+1)/T/(T+1) = k/T.
		x := float64(k) / float64(T)
		c := math.Cos((x + s) / (1 + s) * math.Pi * 0.5)
		ac[k] = c * c
	}
	a0 := ac[0]
	for k := range ac {
		ac[k] /= a0
	}
	sc := &Schedule{T: T}
	mk := func() []float64 { return make([]float64, T) }
	sc.Betas, sc.Alphas, sc.AlphasCumprod, sc.AlphasCumprodPrev = mk(), mk(), mk(), mk()
	sc.PosteriorVariance, sc.PosteriorLogVarClipped, sc.Coef1, sc.Coef2 = mk(), mk(), mk(), mk()
	sc.Phi, sc.TargetCoefPaper, sc.MaskCoefReference = mk(), mk(), mk()
	cum, phi := 1.0, 0.0
	for t := 0; t < T; t++ {
		b := 1 - ac[t+1]/ac[t]
		b = math.Min(math.Max(b, 0), 0.999)
		a := 1 - b
		prev := cum
		cum *= a
		phi = math.Sqrt(a)*phi + math.Sqrt(b)
		sc.Betas[t], sc.Alphas[t], sc.AlphasCumprod[t], sc.AlphasCumprodPrev[t] = b, a, cum, prev
		pv := b * (1 - prev) / (1 - cum)
		sc.PosteriorVariance[t] = pv
		sc.PosteriorLogVarClipped[t] = math.Log(math.Max(pv, 1e-20))
		sc.Coef1[t] = b * math.Sqrt(prev) / (1 - cum)
		sc.Coef2[t] = (1 - prev) * math.Sqrt(a) / (1 - cum)
		sc.Phi[t] = phi
		sc.TargetCoefPaper[t] = math.Sqrt(1-cum) / math.Sqrt(b)
		sc.MaskCoefReference[t] = math.Sqrt(1-cum) * b
	}
	return sc, nil
}

// QSample builds the noisy input x_t and the training target n for one sample at
// step t: x0 and eps have C·H·W elements (C planes of hw), e has hw elements (one
// channel, broadcast over the C planes; ignored, and may be nil, for ModNone).
// Coefficients are float32, as the reference's buffers.
func (sc *Schedule) QSample(mod Modulation, t int, x0, eps, e []float32, hw int, xt, target []float32) {
	sa := float32(math.Sqrt(sc.AlphasCumprod[t]))
	s1m := float32(math.Sqrt(1 - sc.AlphasCumprod[t]))
	switch mod {
	case ModNone:
		for i := range x0 {
			target[i] = eps[i]
			xt[i] = sa*x0[i] + s1m*eps[i]
		}
	case ModReference:
		c := float32(sc.MaskCoefReference[t])
		for i := range x0 {
			n := eps[i] + c*e[i%hw]
			target[i] = n
			xt[i] = sa*x0[i] + s1m*n
		}
	default:
		phi := float32(sc.Phi[t])
		k := float32(sc.TargetCoefPaper[t])
		for i := range x0 {
			ev := e[i%hw]
			target[i] = eps[i] + k*ev
			xt[i] = sa*x0[i] + phi*ev + s1m*eps[i]
		}
	}
}

// PStep is one ancestral sampling step at t: from x_t and the predicted noise it
// writes x_{t-1} into x (in place): x̂0 = clamp(√(1/ᾱ)·x - √(1/ᾱ-1)·n̂, -1, 1),
// mean = coef1·x̂0 + coef2·x, plus exp(½·logβ̃)·z for t > 0 (z from noise, ignored at t = 0).
func (sc *Schedule) PStep(t int, x, predNoise, noise []float32) {
	ac := sc.AlphasCumprod[t]
	sr := float32(math.Sqrt(1 / ac))
	srm1 := float32(math.Sqrt(1/ac - 1))
	c1, c2 := float32(sc.Coef1[t]), float32(sc.Coef2[t])
	sd := float32(math.Exp(0.5 * sc.PosteriorLogVarClipped[t]))
	for i, xv := range x {
		x0 := sr*xv - srm1*predNoise[i]
		if x0 < -1 {
			x0 = -1
		} else if x0 > 1 {
			x0 = 1
		}
		m := c1*x0 + c2*xv
		if t > 0 {
			m += sd * noise[i]
		}
		x[i] = m
	}
}

// Img2Res maps HR to the residual training space: x0 = clamp(2·(hr - up), -1, 1).
func Img2Res(dst, hr, up []float32) {
	for i := range dst {
		v := 2 * (hr[i] - up[i])
		if v < -1 {
			v = -1
		} else if v > 1 {
			v = 1
		}
		dst[i] = v
	}
}

// Res2Img maps a residual back to an image: clamp(x, -1, 1)/2 + up.
func Res2Img(dst, x, up []float32) {
	for i := range dst {
		v := x[i]
		if v < -1 {
			v = -1
		} else if v > 1 {
			v = 1
		}
		dst[i] = v/2 + up[i]
	}
}
