//go:build cuda

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Hand-written prototypes of the CUDA driver API and cuBLAS functions used
// (ABI-stable C signatures; see doc.go for why there are no SDK headers).
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct cublasContext *cublasHandle_t;

static void *libcuda, *libcublas;
static CUresult (*p_cuInit)(unsigned);
static CUresult (*p_cuDeviceGet)(CUdevice *, int);
static CUresult (*p_cuDeviceGetName)(char *, int, CUdevice);
static CUresult (*p_cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
static CUresult (*p_cuDevicePrimaryCtxRelease)(CUdevice);
static CUresult (*p_cuCtxSetCurrent)(CUcontext);
static CUresult (*p_cuStreamCreate)(CUstream *, unsigned);
static CUresult (*p_cuStreamDestroy)(CUstream);
static CUresult (*p_cuStreamSynchronize)(CUstream);
static CUresult (*p_cuMemAlloc)(CUdeviceptr *, size_t);
static CUresult (*p_cuMemFree)(CUdeviceptr);
static CUresult (*p_cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
static CUresult (*p_cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
static CUresult (*p_cuMemsetD32Async)(CUdeviceptr, unsigned, size_t, CUstream);
static CUresult (*p_cuMemGetInfo)(size_t *, size_t *);
static CUresult (*p_cuModuleLoadDataEx)(CUmodule *, const void *, unsigned, int *, void **);
static CUresult (*p_cuModuleUnload)(CUmodule);
static CUresult (*p_cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
static CUresult (*p_cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                    CUstream, void **, void **);
static CUresult (*p_cuGetErrorString)(CUresult, const char **);

static int (*p_cublasCreate)(cublasHandle_t *);
static int (*p_cublasDestroy)(cublasHandle_t);
static int (*p_cublasSetStream)(cublasHandle_t, CUstream);
static int (*p_cublasSetMathMode)(cublasHandle_t, int);
static int (*p_cublasSgemm)(cublasHandle_t, int, int, int, int, int, const float *, const float *, int, const float *,
                            int, const float *, float *, int);
static int (*p_cublasSgemmStridedBatched)(cublasHandle_t, int, int, int, int, int, const float *, const float *, int,
                                          long long, const float *, int, long long, const float *, float *, int,
                                          long long, int);

#define SYM(lib, var, name)                         \
	do {                                            \
		*(void **)(&var) = dlsym(lib, name);        \
		if (!var) return name;                      \
	} while (0)

// sd_load opens the libraries and resolves every symbol; it returns NULL or the
// name of what is missing (a library name or a symbol).
static const char *sd_load(void) {
	if (!libcuda) {
		libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
		if (!libcuda) return "libcuda.so.1";
	}
	SYM(libcuda, p_cuInit, "cuInit");
	SYM(libcuda, p_cuDeviceGet, "cuDeviceGet");
	SYM(libcuda, p_cuDeviceGetName, "cuDeviceGetName");
	SYM(libcuda, p_cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
	SYM(libcuda, p_cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
	SYM(libcuda, p_cuCtxSetCurrent, "cuCtxSetCurrent");
	SYM(libcuda, p_cuStreamCreate, "cuStreamCreate");
	SYM(libcuda, p_cuStreamDestroy, "cuStreamDestroy_v2");
	SYM(libcuda, p_cuStreamSynchronize, "cuStreamSynchronize");
	SYM(libcuda, p_cuMemAlloc, "cuMemAlloc_v2");
	SYM(libcuda, p_cuMemFree, "cuMemFree_v2");
	SYM(libcuda, p_cuMemcpyHtoD, "cuMemcpyHtoD_v2");
	SYM(libcuda, p_cuMemcpyDtoH, "cuMemcpyDtoH_v2");
	SYM(libcuda, p_cuMemsetD32Async, "cuMemsetD32Async");
	SYM(libcuda, p_cuMemGetInfo, "cuMemGetInfo_v2");
	SYM(libcuda, p_cuModuleLoadDataEx, "cuModuleLoadDataEx");
	SYM(libcuda, p_cuModuleUnload, "cuModuleUnload");
	SYM(libcuda, p_cuModuleGetFunction, "cuModuleGetFunction");
	SYM(libcuda, p_cuLaunchKernel, "cuLaunchKernel");
	SYM(libcuda, p_cuGetErrorString, "cuGetErrorString");
	if (!libcublas) {
		const char *names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
		for (int i = 0; i < 3 && !libcublas; i++) libcublas = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
		if (!libcublas) return "libcublas.so.13 (or .12)";
	}
	SYM(libcublas, p_cublasCreate, "cublasCreate_v2");
	SYM(libcublas, p_cublasDestroy, "cublasDestroy_v2");
	SYM(libcublas, p_cublasSetStream, "cublasSetStream_v2");
	SYM(libcublas, p_cublasSetMathMode, "cublasSetMathMode");
	SYM(libcublas, p_cublasSgemm, "cublasSgemm_v2");
	SYM(libcublas, p_cublasSgemmStridedBatched, "cublasSgemmStridedBatched");
	return NULL;
}

static const char *sd_errstr(CUresult r) {
	const char *s = NULL;
	if (p_cuGetErrorString) p_cuGetErrorString(r, &s);
	return s ? s : "unknown CUDA error";
}

static CUresult sd_init(int ordinal, CUdevice *dev, CUcontext *ctx, CUstream *st, char *name, int nlen) {
	CUresult r;
	if ((r = p_cuInit(0))) return r;
	if ((r = p_cuDeviceGet(dev, ordinal))) return r;
	if ((r = p_cuDeviceGetName(name, nlen, *dev))) return r;
	if ((r = p_cuDevicePrimaryCtxRetain(ctx, *dev))) return r;
	if ((r = p_cuCtxSetCurrent(*ctx))) return r;
	return p_cuStreamCreate(st, 0);
}

static CUresult sd_close(CUcontext ctx, CUdevice dev, CUstream st, CUmodule mod) {
	p_cuCtxSetCurrent(ctx);
	if (mod) p_cuModuleUnload(mod);
	if (st) p_cuStreamDestroy(st);
	return p_cuDevicePrimaryCtxRelease(dev);
}

static CUresult sd_load_module(CUcontext ctx, CUmodule *mod, const char *ptx, char *log, int loglen) {
	p_cuCtxSetCurrent(ctx);
	int opts[2] = {5, 6}; // CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES
	void *vals[2] = {log, (void *)(uintptr_t)loglen};
	return p_cuModuleLoadDataEx(mod, ptx, 2, opts, vals);
}

static CUresult sd_function(CUfunction *f, CUmodule mod, const char *name) {
	return p_cuModuleGetFunction(f, mod, name);
}

static CUresult sd_alloc(CUcontext ctx, CUdeviceptr *p, size_t n) {
	p_cuCtxSetCurrent(ctx);
	return p_cuMemAlloc(p, n);
}

static CUresult sd_free(CUcontext ctx, CUdeviceptr p) {
	p_cuCtxSetCurrent(ctx);
	return p_cuMemFree(p);
}

static CUresult sd_htod(CUcontext ctx, CUstream st, CUdeviceptr dst, const void *src, size_t n) {
	p_cuCtxSetCurrent(ctx);
	CUresult r = p_cuStreamSynchronize(st);
	if (r) return r;
	return p_cuMemcpyHtoD(dst, src, n);
}

static CUresult sd_dtoh(CUcontext ctx, CUstream st, void *dst, CUdeviceptr src, size_t n) {
	p_cuCtxSetCurrent(ctx);
	CUresult r = p_cuStreamSynchronize(st);
	if (r) return r;
	return p_cuMemcpyDtoH(dst, src, n);
}

static CUresult sd_memset32(CUcontext ctx, CUstream st, CUdeviceptr p, unsigned v, size_t n) {
	p_cuCtxSetCurrent(ctx);
	return p_cuMemsetD32Async(p, v, n, st);
}

static CUresult sd_sync(CUcontext ctx, CUstream st) {
	p_cuCtxSetCurrent(ctx);
	return p_cuStreamSynchronize(st);
}

static CUresult sd_meminfo(CUcontext ctx, size_t *free, size_t *total) {
	p_cuCtxSetCurrent(ctx);
	return p_cuMemGetInfo(free, total);
}

// sd_launch launches f with nargs parameters whose values sit in 8-byte slots
// (int and float parameters in the low bytes: little-endian).
static CUresult sd_launch(CUcontext ctx, CUstream st, CUfunction f, unsigned grid, unsigned block, int nargs,
                          uint64_t *slots) {
	void *params[32];
	if (nargs > 32) return 1; // CUDA_ERROR_INVALID_VALUE
	for (int i = 0; i < nargs; i++) params[i] = &slots[i];
	p_cuCtxSetCurrent(ctx);
	return p_cuLaunchKernel(f, grid, 1, 1, block, 1, 1, 0, st, params, NULL);
}

static int sd_blas_create(CUcontext ctx, CUstream st, cublasHandle_t *h) {
	p_cuCtxSetCurrent(ctx);
	int r = p_cublasCreate(h);
	if (r) return r;
	return p_cublasSetStream(*h, st);
}

static int sd_blas_destroy(CUcontext ctx, cublasHandle_t h) {
	p_cuCtxSetCurrent(ctx);
	return p_cublasDestroy(h);
}

static int sd_blas_math(CUcontext ctx, cublasHandle_t h, int mode) {
	p_cuCtxSetCurrent(ctx);
	return p_cublasSetMathMode(h, mode);
}

static int sd_sgemm(CUcontext ctx, cublasHandle_t h, int ta, int tb, int m, int n, int k, float alpha, CUdeviceptr a,
                    int lda, long long sa, CUdeviceptr b, int ldb, long long sb, float beta, CUdeviceptr c, int ldc,
                    long long sc, int batch) {
	p_cuCtxSetCurrent(ctx);
	if (batch == 1)
		return p_cublasSgemm(h, ta, tb, m, n, k, &alpha, (const float *)a, lda, (const float *)b, ldb, &beta,
		                     (float *)c, ldc);
	return p_cublasSgemmStridedBatched(h, ta, tb, m, n, k, &alpha, (const float *)a, lda, sa, (const float *)b, ldb,
	                                   sb, &beta, (float *)c, ldc, sc, batch);
}
*/
import "C"

import (
	"fmt"
	"math"
	"sync"
	"unsafe"

	"github.com/samdiffsr/samdiffsr/model/cuda/kernels"
)

// Error is a failed CUDA driver or cuBLAS call.
type Error struct {
	Op   string
	Code int
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("cuda: %s: error %d (%s)", e.Op, e.Code, e.Msg) }

func check(op string, r C.CUresult) error {
	if r == 0 {
		return nil
	}
	return &Error{Op: op, Code: int(r), Msg: C.GoString(C.sd_errstr(r))}
}

func checkBlas(op string, r C.int) error {
	if r == 0 {
		return nil
	}
	return &Error{Op: op, Code: int(r), Msg: "cublasStatus"}
}

var loadMu sync.Mutex

// Ptr is a device address.
type Ptr uint64

// Buf is a device buffer of N float32 (or N/2 float64) elements.
type Buf struct {
	Ptr Ptr
	N   int
}

// Off returns the view of b from element i on.
func (b Buf) Off(i int) Buf { return Buf{Ptr: b.Ptr + Ptr(4*i), N: b.N - i} }

// Device is one GPU: its primary context, one stream, cuBLAS on that stream, the
// loaded kernels and a caching allocator. Methods may be called from any goroutine
// (each call makes the context current on its thread) but not concurrently.
type Device struct {
	Name   string
	dev    C.CUdevice
	ctx    C.CUcontext
	stream C.CUstream
	mod    C.CUmodule
	blas   C.cublasHandle_t
	fn     map[string]C.CUfunction
	free   map[int][]Ptr // cached blocks by byte size
	live   map[Ptr]int
	held   int64 // bytes allocated from the driver
	TF32   bool
}

// Open loads the driver and cuBLAS, retains the primary context of GPU ordinal,
// creates a stream and a cuBLAS handle on it, and loads the embedded PTX.
func Open(ordinal int) (*Device, error) {
	loadMu.Lock()
	missing := C.sd_load()
	loadMu.Unlock()
	if missing != nil {
		return nil, fmt.Errorf("cuda: cannot load %s (set LD_LIBRARY_PATH to the CUDA/cuBLAS libraries)", C.GoString(missing))
	}
	d := &Device{fn: map[string]C.CUfunction{}, free: map[int][]Ptr{}, live: map[Ptr]int{}}
	var name [256]C.char
	if err := check("init", C.sd_init(C.int(ordinal), &d.dev, &d.ctx, &d.stream, &name[0], 256)); err != nil {
		return nil, err
	}
	d.Name = C.GoString(&name[0])
	if err := d.loadPTX(kernels.PTX); err != nil {
		d.Close()
		return nil, err
	}
	if err := checkBlas("cublasCreate", C.sd_blas_create(d.ctx, d.stream, &d.blas)); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.SetTF32(false); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Device) loadPTX(ptx string) error {
	src := C.CString(ptx)
	defer C.free(unsafe.Pointer(src))
	log := (*C.char)(C.calloc(8192, 1))
	defer C.free(unsafe.Pointer(log))
	if err := check("cuModuleLoadDataEx", C.sd_load_module(d.ctx, &d.mod, src, log, 8192)); err != nil {
		return fmt.Errorf("%w: %s", err, C.GoString(log))
	}
	for _, n := range kernels.Names {
		cn := C.CString(n)
		var f C.CUfunction
		err := check("cuModuleGetFunction "+n, C.sd_function(&f, d.mod, cn))
		C.free(unsafe.Pointer(cn))
		if err != nil {
			return err
		}
		d.fn[n] = f
	}
	return nil
}

// SetTF32 turns TF32 tensor-core math for SGEMM on or off (off: full fp32).
func (d *Device) SetTF32(on bool) error {
	mode := C.int(0) // CUBLAS_DEFAULT_MATH
	if on {
		mode = 3 // CUBLAS_TF32_TENSOR_OP_MATH
	}
	if err := checkBlas("cublasSetMathMode", C.sd_blas_math(d.ctx, d.blas, mode)); err != nil {
		return err
	}
	d.TF32 = on
	return nil
}

// Close frees the cached and live buffers and releases the context.
func (d *Device) Close() error {
	if d.ctx == nil {
		return nil
	}
	d.Sync()
	for _, ps := range d.free {
		for _, p := range ps {
			C.sd_free(d.ctx, C.CUdeviceptr(p))
		}
	}
	for p := range d.live {
		C.sd_free(d.ctx, C.CUdeviceptr(p))
	}
	d.free, d.live = map[int][]Ptr{}, map[Ptr]int{}
	if d.blas != nil {
		C.sd_blas_destroy(d.ctx, d.blas)
	}
	err := check("close", C.sd_close(d.ctx, d.dev, d.stream, d.mod))
	d.ctx = nil
	return err
}

// roundSize is the caching allocator's size class: powers of two up to 1 MiB,
// then multiples of 2 MiB.
func roundSize(bytes int) int {
	if bytes <= 256 {
		return 256
	}
	if bytes <= 1<<20 {
		s := 512
		for s < bytes {
			s <<= 1
		}
		return s
	}
	return (bytes + (2<<20 - 1)) &^ (2<<20 - 1)
}

// Alloc returns a buffer of n float32, reusing a cached block of the same size
// class when there is one (no driver allocation in a steady training loop).
func (d *Device) Alloc(n int) (Buf, error) {
	s := roundSize(4 * max(n, 1))
	if ps := d.free[s]; len(ps) > 0 {
		p := ps[len(ps)-1]
		d.free[s] = ps[:len(ps)-1]
		d.live[p] = s
		return Buf{Ptr: p, N: n}, nil
	}
	var p C.CUdeviceptr
	if err := check("cuMemAlloc", C.sd_alloc(d.ctx, &p, C.size_t(s))); err != nil {
		// Give the cache back to the driver and retry once.
		d.Sync()
		for sz, ps := range d.free {
			for _, q := range ps {
				C.sd_free(d.ctx, C.CUdeviceptr(q))
				d.held -= int64(sz)
			}
		}
		d.free = map[int][]Ptr{}
		if err := check("cuMemAlloc", C.sd_alloc(d.ctx, &p, C.size_t(s))); err != nil {
			return Buf{}, err
		}
	}
	d.held += int64(s)
	d.live[Ptr(p)] = s
	return Buf{Ptr: Ptr(p), N: n}, nil
}

// Free returns b to the cache (work queued on the stream may still use it: the
// stream orders any later use after it).
func (d *Device) Free(b Buf) {
	s, ok := d.live[b.Ptr]
	if !ok {
		return
	}
	delete(d.live, b.Ptr)
	d.free[s] = append(d.free[s], b.Ptr)
}

// HeldBytes is what the allocator holds from the driver (live plus cached).
func (d *Device) HeldBytes() int64 { return d.held }

// MemInfo returns the device's free and total memory in bytes.
func (d *Device) MemInfo() (free, total int64, err error) {
	var f, t C.size_t
	err = check("cuMemGetInfo", C.sd_meminfo(d.ctx, &f, &t))
	return int64(f), int64(t), err
}

// Upload copies host into b (after the stream's queued work).
func (d *Device) Upload(b Buf, host []float32) error {
	if len(host) == 0 {
		return nil
	}
	if len(host) > b.N {
		return fmt.Errorf("cuda: upload of %d values into a buffer of %d", len(host), b.N)
	}
	return check("cuMemcpyHtoD", C.sd_htod(d.ctx, d.stream, C.CUdeviceptr(b.Ptr), unsafe.Pointer(&host[0]), C.size_t(4*len(host))))
}

// Download copies b into host after the stream's queued work.
func (d *Device) Download(host []float32, b Buf) error {
	if len(host) == 0 {
		return nil
	}
	if len(host) > b.N {
		return fmt.Errorf("cuda: download of %d values from a buffer of %d", len(host), b.N)
	}
	return check("cuMemcpyDtoH", C.sd_dtoh(d.ctx, d.stream, unsafe.Pointer(&host[0]), C.CUdeviceptr(b.Ptr), C.size_t(4*len(host))))
}

// Zero sets b to 0 (asynchronously, on the stream).
func (d *Device) Zero(b Buf) error {
	return check("cuMemsetD32Async", C.sd_memset32(d.ctx, d.stream, C.CUdeviceptr(b.Ptr), 0, C.size_t(b.N)))
}

// Sync waits for the stream.
func (d *Device) Sync() error { return check("cuStreamSynchronize", C.sd_sync(d.ctx, d.stream)) }

// I64 marks a kernel argument of type long long (i64 in kernels.cu); plain int
// arguments are passed as 32-bit int, float32 as float, Buf and Ptr as pointers.
type I64 int64

// BlockSize is the threads per block of every launch; grids are capped at
// MaxGrid blocks and the kernels' grid-stride loops cover the rest.
const (
	BlockSize = 256
	MaxGrid   = 65535 * 4
)

// Launch runs kernel name over total work items (grid-stride) with args.
func (d *Device) Launch(name string, total int64, args ...any) error {
	f, ok := d.fn[name]
	if !ok {
		return fmt.Errorf("cuda: no kernel %q", name)
	}
	if total <= 0 {
		return nil
	}
	var slots [32]C.uint64_t
	if len(args) > len(slots) {
		return fmt.Errorf("cuda: %s: %d arguments", name, len(args))
	}
	for i, a := range args {
		var v uint64
		switch x := a.(type) {
		case Buf:
			v = uint64(x.Ptr)
		case Ptr:
			v = uint64(x)
		case int:
			if x != int(int32(x)) {
				return fmt.Errorf("cuda: %s: argument %d (%d) overflows int", name, i, x)
			}
			v = uint64(uint32(int32(x)))
		case I64:
			v = uint64(x)
		case float32:
			v = uint64(math.Float32bits(x))
		default:
			return fmt.Errorf("cuda: %s: argument %d has type %T", name, i, a)
		}
		slots[i] = C.uint64_t(v)
	}
	grid := min((total+BlockSize-1)/BlockSize, MaxGrid)
	return check("cuLaunchKernel "+name, C.sd_launch(d.ctx, d.stream, f, C.uint(grid), BlockSize, C.int(len(args)), &slots[0]))
}

// Gemm computes C = alpha·op(A)·op(B) + beta·C for row-major matrices as
// model.Backend.Gemm does (op(A) m×k, op(B) k×n), batch times with element strides
// sa, sb, sc between the matrices of a batch. Row-major C = A·B is column-major
// Cᵀ = Bᵀ·Aᵀ, so cuBLAS gets the operands swapped.
func (d *Device) Gemm(transA, transB bool, m, n, k int, alpha float32, a Buf, lda int, b Buf, ldb int, beta float32, c Buf, ldc int, batch int, sa, sb, sc int) error {
	ta, tb := C.int(0), C.int(0)
	if transA {
		ta = 1
	}
	if transB {
		tb = 1
	}
	if batch < 1 {
		batch = 1
	}
	return checkBlas("cublasSgemm", C.sd_sgemm(d.ctx, d.blas, tb, ta, C.int(n), C.int(m), C.int(k), C.float(alpha),
		C.CUdeviceptr(b.Ptr), C.int(ldb), C.longlong(sb), C.CUdeviceptr(a.Ptr), C.int(lda), C.longlong(sa),
		C.float(beta), C.CUdeviceptr(c.Ptr), C.int(ldc), C.longlong(sc), C.int(batch)))
}
