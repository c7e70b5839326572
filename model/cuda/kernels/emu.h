// emu.h: host emulation of the CUDA C subset kernels.cu uses, so that g++ compiles
// the same kernel source for the CPU (model/cuda/emu tests it against model.CPU).
// Kernels run sequentially: EMU_LAUNCH loops over every block and thread of a 1-D
// grid, setting blockIdx/threadIdx. This is only faithful for kernels where every
// output element is written by one thread and no thread reads another's output
// within a launch (no shared memory, no __syncthreads, no atomics), which is how
// kernels.cu is written.
#ifndef SAMDIFFSR_EMU_H
#define SAMDIFFSR_EMU_H
#define KERNELS_EMU 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct emu_dim3 {
	unsigned x, y, z;
};
static thread_local emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

// atomicAdd as a plain add: correct only under sequential emulation (unused by
// kernels.cu, which is atomic-free).
static inline float atomicAdd(float *p, float v) {
	float old = *p;
	*p = old + v;
	return old;
}

#define EMU_LAUNCH(kernel, grid, block, ...)                          \
	do {                                                              \
		gridDim = emu_dim3{(unsigned)(grid), 1, 1};                   \
		blockDim = emu_dim3{(unsigned)(block), 1, 1};                 \
		for (unsigned emu_b = 0; emu_b < gridDim.x; emu_b++) {        \
			for (unsigned emu_t = 0; emu_t < blockDim.x; emu_t++) {   \
				blockIdx = emu_dim3{emu_b, 0, 0};                     \
				threadIdx = emu_dim3{emu_t, 0, 0};                    \
				kernel(__VA_ARGS__);                                  \
			}                                                         \
		}                                                             \
	} while (0)
#endif
