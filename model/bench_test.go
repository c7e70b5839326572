package model

import (
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// cpuSeconds is the user+system CPU time of the process so far. On a machine shared
// with other jobs, FLOPs per CPU-second is a steadier figure than FLOPs per
// wall-clock second (it misses idle time in serial sections, so it flatters).
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// sgemmRate measures sgemm GFLOP/s for C(m×n) = A(m×k)·B(k×n) through the backend,
// per wall-clock second and per CPU-second.
func sgemmRate(be Backend, m, n, k, reps int) (wall, cpu float64) {
	rng := rand.New(rand.NewPCG(1, 1))
	a, bb, c := randSlice(rng, m*k, 1), randSlice(rng, k*n, 1), make([]float32, m*n)
	be.Gemm(false, false, m, n, k, 1, a, k, bb, n, 0, c, n)
	start, c0 := time.Now(), cpuSeconds()
	for i := 0; i < reps; i++ {
		be.Gemm(false, false, m, n, k, 1, a, k, bb, n, 0, c, n)
	}
	fl := float64(2 * m * n * k * reps)
	return fl / time.Since(start).Seconds() / 1e9, fl / (cpuSeconds() - c0) / 1e9
}

// BenchmarkSgemm1024 is the BLAS ceiling: sgemm 1024³.
func BenchmarkSgemm1024(b *testing.B) {
	be := NewCPU()
	b.Logf("BLAS: %s", BLASName())
	rng := rand.New(rand.NewPCG(1, 1))
	const n = 1024
	a, bb, c := randSlice(rng, n*n, 1), randSlice(rng, n*n, 1), make([]float32, n*n)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		be.Gemm(false, false, n, n, n, 1, a, n, bb, n, 0, c, n)
	}
	b.ReportMetric(float64(2*n*n*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func benchBatch() int {
	if v, err := strconv.Atoi(os.Getenv("MODEL_BENCH_BATCH")); err == nil && v > 0 {
		return v
	}
	return 1
}

// BenchmarkUNetTrainStep160 is one U-Net forward+backward at the paper's width
// (dim 64, mults 1,2,3,4, cond from a 384-channel 40x40 feature map) on a batch of
// 160x160 patches (MODEL_BENCH_BATCH, default 1). It reports the convolution
// GFLOP/s beside sgemm 1024³ and conv-shaped sgemm measured in the same run, and
// the Go heap in use after a step per sample.
func BenchmarkUNetTrainStep160(b *testing.B) {
	cfg := loadConfig(b, "sam_diffsr_x4.yaml")
	m, err := New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	n, h, w := benchBatch(), 160, 160
	rng := rand.New(rand.NewPCG(2, 2))
	xt := newAct(randSlice(rng, n*3*h*w, 1), n, 3, h, w)
	cc := m.rrdb.condChannels()
	cond := newAct(randSlice(rng, n*cc*(h/4)*(w/4), 0.1), n, cc, h/4, w/4)
	ts := make([]int, n)
	for i := range ts {
		ts[i] = rng.IntN(100)
	}
	dy := newAct(randSlice(rng, n*3*h*w, 1e-3), n, 3, h, w)
	step := func() {
		zeroGrads(m.unet.params)
		m.unet.forward(xt, ts, cond, false)
		m.unet.backward(dy)
	}
	// sgemm 1024³ before and after the steps; the better of the two is the reference
	// (the conservative choice on a shared machine).
	gemm1, gemmCPU1 := sgemmRate(m.be, 1024, 1024, 1024, 20)
	convGemm, _ := sgemmRate(m.be, 64, 160*160, 576, 10)
	step() // allocate buffers
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	f0 := m.ConvFLOPs()
	c0 := cpuSeconds()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step()
	}
	b.StopTimer()
	cpuUsed := cpuSeconds() - c0
	flops := float64(m.ConvFLOPs() - f0)
	var ms2 runtime.MemStats
	runtime.ReadMemStats(&ms2)
	gemm2, gemmCPU2 := sgemmRate(m.be, 1024, 1024, 1024, 20)
	gemm, gemmCPU := max(gemm1, gemm2), max(gemmCPU1, gemmCPU2)
	rate := flops / b.Elapsed().Seconds() / 1e9
	rateCPU := flops / cpuUsed / 1e9
	b.ReportMetric(rate, "conv-GFLOP/s")
	b.ReportMetric(gemm, "sgemm1024-GFLOP/s")
	b.ReportMetric(convGemm, "sgemm64x25600x576-GFLOP/s")
	b.ReportMetric(100*rate/gemm, "%-of-sgemm")
	b.ReportMetric(100*rateCPU/gemmCPU, "%-of-sgemm-per-CPU-s")
	b.ReportMetric(float64(ms.HeapInuse)/float64(n)/(1<<20), "heap-MiB/sample")
	b.ReportMetric(flops/float64(b.N)/1e9, "GFLOP/step")
	b.ReportMetric(float64(ms2.TotalAlloc-ms.TotalAlloc)/float64(b.N)/(1<<20), "alloc-MiB/step")
}

// BenchmarkRRDBForward40 is the paper RRDB's feature pass (what sampling and the
// diffusion loss run once per image) plus its SR head, on one 40x40 LR patch.
func BenchmarkRRDBForward40(b *testing.B) {
	cfg := loadConfig(b, "sam_diffsr_x4.yaml")
	m, err := New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	lr := randSlice(rng, 3*40*40, 0.5)
	if _, err := m.RRDBForward(lr, 1, 40, 40); err != nil {
		b.Fatal(err)
	}
	f0 := m.ConvFLOPs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.RRDBForward(lr, 1, 40, 40); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(m.ConvFLOPs()-f0)/b.Elapsed().Seconds()/1e9, "conv-GFLOP/s")
}

// BenchmarkConvGemmShapes times the three sgemm shapes of a 64→64 3x3 convolution
// on a 160x160 image: forward, weight gradient and column gradient.
func BenchmarkConvGemmShapes(b *testing.B) {
	be := NewCPU()
	rng := rand.New(rand.NewPCG(1, 1))
	const co, kk, hw = 64, 576, 160 * 160
	w, col, y := randSlice(rng, co*kk, 1), randSlice(rng, kk*hw, 1), randSlice(rng, co*hw, 1)
	dw := make([]float32, co*kk)
	for _, s := range []struct {
		name string
		f    func()
	}{
		{"forward", func() { be.Gemm(false, false, co, hw, kk, 1, w, kk, col, hw, 0, y, hw) }},
		{"dW", func() { be.Gemm(false, true, co, kk, hw, 1, y, hw, col, hw, 1, dw, kk) }},
		{"dcol", func() { be.Gemm(true, false, kk, hw, co, 1, w, kk, y, hw, 0, col, hw) }},
	} {
		b.Run(s.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s.f()
			}
			b.ReportMetric(float64(2*co*kk*hw)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkSampleStep160 is one sampler step (U-Net forward, cond_proj reused) at the
// paper's width on one 160x160 image; Sample runs 100 of them after one RRDB pass.
func BenchmarkSampleStep160(b *testing.B) {
	cfg := loadConfig(b, "sam_diffsr_x4.yaml")
	m, err := New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(2, 2))
	n, h, w := 1, 160, 160
	x := randSlice(rng, n*3*h*w, 1)
	cc := m.rrdb.condChannels()
	cond := newAct(randSlice(rng, n*cc*(h/4)*(w/4), 0.1), n, cc, h/4, w/4)
	m.unet.forward(newAct(x, n, 3, h, w), []int{99}, cond, false)
	f0 := m.ConvFLOPs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pred := m.unet.forward(newAct(x, n, 3, h, w), []int{50}, cond, true)
		m.sched.PStep(50, x, pred.data, x)
	}
	b.ReportMetric(float64(m.ConvFLOPs()-f0)/b.Elapsed().Seconds()/1e9, "conv-GFLOP/s")
}
