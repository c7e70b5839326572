package model

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestDDIMFullStepsIsDDPM checks that the DDIM step with η = 1 between consecutive
// steps is the DDPM posterior step (PStep) for every t, given the same noise.
func TestDDIMFullStepsIsDDPM(t *testing.T) {
	sc, err := NewCosineSchedule(100, 0.008)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	x := randSlice(rng, 64, 1.5)
	pred := randSlice(rng, 64, 1)
	z := randSlice(rng, 64, 1)
	for tt := 0; tt < sc.T; tt++ {
		a, b := append([]float32(nil), x...), append([]float32(nil), x...)
		sc.PStep(tt, a, pred, z)
		sc.DDIMStep(tt, tt-1, 1, b, pred, z)
		for i := range a {
			if d := math.Abs(float64(a[i] - b[i])); d > 2e-5*(1+math.Abs(float64(a[i]))) {
				t.Fatalf("t=%d: DDIM(η=1) %v, DDPM %v", tt, b[i], a[i])
			}
		}
	}
	// η = 0 is deterministic: the noise is not used.
	a, b := append([]float32(nil), x...), append([]float32(nil), x...)
	sc.DDIMStep(50, 40, 0, a, pred, z)
	sc.DDIMStep(50, 40, 0, b, pred, make([]float32, len(z)))
	if !slices.Equal(a, b) {
		t.Error("DDIM with η = 0 depends on the noise")
	}
}

func TestSamplerTimestepsAndParse(t *testing.T) {
	s, err := ParseSampler("ddim", 10, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	ts := s.Timesteps(100)
	want := []int{99, 88, 77, 66, 55, 44, 33, 22, 11, 0}
	if !slices.Equal(ts, want) {
		t.Errorf("ddim 10 of 100 visits %v, want %v", ts, want)
	}
	if ts := (Sampler{DDIM: true, Steps: 100}).Timesteps(100); len(ts) != 100 || ts[0] != 99 || ts[99] != 0 {
		t.Errorf("ddim 100 of 100 visits %v", ts)
	}
	if s, err := ParseSampler("ddim", 500, 0, 100); err != nil || s.Steps != 100 {
		t.Errorf("ddim 500 of 100 steps: %+v, %v; want all 100", s, err)
	}
	if ts := (Sampler{DDIM: true, Steps: 1}).Timesteps(100); !slices.Equal(ts, []int{99}) {
		t.Errorf("ddim 1 step visits %v", ts)
	}
	if ts := (Sampler{}).Timesteps(100); len(ts) != 100 || ts[0] != 99 || ts[99] != 0 {
		t.Errorf("ddpm visits %d steps %v..%v", len(ts), ts[0], ts[len(ts)-1])
	}
	for _, c := range []struct {
		kind  string
		steps int
		eta   float64
		want  string
	}{
		{"ddim", 0, 0, "sr.steps 0"},
		{"ddim", -1, 0, "sr.steps -1"},
		{"ddim", 10, 1.5, "sr.eta 1.5"},
		{"ddim", 10, math.NaN(), "sr.eta NaN"},
		{"plms", 10, 0, `sr.sampler "plms"`},
	} {
		_, err := ParseSampler(c.kind, c.steps, c.eta, 100)
		if err == nil || !contains(err.Error(), c.want) {
			t.Errorf("ParseSampler(%q, %d, %g) = %v, want an error naming %s", c.kind, c.steps, c.eta, err, c.want)
		}
	}
	if (Sampler{DDIM: true, Steps: 10}).Sound(ModPaper) == nil {
		t.Error("DDIM was called sound for the paper's modulation")
	}
	for _, mod := range []Modulation{ModNone, ModReference} {
		if err := (Sampler{DDIM: true, Steps: 10}).Sound(mod); err != nil {
			t.Errorf("DDIM unsound for %v: %v", mod, err)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestSampleLossesMeanIsLoss checks that the per-sample losses average to the loss.
func TestSampleLossesMeanIsLoss(t *testing.T) {
	m, err := New(tinyConfig("paper"), 3)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	n, h, w := 3, 16, 16
	b := tinyBatch(rng, n, h, w)
	loss, err := m.DiffusionLoss(b, []int{2, 40, 95}, randSlice(rng, n*3*h*w, 1))
	if err != nil {
		t.Fatal(err)
	}
	per := m.SampleLosses()
	if len(per) != n {
		t.Fatalf("%d per-sample losses for a batch of %d", len(per), n)
	}
	var sum float64
	for _, v := range per {
		sum += float64(v)
	}
	if d := math.Abs(sum/float64(n) - float64(loss)); d > 1e-6 {
		t.Errorf("per-sample losses %v average %v, loss %v", per, sum/float64(n), loss)
	}
	if per[0] == per[1] || per[1] == per[2] {
		t.Errorf("per-sample losses %v are not per sample", per)
	}
}

// memorisedBatch is a batch whose residual x0 a perfectly memorising denoiser
// knows: HR with stripes and a square, Up its 3x3 blur (the detail SR must
// restore), E two regions.
func memorisedBatch(n, h, w int) (hr, up, e []float32) {
	hr, up, e = make([]float32, n*3*h*w), make([]float32, n*3*h*w), make([]float32, n*h*w)
	at := func(s, c, y, x int) int { return ((s*3+c)*h+y)*w + x }
	for s := 0; s < n; s++ {
		for c := 0; c < 3; c++ {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					v := 0.5 * math.Sin(float64(x+2*s+c)*1.3+float64(y)*0.4)
					if x > w/4 && x < 3*w/4 && y > h/4+s && y < 3*h/4 {
						v += 0.3
					}
					hr[at(s, c, y, x)] = float32(v)
				}
			}
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					var sum float32
					for dy := -1; dy <= 1; dy++ {
						for dx := -1; dx <= 1; dx++ {
							sum += hr[at(s, c, min(max(y+dy, 0), h-1), min(max(x+dx, 0), w-1))]
						}
					}
					up[at(s, c, y, x)] = sum / 9
				}
			}
		}
		for i := 0; i < h*w; i++ {
			e[s*h*w+i] = 0.8
			if i%w >= w/2 {
				e[s*h*w+i] = -0.5
			}
		}
	}
	return hr, up, e
}

// oracle is the denoiser of a model that memorised x0 (and the mask e) exactly:
// the target n of the forward process of mod that produced x_t, i.e. for paper
// ε = (x_t - √ᾱ_t·x0 - φ_t·E)/√(1-ᾱ_t) and n = ε + (√(1-ᾱ_t)/√β_t)·E.
func oracle(sc *Schedule, mod Modulation, x0, e []float32, hw int) Predictor {
	pred := make([]float32, len(x0))
	return func(x []float32, ts []int) ([]float32, error) {
		per := len(x) / len(ts)
		for i := range x {
			t := ts[i/per]
			ev := float64(e[(i/per)*hw+i%hw])
			sa, s1m := math.Sqrt(sc.AlphasCumprod[t]), math.Sqrt(1-sc.AlphasCumprod[t])
			switch mod {
			case ModPaper:
				eps := (float64(x[i]) - sa*float64(x0[i]) - sc.Phi[t]*ev) / s1m
				pred[i] = float32(eps + sc.TargetCoefPaper[t]*ev)
			default: // none; reference's x_t = √ᾱ·x0 + √(1-ᾱ)·n makes n the same formula
				pred[i] = float32((float64(x[i]) - sa*float64(x0[i])) / s1m)
			}
		}
		return pred, nil
	}
}

// psnr11 is the PSNR of a against b, both in [-1, 1].
func psnr11(a, b []float32) float64 {
	var se float64
	for i := range a {
		d := float64(a[i] - b[i])
		se += d * d
	}
	return 10 * math.Log10(4/(se/float64(len(a))))
}

// sampleOracle runs RunSampler with the oracle of mod and returns the SR image's
// PSNR against HR and the blurred Up's.
func sampleOracle(t *testing.T, s Sampler, mod Modulation) (float64, float64) {
	t.Helper()
	sc, err := NewCosineSchedule(100, 0.008)
	if err != nil {
		t.Fatal(err)
	}
	n, h, w := 2, 16, 16
	hr, up, e := memorisedBatch(n, h, w)
	x0 := make([]float32, len(hr))
	Img2Res(x0, hr, up)
	size := n * 3 * h * w
	x, err := RunSampler(context.Background(), sc, s, n, size, rand.New(rand.NewPCG(3, 4)), make([]float32, size), oracle(sc, mod, x0, e, h*w), nil)
	if err != nil {
		t.Fatal(err)
	}
	Res2Img(x, x, up)
	return psnr11(x, hr), psnr11(up, hr)
}

// TestSamplersReproduceMemorisedBatch: with the denoiser of a model that memorised
// the batch, DDPM (100 steps) and DDIM (10 and 25 steps, η 0 and 0.5) bring x_T
// back to it, far above the blurred Up (bicubic's stand-in).
func TestSamplersReproduceMemorisedBatch(t *testing.T) {
	for _, c := range []struct {
		s   Sampler
		mod Modulation
	}{
		{Sampler{}, ModNone}, {Sampler{DDIM: true, Steps: 10}, ModNone}, {Sampler{DDIM: true, Steps: 25, Eta: 0.5}, ModNone},
		{Sampler{}, ModReference}, {Sampler{DDIM: true, Steps: 10}, ModReference}, {Sampler{}, ModPaper},
	} {
		p, base := sampleOracle(t, c.s, c.mod)
		if p < base+20 {
			t.Errorf("%v, modulation %v: the memorised batch comes back at %.2f dB, the blurred Up is %.2f dB", c.s, c.mod, p, base)
		}
	}
}

// TestDDIMStaysOnTheMarginal: with η = 0 and an exact denoiser, every DDIM jump
// lands on q(x_s|x0) with the same ε, so (x_s - √ᾱ_s·x0)/√(1-ᾱ_s) never changes —
// for none. For paper the same walk leaves the sampler's x̂0 carrying E (the
// forward process put φ_t·E into x_t, the jump cannot move it), which is why
// Sound refuses DDIM there.
func TestDDIMStaysOnTheMarginal(t *testing.T) {
	sc, err := NewCosineSchedule(100, 0.008)
	if err != nil {
		t.Fatal(err)
	}
	n, h, w := 1, 8, 8
	hr, up, e := memorisedBatch(n, h, w)
	x0 := make([]float32, len(hr))
	Img2Res(x0, hr, up)
	s := Sampler{DDIM: true, Steps: 10}
	steps := s.Timesteps(sc.T)
	eps := func(x []float32, t int) []float32 {
		out := make([]float32, len(x))
		for i := range x {
			out[i] = float32((float64(x[i]) - math.Sqrt(sc.AlphasCumprod[t])*float64(x0[i])) / math.Sqrt(1-sc.AlphasCumprod[t]))
		}
		return out
	}
	rng := rand.New(rand.NewPCG(9, 10))
	x := randSlice(rng, len(x0), 1)
	first := eps(x, steps[0])
	pred := oracle(sc, ModNone, x0, e, h*w)
	for k, tt := range steps[:len(steps)-1] {
		p, _ := pred(x, []int{tt})
		sc.DDIMStep(tt, steps[k+1], 0, x, p, nil)
		got := eps(x, steps[k+1])
		for i := range got {
			if math.Abs(float64(got[i]-first[i])) > 1e-3 {
				t.Fatalf("after the jump %d -> %d, ε[%d] = %v, started as %v", tt, steps[k+1], i, got[i], first[i])
			}
		}
	}
	// paper: x_t made by the forward process with E; the sampler's x̂0 carries E.
	xt, target := make([]float32, len(x0)), make([]float32, len(x0))
	sc.QSample(ModPaper, 50, x0, randSlice(rng, len(x0), 1), e, h*w, xt, target)
	x0hat := make([]float32, len(x0))
	sc.X0(50, xt, target, x0hat)
	if p := psnr11(x0hat, x0); p > 20 {
		t.Errorf("paper: the sampler's x̂0 at t=50 from the exact target is %.1f dB from x0; the E offset should dominate", p)
	}
}
