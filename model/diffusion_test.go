package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

func near(t *testing.T, what string, got, want, rel float64) {
	t.Helper()
	if math.Abs(got-want) > rel*math.Abs(want) {
		t.Errorf("%s = %.6g, want %.6g (±%.2g relative)", what, got, want, rel)
	}
}

// TestCosineSchedule checks the values METHOD §4 and the reference notes quote.
func TestCosineSchedule(t *testing.T) {
	sc, err := NewCosineSchedule(100, 0.008)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "β_0", sc.Betas[0], 6.313e-4, 1e-3)
	near(t, "β_50", sc.Betas[50], 0.03155, 1e-3)
	near(t, "ᾱ_50", sc.AlphasCumprod[50], 0.4783, 1e-3)
	near(t, "β_90", sc.Betas[90], 0.1888, 1e-3)
	near(t, "ᾱ_90", sc.AlphasCumprod[90], 0.01954, 1e-3)
	near(t, "β_97", sc.Betas[97], 0.5554, 1e-3)
	near(t, "ᾱ_98", sc.AlphasCumprod[98], 2.43e-4, 3e-3)
	near(t, "ᾱ_99", sc.AlphasCumprod[99], 2.43e-7, 3e-3)
	if sc.Betas[99] != 0.999 {
		t.Errorf("β_99 = %v, want exactly 0.999 (clipped)", sc.Betas[99])
	}
	near(t, "φ_0", sc.Phi[0], 0.0251, 3e-3)
	near(t, "φ_50", sc.Phi[50], 4.68, 3e-3)
	near(t, "φ_99", sc.Phi[99], 1.08, 1e-2)
	near(t, "√(1-ᾱ_50)/√β_50", sc.TargetCoefPaper[50], 4.06, 3e-3)
	near(t, "c_0", sc.MaskCoefReference[0], 1.6e-5, 2e-2)
	near(t, "c_10", sc.MaskCoefReference[10], 1.0e-3, 3e-2)
	near(t, "c_50", sc.MaskCoefReference[50], 0.0228, 3e-3)
	near(t, "c_90", sc.MaskCoefReference[90], 0.187, 3e-3)
	near(t, "c_99", sc.MaskCoefReference[99], 0.999, 1e-3)
	if sc.AlphasCumprodPrev[0] != 1 {
		t.Errorf("ᾱ_{-1} = %v, want 1", sc.AlphasCumprodPrev[0])
	}
	for i := 1; i < 100; i++ {
		if sc.AlphasCumprodPrev[i] != sc.AlphasCumprod[i-1] {
			t.Fatalf("ᾱ_prev[%d] != ᾱ[%d]", i, i-1)
		}
	}
	near(t, "log β̃_99 clipped", sc.PosteriorLogVarClipped[99], math.Log(sc.PosteriorVariance[99]), 1e-12)
	if sc.PosteriorVariance[0] != 0 || sc.PosteriorLogVarClipped[0] != math.Log(1e-20) {
		t.Errorf("β̃_0 = %v, log clipped %v; want 0 and log(1e-20)", sc.PosteriorVariance[0], sc.PosteriorLogVarClipped[0])
	}
}

// TestPaperChainMonteCarlo iterates the paper's one-step Markov chain
// x_t = √α_t·x_{t-1} + √β_t·E + √β_t·z from x_{-1} = x0 and compares the sample mean
// and variance of x_t with the closed form √ᾱ_t·x0 + φ_t·E and 1-ᾱ_t, and checks
// that QSample produces that closed form.
func TestPaperChainMonteCarlo(t *testing.T) {
	sc, _ := NewCosineSchedule(100, 0.008)
	const M = 200000
	x0, e := 0.3, 0.7
	rng := rand.New(rand.NewPCG(11, 12))
	xs := make([]float64, M)
	for i := range xs {
		xs[i] = x0
	}
	check := map[int]bool{0: true, 10: true, 50: true, 75: true, 90: true, 99: true}
	for s := 0; s < 100; s++ {
		a, b := math.Sqrt(sc.Alphas[s]), math.Sqrt(sc.Betas[s])
		for i := range xs {
			xs[i] = a*xs[i] + b*e + b*rng.NormFloat64()
		}
		if !check[s] {
			continue
		}
		var mean, v float64
		for _, x := range xs {
			mean += x
		}
		mean /= M
		for _, x := range xs {
			v += (x - mean) * (x - mean)
		}
		v /= M - 1
		wantMean := math.Sqrt(sc.AlphasCumprod[s])*x0 + sc.Phi[s]*e
		wantVar := 1 - sc.AlphasCumprod[s]
		if d := math.Abs(mean - wantMean); d > 5*math.Sqrt(wantVar/M)+1e-9 {
			t.Errorf("t=%d: Monte-Carlo mean %.5f, closed form %.5f", s, mean, wantMean)
		}
		if d := math.Abs(v - wantVar); d > 5*wantVar*math.Sqrt(2.0/M)+1e-12 {
			t.Errorf("t=%d: Monte-Carlo variance %.6g, closed form %.6g", s, v, wantVar)
		}
		// QSample with ε = 0 gives the closed-form mean.
		xt, tg := make([]float32, 1), make([]float32, 1)
		sc.QSample(ModPaper, s, []float32{float32(x0)}, []float32{0}, []float32{float32(e)}, 1, xt, tg)
		if math.Abs(float64(xt[0])-wantMean) > 1e-5*(1+math.Abs(wantMean)) {
			t.Errorf("t=%d: QSample mean %g, closed form %g", s, xt[0], wantMean)
		}
		if want := sc.TargetCoefPaper[s] * e; math.Abs(float64(tg[0])-want) > 1e-5*(1+want) {
			t.Errorf("t=%d: QSample target %g, want %g", s, tg[0], want)
		}
	}
}

// TestPaperPosteriorMean checks that the DDPM posterior mean computed from the
// modulated target, (x_t - β_t/√(1-ᾱ_t)·n)/√α_t, equals the true posterior mean of
// q(x_{t-1} | x_t, x0, E) under the paper's chain, and that the sampler's
// coef1·x̂0 + coef2·x_t (PStep without noise) gives the same.
func TestPaperPosteriorMean(t *testing.T) {
	sc, _ := NewCosineSchedule(100, 0.008)
	rng := rand.New(rand.NewPCG(13, 14))
	for _, s := range []int{0, 1, 5, 25, 50, 75, 90, 98, 99} {
		for trial := 0; trial < 20; trial++ {
			x0 := rng.Float64()*2 - 1
			e := (rng.Float64()*2 - 1) * math.Sqrt2
			eps := rng.NormFloat64()
			ac, b, a := sc.AlphasCumprod[s], sc.Betas[s], sc.Alphas[s]
			acp := sc.AlphasCumprodPrev[s]
			xt := math.Sqrt(ac)*x0 + sc.Phi[s]*e + math.Sqrt(1-ac)*eps
			n := eps + sc.TargetCoefPaper[s]*e
			ddpm := (xt - b/math.Sqrt(1-ac)*n) / math.Sqrt(a)
			phiPrev := 0.0
			if s > 0 {
				phiPrev = sc.Phi[s-1]
			}
			// Prior x_{t-1} ~ N(m, v); likelihood x_t - √β·E ~ N(√α·x_{t-1}, β).
			m, v := math.Sqrt(acp)*x0+phiPrev*e, 1-acp
			truth := (b*m + math.Sqrt(a)*v*(xt-math.Sqrt(b)*e)) / (b + a*v)
			if d := math.Abs(ddpm - truth); d > 1e-5*(1+math.Abs(truth)) {
				t.Errorf("t=%d: DDPM mean with modulated target %.9g, true posterior mean %.9g", s, ddpm, truth)
			}
			x0hat := (xt - math.Sqrt(1-ac)*n) / math.Sqrt(ac)
			viaCoef := sc.Coef1[s]*x0hat + sc.Coef2[s]*xt
			if d := math.Abs(viaCoef - truth); d > 1e-5*(1+math.Abs(truth)) {
				t.Errorf("t=%d: coef1·x̂0 + coef2·x_t = %.9g, true posterior mean %.9g", s, viaCoef, truth)
			}
			if math.Abs(x0hat) < 1 && s > 0 && s < 95 {
				x := []float32{float32(xt)}
				sc.PStep(s, x, []float32{float32(n)}, []float32{0})
				if d := math.Abs(float64(x[0]) - truth); d > 1e-4*(1+math.Abs(truth)) {
					t.Errorf("t=%d: PStep mean %.7g, true posterior mean %.7g", s, x[0], truth)
				}
			}
		}
	}
}

// TestReferenceAndNoneModulation checks the released code's coefficient
// c_t = √(1-ᾱ_t)·β_t with x_t = √ᾱ·x0 + √(1-ᾱ)·(ε + c_t·E), and that "none" ignores E.
func TestReferenceAndNoneModulation(t *testing.T) {
	sc, _ := NewCosineSchedule(100, 0.008)
	rng := rand.New(rand.NewPCG(15, 16))
	const hw = 6
	x0 := randSlice(rng, 3*hw, 0.5)
	eps := randSlice(rng, 3*hw, 1)
	e := randSlice(rng, hw, 1)
	zeroE := make([]float32, hw)
	for _, s := range []int{0, 30, 50, 99} {
		xt, tg := make([]float32, 3*hw), make([]float32, 3*hw)
		sc.QSample(ModReference, s, x0, eps, e, hw, xt, tg)
		c := math.Sqrt(1-sc.AlphasCumprod[s]) * sc.Betas[s]
		for i := range xt {
			n := float64(eps[i]) + c*float64(e[i%hw])
			want := math.Sqrt(sc.AlphasCumprod[s])*float64(x0[i]) + math.Sqrt(1-sc.AlphasCumprod[s])*n
			if math.Abs(float64(tg[i])-n) > 1e-5 || math.Abs(float64(xt[i])-want) > 1e-5 {
				t.Fatalf("reference t=%d i=%d: x_t %g target %g, want %g %g", s, i, xt[i], tg[i], want, n)
			}
		}
		xn, tn := make([]float32, 3*hw), make([]float32, 3*hw)
		sc.QSample(ModNone, s, x0, eps, e, hw, xn, tn)
		x00, t00 := make([]float32, 3*hw), make([]float32, 3*hw)
		sc.QSample(ModPaper, s, x0, eps, zeroE, hw, x00, t00)
		for i := range xn {
			if tn[i] != eps[i] || math.Abs(float64(xn[i]-x00[i])) > 1e-6 {
				t.Fatalf("none t=%d: x_t %g target %g, want %g %g (E ignored)", s, xn[i], tn[i], x00[i], eps[i])
			}
		}
	}
	for _, tc := range []struct {
		in   string
		want Modulation
		ok   bool
	}{{"paper", ModPaper, true}, {"reference", ModReference, true}, {"none", ModNone, true}, {"bogus", 0, false}} {
		m, err := ParseModulation(tc.in)
		if (err == nil) != tc.ok || (tc.ok && m != tc.want) {
			t.Errorf("ParseModulation(%q) = %v, %v", tc.in, m, err)
		}
	}
}

func TestResidualMapping(t *testing.T) {
	hr := []float32{0.5, -0.2, 1, -1}
	up := []float32{0.4, 0.5, -1, -1}
	x := make([]float32, 4)
	Img2Res(x, hr, up)
	want := []float32{0.2, -1, 1, 0}
	for i := range x {
		if math.Abs(float64(x[i]-want[i])) > 1e-6 {
			t.Errorf("Img2Res[%d] = %g, want %g", i, x[i], want[i])
		}
	}
	back := make([]float32, 4)
	Res2Img(back, []float32{0.2, -3, 3, 0}, up)
	wantBack := []float32{0.5, 0, -0.5, -1}
	for i := range back {
		if math.Abs(float64(back[i]-wantBack[i])) > 1e-6 {
			t.Errorf("Res2Img[%d] = %g, want %g", i, back[i], wantBack[i])
		}
	}
}
