//go:build cuda

package cuda

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/model"
	"github.com/samdiffsr/samdiffsr/model/cuda/kerneltest"
)

var (
	devOnce sync.Once
	dev     *Device
	devErr  error
)

// device opens GPU 0 once for all tests. Without a GPU (or its libraries) the
// tests skip, unless SAMDIFFSR_CUDA_REQUIRED=1 (scripts/gpu-check.sh) makes that a failure.
func device(t testing.TB) *Device {
	t.Helper()
	devOnce.Do(func() {
		dev, devErr = Open(0)
		if devErr == nil {
			free, total, _ := dev.MemInfo()
			fmt.Printf("cuda: device %q, %.1f of %.1f GiB free\n", dev.Name, float64(free)/(1<<30), float64(total)/(1<<30))
		}
	})
	if devErr != nil {
		if os.Getenv("SAMDIFFSR_CUDA_REQUIRED") == "1" {
			t.Fatalf("no GPU: %v", devErr)
		}
		t.Skipf("no GPU: %v", devErr)
	}
	return dev
}

// envInt returns the positive integer in environment variable k, or def.
func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}

func (d *Device) upload(t testing.TB, host []float32) Buf {
	t.Helper()
	b, err := d.Alloc(len(host))
	if err == nil {
		err = d.Upload(b, host)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (d *Device) download(t testing.TB, b Buf, n int) []float32 {
	t.Helper()
	h := make([]float32, n)
	if err := d.Download(h, b); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestKernelsDevice runs every kernel on the GPU against model.CPU (rel 1e-4).
func TestKernelsDevice(t *testing.T) {
	kerneltest.Run(t, DeviceKernels{D: device(t)}, 1e-4)
}

// TestGemm checks cuBLAS SGEMM (row-major through the operand swap, every
// transposition, padded leading dimensions, strided batches) against model.CPU.
func TestGemm(t *testing.T) {
	d := device(t)
	cpu := model.NewCPU()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tf32 := range []bool{false, true} {
		if err := d.SetTF32(tf32); err != nil {
			t.Fatal(err)
		}
		rtol := 1e-4
		if tf32 {
			rtol = 2e-2
		}
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				const m, n, k, batch = 37, 53, 129, 3
				lda, ldb, ldc := k+3, n+1, n+2
				ar, br := m, k
				if ta {
					lda, ar = m+3, k
				}
				if tb {
					ldb, br = k+1, n
				}
				sa, sb, sc := ar*lda, br*ldb, m*ldc
				a, b, c := randSlice(rng, batch*sa), randSlice(rng, batch*sb), randSlice(rng, batch*sc)
				want := append([]float32(nil), c...)
				for i := 0; i < batch; i++ {
					cpu.Gemm(ta, tb, m, n, k, 0.7, a[i*sa:], lda, b[i*sb:], ldb, 0.3, want[i*sc:], ldc)
				}
				da, db, dc := d.upload(t, a), d.upload(t, b), d.upload(t, c)
				if err := d.Gemm(ta, tb, m, n, k, 0.7, da, lda, db, ldb, 0.3, dc, ldc, batch, sa, sb, sc); err != nil {
					t.Fatal(err)
				}
				got := d.download(t, dc, len(c))
				kerneltest.Close(t, fmt.Sprintf("gemm tf32=%v ta=%v tb=%v", tf32, ta, tb), got, want, rtol)
				d.Free(da)
				d.Free(db)
				d.Free(dc)
			}
		}
	}
	if err := d.SetTF32(false); err != nil {
		t.Fatal(err)
	}
}

// convDevice runs a batched convolution forward (im2col of all images, one
// strided-batched gemm with the weights shared, bias filled first as the CPU
// layer does) and the input gradient (gemm with Wᵀ, col2im).
func convDevice(t testing.TB, d *Device, g model.ConvGeom, n, outC int, x, w, bias, dy []float32) (y, dx []float32) {
	rows, cols := g.ColRows(), g.ColCols()
	img := g.C * g.H * g.W
	dX, dW, dB, dDy := d.upload(t, x), d.upload(t, w), d.upload(t, bias), d.upload(t, dy)
	col, err := d.Alloc(n * rows * cols)
	if err != nil {
		t.Fatal(err)
	}
	dY, _ := d.Alloc(n * outC * cols)
	dDx, _ := d.Alloc(n * img)
	must(d.Im2col(g, n, dX, img, col, rows*cols))
	must(d.FillPlanes(dY, dB, n*outC, cols, outC))
	must(d.Gemm(false, false, outC, cols, rows, 1, dW, rows, col, cols, 1, dY, cols, n, 0, rows*cols, outC*cols))
	y = d.download(t, dY, n*outC*cols)
	must(d.Zero(dDx))
	must(d.Gemm(true, false, rows, cols, outC, 1, dW, rows, dDy, cols, 0, col, cols, n, 0, outC*cols, rows*cols))
	must(d.Col2im(g, n, col, rows*cols, dDx, img))
	dx = d.download(t, dDx, n*img)
	for _, b := range []Buf{dX, dW, dB, dDy, col, dY, dDx} {
		d.Free(b)
	}
	return y, dx
}

// TestConvPath checks a batched reflect 3x3 convolution forward and input
// gradient on the GPU against the CPU layer's route (per image im2col + gemm).
func TestConvPath(t *testing.T) {
	d := device(t)
	cpu := model.NewCPU()
	rng := rand.New(rand.NewPCG(3, 4))
	for _, g := range kerneltest.Geoms() {
		const n, outC = 2, 6
		rows, cols := g.ColRows(), g.ColCols()
		img := g.C * g.H * g.W
		x, w, bias := randSlice(rng, n*img), randSlice(rng, outC*rows), randSlice(rng, outC)
		dy := randSlice(rng, n*outC*cols)
		y, dx := convDevice(t, d, g, n, outC, x, w, bias, dy)
		wy, wdx := make([]float32, n*outC*cols), make([]float32, n*img)
		col := make([]float32, rows*cols)
		for i := 0; i < n; i++ {
			cpu.Im2col(g, x[i*img:(i+1)*img], col)
			cpu.FillPlanes(wy[i*outC*cols:], bias, outC, cols)
			cpu.Gemm(false, false, outC, cols, rows, 1, w, rows, col, cols, 1, wy[i*outC*cols:], cols)
			cpu.Gemm(true, false, rows, cols, outC, 1, w, rows, dy[i*outC*cols:], cols, 0, col, cols)
			cpu.Col2im(g, col, wdx[i*img:(i+1)*img])
		}
		name := fmt.Sprintf("C%dH%dW%dK%dS%d", g.C, g.H, g.W, g.K, g.Stride)
		kerneltest.Close(t, name+" y", y, wy, 1e-4)
		kerneltest.Close(t, name+" dx", dx, wdx, 1e-4)
	}
}

// TestAllocatorReuse checks that freed blocks are reused (no driver allocation in
// a steady loop).
func TestAllocatorReuse(t *testing.T) {
	d := device(t)
	a, err := d.Alloc(1000)
	if err != nil {
		t.Fatal(err)
	}
	held := d.HeldBytes()
	d.Free(a)
	b, err := d.Alloc(900)
	if err != nil {
		t.Fatal(err)
	}
	if b.Ptr != a.Ptr || d.HeldBytes() != held {
		t.Errorf("allocation of the same size class was not reused")
	}
	d.Free(b)
}

// BenchmarkConv3x3 times the paper-size 3x3 reflect convolution (64→64 channels,
// batch SAMDIFFSR_BENCH_BATCH (16) at SAMDIFFSR_BENCH_SIZE² (160), as
// BenchmarkTrainStep) forward and backward (input and weight gradients) on the
// GPU, fp32 and TF32. Reports ms per forward+backward.
func BenchmarkConv3x3(b *testing.B) {
	d := device(b)
	const c = 64
	n, h := envInt("SAMDIFFSR_BENCH_BATCH", 16), envInt("SAMDIFFSR_BENCH_SIZE", 160)
	w := h
	g := model.ConvGeom{C: c, H: h, W: w, K: 3, Stride: 1, Pad: 1, Reflect: true, OH: h, OW: w}
	rows, cols := g.ColRows(), g.ColCols()
	img := c * h * w
	bufs := make([]Buf, 0, 8)
	alloc := func(k int) Buf {
		x, err := d.Alloc(k)
		if err != nil {
			b.Fatal(err)
		}
		must(d.Zero(x))
		bufs = append(bufs, x)
		return x
	}
	x, wt, wg, bias, bg := alloc(n*img), alloc(c*rows), alloc(c*rows), alloc(c), alloc(c)
	col, y, dx, part := alloc(n*rows*cols), alloc(n*c*cols), alloc(n*img), alloc(2*n*c*NP)
	wpart := alloc(n * c * rows)
	for _, tf32 := range []bool{false, true} {
		b.Run(fmt.Sprintf("tf32=%v", tf32), func(b *testing.B) {
			must(d.SetTF32(tf32))
			step := func() {
				must(d.Im2col(g, n, x, img, col, rows*cols))
				must(d.FillPlanes(y, bias, n*c, cols, c))
				must(d.Gemm(false, false, c, cols, rows, 1, wt, rows, col, cols, 1, y, cols, n, 0, rows*cols, c*cols))
				// weight grad: per-image dy·colᵀ (k = cols) in one batched GEMM, summed; then bias grad
				must(d.Gemm(false, true, c, rows, cols, 1, y, cols, col, cols, 0, wpart, rows, n, c*cols, rows*cols, c*rows))
				must(d.SumBatches(wpart, wg, n, c*rows))
				must(d.PlaneSums(y, n, c, cols, bg, part))
				must(d.Gemm(true, false, rows, cols, c, 1, wt, rows, y, cols, 0, col, cols, n, 0, c*cols, rows*cols))
				must(d.Col2im(g, n, col, rows*cols, dx, img))
			}
			step()
			must(d.Sync())
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				step()
			}
			must(d.Sync())
			el := time.Since(start)
			b.ReportMetric(float64(el.Milliseconds())/float64(b.N), "ms/fwd+bwd")
			flops := 3 * 2 * float64(n) * float64(c) * float64(rows) * float64(cols)
			b.ReportMetric(flops*float64(b.N)/el.Seconds()/1e12, "TFLOP/s")
		})
	}
	must(d.SetTF32(false))
	for _, x := range bufs {
		d.Free(x)
	}
}
