//go:build cuda

package cuda

import (
	"fmt"

	"github.com/samdiffsr/samdiffsr/model"
)

// DeviceKernels implements kerneltest.Kernels on the GPU: it uploads the inputs,
// launches the kernel and downloads the outputs, panicking on CUDA errors (it is
// a test harness).
type DeviceKernels struct{ D *Device }

func (k DeviceKernels) up(host []float32) Buf {
	b, err := k.D.Alloc(len(host))
	if err == nil {
		err = k.D.Upload(b, host)
	}
	if err != nil {
		panic(err)
	}
	return b
}

func (k DeviceKernels) down(host []float32, b Buf) {
	if err := k.D.Download(host, b); err != nil {
		panic(err)
	}
}

func (k DeviceKernels) scratch(n int) Buf {
	b, err := k.D.Alloc(n)
	if err != nil {
		panic(err)
	}
	return b
}

func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("%v", err))
	}
}

func (k DeviceKernels) free(bs ...Buf) {
	for _, b := range bs {
		k.D.Free(b)
	}
}

// Im2col implements kerneltest.Kernels.
func (k DeviceKernels) Im2col(g model.ConvGeom, n, xs, cs int, x, col []float32) {
	dx, dc := k.up(x), k.up(col)
	must(k.D.Im2col(g, n, dx, xs, dc, cs))
	k.down(col, dc)
	k.free(dx, dc)
}

// Col2im implements kerneltest.Kernels.
func (k DeviceKernels) Col2im(g model.ConvGeom, n, xs, cs int, col, x []float32) {
	dc, dx := k.up(col), k.up(x)
	must(k.D.Col2im(g, n, dc, cs, dx, xs))
	k.down(x, dx)
	k.free(dx, dc)
}

// Mish implements kerneltest.Kernels.
func (k DeviceKernels) Mish(z, y, d []float32) {
	dz, dd := k.up(z), k.scratch(len(z))
	must(k.D.Mish(dz, dz, dd, len(z)))
	k.down(y, dz)
	k.down(d, dd)
	k.free(dz, dd)
}

// LeakyReLU implements kerneltest.Kernels.
func (k DeviceKernels) LeakyReLU(x []float32, slope float32) {
	dx := k.up(x)
	must(k.D.LeakyReLU(dx, len(x), slope))
	k.down(x, dx)
	k.free(dx)
}

// LeakyReLUGrad implements kerneltest.Kernels.
func (k DeviceKernels) LeakyReLUGrad(y, dy []float32, slope float32) {
	a, b := k.up(y), k.up(dy)
	must(k.D.LeakyReLUGrad(a, b, len(y), slope))
	k.down(dy, b)
	k.free(a, b)
}

// Mul implements kerneltest.Kernels.
func (k DeviceKernels) Mul(dst, a, b []float32) {
	da, db, dd := k.up(a), k.up(b), k.scratch(len(dst))
	must(k.D.Mul(dd, da, db, len(dst)))
	k.down(dst, dd)
	k.free(da, db, dd)
}

// Axpy implements kerneltest.Kernels.
func (k DeviceKernels) Axpy(alpha float32, x, y []float32) {
	dx, dy := k.up(x), k.up(y)
	must(k.D.Axpy(alpha, dx, dy, len(y)))
	k.down(y, dy)
	k.free(dx, dy)
}

// FillPlanes implements kerneltest.Kernels.
func (k DeviceKernels) FillPlanes(x, v []float32, planes, hw int) {
	dx, dv := k.up(x), k.up(v)
	must(k.D.FillPlanes(dx, dv, planes, hw, len(v)))
	k.down(x, dx)
	k.free(dx, dv)
}

// AddPlaneBias implements kerneltest.Kernels.
func (k DeviceKernels) AddPlaneBias(x, bias []float32, planes, hw int) {
	dx, db := k.up(x), k.up(bias)
	must(k.D.AddPlaneBias(dx, db, planes, hw, len(bias)))
	k.down(x, dx)
	k.free(dx, db)
}

// PlaneSums implements kerneltest.Kernels.
func (k DeviceKernels) PlaneSums(x []float32, n, c, hw int, out []float32) {
	dx, do, part := k.up(x), k.up(out), k.scratch(2*n*c*NP)
	must(k.D.PlaneSums(dx, n, c, hw, do, part))
	k.down(out, do)
	k.free(dx, do, part)
}

// ColSums implements kerneltest.Kernels.
func (k DeviceKernels) ColSums(x []float32, rows, cols int, out []float32) {
	dx, do := k.up(x), k.up(out)
	must(k.D.ColSums(dx, rows, cols, do))
	k.down(out, do)
	k.free(dx, do)
}

// Upsample2x implements kerneltest.Kernels.
func (k DeviceKernels) Upsample2x(x, y []float32, planes, h, w int) {
	dx, dy := k.up(x), k.scratch(len(y))
	must(k.D.Upsample2x(dx, dy, planes, h, w))
	k.down(y, dy)
	k.free(dx, dy)
}

// Upsample2xGrad implements kerneltest.Kernels.
func (k DeviceKernels) Upsample2xGrad(dy, dx []float32, planes, h, w int) {
	a, b := k.up(dy), k.up(dx)
	must(k.D.Upsample2xGrad(a, b, planes, h, w))
	k.down(dx, b)
	k.free(a, b)
}

// Copy2D implements kerneltest.Kernels.
func (k DeviceKernels) Copy2D(dst []float32, dld int, src []float32, sld, rows, cols int) {
	dd, ds := k.up(dst), k.up(src)
	must(k.D.Copy2D(dd, dld, ds, sld, rows, cols))
	k.down(dst, dd)
	k.free(dd, ds)
}

// Add2D implements kerneltest.Kernels.
func (k DeviceKernels) Add2D(dst []float32, dld int, src []float32, sld, rows, cols int) {
	dd, ds := k.up(dst), k.up(src)
	must(k.D.Add2D(dd, dld, ds, sld, rows, cols))
	k.down(dst, dd)
	k.free(dd, ds)
}

// L1 implements kerneltest.Kernels.
func (k DeviceKernels) L1(p, q, d []float32) float32 {
	dp, dq, dd, part, loss := k.up(p), k.up(q), k.scratch(len(d)), k.scratch(2*LNP), k.scratch(1)
	must(k.D.L1(dp, dq, dd, len(p), part, loss))
	k.down(d, dd)
	out := []float32{0}
	k.down(out, loss)
	k.free(dp, dq, dd, part, loss)
	return out[0]
}

// Adam implements kerneltest.Kernels (with the caller's step size and bias
// correction, as the kernel takes them).
func (k DeviceKernels) Adam(p, g, m, v []float32, b1, b2, eps, step, bc2 float32) {
	dp, dg, dm, dv := k.up(p), k.up(g), k.up(m), k.up(v)
	must(k.D.Launch("adam", int64(len(p)), dp, dg, dm, dv, I64(len(p)), b1, b2, eps, step, bc2))
	k.down(p, dp)
	k.down(m, dm)
	k.down(v, dv)
	k.free(dp, dg, dm, dv)
}

// PStep implements kerneltest.Kernels.
func (k DeviceKernels) PStep(x, pred, noise []float32, sr, srm1, c1, c2, sd float32, addNoise bool) {
	dx, dp, dn := k.up(x), k.up(pred), k.up(noise)
	must(k.D.Launch("p_step", int64(len(x)), dx, dp, dn, I64(len(x)), sr, srm1, c1, c2, sd, b2i(addNoise)))
	k.down(x, dx)
	k.free(dx, dp, dn)
}

// ClampOut implements kerneltest.Kernels.
func (k DeviceKernels) ClampOut(z, out []float32) {
	dz, do := k.up(z), k.scratch(len(out))
	must(k.D.ClampOut(dz, do, len(z)))
	k.down(out, do)
	k.free(dz, do)
}

// ClampOutGrad implements kerneltest.Kernels.
func (k DeviceKernels) ClampOutGrad(z, dout, dz []float32) {
	a, b, c := k.up(z), k.up(dout), k.scratch(len(dz))
	must(k.D.ClampOutGrad(a, b, c, len(z)))
	k.down(dz, c)
	k.free(a, b, c)
}

// SumBatches implements kerneltest.Kernels.
func (k DeviceKernels) SumBatches(part, out []float32, batch int) {
	a, b := k.up(part), k.up(out)
	must(k.D.SumBatches(a, b, batch, len(out)))
	k.down(out, b)
	k.free(a, b)
}
