//go:build cgo

package emu

/*
#cgo CXXFLAGS: -O2 -std=c++17
#include "emu_wrap.h"
*/
import "C"

import (
	"unsafe"

	"github.com/samdiffsr/samdiffsr/model"
	// The kernel sources are embedded there, so this package is rebuilt when they change.
	_ "github.com/samdiffsr/samdiffsr/model/cuda/kernels"
)

// Available reports whether the host emulation is compiled in (it needs cgo).
const Available = true

// Kernels launches the emulated kernels on host slices with a Grid×Block launch
// (grid-stride loops make any shape valid; small odd shapes exercise the strides)
// and NP partial sums per plane in the two-pass reductions.
type Kernels struct {
	Grid, Block, NP int
}

func (k Kernels) gb() (C.uint, C.uint) {
	g, b := k.Grid, k.Block
	if g < 1 {
		g = 3
	}
	if b < 1 {
		b = 37
	}
	return C.uint(g), C.uint(b)
}

func (k Kernels) np() C.int {
	if k.NP < 1 {
		return 7
	}
	return C.int(k.NP)
}

func fp(s []float32) *C.float {
	if len(s) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&s[0]))
}

func b2i(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// Im2col implements kerneltest.Kernels.
func (k Kernels) Im2col(g model.ConvGeom, n, xs, cs int, x, col []float32) {
	gr, bl := k.gb()
	C.emu_im2col(gr, bl, fp(x), fp(col), C.int(n), C.int(g.C), C.int(g.H), C.int(g.W), C.int(g.K), C.int(g.Stride),
		C.int(g.Pad), b2i(g.Reflect), C.int(g.OH), C.int(g.OW), C.emu_i64(xs), C.emu_i64(cs))
}

// Col2im implements kerneltest.Kernels.
func (k Kernels) Col2im(g model.ConvGeom, n, xs, cs int, col, x []float32) {
	gr, bl := k.gb()
	C.emu_col2im(gr, bl, fp(col), fp(x), C.int(n), C.int(g.C), C.int(g.H), C.int(g.W), C.int(g.K), C.int(g.Stride),
		C.int(g.Pad), b2i(g.Reflect), C.int(g.OH), C.int(g.OW), C.emu_i64(xs), C.emu_i64(cs))
}

// Mish implements kerneltest.Kernels.
func (k Kernels) Mish(z, y, d []float32) {
	gr, bl := k.gb()
	C.emu_mish(gr, bl, fp(z), fp(y), fp(d), C.emu_i64(len(z)))
}

// LeakyReLU implements kerneltest.Kernels.
func (k Kernels) LeakyReLU(x []float32, slope float32) {
	gr, bl := k.gb()
	C.emu_leaky_relu(gr, bl, fp(x), C.float(slope), C.emu_i64(len(x)))
}

// LeakyReLUGrad implements kerneltest.Kernels.
func (k Kernels) LeakyReLUGrad(y, dy []float32, slope float32) {
	gr, bl := k.gb()
	C.emu_leaky_relu_grad(gr, bl, fp(y), fp(dy), C.float(slope), C.emu_i64(len(y)))
}

// Mul implements kerneltest.Kernels.
func (k Kernels) Mul(dst, a, b []float32) {
	gr, bl := k.gb()
	C.emu_mul(gr, bl, fp(dst), fp(a), fp(b), C.emu_i64(len(dst)))
}

// Axpy implements kerneltest.Kernels.
func (k Kernels) Axpy(alpha float32, x, y []float32) {
	gr, bl := k.gb()
	C.emu_axpy(gr, bl, C.float(alpha), fp(x), fp(y), C.emu_i64(len(y)))
}

// FillPlanes implements kerneltest.Kernels.
func (k Kernels) FillPlanes(x, v []float32, planes, hw int) {
	gr, bl := k.gb()
	C.emu_fill_planes(gr, bl, fp(x), fp(v), C.int(planes), C.emu_i64(hw), C.int(len(v)))
}

// AddPlaneBias implements kerneltest.Kernels.
func (k Kernels) AddPlaneBias(x, bias []float32, planes, hw int) {
	gr, bl := k.gb()
	C.emu_add_plane_bias(gr, bl, fp(x), fp(bias), C.int(planes), C.emu_i64(hw), C.int(len(bias)))
}

// PlaneSums implements kerneltest.Kernels.
func (k Kernels) PlaneSums(x []float32, n, c, hw int, out []float32) {
	gr, bl := k.gb()
	C.emu_plane_sums(gr, bl, fp(x), fp(out), C.int(n), C.int(c), C.emu_i64(hw), k.np())
}

// ColSums implements kerneltest.Kernels.
func (k Kernels) ColSums(x []float32, rows, cols int, out []float32) {
	gr, bl := k.gb()
	C.emu_col_sums(gr, bl, fp(x), fp(out), C.int(rows), C.int(cols))
}

// Upsample2x implements kerneltest.Kernels.
func (k Kernels) Upsample2x(x, y []float32, planes, h, w int) {
	gr, bl := k.gb()
	C.emu_upsample2x(gr, bl, fp(x), fp(y), C.int(planes), C.int(h), C.int(w))
}

// Upsample2xGrad implements kerneltest.Kernels.
func (k Kernels) Upsample2xGrad(dy, dx []float32, planes, h, w int) {
	gr, bl := k.gb()
	C.emu_upsample2x_grad(gr, bl, fp(dy), fp(dx), C.int(planes), C.int(h), C.int(w))
}

// Copy2D implements kerneltest.Kernels.
func (k Kernels) Copy2D(dst []float32, dld int, src []float32, sld, rows, cols int) {
	gr, bl := k.gb()
	C.emu_copy2d(gr, bl, fp(dst), C.emu_i64(dld), fp(src), C.emu_i64(sld), C.int(rows), C.emu_i64(cols))
}

// Add2D implements kerneltest.Kernels.
func (k Kernels) Add2D(dst []float32, dld int, src []float32, sld, rows, cols int) {
	gr, bl := k.gb()
	C.emu_add2d(gr, bl, fp(dst), C.emu_i64(dld), fp(src), C.emu_i64(sld), C.int(rows), C.emu_i64(cols))
}

// L1 implements kerneltest.Kernels.
func (k Kernels) L1(p, q, d []float32) float32 {
	gr, bl := k.gb()
	return float32(C.emu_l1(gr, bl, fp(p), fp(q), fp(d), C.emu_i64(len(p)), k.np()))
}

// Adam implements kerneltest.Kernels.
func (k Kernels) Adam(p, g, m, v []float32, b1, b2, eps, step, bc2 float32) {
	gr, bl := k.gb()
	C.emu_adam(gr, bl, fp(p), fp(g), fp(m), fp(v), C.emu_i64(len(p)), C.float(b1), C.float(b2), C.float(eps),
		C.float(step), C.float(bc2))
}

// PStep implements kerneltest.Kernels.
func (k Kernels) PStep(x, pred, noise []float32, sr, srm1, c1, c2, sd float32, addNoise bool) {
	gr, bl := k.gb()
	C.emu_p_step(gr, bl, fp(x), fp(pred), fp(noise), C.emu_i64(len(x)), C.float(sr), C.float(srm1), C.float(c1),
		C.float(c2), C.float(sd), b2i(addNoise))
}

// ClampOut implements kerneltest.Kernels.
func (k Kernels) ClampOut(z, out []float32) {
	gr, bl := k.gb()
	C.emu_clamp_out(gr, bl, fp(z), fp(out), C.emu_i64(len(z)))
}

// ClampOutGrad implements kerneltest.Kernels.
func (k Kernels) ClampOutGrad(z, dout, dz []float32) {
	gr, bl := k.gb()
	C.emu_clamp_out_grad(gr, bl, fp(z), fp(dout), fp(dz), C.emu_i64(len(z)))
}

// SumBatches implements kerneltest.Kernels.
func (k Kernels) SumBatches(part, out []float32, batch int) {
	gr, bl := k.gb()
	C.emu_sum_batches(gr, bl, fp(part), fp(out), C.int(batch), C.emu_i64(len(out)))
}
