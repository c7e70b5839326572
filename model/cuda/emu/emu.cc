// Host build of kernels.cu under the emulation header: each wrapper runs one
// kernel over a grid×block launch sequentially (EMU_LAUNCH), plus the second pass
// of the two-pass reductions, as the CUDA backend launches them.
#include <stdlib.h>

#include "../kernels/emu.h"
#include "../kernels/kernels.cu"
#include "emu_wrap.h"

extern "C" {

void emu_im2col(unsigned grid, unsigned block, const float *x, float *col, int n, int C, int H, int W, int K, int S,
                int P, int reflect, int OH, int OW, emu_i64 xs, emu_i64 cs) {
	EMU_LAUNCH(im2col, grid, block, x, col, n, C, H, W, K, S, P, reflect, OH, OW, xs, cs);
}

void emu_col2im(unsigned grid, unsigned block, const float *col, float *x, int n, int C, int H, int W, int K, int S,
                int P, int reflect, int OH, int OW, emu_i64 xs, emu_i64 cs) {
	EMU_LAUNCH(col2im, grid, block, col, x, n, C, H, W, K, S, P, reflect, OH, OW, xs, cs);
}

void emu_mish(unsigned grid, unsigned block, const float *z, float *y, float *d, emu_i64 n) {
	EMU_LAUNCH(mish, grid, block, z, y, d, n);
}

void emu_leaky_relu(unsigned grid, unsigned block, float *x, float slope, emu_i64 n) {
	EMU_LAUNCH(leaky_relu, grid, block, x, slope, n);
}

void emu_leaky_relu_grad(unsigned grid, unsigned block, const float *y, float *dy, float slope, emu_i64 n) {
	EMU_LAUNCH(leaky_relu_grad, grid, block, y, dy, slope, n);
}

void emu_mul(unsigned grid, unsigned block, float *dst, const float *a, const float *b, emu_i64 n) {
	EMU_LAUNCH(mul, grid, block, dst, a, b, n);
}

void emu_axpy(unsigned grid, unsigned block, float alpha, const float *x, float *y, emu_i64 n) {
	EMU_LAUNCH(axpy, grid, block, alpha, x, y, n);
}

void emu_fill_planes(unsigned grid, unsigned block, float *x, const float *v, int planes, emu_i64 hw, int nv) {
	EMU_LAUNCH(fill_planes, grid, block, x, v, planes, hw, nv);
}

void emu_add_plane_bias(unsigned grid, unsigned block, float *x, const float *b, int planes, emu_i64 hw, int nb) {
	EMU_LAUNCH(add_plane_bias, grid, block, x, b, planes, hw, nb);
}

void emu_plane_sums(unsigned grid, unsigned block, const float *x, float *out, int n, int C, emu_i64 hw, int np) {
	double *part = (double *)malloc(sizeof(double) * (size_t)n * C * np);
	EMU_LAUNCH(plane_partials, grid, block, x, part, n * C, hw, np);
	EMU_LAUNCH(plane_sums_finish, grid, block, part, out, n, C, np);
	free(part);
}

void emu_col_sums(unsigned grid, unsigned block, const float *x, float *out, int rows, int cols) {
	EMU_LAUNCH(col_sums, grid, block, x, out, rows, cols);
}

void emu_upsample2x(unsigned grid, unsigned block, const float *x, float *y, int planes, int h, int w) {
	EMU_LAUNCH(upsample2x, grid, block, x, y, planes, h, w);
}

void emu_upsample2x_grad(unsigned grid, unsigned block, const float *dy, float *dx, int planes, int h, int w) {
	EMU_LAUNCH(upsample2x_grad, grid, block, dy, dx, planes, h, w);
}

void emu_copy2d(unsigned grid, unsigned block, float *dst, emu_i64 dld, const float *src, emu_i64 sld, int rows,
                emu_i64 cols) {
	EMU_LAUNCH(copy2d, grid, block, dst, dld, src, sld, rows, cols);
}

void emu_add2d(unsigned grid, unsigned block, float *dst, emu_i64 dld, const float *src, emu_i64 sld, int rows,
               emu_i64 cols) {
	EMU_LAUNCH(add2d, grid, block, dst, dld, src, sld, rows, cols);
}

float emu_l1(unsigned grid, unsigned block, const float *p, const float *q, float *d, emu_i64 n, int np) {
	double *part = (double *)malloc(sizeof(double) * (size_t)np);
	float loss = 0;
	EMU_LAUNCH(l1_grad, grid, block, p, q, d, part, n, np);
	EMU_LAUNCH(l1_finish, 1, 1, part, &loss, n, np);
	free(part);
	return loss;
}

void emu_adam(unsigned grid, unsigned block, float *p, const float *g, float *m, float *v, emu_i64 n, float b1,
              float b2, float eps, float step, float bc2) {
	EMU_LAUNCH(adam, grid, block, p, g, m, v, n, b1, b2, eps, step, bc2);
}

void emu_p_step(unsigned grid, unsigned block, float *x, const float *pred, const float *noise, emu_i64 n, float sr,
                float srm1, float c1, float c2, float sd, int add_noise) {
	EMU_LAUNCH(p_step, grid, block, x, pred, noise, n, sr, srm1, c1, c2, sd, add_noise);
}

void emu_sum_batches(unsigned grid, unsigned block, const float *part, float *out, int batch, emu_i64 len) {
	EMU_LAUNCH(sum_batches, grid, block, part, out, batch, len);
}

void emu_clamp_out(unsigned grid, unsigned block, const float *z, float *out, emu_i64 n) {
	EMU_LAUNCH(clamp_out, grid, block, z, out, n);
}

void emu_clamp_out_grad(unsigned grid, unsigned block, const float *z, const float *dout, float *dz, emu_i64 n) {
	EMU_LAUNCH(clamp_out_grad, grid, block, z, dout, dz, n);
}
}
