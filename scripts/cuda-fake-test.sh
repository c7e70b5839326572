#!/bin/sh
# cuda-fake-test.sh: run the -tags cuda tests of model/cuda here, without a GPU,
# against model/cuda/fakecuda (a host stand-in for libcuda.so.1 and
# libcublas.so.13 that runs the kernels under the emulation header). It checks the
# dlopen bindings, launch argument marshalling and the SGEMM operand swap; the
# arithmetic on a real GPU is scripts/gpu-check.sh's job.
set -eu
cd "$(dirname "$0")/.."
D=build/fakecuda
mkdir -p "$D"
${CXX:-g++} -O2 -std=c++17 -shared -fPIC -Wall -Wno-unused-function -o "$D/libfakecuda.so" model/cuda/fakecuda/fakecuda.cc
cp "$D/libfakecuda.so" "$D/libcuda.so.1"
cp "$D/libfakecuda.so" "$D/libcublas.so.13"
LD_LIBRARY_PATH="$PWD/$D${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" SAMDIFFSR_CUDA_REQUIRED=1 \
	${GO:-go} test -count=1 -tags cuda -run 'Kernels|Gemm|Conv|Allocator|UNetStep|Sample|RRDBStep|TorchDump' "$@" ./model/cuda
