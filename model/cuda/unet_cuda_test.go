//go:build cuda

package cuda

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/model"
	"github.com/samdiffsr/samdiffsr/model/cuda/kerneltest"
)

func batch(rng *rand.Rand, m *model.SRDiff, n, H, W int) (*model.Batch, []int, []float32) {
	hw := H * W
	uni := func(k int) []float32 {
		s := make([]float32, k)
		for i := range s {
			s[i] = float32(rng.Float64()*2 - 1)
		}
		return s
	}
	b := &model.Batch{N: n, H: H, W: W, HR: uni(n * 3 * hw), Up: uni(n * 3 * hw), LR: uni(n * 3 * hw / 16), E: uni(n * hw)}
	t := make([]int, n)
	for i := range t {
		t[i] = rng.IntN(m.Schedule().T)
	}
	noise := make([]float32, n*3*hw)
	for i := range noise {
		noise[i] = float32(rng.NormFloat64())
	}
	return b, t, noise
}

func tinyConfig() configs.Config {
	cfg := configs.Default()
	cfg.Model.RRDB = configs.RRDB{NF: 8, NB: 2, GC: 4}
	cfg.Model.UNet = configs.UNet{Dim: 8, DimMults: []int{1, 2, 2, 2}}
	return cfg
}

// TestUNetStep checks the device training step (RRDB features, U-Net forward,
// L1, U-Net backward) of a tiny model against model.SRDiff.DiffusionLoss on the
// CPU (loss and every gradient, rel 1e-3), then two Adam steps against model.Adam.
func TestUNetStep(t *testing.T) {
	d := device(t)
	cfg := tinyConfig()
	m, err := model.New(cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(d, cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	opt := model.NewAdam()
	for step := 0; step < 3; step++ {
		b, ts, noise := batch(rng, m, 2, 16, 16)
		want, err := m.DiffusionLoss(b, ts, noise)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tr.DiffusionLoss(b, ts, noise)
		if err != nil {
			t.Fatal(err)
		}
		kerneltest.Close(t, fmt.Sprintf("step %d loss", step), []float32{got}, []float32{want}, 1e-4)
		kerneltest.Close(t, fmt.Sprintf("step %d per-sample losses", step), tr.SampleLosses(), m.SampleLosses(), 1e-4)
		g := make([]float32, len(m.UNetGrads()))
		if err := tr.Grads(g); err != nil {
			t.Fatal(err)
		}
		// per parameter, so a wrong layer is named
		off := 0
		for _, p := range m.UNetParams() {
			kerneltest.Close(t, fmt.Sprintf("step %d grad %s", step, p.Name), g[off:off+len(p.Data)], p.Grad, 1e-3)
			off += len(p.Data)
		}
		if step == 2 {
			break
		}
		if err := opt.Step(m.UNetParams(), 1e-3); err != nil {
			t.Fatal(err)
		}
		if err := tr.AdamStep(1e-3); err != nil {
			t.Fatal(err)
		}
		v := make([]float32, len(m.UNetValues()))
		if err := tr.Values(v); err != nil {
			t.Fatal(err)
		}
		kerneltest.Close(t, fmt.Sprintf("step %d values", step), v, m.UNetValues(), 1e-4)
	}
	// Adam state and value round trips
	mm, vv := make([]float32, len(m.UNetValues())), make([]float32, len(m.UNetValues()))
	k, err := tr.AdamState(mm, vv)
	if err != nil || k != 2 {
		t.Fatalf("AdamState: step %d, %v", k, err)
	}
	_, st := opt.State(m.UNetParams())
	kerneltest.Close(t, "exp_avg of "+st[0].Name, mm[:len(st[0].Data)], st[0].Data, 1e-4)
	if err := tr.LoadAdamState(k, mm, vv); err != nil {
		t.Fatal(err)
	}
	if err := tr.SetValues(m.UNetValues()); err != nil {
		t.Fatal(err)
	}
	v := make([]float32, len(m.UNetValues()))
	if err := tr.Values(v); err != nil {
		t.Fatal(err)
	}
	kerneltest.Close(t, "values after SetValues", v, m.UNetValues(), 0)
}

// BenchmarkTrainStep times the paper-size training step (RRDB 64/17/32 features,
// U-Net 64×(1,2,3,4), loss, backward, Adam) at batch SAMDIFFSR_BENCH_BATCH
// (default 16) on SAMDIFFSR_BENCH_SIZE² HR patches (default 160), fp32 and TF32,
// and reports seconds per step, samples/s and the allocator's peak.
func BenchmarkTrainStep(b *testing.B) {
	d := device(b)
	env := func(k string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
			return v
		}
		return def
	}
	n, size := env("SAMDIFFSR_BENCH_BATCH", 16), env("SAMDIFFSR_BENCH_SIZE", 160)
	cfg := configs.Default()
	m, err := model.New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := NewTrainer(d, cfg, m)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	bt, ts, noise := batch(rng, m, n, size, size)
	for _, tf32 := range []bool{false, true} {
		b.Run(fmt.Sprintf("tf32=%v", tf32), func(b *testing.B) {
			if err := d.SetTF32(tf32); err != nil {
				b.Fatal(err)
			}
			step := func() float32 {
				loss, err := tr.DiffusionLoss(bt, ts, noise)
				if err != nil {
					b.Fatal(err)
				}
				if err := tr.AdamStep(1e-4); err != nil {
					b.Fatal(err)
				}
				return loss
			}
			first := step()
			must(d.Sync())
			b.ResetTimer()
			start := time.Now()
			var last float32
			for i := 0; i < b.N; i++ {
				last = step()
			}
			must(d.Sync())
			el := time.Since(start).Seconds() / float64(b.N)
			b.ReportMetric(el, "s/step")
			b.ReportMetric(float64(n)/el, "samples/s")
			b.ReportMetric(float64(d.HeldBytes())/(1<<30), "GiB-held")
			b.Logf("batch %d, %dx%d: loss %.4f → %.4f over %d steps (same batch)", n, size, size, first, last, b.N+1)
		})
	}
	must(d.SetTF32(false))
}

// BenchmarkSRForward times one U-Net forward of the paper-size model on one
// DIV2K-size image (SAMDIFFSR_SR_H×SAMDIFFSR_SR_W, default 1352×2040: 2040×1356
// rounded to multiples of 8) with the conditioning computed once, as the sampler
// does; 100 of them dominate a 100-step SR (the elementwise posterior step is
// not on the device yet), so it also reports 100× as the SR estimate.
func BenchmarkSRForward(b *testing.B) {
	d := device(b)
	env := func(k string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
			return v
		}
		return def
	}
	H, W := env("SAMDIFFSR_SR_H", 1352), env("SAMDIFFSR_SR_W", 2040)
	cfg := configs.Default()
	m, err := model.New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := NewTrainer(d, cfg, m)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(2, 2))
	h, w := H/4, W/4
	lr := make([]float32, 3*h*w)
	xt := make([]float32, 3*H*W)
	for i := range lr {
		lr[i] = float32(rng.Float64())
	}
	for i := range xt {
		xt[i] = float32(rng.NormFloat64())
	}
	un, rn := tr.un, tr.rn
	dlr := rn.grow(&tr.bufs.lr, len(lr))
	dxt := un.grow(&tr.bufs.xt, len(xt))
	must(d.Upload(dlr, lr))
	must(d.Upload(dxt, xt))
	cc := tr.rrdb.condChannels()
	cond := newDact(rn.grow(&tr.bufs.cond, cc*h*w), 1, cc, h, w)
	tr.rrdb.forward(newDact(dlr, 1, 3, h, w), cond, false)
	for _, tf32 := range []bool{false, true} {
		b.Run(fmt.Sprintf("tf32=%v", tf32), func(b *testing.B) {
			must(d.SetTF32(tf32))
			tr.unet.forward(newDact(dxt, 1, 3, H, W), []int{50}, cond, false)
			must(errors.Join(un.err, rn.err, d.Sync()))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				tr.unet.forward(newDact(dxt, 1, 3, H, W), []int{99 - i%100}, cond, true)
			}
			must(errors.Join(un.err, d.Sync()))
			el := time.Since(start).Seconds() / float64(b.N)
			b.ReportMetric(el, "s/forward")
			b.ReportMetric(100*el, "s/SR100")
			b.ReportMetric(float64(d.HeldBytes())/(1<<30), "GiB-held")
		})
	}
	must(d.SetTF32(false))
}

// TestSample checks the device sampler of a tiny model against model.SRDiff.Sample
// with the same random stream (all T = 100 steps).
func TestSample(t *testing.T) {
	d := device(t)
	cfg := tinyConfig()
	m, err := model.New(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(d, cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(4, 4))
	const n, H, W = 1, 16, 16
	b, _, _ := batch(rng, m, n, H, W)
	want, err := m.Sample(context.Background(), b.LR, b.Up, n, H, W, rand.New(rand.NewPCG(1, 2)), nil)
	if err != nil {
		t.Fatal(err)
	}
	steps := 0
	got, err := tr.Sample(context.Background(), b.LR, b.Up, n, H, W, rand.New(rand.NewPCG(1, 2)), func(int) { steps++ })
	if err != nil {
		t.Fatal(err)
	}
	if steps != m.Schedule().T {
		t.Errorf("%d steps, want %d", steps, m.Schedule().T)
	}
	kerneltest.Close(t, "sr", got, want, 1e-3)
	// DDIM (host steps, device predictions) and PredictNoise against the CPU.
	ddim := model.Sampler{DDIM: true, Steps: 8, Eta: 0.5}
	want, err = m.SampleWith(context.Background(), ddim, b.LR, b.Up, n, H, W, rand.New(rand.NewPCG(1, 2)), nil)
	if err != nil {
		t.Fatal(err)
	}
	steps = 0
	got, err = tr.SampleWith(context.Background(), ddim, b.LR, b.Up, n, H, W, rand.New(rand.NewPCG(1, 2)), func(int) { steps++ })
	if err != nil {
		t.Fatal(err)
	}
	if steps != 8 {
		t.Errorf("DDIM: %d steps, want 8", steps)
	}
	kerneltest.Close(t, "sr ddim", got, want, 1e-3)
	xt := b.Up
	wantN, err := m.PredictNoise(b.LR, xt, n, H, W, []int{30})
	if err != nil {
		t.Fatal(err)
	}
	gotN, err := tr.PredictNoise(b.LR, xt, n, H, W, []int{30})
	if err != nil {
		t.Fatal(err)
	}
	kerneltest.Close(t, "predicted noise", gotN, wantN, 1e-3)
}

// BenchmarkSR100 times the full sampler (T = 100 steps) of the paper-size model on
// one DIV2K-size image (SAMDIFFSR_SR_H×SAMDIFFSR_SR_W, default 1352×2040) with TF32
// unless SAMDIFFSR_SR_TF32=0: the paper reports 37.6 s per DIV2K image.
func BenchmarkSR100(b *testing.B) {
	d := device(b)
	env := func(k string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
			return v
		}
		return def
	}
	H, W := env("SAMDIFFSR_SR_H", 1352), env("SAMDIFFSR_SR_W", 2040)
	must(d.SetTF32(os.Getenv("SAMDIFFSR_SR_TF32") != "0"))
	defer func() { must(d.SetTF32(false)) }()
	cfg := configs.Default()
	m, err := model.New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := NewTrainer(d, cfg, m)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	lr := make([]float32, 3*H*W/16)
	up := make([]float32, 3*H*W)
	for i := range lr {
		lr[i] = float32(rng.Float64()*2 - 1)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := tr.Sample(context.Background(), lr, up, 1, H, W, rng, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(time.Since(start).Seconds()/float64(b.N), "s/SR")
	b.ReportMetric(float64(d.HeldBytes())/(1<<30), "GiB-held")
}

// TestTrainRun (only with SAMDIFFSR_TRAIN_STEPS=N) trains the paper-size U-Net for
// N steps (or until SAMDIFFSR_TRAIN_SECONDS, default 150, have passed) at batch
// SAMDIFFSR_BENCH_BATCH (16) on SAMDIFFSR_BENCH_SIZE² (160) patches with TF32
// unless SAMDIFFSR_TRAIN_TF32=0: a fresh random batch every step from a fixed
// pool of 4 (so the loss can fall), lr 2e-4. It prints progress every 10 steps (a
// timeout still leaves figures) and fails unless the mean loss of the last 10 steps
// is below that of the first 10.
func TestTrainRun(t *testing.T) {
	steps, _ := strconv.Atoi(os.Getenv("SAMDIFFSR_TRAIN_STEPS"))
	if steps <= 0 {
		t.Skip("SAMDIFFSR_TRAIN_STEPS not set")
	}
	d := device(t)
	env := func(k string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
			return v
		}
		return def
	}
	n, size, secs := env("SAMDIFFSR_BENCH_BATCH", 16), env("SAMDIFFSR_BENCH_SIZE", 160), env("SAMDIFFSR_TRAIN_SECONDS", 150)
	tf32 := os.Getenv("SAMDIFFSR_TRAIN_TF32") != "0"
	must(d.SetTF32(tf32))
	defer func() { must(d.SetTF32(false)) }()
	cfg := configs.Default()
	m, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(d, cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	type item struct {
		b     *model.Batch
		ts    []int
		noise []float32
	}
	pool := make([]item, 4)
	for i := range pool {
		b, ts, noise := batch(rng, m, n, size, size)
		pool[i] = item{b, ts, noise}
	}
	var losses []float64
	start := time.Now()
	deadline := start.Add(time.Duration(secs) * time.Second)
	var t0 time.Time
	for s := 0; s < steps && time.Now().Before(deadline); s++ {
		if s == 1 {
			must(d.Sync())
			t0 = time.Now() // step 0 includes the allocations
		}
		it := pool[s%len(pool)]
		loss, err := tr.DiffusionLoss(it.b, it.ts, it.noise)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.AdamStep(2e-4); err != nil {
			t.Fatal(err)
		}
		losses = append(losses, float64(loss))
		if (s+1)%10 == 0 {
			fmt.Printf("train: step %d loss %.4f (mean of last 10) %.3f s/step\n", s+1, mean(losses[len(losses)-10:]),
				time.Since(t0).Seconds()/float64(s))
		}
	}
	must(d.Sync())
	k := len(losses)
	if k < 21 {
		t.Fatalf("only %d steps in %d s", k, secs)
	}
	per := time.Since(t0).Seconds() / float64(k-1)
	free, total, _ := d.MemInfo()
	first, last := mean(losses[:10]), mean(losses[k-10:])
	fmt.Printf("train: %s tf32=%v batch %d %dx%d: %d steps, loss %.4f -> %.4f (means of 10), %.4f s/step, %.1f samples/s, allocator %.2f GiB, device used %.2f of %.2f GiB\n",
		d.Name, tf32, n, size, size, k, first, last, per, float64(n)/per, float64(d.HeldBytes())/(1<<30),
		float64(total-free)/(1<<30), float64(total)/(1<<30))
	if !(last < first) {
		t.Errorf("loss did not fall: %.4f -> %.4f", first, last)
	}
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// TestRRDBStep checks the device RRDB pretraining step (features with dense
// tensors kept, x4 head, L1, backward) against model.SRDiff.RRDBLoss (loss and
// every gradient, rel 1e-3), then an Adam step against model.Adam.
func TestRRDBStep(t *testing.T) {
	d := device(t)
	cfg := tinyConfig()
	cfg.Model.RRDB.NB = 3 // RRDB_trunk blocks 0..2: one selected map plus the trunk path
	m, err := model.New(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(d, cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(8, 8))
	opt := model.NewAdam()
	for step := 0; step < 2; step++ {
		b, _, _ := batch(rng, m, 2, 16, 16)
		want, err := m.RRDBLoss(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tr.RRDBLoss(b)
		if err != nil {
			t.Fatal(err)
		}
		kerneltest.Close(t, fmt.Sprintf("step %d rrdb loss", step), []float32{got}, []float32{want}, 1e-4)
		g := make([]float32, len(m.RRDBGrads()))
		if err := tr.RRDBGrads(g); err != nil {
			t.Fatal(err)
		}
		off := 0
		for _, p := range m.RRDBParams() {
			kerneltest.Close(t, fmt.Sprintf("step %d grad %s", step, p.Name), g[off:off+len(p.Data)], p.Grad, 1e-3)
			off += len(p.Data)
		}
		if err := opt.Step(m.RRDBParams(), 1e-3); err != nil {
			t.Fatal(err)
		}
		if err := tr.RRDBAdamStep(1e-3); err != nil {
			t.Fatal(err)
		}
		v := make([]float32, len(m.RRDBValues()))
		if err := tr.RRDBValues(v); err != nil {
			t.Fatal(err)
		}
		kerneltest.Close(t, fmt.Sprintf("step %d rrdb values", step), v, m.RRDBValues(), 1e-4)
	}
}
