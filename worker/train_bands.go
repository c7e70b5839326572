package worker

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/metrics"
	"github.com/samdiffsr/samdiffsr/model"
)

// lossBands splits the timesteps 0..T-1 into the bands the diffusion loss is
// reported by: [0, T/10), [T/10, T/2), [T/2, T) — t 0-9, 10-49 and 50-99 for T = 100
// (the low-noise end, which SR quality depends on, first). Empty bands are dropped.
func lossBands(T int) [][2]int {
	var out [][2]int
	lo := 0
	for _, hi := range []int{T / 10, T / 2, T} {
		if hi > lo {
			out = append(out, [2]int{lo, hi})
			lo = hi
		}
	}
	return out
}

// bandOf returns the index of the band holding t.
func bandOf(bands [][2]int, t int) int {
	for i, b := range bands {
		if t < b[1] {
			return i
		}
	}
	return len(bands) - 1
}

// bandTotals sums per-sample losses by timestep band: Sum[k] over the N[k] samples
// whose t fell in band k. Summing totals (not averaging averages) makes them add
// across ranks and steps exactly as the logged loss does: over a window of steps of
// a global batch B, Σ_k Sum[k] / (steps·B) is the mean of the steps' losses.
type bandTotals struct {
	Sum, N []float64
}

func newBandTotals(k int) bandTotals {
	return bandTotals{Sum: make([]float64, k), N: make([]float64, k)}
}

// add accumulates o into b.
func (b *bandTotals) add(o bandTotals) {
	for i := range o.Sum {
		b.Sum[i] += o.Sum[i]
		b.N[i] += o.N[i]
	}
}

// reset zeroes b.
func (b *bandTotals) reset() {
	clear(b.Sum)
	clear(b.N)
}

// BandLoss is the mean diffusion loss of the samples whose timestep fell in [From, To].
type BandLoss struct {
	From int     `json:"from"`
	To   int     `json:"to"`
	Loss float64 `json:"loss"`
	// N is the number of samples averaged.
	N int `json:"n"`
}

// bandLosses reports b's bands that saw samples.
func bandLosses(bands [][2]int, b bandTotals) []BandLoss {
	var out []BandLoss
	for i, bd := range bands {
		if i < len(b.N) && b.N[i] > 0 {
			out = append(out, BandLoss{From: bd[0], To: bd[1] - 1, Loss: b.Sum[i] / b.N[i], N: int(b.N[i])})
		}
	}
	return out
}

// x0Steps are the timesteps validation measures the denoiser's x̂0 at: 0, T/10,
// T/4, T/2 and 9T/10 (0, 10, 25, 50, 90 for T = 100), distinct.
func x0Steps(T int) []int {
	var out []int
	for _, t := range []int{0, T / 10, T / 4, T / 2, 9 * T / 10} {
		if t < T && (len(out) == 0 || t > out[len(out)-1]) {
			out = append(out, t)
		}
	}
	return out
}

// X0Quality is the mean PSNR-Y of the denoiser's one-step estimate x̂0 on the
// validation images at timestep T, with x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε made from the
// true x0 (no mask: validation images have none, and the sampler never uses one).
type X0Quality struct {
	T     int     `json:"t"`
	PSNRY float64 `json:"psnr_y"`
}

// x0Quality measures X0Quality at every x0Steps t on the validation images, with
// noise from (seed, image, t).
func x0Quality(net Net, vs *valSet, seed int64) ([]X0Quality, error) {
	m := net.Model()
	sc := m.Schedule()
	steps := x0Steps(sc.T)
	means := make([]metrics.Mean, len(steps))
	for i, lr := range vs.lr {
		hr := vs.hr[i]
		lrT, upT, err := LRTensors(lr)
		if err != nil {
			return nil, err
		}
		hrT := rgbTensor(hr)
		x0 := make([]float32, len(hrT))
		model.Img2Res(x0, hrT, upT)
		xt, target := make([]float32, len(x0)), make([]float32, len(x0))
		for k, t := range steps {
			rng := rand.New(rand.NewPCG(uint64(seed)^0x0c0ffee, uint64(i)<<16|uint64(t)))
			eps := make([]float32, len(x0))
			for j := range eps {
				eps[j] = float32(rng.NormFloat64())
			}
			sc.QSample(model.ModNone, t, x0, eps, nil, hr.W*hr.H, xt, target)
			pred, err := net.PredictNoise(lrT, xt, 1, hr.H, hr.W, []int{t})
			if err != nil {
				return nil, fmt.Errorf("worker: x̂0 of validation image %s at t=%d: %w", vs.ids[i], t, err)
			}
			sc.X0(t, xt, pred, xt)
			model.Res2Img(xt, xt, upT)
			for j, v := range xt {
				xt[j] = min(max(v, -1), 1)
			}
			img := TensorToRGB(xt, hr.W, hr.H)
			p, s, err := metrics.RGB8(hr.W, hr.H, img.Pix, hr.Pix, vs.crop)
			if err != nil {
				return nil, err
			}
			means[k].Add(p, s)
		}
	}
	out := make([]X0Quality, len(steps))
	for k, t := range steps {
		out[k] = X0Quality{T: t, PSNRY: means[k].PSNR()}
	}
	return out, nil
}

// rgbTensor converts an image to a 1×3×h×w tensor in [-1, 1] (METHOD §1).
func rgbTensor(im *dataset.RGB) []float32 {
	n := im.W * im.H
	out := make([]float32, 3*n)
	for i := 0; i < n; i++ {
		for c := 0; c < 3; c++ {
			out[c*n+i] = dataset.PixelToFloat(im.Pix[3*i+c])
		}
	}
	return out
}

// x0String formats x̂0 qualities as "t=0 31.2, t=10 28.9, ...".
func x0String(qs []X0Quality) string {
	var b strings.Builder
	for i, q := range qs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "t=%d %.2f", q.T, q.PSNRY)
	}
	return b.String()
}
