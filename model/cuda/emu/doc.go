// Package emu runs the CUDA kernels of model/cuda/kernels on the host: its cgo
// C++ file compiles kernels.cu under kernels/emu.h (grid and block loops for
// blockIdx/threadIdx, plain memory), and Kernels implements kerneltest.Kernels so
// that `go test` checks every kernel against model.CPU on machines without a GPU.
// Without cgo the package is empty and its test skips.
package emu
