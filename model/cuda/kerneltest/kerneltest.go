// Package kerneltest is the one set of checks for the CUDA backend's kernels,
// run by the host emulation (model/cuda/emu, every `go test`) and by the device
// (model/cuda with -tags cuda, on a GPU): each kernel on random inputs against
// model.CPU, model.Adam and the L1 loss of the diffusion step.
package kerneltest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/samdiffsr/samdiffsr/model"
)

// Kernels is the kernel set of kernels.cu on host slices (an implementation copies
// in, launches and copies out). Batched convolution kernels take n images, image i
// at x[i·xs:] and col[i·cs:].
type Kernels interface {
	Im2col(g model.ConvGeom, n, xs, cs int, x, col []float32)
	Col2im(g model.ConvGeom, n, xs, cs int, col, x []float32)
	Mish(z, y, d []float32)
	LeakyReLU(x []float32, slope float32)
	LeakyReLUGrad(y, dy []float32, slope float32)
	Mul(dst, a, b []float32)
	Axpy(alpha float32, x, y []float32)
	// FillPlanes and AddPlaneBias use v[p % len(v)] for plane p.
	FillPlanes(x, v []float32, planes, hw int)
	AddPlaneBias(x, bias []float32, planes, hw int)
	// PlaneSums adds to out[c] the sums of planes (i,c) of n images, image by image.
	PlaneSums(x []float32, n, c, hw int, out []float32)
	ColSums(x []float32, rows, cols int, out []float32)
	Upsample2x(x, y []float32, planes, h, w int)
	Upsample2xGrad(dy, dx []float32, planes, h, w int)
	Copy2D(dst []float32, dld int, src []float32, sld, rows, cols int)
	Add2D(dst []float32, dld int, src []float32, sld, rows, cols int)
	L1(p, q, d []float32) float32
	Adam(p, g, m, v []float32, b1, b2, eps, step, bc2 float32)
	// PStep is one sampler step in place (coefficients as PStepCoefs gives them).
	PStep(x, pred, noise []float32, sr, srm1, c1, c2, sd float32, addNoise bool)
	// ClampOut sets out = clamp(z,0,1)·2-1, ClampOutGrad dz = 2·dout inside [0,1]
	// (the RRDB head's output and its gradient, as model's rrdbNet).
	ClampOut(z, out []float32)
	ClampOutGrad(z, dout, dz []float32)
	// SumBatches adds Σ_b part[b·len(out):] to out.
	SumBatches(part, out []float32, batch int)
}

// PStepCoefs returns the float32 coefficients of model.Schedule.PStep at t:
// √(1/ᾱ), √(1/ᾱ-1), coef1, coef2 and exp(½·log β̃).
func PStepCoefs(sc *model.Schedule, t int) (sr, srm1, c1, c2, sd float32) {
	ac := sc.AlphasCumprod[t]
	return float32(math.Sqrt(1 / ac)), float32(math.Sqrt(1/ac - 1)), float32(sc.Coef1[t]), float32(sc.Coef2[t]),
		float32(math.Exp(0.5 * sc.PosteriorLogVarClipped[t]))
}

func randSlice(rng *rand.Rand, n int, scale float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64() * scale)
	}
	return s
}

// Close reports the first elements where got and want differ by more than
// rtol·max(|want|, mean|want|) (the mean keeps cancellation in sums from failing
// a relative test near zero). It returns the worst relative error.
func Close(t testing.TB, name string, got, want []float32, rtol float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", name, len(got), len(want))
		return math.Inf(1)
	}
	var mean float64
	for _, w := range want {
		mean += math.Abs(float64(w))
	}
	if len(want) > 0 {
		mean /= float64(len(want))
	}
	if mean == 0 {
		mean = 1e-30
	}
	worst, bad := 0.0, 0
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		den := max(math.Abs(w), mean)
		e := math.Abs(g-w) / den
		if math.IsNaN(g) != math.IsNaN(w) || (!math.IsNaN(w) && e > rtol) {
			if bad < 5 {
				t.Errorf("%s[%d] = %.9g, want %.9g (rel %.3g)", name, i, g, w, e)
			}
			bad++
		}
		if e > worst {
			worst = e
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d values off", name, bad, len(want))
	}
	return worst
}

// Geoms are the convolution shapes of the model (3x3 stride 1 and 2 with
// reflection, 3x3 zero, the 4x4/2 and 8x8/4 transposed convolutions seen as the
// convolutions whose input is their output) plus small odd edge cases.
func Geoms() []model.ConvGeom {
	conv := func(c, h, w, k, s, p int, refl bool) model.ConvGeom {
		return model.ConvGeom{C: c, H: h, W: w, K: k, Stride: s, Pad: p, Reflect: refl,
			OH: (h+2*p-k)/s + 1, OW: (w+2*p-k)/s + 1}
	}
	convT := func(c, ih, iw, k, s, p int) model.ConvGeom {
		return model.ConvGeom{C: c, H: (ih-1)*s - 2*p + k, W: (iw-1)*s - 2*p + k, K: k, Stride: s, Pad: p, OH: ih, OW: iw}
	}
	return []model.ConvGeom{
		conv(5, 9, 11, 3, 1, 1, true),
		conv(4, 8, 8, 3, 1, 1, false),
		conv(3, 10, 12, 3, 2, 1, true),
		conv(3, 9, 7, 3, 2, 1, true),
		conv(2, 3, 2, 3, 1, 1, true),
		conv(3, 6, 5, 1, 1, 0, false),
		convT(4, 5, 6, 4, 2, 1),
		convT(3, 5, 6, 8, 4, 2),
	}
}

// Run checks every kernel of k against the CPU reference with relative tolerance rtol.
func Run(t *testing.T, k Kernels, rtol float64) {
	cpu := model.NewCPU()
	rng := rand.New(rand.NewPCG(8, 1))

	for _, g := range Geoms() {
		name := fmt.Sprintf("C%dH%dW%dK%dS%dP%dR%v", g.C, g.H, g.W, g.K, g.Stride, g.Pad, g.Reflect)
		t.Run("im2col/"+name, func(t *testing.T) {
			const n = 3
			img, cols := g.C*g.H*g.W, g.ColRows()*g.ColCols()
			xs, cs := img+5, cols+3 // strided images, as channel views of a concatenation
			x := randSlice(rng, n*xs, 1)
			got, want := randSlice(rng, n*cs, 1), make([]float32, n*cs)
			copy(want, got)
			k.Im2col(g, n, xs, cs, x, got)
			for i := 0; i < n; i++ {
				cpu.Im2col(g, x[i*xs:i*xs+img], want[i*cs:i*cs+cols])
			}
			Close(t, "col", got, want, rtol)
		})
		t.Run("col2im/"+name, func(t *testing.T) {
			const n = 2
			img, cols := g.C*g.H*g.W, g.ColRows()*g.ColCols()
			xs, cs := img+2, cols+4
			col := randSlice(rng, n*cs, 1)
			got := randSlice(rng, n*xs, 1)
			want := append([]float32(nil), got...)
			k.Col2im(g, n, xs, cs, col, got)
			for i := 0; i < n; i++ {
				cpu.Col2im(g, col[i*cs:i*cs+cols], want[i*xs:i*xs+img])
			}
			Close(t, "x", got, want, rtol)
		})
	}

	t.Run("mish", func(t *testing.T) {
		z := randSlice(rng, 5000, 4)
		z[0], z[1], z[2], z[3] = 25, -90, 20, 0
		y, d := make([]float32, len(z)), make([]float32, len(z))
		wy, wd := make([]float32, len(z)), make([]float32, len(z))
		k.Mish(z, y, d)
		cpu.Mish(z, wy, wd)
		Close(t, "y", y, wy, rtol)
		Close(t, "d", d, wd, rtol)
		// in place (y aliases z)
		zz := append([]float32(nil), z...)
		k.Mish(zz, zz, d)
		Close(t, "y in place", zz, wy, rtol)
	})
	t.Run("leaky_relu", func(t *testing.T) {
		x := randSlice(rng, 3001, 1)
		got, want := append([]float32(nil), x...), append([]float32(nil), x...)
		k.LeakyReLU(got, 0.2)
		cpu.LeakyReLU(want, 0.2)
		Close(t, "y", got, want, rtol)
		dy := randSlice(rng, len(x), 1)
		gd, wd := append([]float32(nil), dy...), append([]float32(nil), dy...)
		k.LeakyReLUGrad(want, gd, 0.2)
		cpu.LeakyReLUGrad(want, wd, 0.2)
		Close(t, "dy", gd, wd, rtol)
	})
	t.Run("mul_axpy", func(t *testing.T) {
		a, b := randSlice(rng, 2049, 1), randSlice(rng, 2049, 1)
		got, want := make([]float32, len(a)), make([]float32, len(a))
		k.Mul(got, a, b)
		cpu.Mul(want, a, b)
		Close(t, "mul", got, want, rtol)
		for _, alpha := range []float32{1, -0.37} {
			y := randSlice(rng, len(a), 1)
			gy, wy := append([]float32(nil), y...), append([]float32(nil), y...)
			k.Axpy(alpha, a, gy)
			cpu.Axpy(alpha, a, wy)
			Close(t, fmt.Sprintf("axpy(%g)", alpha), gy, wy, rtol)
		}
	})
	t.Run("planes", func(t *testing.T) {
		const n, c, hw = 3, 5, 77
		v := randSlice(rng, n*c, 1)
		got, want := make([]float32, n*c*hw), make([]float32, n*c*hw)
		k.FillPlanes(got, v, n*c, hw)
		cpu.FillPlanes(want, v, n*c, hw)
		Close(t, "fill", got, want, rtol)
		// one bias shared by n images (conv bias) vs per image
		b := randSlice(rng, c, 1)
		x := randSlice(rng, n*c*hw, 1)
		got, want = append([]float32(nil), x...), append([]float32(nil), x...)
		k.AddPlaneBias(got, b, n*c, hw)
		for i := 0; i < n; i++ {
			cpu.AddPlaneBias(want[i*c*hw:(i+1)*c*hw], b, c, hw)
		}
		Close(t, "bias", got, want, rtol)
		k.FillPlanes(got, b, n*c, hw)
		for i := 0; i < n; i++ {
			cpu.FillPlanes(want[i*c*hw:(i+1)*c*hw], b, c, hw)
		}
		Close(t, "fill shared", got, want, rtol)
		out := randSlice(rng, c, 1)
		gs, ws := append([]float32(nil), out...), append([]float32(nil), out...)
		k.PlaneSums(x, n, c, hw, gs)
		for i := 0; i < n; i++ {
			cpu.PlaneSums(x[i*c*hw:(i+1)*c*hw], c, hw, ws)
		}
		Close(t, "sums", gs, ws, rtol)
		// linear-layer bias grad: column sums in float64
		const rows, cols = 7, 33
		m := randSlice(rng, rows*cols, 1)
		gc, wc := append([]float32(nil), out[:1]...), append([]float32(nil), out[:1]...)
		gc, wc = append(gc, make([]float32, cols-1)...), append(wc, make([]float32, cols-1)...)
		k.ColSums(m, rows, cols, gc)
		for j := 0; j < cols; j++ {
			var s float64
			for i := 0; i < rows; i++ {
				s += float64(m[i*cols+j])
			}
			wc[j] += float32(s)
		}
		Close(t, "colsums", gc, wc, rtol)
	})
	t.Run("upsample2x", func(t *testing.T) {
		const planes, h, w = 4, 5, 7
		x := randSlice(rng, planes*h*w, 1)
		got, want := make([]float32, 4*len(x)), make([]float32, 4*len(x))
		k.Upsample2x(x, got, planes, h, w)
		cpu.Upsample2x(x, want, planes, h, w)
		Close(t, "y", got, want, rtol)
		dy := randSlice(rng, 4*len(x), 1)
		gd, wd := append([]float32(nil), x...), append([]float32(nil), x...)
		k.Upsample2xGrad(dy, gd, planes, h, w)
		cpu.Upsample2xGrad(dy, wd, planes, h, w)
		Close(t, "dx", gd, wd, rtol)
	})
	t.Run("concat_split", func(t *testing.T) {
		// cat[n][0:a] = x[n], cat[n][a:a+b] = skip[n]; the split adds back.
		const n, a, b = 3, 40, 24
		x, skip := randSlice(rng, n*a, 1), randSlice(rng, n*b, 1)
		got := make([]float32, n*(a+b))
		k.Copy2D(got, a+b, x, a, n, a)
		k.Copy2D(got[a:], a+b, skip, b, n, b)
		want := make([]float32, 0, n*(a+b))
		for i := 0; i < n; i++ {
			want = append(want, x[i*a:(i+1)*a]...)
			want = append(want, skip[i*b:(i+1)*b]...)
		}
		Close(t, "cat", got, want, rtol)
		ds := randSlice(rng, n*b, 1)
		wds := append([]float32(nil), ds...)
		k.Add2D(ds, b, got[a:], a+b, n, b)
		for i := range wds {
			wds[i] += skip[i]
		}
		Close(t, "split add", ds, wds, rtol)
	})
	t.Run("l1", func(t *testing.T) {
		p, q := randSlice(rng, 4099, 1), randSlice(rng, 4099, 1)
		q[5] = p[5]
		d, wd := make([]float32, len(p)), make([]float32, len(p))
		loss := k.L1(p, q, d)
		want := model.L1(p, q, wd)
		Close(t, "loss", []float32{loss}, []float32{want}, rtol)
		Close(t, "grad", d, wd, rtol)
	})
	t.Run("adam", func(t *testing.T) {
		const n = 3000
		data := randSlice(rng, n, 1)
		p := &model.Param{Name: "w", Shape: []int{n}, Data: append([]float32(nil), data...), Grad: make([]float32, n)}
		opt := model.NewAdam()
		m, v := make([]float32, n), make([]float32, n)
		const lr = 1e-3
		for step := 1; step <= 3; step++ {
			g := randSlice(rng, n, 0.1)
			copy(p.Grad, g)
			if err := opt.Step([]*model.Param{p}, lr); err != nil {
				t.Fatal(err)
			}
			kk := float64(step)
			stepSize := float32(lr / (1 - math.Pow(opt.Beta1, kk)))
			bc2 := float32(math.Sqrt(1 - math.Pow(opt.Beta2, kk)))
			k.Adam(data, g, m, v, float32(opt.Beta1), float32(opt.Beta2), float32(opt.Eps), stepSize, bc2)
		}
		_, st := opt.State([]*model.Param{p})
		Close(t, "param", data, p.Data, rtol)
		Close(t, "exp_avg", m, st[0].Data, rtol)
		Close(t, "exp_avg_sq", v, st[1].Data, rtol)
	})
	t.Run("sum_batches", func(t *testing.T) {
		const batch, n = 5, 1001
		part, out := randSlice(rng, batch*n, 1), randSlice(rng, n, 1)
		want := append([]float32(nil), out...)
		for j := range want {
			for b := 0; b < batch; b++ {
				want[j] += part[b*n+j]
			}
		}
		k.SumBatches(part, out, batch)
		Close(t, "out", out, want, rtol)
	})
	t.Run("clamp_out", func(t *testing.T) {
		z := randSlice(rng, 2000, 1)
		z[0], z[1] = 0, 1
		out, dz := make([]float32, len(z)), make([]float32, len(z))
		dout := randSlice(rng, len(z), 1)
		k.ClampOut(z, out)
		k.ClampOutGrad(z, dout, dz)
		wo, wd := make([]float32, len(z)), make([]float32, len(z))
		for i, v := range z {
			wo[i] = min(max(v, 0), 1)*2 - 1
			if v >= 0 && v <= 1 {
				wd[i] = 2 * dout[i]
			}
		}
		Close(t, "out", out, wo, rtol)
		Close(t, "dz", dz, wd, rtol)
	})
	t.Run("p_step", func(t *testing.T) {
		sc, err := model.NewCosineSchedule(100, 0.008)
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []int{99, 50, 0} {
			x, pred, noise := randSlice(rng, 3001, 1.5), randSlice(rng, 3001, 1), randSlice(rng, 3001, 1)
			want := append([]float32(nil), x...)
			sc.PStep(step, want, pred, noise)
			sr, srm1, c1, c2, sd := PStepCoefs(sc, step)
			k.PStep(x, pred, noise, sr, srm1, c1, c2, sd, step > 0)
			Close(t, fmt.Sprintf("x t=%d", step), x, want, rtol)
		}
	})
}
