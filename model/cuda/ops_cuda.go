//go:build cuda

package cuda

import (
	"fmt"
	"math"

	"github.com/samdiffsr/samdiffsr/model"
)

// Typed launches of the kernels of kernels.cu on device buffers, queued on the
// device's stream. Argument types must match the kernel's parameters: int for
// int, I64 for i64 (long long), float32 for float, Buf for pointers.

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// NP is the number of partial sums per plane in the two-pass plane sums, LNP
// the number for the L1 loss (one thread each; the second pass is one thread).
const (
	NP  = 256
	LNP = 16384
)

// checkGeom rejects images whose column matrix has 2^31 or more elements (the
// kernels index within an image in 32 bits).
func checkGeom(g model.ConvGeom) error {
	if int64(g.ColRows())*int64(g.ColCols()) >= 1<<31 || int64(g.C)*int64(g.H)*int64(g.W) >= 1<<31 {
		return fmt.Errorf("cuda: convolution %+v too large for one image (2^31 column elements)", g)
	}
	return nil
}

// Im2col writes the column matrices of n images (image i at x.Off(i·xs), its
// columns at col.Off(i·cs)).
func (d *Device) Im2col(g model.ConvGeom, n int, x Buf, xs int, col Buf, cs int) error {
	if err := checkGeom(g); err != nil {
		return err
	}
	return d.Launch("im2col", int64(n)*int64(g.ColRows())*int64(g.ColCols()), x, col, n, g.C, g.H, g.W, g.K,
		g.Stride, g.Pad, b2i(g.Reflect), g.OH, g.OW, I64(xs), I64(cs))
}

// Col2im adds the column matrices of n images back onto the images.
func (d *Device) Col2im(g model.ConvGeom, n int, col Buf, cs int, x Buf, xs int) error {
	if err := checkGeom(g); err != nil {
		return err
	}
	return d.Launch("col2im", int64(n)*int64(g.C*g.H*g.W), col, x, n, g.C, g.H, g.W, g.K,
		g.Stride, g.Pad, b2i(g.Reflect), g.OH, g.OW, I64(xs), I64(cs))
}

// Mish sets y = Mish(z) and d = Mish'(z) for n elements; y may be z.
func (d *Device) Mish(z, y, dd Buf, n int) error {
	return d.Launch("mish", int64(n), z, y, dd, I64(n))
}

// LeakyReLU applies max(x, slope·x) in place.
func (d *Device) LeakyReLU(x Buf, n int, slope float32) error {
	return d.Launch("leaky_relu", int64(n), x, slope, I64(n))
}

// LeakyReLUGrad scales dy by the derivative read from the output y.
func (d *Device) LeakyReLUGrad(y, dy Buf, n int, slope float32) error {
	return d.Launch("leaky_relu_grad", int64(n), y, dy, slope, I64(n))
}

// Mul sets dst = a·b.
func (d *Device) Mul(dst, a, b Buf, n int) error { return d.Launch("mul", int64(n), dst, a, b, I64(n)) }

// Axpy sets y += alpha·x.
func (d *Device) Axpy(alpha float32, x, y Buf, n int) error {
	return d.Launch("axpy", int64(n), alpha, x, y, I64(n))
}

// FillPlanes sets plane p (hw elements) of x to v[p % nv].
func (d *Device) FillPlanes(x, v Buf, planes, hw, nv int) error {
	return d.Launch("fill_planes", int64(planes)*int64(hw), x, v, planes, I64(hw), nv)
}

// AddPlaneBias adds bias[p % nb] to plane p of x.
func (d *Device) AddPlaneBias(x, bias Buf, planes, hw, nb int) error {
	return d.Launch("add_plane_bias", int64(planes)*int64(hw), x, bias, planes, I64(hw), nb)
}

// PlaneSums adds to out[c] the sums of planes (i, c) of n images, image by image;
// part is scratch of n·c·NP float64 (2·n·c·NP float32).
func (d *Device) PlaneSums(x Buf, n, c, hw int, out, part Buf) error {
	if err := d.Launch("plane_partials", int64(n*c*NP), x, part, n*c, I64(hw), NP); err != nil {
		return err
	}
	return d.Launch("plane_sums_finish", int64(c), part, out, n, c, NP)
}

// ColSums adds the column sums of a rows×cols matrix to out.
func (d *Device) ColSums(x Buf, rows, cols int, out Buf) error {
	return d.Launch("col_sums", int64(cols), x, out, rows, cols)
}

// Upsample2x writes the nearest x2 upsampling of planes h×w of x into y.
func (d *Device) Upsample2x(x, y Buf, planes, h, w int) error {
	return d.Launch("upsample2x", int64(planes)*int64(4*h*w), x, y, planes, h, w)
}

// Upsample2xGrad adds the 2x2 block sums of dy to dx.
func (d *Device) Upsample2xGrad(dy, dx Buf, planes, h, w int) error {
	return d.Launch("upsample2x_grad", int64(planes)*int64(h*w), dy, dx, planes, h, w)
}

// Copy2D copies rows×cols elements between row pitches (concatenation along C).
func (d *Device) Copy2D(dst Buf, dld int, src Buf, sld, rows, cols int) error {
	return d.Launch("copy2d", int64(rows)*int64(cols), dst, I64(dld), src, I64(sld), rows, I64(cols))
}

// Add2D adds rows×cols elements between row pitches (split of a gradient).
func (d *Device) Add2D(dst Buf, dld int, src Buf, sld, rows, cols int) error {
	return d.Launch("add2d", int64(rows)*int64(cols), dst, I64(dld), src, I64(sld), rows, I64(cols))
}

// L1 writes the gradient of mean|p-q| into dd and the loss into loss[0]; part is
// scratch of LNP float64 (2·LNP float32).
func (d *Device) L1(p, q, dd Buf, n int, part, loss Buf) error {
	if err := d.Launch("l1_grad", LNP, p, q, dd, part, I64(n), LNP); err != nil {
		return err
	}
	return d.Launch("l1_finish", 1, part, loss, I64(n), LNP)
}

// Adam applies one torch.optim.Adam step (model.Adam's update) to n parameters
// at step k (1-based) with learning rate lr.
func (d *Device) Adam(p, g, m, v Buf, n int, lr, beta1, beta2, eps float64, k int64) error {
	kf := float64(k)
	step := float32(lr / (1 - math.Pow(beta1, kf)))
	bc2 := float32(math.Sqrt(1 - math.Pow(beta2, kf)))
	return d.Launch("adam", int64(n), p, g, m, v, I64(n), float32(beta1), float32(beta2), float32(eps), step, bc2)
}

// PStep runs one sampler step in place on x (model.Schedule.PStep at t of sc).
func (d *Device) PStep(sc *model.Schedule, t int, x, pred, noise Buf, n int) error {
	ac := sc.AlphasCumprod[t]
	sr, srm1 := float32(math.Sqrt(1/ac)), float32(math.Sqrt(1/ac-1))
	c1, c2 := float32(sc.Coef1[t]), float32(sc.Coef2[t])
	sd := float32(math.Exp(0.5 * sc.PosteriorLogVarClipped[t]))
	return d.Launch("p_step", int64(n), x, pred, noise, I64(n), sr, srm1, c1, c2, sd, b2i(t > 0))
}

// ClampOut sets out = clamp(z, 0, 1)·2 - 1.
func (d *Device) ClampOut(z, out Buf, n int) error {
	return d.Launch("clamp_out", int64(n), z, out, I64(n))
}

// ClampOutGrad sets dz = 2·dout where 0 ≤ z ≤ 1, else 0.
func (d *Device) ClampOutGrad(z, dout, dz Buf, n int) error {
	return d.Launch("clamp_out_grad", int64(n), z, dout, dz, I64(n))
}

// SumBatches adds Σ_b part[b·n:(b+1)·n] to out[:n], b ascending.
func (d *Device) SumBatches(part, out Buf, batch, n int) error {
	return d.Launch("sum_batches", int64(n), part, out, batch, I64(n))
}
