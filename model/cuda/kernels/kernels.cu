// Kernels of the CUDA backend (model/cuda), in the subset of CUDA C that also
// compiles on the host under emu.h: 1-D grids with grid-stride loops, no shared
// memory, no __syncthreads, no atomics, no libdevice. Every output element is
// written by exactly one thread and every reduction runs in a fixed order, so the
// results are deterministic and do not depend on the launch shape; the host
// emulation (model/cuda/emu) checks each kernel against model.CPU.
//
// Device build: clang-14 -x cuda --cuda-device-only --cuda-gpu-arch=sm_80
// -nocudainc -nocudalib -O3 -S (see cuda.mk); cuda_min.h stands in for the SDK.
//
// Layouts follow model.Backend: flat float32, row-major / NCHW. A convolution
// geometry is model.ConvGeom (C,H,W,K,Stride,Pad,Reflect,OH,OW); the column matrix
// of one image has C·K·K rows and OH·OW columns, row (c·K+kh)·K+kw. Batched
// kernels take n images, image i at x + i·xs and col + i·cs.
#ifndef KERNELS_EMU
#include "cuda_min.h"
#endif

typedef long long i64;

#define GRID_LOOP(i, n)                                                   \
	for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); \
	     i += (i64)blockDim.x * gridDim.x)

static __device__ __forceinline__ int reflect_index(int i, int n) {
	if (i < 0) return -i;
	if (i >= n) return 2 * n - 2 - i;
	return i;
}

static __device__ __forceinline__ float bits_to_float(int b) {
	union {
		int i;
		float f;
	} u;
	u.i = b;
	return u.f;
}

// expf_cephes is model.expf: Cephes expf, range reduction by ln 2 and a degree-6
// polynomial; 0 below -87.
static __device__ __forceinline__ float expf_cephes(float x) {
	if (x < -87.0f) return 0.0f;
	float k = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
	float r = x - k * 0.693359375f - k * -2.12194440e-4f;
	float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
	           1.6666665459e-1f) * r + 5.0000001201e-1f;
	p = p * r * r + r + 1.0f;
	return p * bits_to_float(((int)k + 127) << 23);
}

// im2col: col[i][(c·K+kh)·K+kw][oh·OW+ow] = x[i][c][ih][iw], ih = oh·S-P+kh,
// iw = ow·S-P+kw, reflected (single reflection) or zero outside the image.
extern "C" __global__ void im2col(const float *x, float *col, int n, int C, int H, int W, int K, int S, int P,
                                  int reflect, int OH, int OW, i64 xs, i64 cs) {
	i64 ohw = (i64)OH * OW;
	i64 per = (i64)C * K * K * ohw;
	GRID_LOOP(idx, (i64)n * per) {
		// One 64-bit division for the image; the per-image index fits an int (the
		// host checks C·K·K·OH·OW < 2^31), and 32-bit divisions are much cheaper.
		i64 img = idx / per;
		int rem = (int)(idx - img * per);
		int row = rem / (int)ohw;
		int pix = rem - row * (int)ohw;
		int oh = pix / OW, ow = pix - (pix / OW) * OW;
		int c = row / (K * K), kk = row - c * K * K;
		int kh = kk / K, kw = kk - (kk / K) * K;
		int ih = oh * S - P + kh, iw = ow * S - P + kw;
		float v = 0.0f;
		if (reflect) {
			ih = reflect_index(ih, H);
			iw = reflect_index(iw, W);
			v = x[img * xs + ((i64)c * H + ih) * W + iw];
		} else if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
			v = x[img * xs + ((i64)c * H + ih) * W + iw];
		}
		col[img * cs + rem] = v;
	}
}

// col_add: the contributions of kernel tap (kh,kw) to row ih (from column row
// position virtual vh), added in model.CPU's col2imPlane order: left reflections,
// right reflections, then the direct position.
static __device__ __forceinline__ float col_row_add(float acc, const float *crow, int vh, int iw, int W, int K, int S,
                                                    int P, int reflect, int OH, int OW, int kw) {
	// vh is the virtual input row oh·S-P+kh; the caller found oh.
	(void)vh;
	(void)OH;
	(void)K;
	if (reflect) {
		// left: virtual iw' = -iw < 0 (iw > 0)
		if (iw > 0) {
			int t = -iw + P - kw;
			if (t >= 0 && t % S == 0 && t / S < OW) acc += crow[t / S];
		}
		// right: virtual iw' = 2W-2-iw ≥ W (iw < W-1)
		if (iw < W - 1) {
			int t = 2 * W - 2 - iw + P - kw;
			if (t >= 0 && t % S == 0 && t / S < OW) acc += crow[t / S];
		}
	}
	int t = iw + P - kw;
	if (t >= 0 && t % S == 0 && t / S < OW) acc += crow[t / S];
	return acc;
}

// col2im: x[i] += the adjoint of im2col of col[i], as a gather (one thread per
// image element, no atomics), summing in model.CPU's order (kh, kw, oh ascending;
// within a row left reflections, right reflections, direct), so the result is
// bit-identical to Col2im.
extern "C" __global__ void col2im(const float *col, float *x, int n, int C, int H, int W, int K, int S, int P,
                                  int reflect, int OH, int OW, i64 xs, i64 cs) {
	i64 hw = (i64)H * W;
	i64 per = (i64)C * hw;
	i64 ohw = (i64)OH * OW;
	GRID_LOOP(idx, (i64)n * per) {
		i64 img = idx / per;
		int rem = (int)(idx - img * per);
		int c = rem / (int)hw;
		int pix = rem - c * (int)hw;
		int ih = pix / W, iw = pix - (pix / W) * W;
		float *xp = x + img * xs + rem;
		float acc = *xp;
		const float *cimg = col + img * cs + (i64)c * K * K * ohw;
		for (int kh = 0; kh < K; kh++) {
			// Output rows oh whose (possibly reflected) input row is ih, ascending:
			// top reflection (virtual -ih), direct (ih), bottom (2H-2-ih).
			int cand[3];
			int nc = 0;
			if (reflect && ih > 0) cand[nc++] = -ih;
			cand[nc++] = ih;
			if (reflect && ih < H - 1) cand[nc++] = 2 * H - 2 - ih;
			for (int kw = 0; kw < K; kw++) {
				const float *ctap = cimg + (i64)(kh * K + kw) * ohw;
				for (int q = 0; q < nc; q++) {
					int t = cand[q] + P - kh;
					if (t < 0 || t % S != 0) continue;
					int oh = t / S;
					if (oh >= OH) continue;
					acc = col_row_add(acc, ctap + (i64)oh * OW, cand[q], iw, W, K, S, P, reflect, OH, OW, kw);
				}
			}
		}
		*xp = acc;
	}
}

// mish: y = z·tanh(softplus(z)), d = dy/dz, as model.CPU.Mish; y may alias z.
extern "C" __global__ void mish(const float *z, float *y, float *d, i64 n) {
	GRID_LOOP(i, n) {
		float zz = z[i];
		if (zz > 20.0f) {
			y[i] = zz;
			d[i] = 1.0f;
			continue;
		}
		float e = expf_cephes(zz);
		float nn = e * e + 2.0f * e;
		float inv = 1.0f / (nn + 2.0f);
		float g = nn * inv;
		y[i] = zz * g;
		d[i] = g + zz * 4.0f * e * (e + 1.0f) * inv * inv;
	}
}

extern "C" __global__ void leaky_relu(float *x, float slope, i64 n) {
	GRID_LOOP(i, n) {
		float v = x[i];
		if (v < 0.0f) x[i] = v * slope;
	}
}

extern "C" __global__ void leaky_relu_grad(const float *y, float *dy, float slope, i64 n) {
	GRID_LOOP(i, n) {
		if (y[i] <= 0.0f) dy[i] *= slope;
	}
}

// mul: dst = a·b; dst may alias a or b.
extern "C" __global__ void mul(float *dst, const float *a, const float *b, i64 n) {
	GRID_LOOP(i, n) { dst[i] = a[i] * b[i]; }
}

// axpy: y += alpha·x (a plain add when alpha is 1, as model.CPU).
extern "C" __global__ void axpy(float alpha, const float *x, float *y, i64 n) {
	if (alpha == 1.0f) {
		GRID_LOOP(i, n) { y[i] += x[i]; }
	} else {
		GRID_LOOP(i, n) { y[i] += alpha * x[i]; }
	}
}

// fill_planes: plane p (hw elements) of x is set to v[p % nv]; nv = planes for
// model.Backend.FillPlanes, nv = C for a batch of images sharing one bias.
extern "C" __global__ void fill_planes(float *x, const float *v, int planes, i64 hw, int nv) {
	GRID_LOOP(i, (i64)planes * hw) { x[i] = v[(int)(i / hw) % nv]; }
}

// add_plane_bias: plane p of x gets bias[p % nb] added.
extern "C" __global__ void add_plane_bias(float *x, const float *bias, int planes, i64 hw, int nb) {
	GRID_LOOP(i, (i64)planes * hw) { x[i] += bias[(int)(i / hw) % nb]; }
}

// plane_partials: part[p·np+k] = Σ x[p·hw + k + np·j] in float64 (coalesced: thread
// k of a plane reads element k of each run of np). First pass of plane sums.
extern "C" __global__ void plane_partials(const float *x, double *part, int planes, i64 hw, int np) {
	GRID_LOOP(idx, (i64)planes * np) {
		i64 p = idx / np;
		int k = (int)(idx - p * np);
		const float *xp = x + p * hw;
		double s = 0.0;
		for (i64 j = k; j < hw; j += np) s += (double)xp[j];
		part[idx] = s;
	}
}

// plane_sums_finish: out[c] += (float)(Σ_k part[(i·C+c)·np+k]) for images i = 0..n-1
// in order (model.CPU.PlaneSums called once per image).
extern "C" __global__ void plane_sums_finish(const double *part, float *out, int n, int C, int np) {
	GRID_LOOP(c, C) {
		float o = out[c];
		for (int i = 0; i < n; i++) {
			const double *pp = part + ((i64)i * C + c) * np;
			double s = 0.0;
			for (int k = 0; k < np; k++) s += pp[k];
			o += (float)s;
		}
		out[c] = o;
	}
}

// col_sums: out[j] += (float)Σ_i x[i·cols+j] in float64 (linear-layer bias grad).
extern "C" __global__ void col_sums(const float *x, float *out, int rows, int cols) {
	GRID_LOOP(j, cols) {
		double s = 0.0;
		for (int i = 0; i < rows; i++) s += (double)x[(i64)i * cols + j];
		out[j] += (float)s;
	}
}

// upsample2x: nearest-neighbour x2 of planes h×w of x into y (planes 2h×2w).
extern "C" __global__ void upsample2x(const float *x, float *y, int planes, int h, int w) {
	i64 ohw = (i64)4 * h * w;
	int w2 = 2 * w;
	GRID_LOOP(idx, (i64)planes * ohw) {
		i64 p = idx / ohw;
		int r = (int)(idx - p * ohw);
		int i = r / w2, j = r - (r / w2) * w2;
		y[idx] = x[p * h * w + (i64)(i >> 1) * w + (j >> 1)];
	}
}

// upsample2x_grad: dx += the 2x2 block sums of dy, summed as model.CPU.
extern "C" __global__ void upsample2x_grad(const float *dy, float *dx, int planes, int h, int w) {
	i64 hw = (i64)h * w;
	int w2 = 2 * w;
	GRID_LOOP(idx, (i64)planes * hw) {
		i64 p = idx / hw;
		int r = (int)(idx - p * hw);
		int i = r / w, j = r - (r / w) * w;
		const float *r0 = dy + p * 4 * hw + (i64)(2 * i) * w2;
		const float *r1 = r0 + w2;
		dx[idx] += (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
	}
}

// copy2d: dst[r·dld + j] = src[r·sld + j] for r < rows, j < cols (concat/split
// of NCHW along C: one row per sample).
extern "C" __global__ void copy2d(float *dst, i64 dld, const float *src, i64 sld, int rows, i64 cols) {
	GRID_LOOP(idx, (i64)rows * cols) {
		i64 r = idx / cols;
		i64 j = idx - r * cols;
		dst[r * dld + j] = src[r * sld + j];
	}
}

// add2d: dst[r·dld + j] += src[r·sld + j].
extern "C" __global__ void add2d(float *dst, i64 dld, const float *src, i64 sld, int rows, i64 cols) {
	GRID_LOOP(idx, (i64)rows * cols) {
		i64 r = idx / cols;
		i64 j = idx - r * cols;
		dst[r * dld + j] += src[r * sld + j];
	}
}

// l1_grad: d = sign(p-q)/n (0 where equal, as PyTorch's abs) and part[k] = Σ |p-q|
// over i ≡ k (mod np), in float64. l1_finish sums the partials in order.
extern "C" __global__ void l1_grad(const float *p, const float *q, float *d, double *part, i64 n, int np) {
	float inv = 1.0f / (float)n;
	GRID_LOOP(k, np) {
		double s = 0.0;
		for (i64 i = k; i < n; i += np) {
			float diff = p[i] - q[i];
			if (diff > 0.0f) {
				s += (double)diff;
				d[i] = inv;
			} else if (diff < 0.0f) {
				s -= (double)diff;
				d[i] = -inv;
			} else {
				d[i] = 0.0f;
			}
		}
		part[k] = s;
	}
}

// l1_finish: loss[0] = (float)(Σ part / n), one thread.
extern "C" __global__ void l1_finish(const double *part, float *loss, i64 n, int np) {
	GRID_LOOP(t, 1) {
		double s = 0.0;
		for (int k = 0; k < np; k++) s += part[k];
		loss[0] = (float)(s / (double)n);
	}
}

// adam: torch.optim.Adam's update as model.Adam.Step, with step = lr/(1-β1^k) and
// bc2 = √(1-β2^k) computed by the caller in float64:
// m += (g-m)(1-β1); v = β2·v + (1-β2)·g²; p -= step·m/(√v/bc2 + eps).
extern "C" __global__ void adam(float *p, const float *g, float *m, float *v, i64 n, float b1, float b2, float eps,
                                float step, float bc2) {
	GRID_LOOP(i, n) {
		float gi = g[i];
		float mi = m[i] + (gi - m[i]) * (1.0f - b1);
		float vi = v[i] * b2 + (1.0f - b2) * gi * gi;
		m[i] = mi;
		v[i] = vi;
		float den = __builtin_sqrtf(vi) / bc2 + eps;
		p[i] -= step * (mi / den);
	}
}

// p_step: one ancestral sampling step in place, as model.Schedule.PStep:
// x0 = clamp(sr·x - srm1·pred, -1, 1); x = c1·x0 + c2·x (+ sd·noise when add_noise).
extern "C" __global__ void p_step(float *x, const float *pred, const float *noise, i64 n, float sr, float srm1,
                                  float c1, float c2, float sd, int add_noise) {
	GRID_LOOP(i, n) {
		float xv = x[i];
		float x0 = sr * xv - srm1 * pred[i];
		if (x0 < -1.0f) {
			x0 = -1.0f;
		} else if (x0 > 1.0f) {
			x0 = 1.0f;
		}
		float m = c1 * x0 + c2 * xv;
		if (add_noise) m += sd * noise[i];
		x[i] = m;
	}
}

// clamp_out: out = clamp(z, 0, 1)·2 - 1 (the RRDB head's output in [-1,1]).
extern "C" __global__ void clamp_out(const float *z, float *out, i64 n) {
	GRID_LOOP(i, n) {
		float v = z[i];
		if (v < 0.0f) {
			v = 0.0f;
		} else if (v > 1.0f) {
			v = 1.0f;
		}
		out[i] = v * 2.0f - 1.0f;
	}
}

// clamp_out_grad: dz = 2·dout where 0 ≤ z ≤ 1, else 0.
extern "C" __global__ void clamp_out_grad(const float *z, const float *dout, float *dz, i64 n) {
	GRID_LOOP(i, n) {
		float v = z[i];
		dz[i] = (v >= 0.0f && v <= 1.0f) ? 2.0f * dout[i] : 0.0f;
	}
}

// sum_batches: out[j] += Σ_b part[b·len + j], b ascending (the weight gradient of
// a convolution from one strided-batched GEMM of per-image partials).
extern "C" __global__ void sum_batches(const float *part, float *out, int batch, i64 len) {
	GRID_LOOP(j, len) {
		float s = out[j];
		for (int b = 0; b < batch; b++) s += part[(i64)b * len + j];
		out[j] = s;
	}
}
