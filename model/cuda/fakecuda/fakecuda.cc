// fakecuda.cc: a stand-in for libcuda.so.1 and libcublas.so.13 that runs on the
// host, so that the -tags cuda code of model/cuda (dlopen bindings, argument
// marshalling of cuLaunchKernel, the row-major/column-major operand swap of
// SGEMM, the allocator) is tested on machines without a GPU:
//   scripts/cuda-fake-test.sh   (make cuda-fake-test)
// Device memory is host memory; cuLaunchKernel runs the kernel of kernels.cu
// compiled under emu.h with the launch's grid and block, reading each parameter
// through its void* as the driver does (ints from the low bytes of the 8-byte slots);
// cublasSgemm is a naive column-major loop. Not a model of CUDA's asynchrony.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/emu.h"
#include "../kernels/kernels.cu"

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void *H; // every opaque handle

static const char *const names[] = {
    "im2col",     "col2im",          "mish",     "leaky_relu", "leaky_relu_grad", "mul",     "axpy",
    "fill_planes", "add_plane_bias", "plane_partials", "plane_sums_finish", "col_sums", "upsample2x",
    "upsample2x_grad", "copy2d",     "add2d",    "l1_grad",    "l1_finish",       "adam",    "p_step", "clamp_out", "clamp_out_grad", "sum_batches",
};
static const int nnames = sizeof(names) / sizeof(names[0]);

extern "C" {

CUresult cuInit(unsigned) { return 0; }
CUresult cuDeviceGet(int *d, int ordinal) {
	if (ordinal != 0) return 101; // CUDA_ERROR_INVALID_DEVICE
	*d = 0;
	return 0;
}
CUresult cuDeviceGetName(char *name, int n, int) {
	snprintf(name, n, "fakecuda (host emulation)");
	return 0;
}
CUresult cuDevicePrimaryCtxRetain(H *ctx, int) {
	*ctx = (H)1;
	return 0;
}
CUresult cuDevicePrimaryCtxRelease_v2(int) { return 0; }
CUresult cuCtxSetCurrent(H) { return 0; }
CUresult cuStreamCreate(H *s, unsigned) {
	*s = (H)2;
	return 0;
}
CUresult cuStreamDestroy_v2(H) { return 0; }
CUresult cuStreamSynchronize(H) { return 0; }
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
	void *q = aligned_alloc(256, (n + 255) & ~(size_t)255);
	if (!q) return 2; // CUDA_ERROR_OUT_OF_MEMORY
	memset(q, 0xff, n); // NaN garbage, like fresh device memory might hold
	*p = (CUdeviceptr)(uintptr_t)q;
	return 0;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
	free((void *)(uintptr_t)p);
	return 0;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
	memcpy((void *)(uintptr_t)dst, src, n);
	return 0;
}
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
	memcpy(dst, (const void *)(uintptr_t)src, n);
	return 0;
}
CUresult cuMemsetD32Async(CUdeviceptr p, unsigned v, size_t n, H) {
	unsigned *q = (unsigned *)(uintptr_t)p;
	for (size_t i = 0; i < n; i++) q[i] = v;
	return 0;
}
CUresult cuMemGetInfo_v2(size_t *f, size_t *t) {
	*f = *t = (size_t)1 << 30;
	return 0;
}
CUresult cuModuleLoadDataEx(H *m, const void *ptx, unsigned, int *, void **) {
	if (!strstr((const char *)ptx, ".visible .entry")) return 218; // CUDA_ERROR_INVALID_PTX
	*m = (H)3;
	return 0;
}
CUresult cuModuleUnload(H) { return 0; }
CUresult cuModuleGetFunction(H *f, H, const char *name) {
	for (int i = 0; i < nnames; i++)
		if (!strcmp(names[i], name)) {
			*f = (H)(uintptr_t)(i + 1);
			return 0;
		}
	return 500; // CUDA_ERROR_NOT_FOUND
}
CUresult cuGetErrorString(CUresult, const char **s) {
	*s = "fakecuda error";
	return 0;
}

#define A(T, i) (*(T *)params[i])
#define F A(float *, 0)

CUresult cuLaunchKernel(H f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned,
                        H, void **params, void **) {
	if (gy != 1 || gz != 1 || by != 1 || bz != 1 || gx == 0 || bx == 0 || bx > 1024) return 1; // INVALID_VALUE
	int k = (int)(uintptr_t)f - 1;
	if (k < 0 || k >= nnames) return 400; // CUDA_ERROR_INVALID_HANDLE
	const char *n = names[k];
	if (!strcmp(n, "im2col") || !strcmp(n, "col2im")) {
		auto fn = !strcmp(n, "im2col") ? im2col : col2im;
		EMU_LAUNCH(fn, gx, bx, A(float *, 0), A(float *, 1), A(int, 2), A(int, 3), A(int, 4), A(int, 5), A(int, 6),
		           A(int, 7), A(int, 8), A(int, 9), A(int, 10), A(int, 11), A(i64, 12), A(i64, 13));
	} else if (!strcmp(n, "mish")) {
		EMU_LAUNCH(mish, gx, bx, A(float *, 0), A(float *, 1), A(float *, 2), A(i64, 3));
	} else if (!strcmp(n, "leaky_relu")) {
		EMU_LAUNCH(leaky_relu, gx, bx, A(float *, 0), A(float, 1), A(i64, 2));
	} else if (!strcmp(n, "leaky_relu_grad")) {
		EMU_LAUNCH(leaky_relu_grad, gx, bx, A(float *, 0), A(float *, 1), A(float, 2), A(i64, 3));
	} else if (!strcmp(n, "mul")) {
		EMU_LAUNCH(mul, gx, bx, A(float *, 0), A(float *, 1), A(float *, 2), A(i64, 3));
	} else if (!strcmp(n, "axpy")) {
		EMU_LAUNCH(axpy, gx, bx, A(float, 0), A(float *, 1), A(float *, 2), A(i64, 3));
	} else if (!strcmp(n, "fill_planes")) {
		EMU_LAUNCH(fill_planes, gx, bx, A(float *, 0), A(float *, 1), A(int, 2), A(i64, 3), A(int, 4));
	} else if (!strcmp(n, "add_plane_bias")) {
		EMU_LAUNCH(add_plane_bias, gx, bx, A(float *, 0), A(float *, 1), A(int, 2), A(i64, 3), A(int, 4));
	} else if (!strcmp(n, "plane_partials")) {
		EMU_LAUNCH(plane_partials, gx, bx, A(float *, 0), A(double *, 1), A(int, 2), A(i64, 3), A(int, 4));
	} else if (!strcmp(n, "plane_sums_finish")) {
		EMU_LAUNCH(plane_sums_finish, gx, bx, A(double *, 0), A(float *, 1), A(int, 2), A(int, 3), A(int, 4));
	} else if (!strcmp(n, "col_sums")) {
		EMU_LAUNCH(col_sums, gx, bx, A(float *, 0), A(float *, 1), A(int, 2), A(int, 3));
	} else if (!strcmp(n, "upsample2x") || !strcmp(n, "upsample2x_grad")) {
		auto fn = !strcmp(n, "upsample2x") ? upsample2x : upsample2x_grad;
		EMU_LAUNCH(fn, gx, bx, A(float *, 0), A(float *, 1), A(int, 2), A(int, 3), A(int, 4));
	} else if (!strcmp(n, "copy2d") || !strcmp(n, "add2d")) {
		auto fn = !strcmp(n, "copy2d") ? copy2d : add2d;
		EMU_LAUNCH(fn, gx, bx, A(float *, 0), A(i64, 1), A(float *, 2), A(i64, 3), A(int, 4), A(i64, 5));
	} else if (!strcmp(n, "l1_grad")) {
		EMU_LAUNCH(l1_grad, gx, bx, A(float *, 0), A(float *, 1), A(float *, 2), A(double *, 3), A(i64, 4), A(int, 5));
	} else if (!strcmp(n, "l1_finish")) {
		EMU_LAUNCH(l1_finish, gx, bx, A(double *, 0), A(float *, 1), A(i64, 2), A(int, 3));
	} else if (!strcmp(n, "adam")) {
		EMU_LAUNCH(adam, gx, bx, A(float *, 0), A(float *, 1), A(float *, 2), A(float *, 3), A(i64, 4), A(float, 5),
		           A(float, 6), A(float, 7), A(float, 8), A(float, 9));
	} else if (!strcmp(n, "p_step")) {
		EMU_LAUNCH(p_step, gx, bx, A(float *, 0), A(float *, 1), A(float *, 2), A(i64, 3), A(float, 4), A(float, 5),
		           A(float, 6), A(float, 7), A(float, 8), A(int, 9));
	} else if (!strcmp(n, "clamp_out")) {
		EMU_LAUNCH(clamp_out, gx, bx, A(float *, 0), A(float *, 1), A(i64, 2));
	} else if (!strcmp(n, "clamp_out_grad")) {
		EMU_LAUNCH(clamp_out_grad, gx, bx, A(float *, 0), A(float *, 1), A(float *, 2), A(i64, 3));
	} else if (!strcmp(n, "sum_batches")) {
		EMU_LAUNCH(sum_batches, gx, bx, A(float *, 0), A(float *, 1), A(int, 2), A(i64, 3));
	} else {
		return 400;
	}
	return 0;
}

// cuBLAS (column-major, host pointer mode).
int cublasCreate_v2(H *h) {
	*h = (H)4;
	return 0;
}
int cublasDestroy_v2(H) { return 0; }
int cublasSetStream_v2(H, H) { return 0; }
int cublasSetMathMode(H, int mode) { return (mode == 0 || mode == 3) ? 0 : 7; } // 7: INVALID_VALUE

static void sgemm1(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                   float beta, float *c, int ldc) {
	for (int j = 0; j < n; j++)
		for (int i = 0; i < m; i++) {
			double s = 0;
			for (int p = 0; p < k; p++) {
				float av = ta ? a[p + (size_t)i * lda] : a[i + (size_t)p * lda];
				float bv = tb ? b[j + (size_t)p * ldb] : b[p + (size_t)j * ldb];
				s += (double)av * bv;
			}
			float *cp = &c[i + (size_t)j * ldc];
			*cp = (float)(alpha * s + (beta == 0 ? 0.0 : (double)beta * *cp));
		}
}

static int check_ld(int ta, int tb, int m, int n, int k, int lda, int ldb, int ldc) {
	if (lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m || lda < 1 || ldb < 1) return 7;
	return 0;
}

int cublasSgemm_v2(H, int ta, int tb, int m, int n, int k, const float *alpha, const float *a, int lda,
                   const float *b, int ldb, const float *beta, float *c, int ldc) {
	if (int r = check_ld(ta, tb, m, n, k, lda, ldb, ldc)) return r;
	sgemm1(ta, tb, m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc);
	return 0;
}

int cublasSgemmStridedBatched(H, int ta, int tb, int m, int n, int k, const float *alpha, const float *a, int lda,
                              long long sa, const float *b, int ldb, long long sb, const float *beta, float *c,
                              int ldc, long long sc, int batch) {
	if (int r = check_ld(ta, tb, m, n, k, lda, ldb, ldc)) return r;
	for (int i = 0; i < batch; i++)
		sgemm1(ta, tb, m, n, k, *alpha, a + i * sa, lda, b + i * sb, ldb, *beta, c + i * sc, ldc);
	return 0;
}
}
