// Package cuda is the CUDA backend of the model (issue #8, spec gpu-route.md):
// the device side lives behind the cuda build tag (files *_cuda.go), so plain
// builds and tests never need CUDA.
//
// Route: the driver API (libcuda.so.1) and cuBLAS (libcublas.so.13, else .12)
// are bound with dlopen at run time through hand-written prototypes of the ~25
// functions used (gpu-route.md route B), not through gorgonia.org/cu: there are
// no CUDA headers on the build machines (Debian's nvidia-cuda-dev is in non-free,
// not configured; CUDA 13 headers are not harvestable without a GPU run), and the
// module cache holds cu v0.9.4, not v0.9.6. dlopen needs no headers, no stub
// libraries and no SONAME baked into the binary, so `make cuda` builds here and a
// missing library is an error from Open, not a loader failure.
//
// Under -tags cuda: Device (primary context, one stream, a caching allocator,
// module load of the embedded PTX with the JIT error log, kernel launch, cuBLAS
// SGEMM with optional TF32) and DeviceKernels, which runs the kernel checks of
// kerneltest on the GPU. Kernels are in kernels/kernels.cu, tested on every
// machine by model/cuda/emu.
package cuda
