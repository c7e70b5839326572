// C declarations of the host-emulated kernel launches in emu.cc.
#ifndef SAMDIFFSR_EMU_WRAP_H
#define SAMDIFFSR_EMU_WRAP_H
#ifdef __cplusplus
extern "C" {
#endif
typedef long long emu_i64;
void emu_im2col(unsigned grid, unsigned block, const float *x, float *col, int n, int C, int H, int W, int K, int S,
                int P, int reflect, int OH, int OW, emu_i64 xs, emu_i64 cs);
void emu_col2im(unsigned grid, unsigned block, const float *col, float *x, int n, int C, int H, int W, int K, int S,
                int P, int reflect, int OH, int OW, emu_i64 xs, emu_i64 cs);
void emu_mish(unsigned grid, unsigned block, const float *z, float *y, float *d, emu_i64 n);
void emu_leaky_relu(unsigned grid, unsigned block, float *x, float slope, emu_i64 n);
void emu_leaky_relu_grad(unsigned grid, unsigned block, const float *y, float *dy, float slope, emu_i64 n);
void emu_mul(unsigned grid, unsigned block, float *dst, const float *a, const float *b, emu_i64 n);
void emu_axpy(unsigned grid, unsigned block, float alpha, const float *x, float *y, emu_i64 n);
void emu_fill_planes(unsigned grid, unsigned block, float *x, const float *v, int planes, emu_i64 hw, int nv);
void emu_add_plane_bias(unsigned grid, unsigned block, float *x, const float *b, int planes, emu_i64 hw, int nb);
void emu_plane_sums(unsigned grid, unsigned block, const float *x, float *out, int n, int C, emu_i64 hw, int np);
void emu_col_sums(unsigned grid, unsigned block, const float *x, float *out, int rows, int cols);
void emu_upsample2x(unsigned grid, unsigned block, const float *x, float *y, int planes, int h, int w);
void emu_upsample2x_grad(unsigned grid, unsigned block, const float *dy, float *dx, int planes, int h, int w);
void emu_copy2d(unsigned grid, unsigned block, float *dst, emu_i64 dld, const float *src, emu_i64 sld, int rows,
                emu_i64 cols);
void emu_add2d(unsigned grid, unsigned block, float *dst, emu_i64 dld, const float *src, emu_i64 sld, int rows,
               emu_i64 cols);
float emu_l1(unsigned grid, unsigned block, const float *p, const float *q, float *d, emu_i64 n, int np);
void emu_adam(unsigned grid, unsigned block, float *p, const float *g, float *m, float *v, emu_i64 n, float b1,
              float b2, float eps, float step, float bc2);
void emu_p_step(unsigned grid, unsigned block, float *x, const float *pred, const float *noise, emu_i64 n, float sr,
                float srm1, float c1, float c2, float sd, int add_noise);
void emu_clamp_out(unsigned grid, unsigned block, const float *z, float *out, emu_i64 n);
void emu_clamp_out_grad(unsigned grid, unsigned block, const float *z, const float *dout, float *dz, emu_i64 n);
void emu_sum_batches(unsigned grid, unsigned block, const float *part, float *out, int batch, emu_i64 len);
#ifdef __cplusplus
}
#endif
#endif
