package model

import (
	"math"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// BLASName says which sgemm implementation the CPU backend uses: OpenBLAS when the
// binary was built with the openblas tag (cgo, -lopenblas), gonum's pure-Go BLAS
// otherwise. The choice is made once at package init; log it at start-up.
func BLASName() string { return blasName }

// BLASAdvice is a one-line hint when the BLAS runs far below what the CPU allows
// (OpenBLAS picking generic kernels for a CPU model it does not recognise), and
// empty otherwise. Log it as a warning at start-up.
func BLASAdvice() string { return blasAdvice }

// ConvGeom is the geometry of one image of a 2-D convolution as im2col sees it:
// an input plane stack of C×H×W, a square K×K kernel applied with Stride and Pad
// (zeros, or reflection when Reflect), giving OH×OW outputs. The column matrix has
// C·K·K rows and OH·OW columns, row (c·K+kh)·K+kw.
type ConvGeom struct {
	C, H, W     int
	K           int
	Stride, Pad int
	Reflect     bool
	OH, OW      int
}

// ColRows is C·K·K, the number of rows of the column matrix.
func (g ConvGeom) ColRows() int { return g.C * g.K * g.K }

// ColCols is OH·OW, the number of columns of the column matrix.
func (g ConvGeom) ColCols() int { return g.OH * g.OW }

// Backend is where the arithmetic of the layers runs: the seam a CUDA backend will
// implement (cuBLAS gemm plus small kernels). All slices are flat float32 in
// row-major / NCHW order. Implementations must be deterministic: the same inputs
// give bit-identical outputs (reductions in a fixed order, never split by timing).
type Backend interface {
	// Name describes the backend and its BLAS.
	Name() string
	// Gemm computes C = alpha·op(A)·op(B) + beta·C for row-major matrices, op(A)
	// being m×k and op(B) k×n.
	Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
	// Im2col writes the column matrix of one image x (C×H×W) into col.
	Im2col(g ConvGeom, x, col []float32)
	// Col2im adds the column matrix col back onto the image x (the adjoint of Im2col).
	Col2im(g ConvGeom, col, x []float32)
	// Mish sets y = z·tanh(softplus(z)) and d = dy/dz; y may alias z.
	Mish(z, y, d []float32)
	// LeakyReLU applies max(x, slope·x) in place.
	LeakyReLU(x []float32, slope float32)
	// LeakyReLUGrad scales dy in place by the derivative, read from the output y.
	LeakyReLUGrad(y, dy []float32, slope float32)
	// Mul sets dst = a·b elementwise; dst may alias a or b.
	Mul(dst, a, b []float32)
	// Axpy sets y += alpha·x.
	Axpy(alpha float32, x, y []float32)
	// FillPlanes sets every element of plane p of x to v[p] (planes of hw elements).
	FillPlanes(x, v []float32, planes, hw int)
	// AddPlaneBias adds bias[p] to every element of plane p of x (planes of hw elements).
	AddPlaneBias(x, bias []float32, planes, hw int)
	// PlaneSums adds the sum of each plane of x to out[p].
	PlaneSums(x []float32, planes, hw int, out []float32)
	// Upsample2x writes the nearest-neighbour x2 upsampling of planes h×w of x into y.
	Upsample2x(x, y []float32, planes, h, w int)
	// Upsample2xGrad adds the 2x2 block sums of dy (planes 2h×2w) to dx (planes h×w).
	Upsample2xGrad(dy, dx []float32, planes, h, w int)
}

// CPU is the CPU backend: gemm through gonum's blas32 (OpenBLAS when linked), and
// im2col/col2im/elementwise kernels split over GOMAXPROCS goroutines. Work is split
// by output element or by whole planes, so results do not depend on the split.
type CPU struct {
	workers int
}

// NewCPU returns the CPU backend using all GOMAXPROCS cores.
func NewCPU() *CPU { return &CPU{workers: runtime.GOMAXPROCS(0)} }

// Name implements Backend.
func (c *CPU) Name() string { return "cpu/" + blasName }

// par runs fn over [0,n) in up to c.workers contiguous chunks of at least grain items.
func (c *CPU) par(n, grain int, fn func(lo, hi int)) {
	chunks := c.workers
	if grain < 1 {
		grain = 1
	}
	if m := n / grain; m < chunks {
		chunks = m
	}
	if chunks <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for i := 1; i < chunks; i++ {
		lo, hi := i*n/chunks, (i+1)*n/chunks
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	fn(0, n/chunks)
	wg.Wait()
}

// Gemm implements Backend.
func (c *CPU) Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cc []float32, ldc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	if transA {
		ta = blas.Trans
	}
	if transB {
		tb = blas.Trans
	}
	impl := blas32.Implementation()
	if !blasSplit || c.workers < 2 || m*n*k < 1<<21 {
		impl.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc)
		return
	}
	// Split the columns of C (or else its rows) into one block per worker; every
	// element is still computed by one call with the whole k loop, so the result
	// does not depend on the split.
	const minBlock = 32
	if chunks := min(c.workers, n/minBlock); chunks >= 2 {
		var wg sync.WaitGroup
		for i := 0; i < chunks; i++ {
			lo, hi := i*n/chunks, (i+1)*n/chunks
			bb := b[lo:]
			if transB {
				bb = b[lo*ldb:]
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				impl.Sgemm(ta, tb, m, hi-lo, k, alpha, a, lda, bb, ldb, beta, cc[lo:], ldc)
			}()
		}
		wg.Wait()
		return
	}
	if chunks := min(c.workers, m/minBlock); chunks >= 2 {
		var wg sync.WaitGroup
		for i := 0; i < chunks; i++ {
			lo, hi := i*m/chunks, (i+1)*m/chunks
			aa := a[lo*lda:]
			if transA {
				aa = a[lo:]
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				impl.Sgemm(ta, tb, hi-lo, n, k, alpha, aa, lda, b, ldb, beta, cc[lo*ldc:], ldc)
			}()
		}
		wg.Wait()
		return
	}
	impl.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc)
}

// elemGrain is the smallest chunk of elementwise work worth a goroutine.
const elemGrain = 16384

func reflectIndex(i, n int) int {
	if i < 0 {
		return -i
	}
	if i >= n {
		return 2*n - 2 - i
	}
	return i
}

// Im2col implements Backend.
func (c *CPU) Im2col(g ConvGeom, x, col []float32) {
	kk := g.K * g.K
	ohw := g.OH * g.OW
	grain := 1 + elemGrain/(kk*ohw+1)
	c.par(g.C, grain, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			im2colPlane(g, x[ch*g.H*g.W:(ch+1)*g.H*g.W], col[ch*kk*ohw:(ch+1)*kk*ohw])
		}
	})
}

// inside returns the output columns [lo, hi) whose input column iw = ow·S - P + kw
// falls inside [0, W) for kernel column kw.
func (g ConvGeom) inside(kw int) (lo, hi int) {
	lo = max(ceilDiv(g.Pad-kw, g.Stride), 0)
	hi = min(ceilDiv(g.W+g.Pad-kw, g.Stride), g.OW)
	return lo, max(hi, lo)
}

func im2colPlane(g ConvGeom, x, col []float32) {
	ohw := g.OH * g.OW
	for kh := 0; kh < g.K; kh++ {
		for kw := 0; kw < g.K; kw++ {
			row := col[(kh*g.K+kw)*ohw : (kh*g.K+kw+1)*ohw]
			lo, hi := g.inside(kw)
			for oh := 0; oh < g.OH; oh++ {
				dst := row[oh*g.OW : (oh+1)*g.OW]
				ih := oh*g.Stride - g.Pad + kh
				if ih < 0 || ih >= g.H {
					if !g.Reflect {
						clear(dst)
						continue
					}
					ih = reflectIndex(ih, g.H)
				}
				src := x[ih*g.W : (ih+1)*g.W]
				for ow := 0; ow < lo; ow++ {
					if g.Reflect {
						dst[ow] = src[reflectIndex(ow*g.Stride-g.Pad+kw, g.W)]
					} else {
						dst[ow] = 0
					}
				}
				if g.Stride == 1 {
					copy(dst[lo:hi], src[lo-g.Pad+kw:hi-g.Pad+kw])
				} else {
					iw := lo*g.Stride - g.Pad + kw
					for ow := lo; ow < hi; ow++ {
						dst[ow] = src[iw]
						iw += g.Stride
					}
				}
				for ow := hi; ow < g.OW; ow++ {
					if g.Reflect {
						dst[ow] = src[reflectIndex(ow*g.Stride-g.Pad+kw, g.W)]
					} else {
						dst[ow] = 0
					}
				}
			}
		}
	}
}

// Col2im implements Backend.
func (c *CPU) Col2im(g ConvGeom, col, x []float32) {
	kk := g.K * g.K
	ohw := g.OH * g.OW
	grain := 1 + elemGrain/(kk*ohw+1)
	c.par(g.C, grain, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			col2imPlane(g, col[ch*kk*ohw:(ch+1)*kk*ohw], x[ch*g.H*g.W:(ch+1)*g.H*g.W])
		}
	})
}

func col2imPlane(g ConvGeom, col, x []float32) {
	ohw := g.OH * g.OW
	for kh := 0; kh < g.K; kh++ {
		for kw := 0; kw < g.K; kw++ {
			row := col[(kh*g.K+kw)*ohw : (kh*g.K+kw+1)*ohw]
			lo, hi := g.inside(kw)
			for oh := 0; oh < g.OH; oh++ {
				src := row[oh*g.OW : (oh+1)*g.OW]
				ih := oh*g.Stride - g.Pad + kh
				if ih < 0 || ih >= g.H {
					if !g.Reflect {
						continue
					}
					ih = reflectIndex(ih, g.H)
				}
				dst := x[ih*g.W : (ih+1)*g.W]
				if g.Reflect {
					for ow := 0; ow < lo; ow++ {
						dst[reflectIndex(ow*g.Stride-g.Pad+kw, g.W)] += src[ow]
					}
					for ow := hi; ow < g.OW; ow++ {
						dst[reflectIndex(ow*g.Stride-g.Pad+kw, g.W)] += src[ow]
					}
				}
				if g.Stride == 1 {
					addTo(dst[lo-g.Pad+kw:hi-g.Pad+kw], src[lo:hi])
				} else {
					iw := lo*g.Stride - g.Pad + kw
					for ow := lo; ow < hi; ow++ {
						dst[iw] += src[ow]
						iw += g.Stride
					}
				}
			}
		}
	}
}

// addTo sets d[i] += s[i] for i < len(d) (len(s) ≥ len(d)), unrolled by 8.
func addTo(d, s []float32) {
	s = s[:len(d)]
	i := 0
	for ; i+8 <= len(d); i += 8 {
		dd := d[i : i+8 : i+8]
		ss := s[i : i+8 : i+8]
		dd[0] += ss[0]
		dd[1] += ss[1]
		dd[2] += ss[2]
		dd[3] += ss[3]
		dd[4] += ss[4]
		dd[5] += ss[5]
		dd[6] += ss[6]
		dd[7] += ss[7]
	}
	for ; i < len(d); i++ {
		d[i] += s[i]
	}
}

func ceilDiv(a, b int) int {
	if a <= 0 {
		return -((-a) / b)
	}
	return (a + b - 1) / b
}

// Mish implements Backend. With e = exp(z) and n = e²+2e, tanh(softplus(z)) = n/(n+2),
// so one exponential and one division give both the value z·g and the derivative
// g + z·4e(e+1)/(n+2)². For z > 20, Mish(z) = z in float32 (PyTorch's softplus
// threshold).
func (c *CPU) Mish(z, y, d []float32) {
	c.par(len(z), elemGrain, func(lo, hi int) {
		zs, ys, ds := z[lo:hi], y[lo:hi], d[lo:hi]
		for i, zz := range zs {
			if zz > 20 {
				ys[i] = zz
				ds[i] = 1
				continue
			}
			e := expf(zz)
			n := e*e + 2*e
			inv := 1 / (n + 2)
			g := n * inv
			ys[i] = zz * g
			ds[i] = g + zz*4*e*(e+1)*inv*inv
		}
	})
}

// expf is a float32 exponential (Cephes expf: range reduction by ln 2 and a
// degree-6 polynomial, relative error about 1e-7), for x ≤ 88; it returns 0 below -87.
func expf(x float32) float32 {
	if x < -87 {
		return 0
	}
	k := float32(math.Floor(float64(x*1.44269504088896341 + 0.5)))
	r := x - k*0.693359375 - k*-2.12194440e-4
	p := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
	p = p*r*r + r + 1
	return p * math.Float32frombits(uint32(int32(k)+127)<<23)
}

// LeakyReLU implements Backend.
func (c *CPU) LeakyReLU(x []float32, slope float32) {
	c.par(len(x), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if x[i] < 0 {
				x[i] *= slope
			}
		}
	})
}

// LeakyReLUGrad implements Backend.
func (c *CPU) LeakyReLUGrad(y, dy []float32, slope float32) {
	c.par(len(y), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if y[i] <= 0 {
				dy[i] *= slope
			}
		}
	})
}

// Mul implements Backend.
func (c *CPU) Mul(dst, a, b []float32) {
	c.par(len(dst), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dst[i] = a[i] * b[i]
		}
	})
}

// Axpy implements Backend.
func (c *CPU) Axpy(alpha float32, x, y []float32) {
	c.par(len(y), elemGrain, func(lo, hi int) {
		yy := y[lo:hi]
		xx := x[lo:hi]
		if alpha == 1 {
			addTo(yy, xx)
			return
		}
		for i := range yy {
			yy[i] += alpha * xx[i]
		}
	})
}

// FillPlanes implements Backend.
func (c *CPU) FillPlanes(x, v []float32, planes, hw int) {
	c.par(planes, 1+elemGrain/(hw+1), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			row := x[p*hw : (p+1)*hw]
			val := v[p]
			for i := range row {
				row[i] = val
			}
		}
	})
}

// AddPlaneBias implements Backend.
func (c *CPU) AddPlaneBias(x, bias []float32, planes, hw int) {
	c.par(planes, 1+elemGrain/(hw+1), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			b := bias[p]
			row := x[p*hw : (p+1)*hw]
			for i := range row {
				row[i] += b
			}
		}
	})
}

// PlaneSums implements Backend. Each plane is summed sequentially in float64.
func (c *CPU) PlaneSums(x []float32, planes, hw int, out []float32) {
	c.par(planes, 1+elemGrain/(hw+1), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			var s float64
			for _, v := range x[p*hw : (p+1)*hw] {
				s += float64(v)
			}
			out[p] += float32(s)
		}
	})
}

// Upsample2x implements Backend.
func (c *CPU) Upsample2x(x, y []float32, planes, h, w int) {
	w2 := 2 * w
	c.par(planes, 1+elemGrain/(4*h*w+1), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			src := x[p*h*w : (p+1)*h*w]
			dst := y[p*4*h*w : (p+1)*4*h*w]
			for i := 0; i < h; i++ {
				r0 := dst[(2*i)*w2 : (2*i+1)*w2]
				for j := 0; j < w; j++ {
					v := src[i*w+j]
					r0[2*j] = v
					r0[2*j+1] = v
				}
				copy(dst[(2*i+1)*w2:(2*i+2)*w2], r0)
			}
		}
	})
}

// Upsample2xGrad implements Backend.
func (c *CPU) Upsample2xGrad(dy, dx []float32, planes, h, w int) {
	w2 := 2 * w
	c.par(planes, 1+elemGrain/(4*h*w+1), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			dst := dx[p*h*w : (p+1)*h*w]
			src := dy[p*4*h*w : (p+1)*4*h*w]
			for i := 0; i < h; i++ {
				r0 := src[(2*i)*w2 : (2*i+1)*w2]
				r1 := src[(2*i+1)*w2 : (2*i+2)*w2]
				for j := 0; j < w; j++ {
					dst[i*w+j] += (r0[2*j] + r0[2*j+1]) + (r1[2*j] + r1[2*j+1])
				}
			}
		}
	})
}
