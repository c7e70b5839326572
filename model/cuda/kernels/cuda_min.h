// cuda_min.h: the few CUDA declarations kernels.cu needs when clang compiles it
// for the device without the CUDA SDK (-nocudainc -nocudalib): the function
// attributes and the built-in index variables (clang's own header, backed by
// __nvvm_read_ptx_sreg_* builtins). No libdevice: kernels use only builtins that
// lower to PTX instructions (__builtin_floorf, __builtin_sqrtf).
#ifndef SAMDIFFSR_CUDA_MIN_H
#define SAMDIFFSR_CUDA_MIN_H
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __host__ __attribute__((host))
#define __forceinline__ __inline__ __attribute__((always_inline))
#include <__clang_cuda_builtin_vars.h>
#endif
